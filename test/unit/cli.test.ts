// vmctl's pure parts: verb matching, fmt_scaled, the status table and error text (against
// golden files in test/fixtures/cli), argument errors and their exit codes, disk format
// sniffing and qcow2 backing chains, and `create` on real files with qemu-img.
// Set UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate change.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import { parseSeconds, parseSizeArg, parseTarget } from '../../src/cli/args.js';
import type { Io } from '../../src/cli/command.js';
import { EscapeFilter } from '../../src/cli/console.js';
import { planCreate, qemuImgCreateArgs } from '../../src/cli/create.js';
import {
  formatFromExtension,
  openDisk,
  parseDiskArg,
  parseQcow2Header,
  qcow2BackingName,
  sniffFormat,
} from '../../src/cli/disk.js';
import { FdList } from '../../src/cli/files.js';
import {
  colourLevel,
  errorJson,
  errorText,
  fmtScaled,
  formatEvent,
  formatProgress,
  paintFor,
  ownerName,
  statusTable,
  type UserLookup,
} from '../../src/cli/format.js';
import { parseExitLine } from '../../src/cli/run.js';
import { buildStartRequest, DEFAULT_READY_PATTERN } from '../../src/cli/start.js';
import { stopMessage, stopRequest } from '../../src/cli/stop.js';
import { LineSplitter } from '../../src/cli/stream.js';
import { matchVerb, matchWord, VERB_NAMES } from '../../src/cli/verbs.js';
import { exitCodesHelp, main, prescan, VERBS } from '../../src/cli/vmctl.js';
import { parseWaitFor } from '../../src/cli/wait.js';
import { ERROR_CODES, VmdError } from '../../src/errors.js';
import type { VmEvent } from '../../src/vmm/vmm.js';
import type { VmInfo } from '../../src/vmm/types.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const FIXTURES = join(ROOT, 'test', 'fixtures', 'cli');
const MIB = 1024 * 1024;

/** Compares text with a golden file (rewritten instead when UPDATE_GOLDEN is set). */
function golden(name: string, actual: string): void {
  const path = join(FIXTURES, name);
  if (process.env.UPDATE_GOLDEN) writeFileSync(path, actual);
  assert.equal(actual, readFileSync(path, 'utf8'), `golden file ${name}`);
}

function fixture<T>(name: string): T {
  return JSON.parse(readFileSync(join(FIXTURES, name), 'utf8')) as T;
}

function fixtureUsers(): UserLookup {
  const db = fixture<{
    users: { uid: number; name: string }[];
    groups: { gid: number; name: string }[];
  }>('users.json');
  return {
    userById: (uid) => db.users.find((u) => u.uid === uid),
    groupById: (gid) => db.groups.find((g) => g.gid === gid),
  };
}

class Sink extends Writable {
  text = '';
  constructor(readonly isTTY = false) {
    super();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs vmctl's main with captured streams and no daemon at a nonexistent socket. */
async function vmctl(argv: string[], opts: { tty?: boolean; stdin?: string } = {}): Promise<Run> {
  const stdout = new Sink(opts.tty);
  const stderr = new Sink(opts.tty);
  const stdin = Readable.from(opts.stdin === undefined ? [] : [opts.stdin]) as Io['stdin'];
  const env = { VMD_SOCKET: join(tmpdir(), `vmctl-test-no-such-socket-${process.pid}`) };
  const code = await main(argv, { stdin, stdout, stderr, env });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'vmctl-test-'));
}

function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}

function imageInfo(path: string): {
  format: string;
  'virtual-size': number;
  'backing-filename'?: string;
} {
  return JSON.parse(qemuImg('info', '--output=json', path)) as {
    format: string;
    'virtual-size': number;
    'backing-filename'?: string;
  };
}

function usageError(fn: () => unknown, message: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof VmdError, String(err));
    assert.equal(err.code, 'usage');
    assert.equal(err.message, message);
    return true;
  });
}

// Verbs

test('verbs: unique prefixes, exact words, the show alias', () => {
  assert.equal(matchVerb('stat'), 'status');
  assert.equal(matchVerb('sto'), 'stop');
  assert.equal(matchVerb('star'), 'start');
  assert.equal(matchVerb('sh'), 'status');
  assert.equal(matchVerb('show'), 'status');
  assert.equal(matchVerb('cr'), 'create');
  assert.equal(matchVerb('ru'), 'run');
  assert.equal(matchVerb('log'), 'log');
  assert.equal(matchVerb('u'), 'unpause');
  for (const verb of VERB_NAMES) assert.equal(matchVerb(verb), verb === 'show' ? 'status' : verb);
});

