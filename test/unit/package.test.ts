// The package's public entry: what `import ... from 'vmd-ts'` gives a program.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

test('the library is importable by its package name, with the client and the core', async () => {
  const lib = await import('vmd-ts');
  for (const name of ['connect', 'Client', 'Vmm', 'createQemuEngine', 'VmdError', 'exitCodeOf']) {
    assert.equal(typeof (lib as Record<string, unknown>)[name], 'function', name);
  }
  assert.equal(lib.exitCodeOf('timeout'), 6);
});

test('vmctl runs from its bundle, whose code cache this node accepts', () => {
  // A rejected cache still works, only slower: this catches a build that stops making it.
  const probe = [
    "const { loadBundle } = require('./bin/vmctl.cjs');",
    'const { exports, cache } = loadBundle();',
    'console.log(JSON.stringify({ cache, main: typeof exports.main }));',
  ].join('\n');
  const out = execFileSync(process.execPath, ['-e', probe], { cwd: ROOT, encoding: 'utf8' });
  assert.deepEqual(JSON.parse(out), { cache: 'accepted', main: 'function' });
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
    bin: Record<string, string>;
  };
  assert.equal(pkg.bin.vmctl, 'bin/vmctl.cjs');
});

test('vmctl loads yargs and chalk from their own bundles when it needs them', () => {
  const run = (args: string[]) =>
    spawnSync(process.execPath, ['bin/vmctl.cjs', ...args], { cwd: ROOT, encoding: 'utf8' });
  const help = run(['status', '--help']);
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /^usage: vmctl status \[-r\] \[id\]\n/);
  const bad = run(['status', '--bogus']);
  assert.equal(bad.status, 2);
  assert.equal(bad.stderr, 'vmctl: status: unknown argument: bogus\n');
  const probe = "console.log(typeof require('./dist/vmctl-chalk.cjs').Chalk)";
  const out = execFileSync(process.execPath, ['-e', probe], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(out, 'function\n');
});
