// The package's public entry: what `import ... from 'vmd-ts'` gives a program.
import assert from 'node:assert/strict';
import { test } from 'node:test';

test('the library is importable by its package name, with the client and the core', async () => {
  const lib = await import('vmd-ts');
  for (const name of ['connect', 'Client', 'Vmm', 'createQemuEngine', 'VmdError', 'exitCodeOf']) {
    assert.equal(typeof (lib as Record<string, unknown>)[name], 'function', name);
  }
  assert.equal(lib.exitCodeOf('timeout'), 6);
});