test('verbs: ambiguous and unknown words are usage errors naming the word', () => {
  usageError(() => matchVerb('st'), 'ambiguous argument: st');
  usageError(() => matchVerb('re'), 'ambiguous argument: re');
  usageError(() => matchVerb('lo'), 'ambiguous argument: lo');
  usageError(() => matchVerb('frobnicate'), 'unknown argument: frobnicate');
  usageError(() => matchVerb('Status'), 'unknown argument: Status');
  usageError(() => matchVerb(''), 'unknown argument: ');
  assert.equal(matchWord('VERB', ['brief', 'verbose'], true), 'verbose');
  assert.equal(matchWord('b', ['brief', 'verbose'], true), 'brief');
});

test('verbs: every verb has a handler', async () => {
  for (const verb of VERB_NAMES) {
    const name = matchVerb(verb) as keyof typeof VERBS;
    assert.ok(name in VERBS, name);
    const cmd = await VERBS[name].load();
    assert.equal(typeof cmd.run, 'function', name);
    assert.match(cmd.usage, new RegExp(`^usage: vmctl ${name}\\b`), name);
  }
});

test('main: ambiguous and unknown verbs exit 2 with one line on stderr', async () => {
  assert.deepEqual(await vmctl(['st']), {
    code: 2,
    stdout: '',
    stderr: 'vmctl: ambiguous argument: st\n',
  });
  assert.deepEqual(await vmctl(['--socket', '/x', 'bogus']), {
    code: 2,
    stdout: '',
    stderr: 'vmctl: unknown argument: bogus\n',
  });
  assert.deepEqual(await vmctl([]), { code: 2, stdout: '', stderr: 'vmctl: missing command\n' });
});

test('main: a hint line follows on a terminal only', async () => {
  const r = await vmctl(['st'], { tty: true });
  assert.equal(
    r.stderr,
    'vmctl: ambiguous argument: st\nhint: did you mean start, status or stop?\n',
  );
});

test('main: --json errors are one JSON object on stderr, nothing on stdout', async () => {
  const r = await vmctl(['st', '--json']);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, '');
  assert.deepEqual(JSON.parse(r.stderr), {
    error: {
      code: 'usage',
      message: 'ambiguous argument: st',
      hint: 'did you mean start, status or stop?',
    },
    exitCode: 2,
  });
  assert.equal(r.stderr.split('\n').length, 2);
});

test('main: --help lists verbs and exit codes; per-verb help shows its usage', async () => {
  const top = await vmctl(['--help']);
  assert.equal(top.code, 0);
  for (const verb of Object.keys(VERBS))
    assert.match(top.stdout, new RegExp(`vmctl ${verb}\\b`));
  for (const n of new Set(Object.values(ERROR_CODES)))
    assert.match(top.stdout, new RegExp(`^ +${n}  `, 'm'));
  const start = await vmctl(['star', '--help']);
  assert.equal(start.code, 0);
  assert.match(start.stdout, /^usage: vmctl start \[-cLw\]/);
  assert.ok(start.stdout.includes(DEFAULT_READY_PATTERN), 'start --help names the ready pattern');
  const run = await vmctl(['run', '--help']);
  assert.match(run.stdout, /vmd-exit: N/);
});

test('exit codes help covers every error code', () => {
  const help = exitCodesHelp();
  for (const n of Object.values(ERROR_CODES)) assert.match(help, new RegExp(`^ +${n}  \\S`, 'm'));
});

test('prescan: finds the verb past global options and sees --json anywhere', () => {
  assert.deepEqual(prescan(['--socket', '/s', '-v', 'stat', '-r']), { verbAt: 3, json: false });
  assert.deepEqual(prescan(['stop', 'web1', '--json']), { verbAt: 0, json: true });
  assert.deepEqual(prescan(['--json', '--', 'x']), { verbAt: -1, json: true });
});

// fmt_scaled and the status table

