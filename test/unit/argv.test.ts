// vmctl's quick argv reader against yargs: for every verb and a corpus of argv, whatever the
// quick reader accepts, yargs accepts too and reads the same way; what it leaves to yargs
// (help, unusual spellings, errors) it leaves whole.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { GLOBAL_OPTIONS, quickParse } from '../../src/cli/argv.js';
import type { Command, OptionSpec } from '../../src/cli/command.js';
import { VERBS, yargsArgs } from '../../src/cli/vmctl.js';

type VerbKey = keyof typeof VERBS;

function flag(name: string): string {
  return name.length === 1 ? `-${name}` : `--${name}`;
}

/** Argv for one verb: each option alone and repeated, with and without the word, mixed. */
function corpus(cmd: Command): string[][] {
  const options: [string, OptionSpec][] = Object.entries({ ...GLOBAL_OPTIONS, ...cmd.options });
  const words = cmd.positional ? ['web', '3', '010', '', 'a b', 'x=y'] : [];
  const out: string[][] = [[], ...words.map((w) => [w])];
  const uses = (name: string, spec: OptionSpec): string[][] => {
    const f = flag(name);
    if (spec.type === 'string') return [[f, 'val'], [f, '1e3'], [f, 'a', f, 'b'], [f, '']];
    if (spec.type === 'count') return [[f], [f, f], ['-vvv']];
    return [[f]];
  };
  for (const [name, spec] of options) {
    for (const use of uses(name, spec)) {
      out.push(use);
      for (const w of words.slice(0, 3)) out.push([...use, w], [w, ...use]);
    }
  }
  // Everything at once, in declaration order and reversed.
  const all = options.flatMap(([name, spec]) => uses(name, spec)[0]);
  out.push(all, [...(words.length ? ['web'] : []), ...all]);
  return out;
}

/** Argv that must go to yargs, for a verb whose options are given. */
function leftToYargs(cmd: Command): string[][] {
  const out = [
    ['-h'], ['--help'], ['--json=true'], ['--no-json'], ['--json', 'true'], ['--json', 'false'],
    ['--', 'x'], ['-'], ['--socket'], ['--socket', '-x'], ['-Z'], ['--bogus'], ['-vx'],
    ['--json', '--json'], ['-1'],
  ];
  if (cmd.positional) out.push(['a', 'b']);
  else out.push(['a']);
  for (const [name, spec] of Object.entries(cmd.options ?? {})) {
    if (spec.type === 'string') out.push([flag(name)], [flag(name), '-1'], [`${flag(name)}=v`]);
  }
  return out;
}

test('quick argv: what it reads, yargs reads the same way, for every verb', async () => {
  let read = 0;
  for (const verb of Object.keys(VERBS) as VerbKey[]) {
    const cmd = await VERBS[verb].load();
    const keys = [
      ...Object.keys(GLOBAL_OPTIONS),
      ...Object.keys(cmd.options ?? {}),
      ...(cmd.positional ? [cmd.positional.name] : []),
    ];
    for (const argv of corpus(cmd)) {
      const quick = quickParse(argv, cmd);
      if (quick === undefined) continue;
      read++;
      const full = await yargsArgs(verb, [...argv]);
      for (const key of keys) {
        assert.deepEqual(quick[key], full[key], `${verb} ${JSON.stringify(argv)}: ${key}`);
      }
    }
  }
  assert.ok(read > 300, `the quick reader took only ${read} argv`);
});

test('quick argv: help, unusual spellings and errors are left to yargs', async () => {
  for (const verb of Object.keys(VERBS) as VerbKey[]) {
    const cmd = await VERBS[verb].load();
    for (const argv of leftToYargs(cmd)) {
      assert.equal(quickParse(argv, cmd), undefined, `${verb} ${JSON.stringify(argv)}`);
    }
  }
});

test('quick argv: the plain argv of scripts is read without yargs', async () => {
  const cases: [VerbKey, string[]][] = [
    ['status', []],
    ['status', ['--json', '-r']],
    ['stop', ['-w', '--timeout', '30', 'web']],
    ['start', ['-m', '1G', '-b', '/k', '--initrd', '/i', '--cmdline', 'console=ttyS0 quiet', '-w', 'vm1']],
    ['wait', ['--for', 'console:login:', '--timeout', '60', 'vm1']],
    ['console', ['--follow', 'vm1']],
  ];
  for (const [verb, argv] of cases) {
    const cmd = await VERBS[verb].load();
    assert.notEqual(quickParse(argv, cmd), undefined, `${verb} ${JSON.stringify(argv)}`);
  }
});