test('fmtScaled: fmt_scaled(3) rules', () => {
  const cases: [number, string][] = [
    [0, '0B'],
    [1, '1B'],
    [512, '512B'],
    [1023, '1023B'],
    [1024, '1.0K'],
    [1536, '1.5K'],
    [99 * 1024 + 1023, '100K'],
    [100 * 1024, '100K'],
    [99 * 1024 + 921, '99.9K'],
    [1024 * 1024 - 1, '1024K'],
    [MIB, '1.0M'],
    [97937408, '93.4M'],
    [512 * MIB, '512M'],
    [1024 * MIB, '1.0G'],
    [1536 * MIB, '1.5G'],
    [128 * 1024 * MIB, '128G'],
    [1.5 * 1024 * 1024 * MIB, '1.5T'],
    [-1536, '-1.5K'],
  ];
  for (const [bytes, text] of cases) assert.equal(fmtScaled(bytes), text, `fmtScaled(${bytes})`);
  assert.equal(fmtScaled(2n ** 62n), '4.0E');
});

test('ownerName: user, user:group, numbers, cut to 15 characters', () => {
  const users = fixtureUsers();
  assert.equal(ownerName(0, null, users), 'root');
  assert.equal(ownerName(1000, 1001, users), 'joe:vmusers');
  assert.equal(ownerName(4242, 4243, users), '4242:4243');
  assert.equal(ownerName(1002, 1001, users), 'averyveryverylo');
});

test('status table: golden, plain', () => {
  const vms = fixture<VmInfo[]>('vms.json');
  golden('status-table.txt', statusTable(vms, fixtureUsers()));
  golden('status-table-empty.txt', statusTable([], fixtureUsers()));
});

test('status table: colour touches only the state column and keeps widths', async () => {
  const vms = fixture<VmInfo[]>('vms.json');
  const coloured = statusTable(vms, fixtureUsers(), await paintFor({ FORCE_COLOR: '1' }, false));
  golden('status-table-colour.txt', coloured);
  // eslint-disable-next-line no-control-regex
  assert.equal(coloured.replace(/\x1b\[[0-9;]*m/g, ''), statusTable(vms, fixtureUsers()));
  assert.notEqual(coloured, statusTable(vms, fixtureUsers()));
});

test('colourLevel: terminal only; FORCE_COLOR wins, then NO_COLOR', () => {
  assert.equal(colourLevel({}, false), 0);
  assert.equal(colourLevel({}, true), undefined);
  assert.equal(colourLevel({ NO_COLOR: '1' }, true), 0);
  assert.equal(colourLevel({ NO_COLOR: '' }, true), undefined);
  assert.equal(colourLevel({ FORCE_COLOR: '1' }, false), 1);
  assert.equal(colourLevel({ FORCE_COLOR: '3', NO_COLOR: '1' }, false), 3);
  assert.equal(colourLevel({ FORCE_COLOR: '0' }, true), 0);
  assert.equal(colourLevel({ TERM: 'dumb' }, true), 0);
});

test('error text: golden lines and JSON', () => {
  const notFound = new VmdError('notfound', 'vm "web1": not found', { hint: 'see vmctl status' });
  const usage = new VmdError('usage', 'conflicting -b and -i arguments');
  const text = [
    errorText(notFound, 'stop', false),
    errorText(notFound, 'stop', true),
    errorText(usage, 'create', true),
    errorText(new VmdError('usage', 'ambiguous argument: st'), undefined, false),
    errorJson(notFound),
    errorJson(usage),
    errorJson(new VmdError('timeout', 'vm "ci": no exit status after 60s')),
  ].join('');
  golden('errors.txt', text);
});

test('events and progress: readable lines', () => {
  const vm = fixture<VmInfo[]>('vms.json')[0];
  const at = new Date('2025-03-01T12:00:00.000Z');
  const exit: VmEvent = {
    type: 'exit',
    vm: { ...vm, state: 'stopped', pid: null },
    exit: { pid: 48211, code: 0, signal: null, reason: 'guest-shutdown', lastError: null },
  };
  assert.equal(
    formatEvent({ type: 'start', vm }, at),
    '2025-03-01T12:00:00.000Z start    vm web1 id 1 running',
  );
  assert.equal(
    formatEvent(exit, at),
    '2025-03-01T12:00:00.000Z exit     vm web1 id 1 stopped exit 0 (guest-shutdown)',
  );
  const killed: VmEvent = {
    ...exit,
    exit: { ...exit.exit!, code: null, signal: 'SIGKILL', reason: null },
  };
  assert.equal(
    formatEvent(killed, at),
    '2025-03-01T12:00:00.000Z exit     vm web1 id 1 stopped signal SIGKILL',
  );
  assert.equal(formatProgress(97937408, 1000), '93.4M, 93.4M/s');
  assert.equal(formatProgress(0, 0), '0B, 0B/s');
});

// Argument values

test('targets, sizes, timeouts', () => {
  assert.equal(parseTarget('3'), 3);
  assert.equal(parseTarget('web1'), 'web1');
  assert.equal(parseTarget('4294967296'), '4294967296');
  usageError(() => parseTarget('x'.repeat(64)), `name too long: ${'x'.repeat(64)}`);
  assert.deepEqual(parseSizeArg('512M', 'memory'), { bytes: 512 * MIB });
  assert.deepEqual(parseSizeArg('1.5g', 'memory'), { bytes: 1536 * MIB });
  assert.deepEqual(parseSizeArg('1000000000', 'memory'), {
    bytes: 953 * MIB,
    warning: 'memory size rounded to 953M',
  });
  usageError(() => parseSizeArg('512K', 'memory'), 'memory size must be at least 1MB');
  usageError(() => parseSizeArg('512K', 'disk'), 'disk size must be at least 1MB');
  usageError(() => parseSizeArg('129G', 'memory'), 'memory size too large (limit is 128G)');
  usageError(() => parseSizeArg('1GB', 'memory'), 'invalid memory size: 1GB');
  assert.equal(parseSizeArg('1T', 'disk').bytes, 1024 * 1024 * MIB);
  assert.equal(parseSeconds('1.5'), 1500);
  assert.equal(parseSeconds(120), 120000);
  usageError(() => parseSeconds('-1'), 'invalid --timeout: -1');
  usageError(() => parseSeconds('soon'), 'invalid --timeout: soon');
});

test('wait --for, stop flags and messages', () => {
  assert.equal(parseWaitFor('stopped'), 'stopped');
  assert.deepEqual(parseWaitFor('console:login: $'), { console: 'login: $' });
  usageError(() => parseWaitFor('booted'), 'invalid --for: booted');
  usageError(() => parseWaitFor('console:('), 'invalid --for pattern: (: unterminated group');
  assert.deepEqual(stopRequest({ id: 'web1', a: false, f: true, w: false, timeout: '30' }), {
    target: 'web1',
    force: true,
    timeoutMs: 30000,
  });
  assert.deepEqual(stopRequest({ a: true, f: false, w: true }), { all: true, wait: true });
  usageError(
    () => stopRequest({ id: '1', a: true, f: false, w: false }),
    'conflicting id and -a arguments',
  );
  usageError(() => stopRequest({ a: false, f: false, w: false }), 'missing vm id or name (or -a)');
  assert.equal(
    stopMessage({ id: 3, name: 'web1', result: 'requested' }),
    'stopping vm web1: requested to shutdown vm 3',
  );
  assert.equal(
    stopMessage({ id: 3, name: 'web1', result: 'terminated' }),
    'stopping vm web1: terminated vm 3',
  );
  assert.equal(
    stopMessage({ id: 3, name: 'web1', result: 'not-running' }),
    'vm web1 is not running',
  );
});

test('main: argument errors exit 2 with vmctl messages, before any connection', async () => {
  const dir = tempDir();
  const cases: [string[], string][] = [
    [
      ['create', '-b', 'a.qcow2', '-i', 'b.raw', '-s', '1G', join(dir, 'c.qcow2')],
      'vmctl: create: conflicting -b and -i arguments\n',
    ],
    [
      ['create', '-b', join(dir, 'base.qcow2'), join(dir, 'c.raw')],
      'vmctl: create: base images require qcow2 disk format\n',
    ],
    [
      ['create', join(dir, 'c.raw')],
      `vmctl: create: could not create ${join(dir, 'c.raw')}: missing size argument\n`,
    ],
    [
      ['create', '-s', '512K', join(dir, 'c.raw')],
      'vmctl: create: disk size must be at least 1MB\n',
    ],
    [['create', '-s', '1G'], 'vmctl: create: missing disk path\n'],
    [
      ['start', '-m', '512K', 'web1', '-b', '/dev/null'],
      'vmctl: start: memory size must be at least 1MB\n',
    ],
    [['start', '-m', '1G', 'web1'], 'vmctl: start: no kernel or disk/cdrom specified\n'],
    [
      ['start', '-b', '/dev/null', '-d', 'a', '-d', 'b', '-d', 'c', '-d', 'd', '-d', 'e', 'w'],
      'vmctl: start: too many disks\n',
    ],
    [
      ['start', '-b', '/dev/null', '-i', '4', '-L', 'web1'],
      'vmctl: start: too many network interfaces\n',
    ],
    [['start', '-b', '/dev/null', '-i', '0', 'web1'], 'vmctl: start: invalid interface count: 0\n'],
    [
      ['start', '-B', 'floppy', '-b', '/dev/null', 'web1'],
      'vmctl: start: invalid boot device: floppy\n',
    ],
    [
      ['start', '-b', '/dev/null', '-p', '65', 'web1'],
      'vmctl: start: invalid number of vcpus: 65\n',
    ],
    [['start', '-b', '/dev/null', '_web'], 'vmctl: start: invalid VM name: _web\n'],
    [['start', '-b', '/dev/null', '17'], 'vmctl: start: invalid vm name: 17\n'],
    [['start', '-b', '/dev/null', 'web1'], 'vmctl: start: kernel /dev/null: not a regular file\n'],
    [['start', '-z', 'web1'], 'vmctl: start: unknown argument: z\n'],
    [['start', '-m'], 'vmctl: start: not enough arguments following: m\n'],
    [
      ['start', '-b', '/dev/null', '-w', '--wait-for', '(', 'web1'],
      'vmctl: start: invalid --wait-for pattern: (: unterminated group\n',
    ],
    [['stop'], 'vmctl: stop: missing vm id or name (or -a)\n'],
    [['stop', '-a', 'web1'], 'vmctl: stop: conflicting id and -a arguments\n'],
    [['stop', 'web1', 'db1'], 'vmctl: stop: unknown argument: db1\n'],
    [['wait', '--for', 'booted', 'web1'], 'vmctl: wait: invalid --for: booted\n'],
    [['wait', '--timeout', 'x', 'web1'], 'vmctl: wait: invalid --timeout: x\n'],
    [['pause'], 'vmctl: pause: missing vm id or name\n'],
    [['log', 'loud'], 'vmctl: log: unknown argument: loud\n'],
    [['reset', 'everything'], 'vmctl: reset: unknown argument: everything\n'],
    [
      ['console', '--follow', '--log', 'web1'],
      'vmctl: console: --follow and --log cannot be used together\n',
    ],
    [['receive', '12'], 'vmctl: receive: invalid vm name: 12\n'],
    [
      ['run', '-b', '/dev/null', '--timeout', 'later', 'ci'],
      'vmctl: run: invalid --timeout: later\n',
    ],
  ];
  for (const [argv, stderr] of cases) {
    assert.deepEqual(await vmctl(argv), { code: 2, stdout: '', stderr }, argv.join(' '));
  }
});

test('main: usage errors under --json', async () => {
  const r = await vmctl(['console', '--json', 'web1']);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, '');
  assert.deepEqual(JSON.parse(r.stderr), {
    error: {
      code: 'usage',
      message: 'an interactive console has no --json form',
      hint: 'use --follow or --log with --json',
    },
    exitCode: 2,
  });
  const c = await vmctl(['start', '-c', '--json', 'web1']);
  assert.equal(
    (JSON.parse(c.stderr) as { error: { message: string } }).error.message,
    '-c cannot be used with --json',
  );
});

test('main: a missing file is not found (3), naming the file', async () => {
  const r = await vmctl(['start', '-b', '/nonexistent/vmlinuz', 'web1']);
  assert.deepEqual(r, {
    code: 3,
    stdout: '',
    stderr: 'vmctl: start: kernel /nonexistent/vmlinuz: no such file or directory\n',
  });
});

test('main: send refuses a terminal on stdout, receive on stdin', async () => {
  const send = await vmctl(['send', 'web1'], { tty: true });
  assert.equal(send.code, 2);
  assert.equal(
    send.stderr.split('\n')[0],
    'vmctl: send: refusing to write a vm dump to a terminal',
  );
});

const ADDON = join(ROOT, 'build', 'Release', 'vmd_native.node');
const NO_ADDON = existsSync(ADDON) ? false : `native addon not built (${ADDON})`;

test('main: without a daemon, verbs fail to connect with exit 1', { skip: NO_ADDON }, async () => {
  const r = await vmctl(['status']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^vmctl: status: connect: .*: no such socket \(is vmd running\?\)\n$/);
});

// Console, run

test('escape filter: ~. at the start of a line detaches; ~~ sends one ~', () => {
  const f = new EscapeFilter();
  assert.deepEqual(f.feed(Buffer.from('ls ~.\r')), { data: Buffer.from('ls ~.\r'), detach: false });
  assert.deepEqual(f.feed(Buffer.from('~~x\r~')), { data: Buffer.from('~x\r'), detach: false });
  assert.deepEqual(f.feed(Buffer.from('.')), { data: Buffer.alloc(0), detach: true });
  const g = new EscapeFilter();
  assert.deepEqual(g.feed(Buffer.from('~a')), { data: Buffer.from('~a'), detach: false });
  assert.deepEqual(g.feed(Buffer.from('\n~.rest')), { data: Buffer.from('\n'), detach: true });
});

test('line splitter: CRLF, chunks split mid-line and mid-character', () => {
  const s = new LineSplitter();
  const euro = Buffer.from('€');
  assert.deepEqual(s.push(Buffer.from('boot\r\nlog')), ['boot']);
  assert.deepEqual(s.push(Buffer.concat([Buffer.from('in: '), euro.subarray(0, 1)])), []);
  assert.deepEqual(s.push(Buffer.concat([euro.subarray(1), Buffer.from('\n\nvmd-exit: 3\r')])), [
    'login: €',
    '',
  ]);
  assert.deepEqual(s.end(), ['vmd-exit: 3']);
  assert.deepEqual(s.end(), []);
});

test('run: the vmd-exit line', () => {
  assert.equal(parseExitLine('vmd-exit: 0'), 0);
  assert.equal(parseExitLine('vmd-exit: 255 '), 255);
  assert.equal(parseExitLine('  vmd-exit: 7'), 7);
  assert.equal(parseExitLine('vmd-exit: 256'), undefined);
  assert.equal(parseExitLine('vmd-exit: -1'), undefined);
  assert.equal(parseExitLine('echo vmd-exit: 1'), undefined);
  assert.equal(parseExitLine('vmd-exit:1'), undefined);
});

// Disks

test('disk arguments: prefixes and extensions', () => {
  assert.deepEqual(parseDiskArg('raw:/a/b.qcow2'), { path: '/a/b.qcow2', format: 'raw' });
  assert.deepEqual(parseDiskArg('qcow2:disk'), { path: 'disk', format: 'qcow2' });
  assert.deepEqual(parseDiskArg('/a/raw:b'), { path: '/a/raw:b' });
  assert.equal(formatFromExtension('/x/y.QCOW2'), 'qcow2');
  assert.equal(formatFromExtension('/x.qcow2/y'), undefined);
  assert.equal(formatFromExtension('y.Raw'), 'raw');
  assert.equal(sniffFormat('disk.img', Buffer.from('QFI\xfb\0\0\0\x03', 'latin1')), 'qcow2');
  assert.equal(sniffFormat('disk.qcow2', Buffer.alloc(8)), 'qcow2');
  assert.equal(sniffFormat('disk.raw', Buffer.from('QFI', 'latin1')), 'raw');
  assert.equal(sniffFormat('disk', undefined), 'raw');
});

test('qcow2 header: backing file offset and size', () => {
  const buf = Buffer.alloc(20);
  buf.write('QFI\xfb', 0, 'latin1');
  buf.writeUInt32BE(3, 4);
  buf.writeBigUInt64BE(0x1234n, 8);
  buf.writeUInt32BE(10, 16);
  assert.deepEqual(parseQcow2Header(buf), {
    version: 3,
    backingFileOffset: 0x1234,
    backingFileSize: 10,
  });
  usageError(() => parseQcow2Header(Buffer.alloc(20)), 'not a qcow2 image');
});

test('disks: real qcow2 images, sniffed, with their backing chain opened read-only', () => {
  const dir = tempDir();
  qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '1M');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', join(dir, 'top'));
  const fd = openSync(join(dir, 'top'), 'r');
  assert.equal(qcow2BackingName(fd), 'base.qcow2');
  closeSync(fd);
  const fds = new FdList();
  try {
    assert.deepEqual(openDisk(join(dir, 'top'), fds), {
      fd: 0,
      format: 'qcow2',
      path: join(dir, 'top'),
      bases: [1],
    });
    assert.equal(fds.fds.length, 2);
    assert.deepEqual(openDisk(`raw:${join(dir, 'top')}`, fds), {
      fd: 2,
      format: 'raw',
      path: join(dir, 'top'),
    });
    assert.deepEqual(openDisk(join(dir, 'base.qcow2'), fds), {
      fd: 3,
      format: 'qcow2',
      path: join(dir, 'base.qcow2'),
    });
  } finally {
    fds.closeAll();
  }
});

test('disks: chains deeper than 3 and raw backing images are refused', () => {
  const dir = tempDir();
  qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'l0.qcow2'), '1M');
  for (let i = 1; i <= 4; i++) {
    qemuImg(
      'create',
      '-q',
      '-f',
      'qcow2',
      '-b',
      `l${i - 1}.qcow2`,
      '-F',
      'qcow2',
      join(dir, `l${i}.qcow2`),
    );
  }
  const fds = new FdList();
  try {
    assert.equal(openDisk(join(dir, 'l3.qcow2'), fds).bases?.length, 3);
    usageError(
      () => openDisk(join(dir, 'l4.qcow2'), fds),
      `disk ${join(dir, 'l4.qcow2')}: backing chain longer than 3`,
    );
    qemuImg('create', '-q', '-f', 'raw', join(dir, 'flat.raw'), '1M');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'flat.raw', '-F', 'raw', join(dir, 'onraw.qcow2'));
    usageError(
      () => openDisk(join(dir, 'onraw.qcow2'), fds),
      `backing image ${join(dir, 'flat.raw')}: raw backing images are not supported`,
    );
    writeFileSync(join(dir, 'fake.qcow2'), 'not an image, but named like one');
    usageError(
      () => openDisk(join(dir, 'fake.qcow2'), fds),
      `disk ${join(dir, 'fake.qcow2')}: not a qcow2 image`,
    );
  } finally {
    fds.closeAll();
  }
});

test('start request: descriptors by index, nics in order, warnings', () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'vmlinuz'), 'kernel');
  writeFileSync(join(dir, 'initrd.img'), 'initrd');
  qemuImg('create', '-q', '-f', 'raw', join(dir, 'disk.raw'), '1M');
  const fds = new FdList();
  try {
    const { request, warnings } = buildStartRequest(
      {
        name: 'web1',
        b: join(dir, 'vmlinuz'),
        initrd: join(dir, 'initrd.img'),
        cmdline: 'console=ttyS0',
        d: join(dir, 'disk.raw'),
        m: '1000000000',
        p: '2',
        i: '1',
        n: ['uplink', 'lan'],
        L: true,
        B: 'disk',
      },
      fds,
    );
    assert.deepEqual(request, {
      name: 'web1',
      memoryBytes: 953 * MIB,
      vcpus: 2,
      bootDevice: 'disk',
      cmdline: 'console=ttyS0',
      nics: [{ local: true }, { switch: 'uplink' }, { switch: 'lan' }, {}],
      kernel: { fd: 0, path: join(dir, 'vmlinuz') },
      initrd: { fd: 1, path: join(dir, 'initrd.img') },
      disks: [{ fd: 2, format: 'raw', path: join(dir, 'disk.raw') }],
    });
    assert.deepEqual(warnings, ['memory size rounded to 953M']);
    assert.equal(fds.fds.length, 3);
  } finally {
    fds.closeAll();
  }
  const bare = new FdList();
  try {
    const { request, warnings } = buildStartRequest({ name: 'k', b: join(dir, 'vmlinuz') }, bare);
    assert.deepEqual(request, { name: 'k', kernel: { fd: 0, path: join(dir, 'vmlinuz') } });
    assert.deepEqual(warnings, ['starting without disks', 'starting without network interfaces']);
    assert.deepEqual(buildStartRequest({ name: 'conf1' }, bare), {
      request: { name: 'conf1' },
      warnings: [],
    });
  } finally {
    bare.closeAll();
  }
});

// create, on real files

test('create: raw and qcow2 images of the given size', async () => {
  const dir = tempDir();
  const raw = await vmctl(['create', '-s', '64M', join(dir, 'a.raw')]);
  assert.deepEqual(raw, { code: 0, stdout: '', stderr: 'vmctl: raw imagefile created\n' });
  assert.deepEqual(
    [imageInfo(join(dir, 'a.raw')).format, imageInfo(join(dir, 'a.raw'))['virtual-size']],
    ['raw', 64 * MIB],
  );
  const qcow = await vmctl(['cr', '-s', '1.5G', join(dir, 'b.qcow2')]);
  assert.deepEqual(qcow, { code: 0, stdout: '', stderr: 'vmctl: qcow2 imagefile created\n' });
  assert.deepEqual(
    [imageInfo(join(dir, 'b.qcow2')).format, imageInfo(join(dir, 'b.qcow2'))['virtual-size']],
    ['qcow2', 1536 * MIB],
  );
  const prefixed = await vmctl(['create', '-s', '1000000000', `qcow2:${join(dir, 'c.img')}`]);
  assert.equal(
    prefixed.stderr,
    'vmctl: disk size rounded to 953M\nvmctl: qcow2 imagefile created\n',
  );
  assert.equal(imageInfo(join(dir, 'c.img'))['virtual-size'], 953 * MIB);
  const json = await vmctl(['create', '--json', '-s', '2M', join(dir, 'd')]);
  assert.deepEqual(JSON.parse(json.stdout), {
    path: join(dir, 'd'),
    format: 'raw',
    bytes: 2 * MIB,
  });
  assert.equal(json.stderr, '');
});

test('create: qcow2 on a base, copy with -i, and never over an existing file', async () => {
  const dir = tempDir();
  await vmctl(['create', '-s', '16M', join(dir, 'base.qcow2')]);
  const top = await vmctl(['create', '-b', join(dir, 'base.qcow2'), join(dir, 'top.qcow2')]);
  assert.equal(top.code, 0, top.stderr);
  const info = imageInfo(join(dir, 'top.qcow2'));
  assert.deepEqual([info['backing-filename'], info['virtual-size']], ['base.qcow2', 16 * MIB]);
  assert.deepEqual(
    planCreate({ disk: join(dir, 'x.qcow2'), b: join(dir, 'base.qcow2'), s: '1G' }).base,
    {
      name: 'base.qcow2',
      format: 'qcow2',
    },
  );
  assert.deepEqual(
    qemuImgCreateArgs({
      path: '/i/x.qcow2',
      format: 'qcow2',
      bytes: MIB,
      base: { name: 'b', format: 'raw' },
      warnings: [],
    }),
    ['create', '-q', '-f', 'qcow2', '-b', 'b', '-F', 'raw', '/i/x.qcow2', String(MIB)],
  );
  const copy = await vmctl([
    'create',
    '-i',
    join(dir, 'base.qcow2'),
    '-s',
    '32M',
    join(dir, 'copy.raw'),
  ]);
  assert.equal(copy.code, 0, copy.stderr);
  assert.deepEqual(
    [imageInfo(join(dir, 'copy.raw')).format, imageInfo(join(dir, 'copy.raw'))['virtual-size']],
    ['raw', 32 * MIB],
  );
  const small = await vmctl([
    'create',
    '-i',
    join(dir, 'base.qcow2'),
    '-s',
    '8M',
    join(dir, 'small.raw'),
  ]);
  assert.deepEqual(small, {
    code: 2,
    stdout: '',
    stderr: 'vmctl: create: disk size must be at least the input size (16.0M)\n',
  });
  assert.equal(existsSync(join(dir, 'small.raw')), false, 'a failed create leaves no file');
  const again = await vmctl(['create', '-s', '1M', join(dir, 'copy.raw')]);
  assert.deepEqual(again, {
    code: 1,
    stdout: '',
    stderr: 'vmctl: create: create imagefile operation failed: file exists\n',
  });
  assert.equal(
    imageInfo(join(dir, 'copy.raw'))['virtual-size'],
    32 * MIB,
    'the existing image is untouched',
  );
  const noBase = await vmctl(['create', '-b', join(dir, 'nope.qcow2'), join(dir, 'n.qcow2')]);
  assert.deepEqual(noBase, {
    code: 3,
    stdout: '',
    stderr: `vmctl: create: base image ${join(dir, 'nope.qcow2')}: no such file or directory\n`,
  });
});
