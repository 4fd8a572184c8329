/**
 * The native addon against the real kernel: processes, sockets carrying descriptors, taps,
 * ptys and KVM VMs. Needs root (taps, switching to nobody, /dev/kvm); what needs a device
 * this host lacks is skipped with the reason.
 */
import assert from 'node:assert/strict';
import { spawn as cpSpawn, spawnSync, type ChildProcessByStdio } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  existsSync,
  fstatSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, test } from 'node:test';

import * as native from '../../src/native.js';
import type { Channel, ExitStatus, FdMapping, SpawnOptions } from '../../src/native.js';

/** How long any single condition may take to come true. */
const POLL_TIMEOUT_MS = 15_000;
const POLL_INTERVAL_MS = 5;
/** The compiled loader, for the node children some tests start. */
const NATIVE_URL = new URL('../../src/native.js', import.meta.url).href;
const PATH_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' };
const MIB = 1024 * 1024;

const scratch = mkdtempSync(join(tmpdir(), 'vmd-native-'));
after(() => {
  // A failed test may leave a child behind; do not let it outlive the file.
  for (const pid of ourChildren()) process.kill(pid, 'SIGKILL');
  rmSync(scratch, { recursive: true, force: true });
});

// ---- helpers -------------------------------------------------------------------------

/** Polls probe until it returns something other than undefined/false; fails after the deadline. */
async function waitFor<T>(
  what: string | (() => string),
  probe: () => T | undefined | false,
): Promise<T> {
  const deadline = Date.now() + POLL_TIMEOUT_MS;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${typeof what === 'string' ? what : what()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}

/** Spawns and watches a child; resolves with its exit status. */
function start(
  file: string,
  argv: string[],
  fds: FdMapping[] = [],
  opts: SpawnOptions = {},
  env: Record<string, string> = PATH_ENV,
): { pid: number; watch: native.ProcessWatch; exit: Promise<ExitStatus> } {
  const pid = native.spawn(file, argv, env, fds, opts);
  let watch!: native.ProcessWatch;
  const exit = new Promise<ExitStatus>((resolve) => {
    watch = native.watchExit(pid, resolve);
  });
  return { pid, watch, exit };
}

/**
 * Waits until a spawned `sleep` is in its sleep. spawn() returns once the exec can no longer
 * fail, a moment before the kernel has closed the close-on-exec descriptors; then the dynamic
 * loader opens and closes libraries at low numbers. Once the program blocks in nanosleep, what
 * /proc shows of it is the program's own.
 */
async function asleep(pid: number): Promise<void> {
  await waitFor(`pid ${pid} to reach its sleep`, () => {
    try {
      return readFileSync(`/proc/${pid}/wchan`, 'utf8').includes('nanosleep');
    } catch {
      return true; // already gone: nothing more will change
    }
  });
}

/** Runs a command to its end with stdout and stderr in a file; returns both and the status. */
async function run(
  argv: string[],
  opts: SpawnOptions = {},
): Promise<{ out: string; status: ExitStatus }> {
  const path = join(scratch, `out-${process.hrtime.bigint()}`);
  const fd = openSync(path, 'w+');
  try {
    const child = start(argv[0], argv, [[fd, 1], [fd, 2]], opts);
    const status = await child.exit;
    return { out: readFileSync(path, 'utf8'), status };
  } finally {
    closeSync(fd);
  }
}

interface ProcStat {
  state: string;
  ppid: number;
  session: number;
}

function procStat(pid: number | 'self'): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0], ppid: Number(fields[1]), session: Number(fields[3]) };
}

/** Pids of our children, zombies included. */
function ourChildren(): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .filter((pid) => procStat(pid)?.ppid === process.pid);
}

function isGoneOrZombie(pid: number): boolean {
  const stat = procStat(pid);
  return stat === undefined || stat.state === 'Z';
}

function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

function fdLinks(): string {
  return readdirSync('/proc/self/fd')
    .map((fd) => {
      try {
        return `${fd}:${readlinkSync(`/proc/self/fd/${fd}`)}`;
      } catch {
        return fd;
      }
    })
    .join(' ');
}

function fdFlags(fd: number): number {
  const info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  return parseInt(/flags:\s*([0-7]+)/.exec(info)![1], 8);
}

const O_CLOEXEC = 0o2000000;
const O_NONBLOCK = 0o4000;

function tempFile(name: string): { path: string; fd: number } {
  const path = join(scratch, name);
  writeFileSync(path, name);
  return { path, fd: openSync(path, 'r') };
}

interface Received {
  data: Buffer;
  fds: number[];
}

/** A channel that records what it gets, with promises for the next message and the close. */
function recorder(fd: number, opts: native.ChannelOptions) {
  const messages: Received[] = [];
  let closed: { err: Error | undefined } | undefined;
  const chan = native.channel(fd, opts, {
    message: (data, fds) => messages.push({ data, fds }),
    close: (err) => {
      closed = { err };
    },
  });
  return {
    chan,
    messages,
    closed: () => closed,
    count: (n: number) => waitFor(`${n} messages`, () => messages.length >= n && messages),
    closing: () => waitFor('the close handler', () => closed),
  };
}

interface NodeResult {
  code: number | null;
  out: string;
  err: string;
}

/** Runs a node ES module as a separate process; resolves with its output and exit code. */
function runNode(
  script: string,
  args: string[] = [],
): { child: ChildProcessByStdio<null, Readable, Readable>; done: Promise<NodeResult> } {
  const argv = ['--input-type=module', '-e', script, '--', ...args];
  const child = cpSpawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const done = new Promise<NodeResult>((resolve) => {
    child.on('close', (code) => resolve({ code, out, err }));
  });
  return { child, done };
}

// ---- spawn -----------------------------------------------------------------------------

test('spawn: argv and env reach the child, and PATH comes from its env', async () => {
  // 1. A sleeping child shows its argv and environment in /proc.
  const child = start('sleep', ['sleep', '30'], [], {}, { ...PATH_ENV, FOO: 'bar baz' });
  await asleep(child.pid);
  assert.equal(readFileSync(`/proc/${child.pid}/cmdline`, 'utf8'), 'sleep\x0030\x00');
  const environ = readFileSync(`/proc/${child.pid}/environ`, 'utf8').split('\0');
  assert.ok(environ.includes('FOO=bar baz'));
  assert.equal(environ.length, 3); // PATH, FOO, and the empty string after the last NUL
  assert.equal(child.watch.kill('SIGKILL'), true);
  assert.deepEqual(await child.exit, { pid: child.pid, code: null, signal: 'SIGKILL' });

  // 2. The child's own PATH is searched, not ours.
  assert.throws(() => native.spawn('sleep', ['sleep', '1'], { PATH: '/nonexistent' }, []), {
    code: 'ENOENT',
    syscall: 'execve',
  });
});

test('spawn: descriptors land at their targets, swaps included; nothing else leaks', async () => {
  // 1. Three files: a and b swap numbers in the child, c goes to 40.
  const a = tempFile('fd-a');
  const b = tempFile('fd-b');
  const c = tempFile('fd-c');
  const children: ReturnType<typeof start>[] = [];
  try {
    const child = start('sleep', ['sleep', '30'], [
      [a.fd, b.fd],
      [b.fd, a.fd],
      [c.fd, 40],
    ]);
    children.push(child);
    await asleep(child.pid);
    const fds = readdirSync(`/proc/${child.pid}/fd`).map(Number);
    const link = (n: number) => readlinkSync(`/proc/${child.pid}/fd/${n}`);

    // 2. Exactly 0-2 and the targets exist; 0-2 are /dev/null; each target has its file.
    assert.deepEqual(fds.sort((x, y) => x - y), [0, 1, 2, a.fd, b.fd, 40].sort((x, y) => x - y));
    for (const n of [0, 1, 2]) assert.equal(link(n), '/dev/null');
    assert.equal(link(b.fd), a.path);
    assert.equal(link(a.fd), b.path);
    assert.equal(link(40), c.path);

    // 3. A mapping onto 0 replaces /dev/null there only.
    const second = start('sleep', ['sleep', '30'], [[c.fd, 0]]);
    children.push(second);
    await asleep(second.pid);
    assert.equal(readlinkSync(`/proc/${second.pid}/fd/0`), c.path);
    assert.equal(readlinkSync(`/proc/${second.pid}/fd/1`), '/dev/null');
    assert.deepEqual(readdirSync(`/proc/${second.pid}/fd`).sort(), ['0', '1', '2']);
  } finally {
    for (const child of children) child.watch.kill('SIGKILL');
    await Promise.all(children.map((child) => child.exit));
    for (const f of [a, b, c]) closeSync(f.fd);
  }
});

test('spawn: a new session by default, ours when setsid is false', async () => {
  const own = start('sleep', ['sleep', '30']);
  assert.equal(procStat(own.pid)!.session, own.pid);
  const shared = start('sleep', ['sleep', '30'], [], { setsid: false });
  assert.equal(procStat(shared.pid)!.session, procStat('self')!.session);
  own.watch.kill('SIGKILL');
  shared.watch.kill('SIGKILL');
  await Promise.all([own.exit, shared.exit]);
});

test('spawn: signal dispositions and the signal mask are reset', async () => {
  const field = (pid: number | 'self', name: string) => {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return new RegExp(`^${name}:\\s*([0-9a-f]+)$`, 'm').exec(status)![1];
  };
  // Node ignores SIGPIPE and SIGXFSZ; that must not reach the child.
  assert.notEqual(BigInt(`0x${field('self', 'SigIgn')}`), 0n);
  const child = start('sleep', ['sleep', '30']);
  await asleep(child.pid);
  assert.equal(BigInt(`0x${field(child.pid, 'SigIgn')}`), 0n);
  assert.equal(BigInt(`0x${field(child.pid, 'SigBlk')}`), 0n);
  child.watch.kill('SIGKILL');
  await child.exit;
});

test('spawn: the child dies with its parent unless deathSignal is 0', async () => {
  const script = `
    import { spawn } from ${JSON.stringify(NATIVE_URL)};
    const deathSignal = Number(process.argv[1]);
    console.log(spawn('sleep', ['sleep', '60'], { PATH: process.env.PATH }, [], { deathSignal }));
    setInterval(() => {}, 1000);
  `;
  for (const deathSignal of [9, 0]) {
    // 1. A node process starts a sleep through the addon and reports its pid.
    const middle = runNode(script, [String(deathSignal)]);
    let out = '';
    middle.child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const sleepPid = Number(await waitFor('the sleep pid', () => /^\d+\n/.test(out) && out));
    assert.equal(procStat(sleepPid)!.ppid, middle.child.pid);

    // 2. The middle process is killed outright.
    middle.child.kill('SIGKILL');
    await middle.done;

    // 3. With a death signal the sleep follows; without one it lives on (and we end it).
    if (deathSignal !== 0) {
      await waitFor('the sleep to die', () => isGoneOrZombie(sleepPid));
    } else {
      assert.equal(isGoneOrZombie(sleepPid), false);
      process.kill(sleepPid, 'SIGKILL');
    }
  }
});

const rootSkip = process.getuid!() !== 0 && 'needs root';

test('spawn: uid, gid and groups switch', { skip: rootSkip }, async () => {
  const nobody = { uid: 65534, gid: 65534 };
  const named = await run(['sh', '-c', 'id -u; id -g; id -G'], { ...nobody, groups: [65534, 100] });
  assert.deepEqual(named.status.code, 0);
  assert.equal(named.out, '65534\n65534\n65534 100\n');
  // Without groups, root's supplementary groups are dropped rather than inherited.
  const none = await run(['sh', '-c', 'id -u; id -G'], nobody);
  assert.equal(none.out, '65534\n65534\n');
});

test('spawn: exec failures throw errno and syscall and leave no zombie', () => {
  // 1. A missing file, a file without execute permission, a bad cwd, a bad descriptor.
  const script = join(scratch, 'not-executable');
  writeFileSync(script, '#!/bin/sh\nexit 0\n');
  chmodSync(script, 0o644);
  const cases: [string, FdMapping[], SpawnOptions, object][] = [
    ['/nonexistent/x', [], {}, { code: 'ENOENT', errno: 2, syscall: 'execve' }],
    [script, [], {}, { code: 'EACCES', errno: 13, syscall: 'execve' }],
    ['/bin/true', [], { cwd: '/nonexistent' }, { code: 'ENOENT', syscall: 'chdir' }],
    ['/bin/true', [[987, 3]], {}, { code: 'EBADF', syscall: 'fcntl' }],
  ];
  for (const [file, fds, opts, expected] of cases) {
    assert.throws(() => native.spawn(file, [file], {}, fds, opts), expected);
  }

  // 2. Every failed child has been reaped already.
  assert.deepEqual(ourChildren().filter((pid) => procStat(pid)?.state === 'Z'), []);

  // 3. Arguments are checked first, with one usage message.
  const usage = { name: 'TypeError', message: /^usage: spawn\(file/ };
  assert.throws(() => native.spawn('', [], {}, []), usage);
  assert.throws(() => native.spawn('x', ['x'], {}, [[3, 4], [5, 4]]), { name: 'TypeError' });
});

// ---- watchExit -----------------------------------------------------------------------------

test('watchExit: exit code, signal name, and kill() once it is over', async () => {
  const code = start('sh', ['sh', '-c', 'exit 7']);
  assert.deepEqual(await code.exit, { pid: code.pid, code: 7, signal: null });
  assert.equal(code.watch.kill(), false);

  const signalled = start('sleep', ['sleep', '30']);
  assert.equal(signalled.watch.pid, signalled.pid);
  assert.equal(signalled.watch.kill(0), true);
  assert.equal(signalled.watch.kill('SIGTERM'), true);
  assert.deepEqual(await signalled.exit, { pid: signalled.pid, code: null, signal: 'SIGTERM' });
  assert.equal(signalled.watch.kill('SIGKILL'), false);
  assert.throws(() => signalled.watch.kill('SIGNOPE'), { name: 'TypeError' });
});

test('watchExit: 100 addon children and 100 child_process children at once', async () => {
  const ours = Array.from({ length: 100 }, (_, i) => start('sh', ['sh', '-c', `exit ${i % 50}`]));
  const theirs = Array.from({ length: 100 }, (_, i) => {
    const child = cpSpawn('sh', ['-c', `exit ${(i % 50) + 50}`]);
    return new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  });
  const ourCodes = (await Promise.all(ours.map((c) => c.exit))).map((s) => s.code);
  assert.deepEqual(ourCodes, ours.map((_, i) => i % 50));
  assert.deepEqual(await Promise.all(theirs), theirs.map((_, i) => (i % 50) + 50));
});

test('watchExit: refuses processes that are not our children', () => {
  assert.throws(() => native.watchExit(1, () => undefined), { code: 'ECHILD', syscall: 'waitid' });
  const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  const candidates = Array.from({ length: 100 }, (_, i) => pidMax - 1 - i);
  const free = candidates.find((p) => !existsSync(`/proc/${p}`))!;
  assert.throws(() => native.watchExit(free, () => undefined), { code: 'ESRCH' });
  assert.throws(() => native.watchExit(0, () => undefined), { name: 'TypeError' });
});

test('watchExit: a watch holds the event loop until the exit; unref() lets go', async () => {
  const script = `
    import { spawn, watchExit } from ${JSON.stringify(NATIVE_URL)};
    const pid = spawn('sleep', ['sleep', '0.5'], { PATH: process.env.PATH }, []);
    const watch = watchExit(pid, (s) => console.log(JSON.stringify(s)));
    if (process.argv[1] === 'unref') watch.unref();
  `;
  const held = await runNode(script, ['ref']).done;
  assert.equal(held.code, 0);
  assert.match(held.out, /^\{"pid":\d+,"code":0,"signal":null\}\n$/);
  const loose = await runNode(script, ['unref']).done;
  assert.deepEqual([loose.code, loose.out, loose.err], [0, '', '']);
});

test('live watches, channels and servers: process.exit(), a natural end, a worker', async () => {
  // A worker with busy channels of its own, terminated from outside: its cleanup must stop
  // its reactor before Node drops its thread-safe functions.
  const worker = `
    Promise.all([import(${JSON.stringify(NATIVE_URL)}), import('node:worker_threads')]).then(
      ([{ socketpair, channel }, { parentPort }]) => {
        const [a, b] = socketpair();
        const h = { message() {}, close() {} };
        const chan = channel(a, { framing: 'raw' }, h);
        channel(b, { framing: 'raw' }, h);
        setInterval(() => chan.send(Buffer.alloc(65536)), 1);
        parentPort.postMessage('ready');
      },
    );
  `;
  const script = `
    import { spawn, watchExit, socketpair, channel, listenUnix } from ${JSON.stringify(NATIVE_URL)};
    import { Worker } from 'node:worker_threads';
    const [mode, path] = process.argv.slice(1);
    const pid = spawn('sleep', ['sleep', '30'], { PATH: process.env.PATH }, []);
    const [a, b] = socketpair();
    const h = { message() {}, close() {} };
    const objs = [
      watchExit(pid, () => {}),
      channel(a, { framing: 'length' }, h),
      channel(b, { framing: 'raw' }, h),
      listenUnix(path, () => {}),
    ];
    objs[1].send(Buffer.alloc(4 * 1024 * 1024));
    if (mode === 'exit') setImmediate(() => process.exit(0));
    if (mode !== 'exit') for (const o of objs) o.unref();
    if (mode === 'worker') {
      const w = new Worker(${JSON.stringify(worker)}, { eval: true });
      w.on('message', () => w.terminate().then(() => console.log('terminated')));
    }
  `;
  for (const mode of ['exit', 'unref', 'worker']) {
    const result = await runNode(script, [mode, join(scratch, `exit-${mode}.sock`)]).done;
    assert.deepEqual([mode, result.code, result.err], [mode, 0, '']);
    if (mode === 'worker') assert.equal(result.out, 'terminated\n');
  }
});

// ---- channel -----------------------------------------------------------------------------

test('channel: length framing round trip, both ways', async () => {
  const [a, b] = native.socketpair();
  const both = O_CLOEXEC | O_NONBLOCK;
  for (const fd of [a, b]) assert.equal(fdFlags(fd) & both, both);
  const left = recorder(a, { framing: 'length', maxMessageBytes: MIB });
  const right = recorder(b, { framing: 'length', maxMessageBytes: MIB });
  const sizes = [0, 1, 100, 70_000, 3];
  const payloads = sizes.map((n, i) => Buffer.alloc(n, i + 1));
  for (const p of payloads) left.chan.send(p);
  for (const p of payloads) right.chan.send(p);
  assert.deepEqual((await right.count(sizes.length)).map((m) => m.data), payloads);
  assert.deepEqual((await left.count(sizes.length)).map((m) => m.data), payloads);
  assert.equal(left.chan.fd, a);
  left.chan.close();
  right.chan.close();
  assert.equal(left.chan.fd, -1);
});

test('channel: passed descriptors arrive and refer to the same file', async () => {
  const [a, b] = native.socketpair();
  const sender = recorder(a, { framing: 'length' });
  const receiver = recorder(b, { framing: 'length' });
  const file = tempFile('passed');
  sender.chan.send(Buffer.from('here'), [file.fd]);
  const [msg] = await receiver.count(1);
  assert.equal(msg.data.toString(), 'here');
  assert.equal(msg.fds.length, 1);
  assert.notEqual(msg.fds[0], file.fd);
  const theirs = fstatSync(msg.fds[0]);
  const mine = fstatSync(file.fd); // still ours: send() passed a duplicate
  assert.deepEqual([theirs.dev, theirs.ino], [mine.dev, mine.ino]);
  assert.equal(fdFlags(msg.fds[0]) & O_CLOEXEC, O_CLOEXEC);
  closeSync(msg.fds[0]);
  closeSync(file.fd);
  sender.chan.close();
  receiver.chan.close();
});

test('channel: many descriptors across many messages, none dropped', async () => {
  const files = [tempFile('many-0'), tempFile('many-1'), tempFile('many-2')];
  const inodes = files.map((f) => fstatSync(f.fd).ino);
  const before = fdCount();
  const [a, b] = native.socketpair();
  const sender = recorder(a, { framing: 'length' });
  const receiver = recorder(b, { framing: 'length', maxFds: 3 });
  // Message i carries i % 4 descriptors (of file i % 3), back to back, without waiting.
  const total = 600;
  for (let i = 0; i < total; i++) {
    const fds = Array.from({ length: i % 4 }, () => files[i % 3].fd);
    sender.chan.send(Buffer.from(JSON.stringify({ i })), fds);
  }
  const messages = await receiver.count(total);
  messages.forEach((m, i) => {
    assert.equal((JSON.parse(m.data.toString()) as { i: number }).i, i);
    assert.equal(m.fds.length, i % 4, `message ${i}`);
    for (const fd of m.fds) {
      assert.equal(fstatSync(fd).ino, inodes[i % 3]);
      closeSync(fd);
    }
  });
  sender.chan.close();
  receiver.chan.close();
  assert.equal(fdCount(), before);
  for (const f of files) closeSync(f.fd);
});

test('channel: an oversize message or too many descriptors close with EMSGSIZE', async () => {
  const before = fdCount();
  // 1. Too many bytes.
  const [a, b] = native.socketpair();
  const big = recorder(a, { framing: 'length' });
  const small = recorder(b, { framing: 'length', maxMessageBytes: 1000 });
  big.chan.send(Buffer.alloc(1000));
  big.chan.send(Buffer.alloc(1001));
  const err = (await small.closing()).err;
  assert.equal((err as NodeJS.ErrnoException).code, 'EMSGSIZE');
  assert.equal(small.messages.length, 1);
  assert.equal(small.chan.fd, -1);
  await big.closing(); // its peer is gone
  // 2. Too many descriptors: the ones that came are closed, not leaked.
  const [c, d] = native.socketpair();
  const many = recorder(c, { framing: 'length' });
  const few = recorder(d, { framing: 'length', maxFds: 2 });
  many.chan.send(Buffer.from('x'), [0, 1, 2]);
  assert.equal(((await few.closing()).err as NodeJS.ErrnoException).code, 'EMSGSIZE');
  many.chan.close();
  assert.equal(fdCount(), before);
});

test('channel: raw framing delivers bytes as they come, descriptors with them', async () => {
  const [a, b] = native.socketpair();
  const sender = recorder(a, { framing: 'raw' });
  const receiver = recorder(b, { framing: 'raw', maxFds: 1 });
  sender.chan.send(Buffer.from('{"execute":"getfd"}\n'), [1]);
  const [first] = await receiver.count(1);
  assert.equal(first.data.toString(), '{"execute":"getfd"}\n');
  assert.equal(first.fds.length, 1);
  closeSync(first.fds[0]);
  sender.chan.send(Buffer.from('hello '));
  sender.chan.send(Buffer.from('world'));
  const bytes = (from: number) => Buffer.concat(receiver.messages.slice(from).map((m) => m.data));
  await waitFor('all bytes', () => bytes(0).length === 31);
  assert.equal(bytes(1).toString(), 'hello world');
  assert.throws(() => sender.chan.send(Buffer.alloc(0), [1]), { name: 'TypeError' });
  sender.chan.close();
  receiver.chan.close();
});

test('channel: EOF closes without an error, a reset with one, close() calls nothing', async () => {
  // 1. EOF.
  const [a, b] = native.socketpair();
  const left = recorder(a, { framing: 'length' });
  const right = recorder(b, { framing: 'length' });
  left.chan.close();
  assert.deepEqual(await right.closing(), { err: undefined });
  assert.equal(left.closed(), undefined);
  assert.throws(() => left.chan.send(Buffer.from('x')), { code: 'EPIPE' });

  // 2. The peer closes with our bytes unread: a reset.
  const [c, d] = native.socketpair();
  const writer = recorder(c, { framing: 'raw' });
  writer.chan.send(Buffer.from('never read'));
  closeSync(d);
  const reset = (await writer.closing()).err as NodeJS.ErrnoException;
  assert.equal(reset.code, 'ECONNRESET');
  assert.equal(reset.syscall, 'recvmsg');

  // 3. Messages already read when JS closes are dropped, their descriptors closed.
  const before = fdCount();
  const [e, f] = native.socketpair();
  const talker = recorder(e, { framing: 'length' });
  for (let i = 0; i < 100; i++) talker.chan.send(Buffer.from('x'), [0]);
  const seen: number[][] = [];
  const quiet: Channel = native.channel(f, { framing: 'length' }, {
    message: (_data, fds) => {
      seen.push(fds);
      quiet.close(); // more messages are queued for JS behind this one
    },
    close: () => assert.fail('close() must not call the close handler'),
  });
  await talker.closing();
  assert.equal(seen.length, 1);
  closeSync(seen[0][0]);
  talker.chan.close();
  await waitFor('the dropped descriptors to be closed', () => fdCount() === before);
});

test('channel: a message of several MB crosses the socket buffer whole', async () => {
  const [a, b] = native.socketpair();
  const sender = recorder(a, { framing: 'length' });
  const receiver = recorder(b, { framing: 'length', maxMessageBytes: 16 * MIB });
  const payload = Buffer.alloc(8 * MIB);
  for (let i = 0; i < payload.length; i += 4) payload.writeUInt32LE(i, i);
  sender.chan.send(payload);
  assert.ok(sender.chan.pending > 0, 'the socket took all of it at once, nothing was queued');
  sender.chan.send(Buffer.from('after'));
  const [big, next] = await receiver.count(2);
  assert.ok(big.data.equals(payload));
  assert.equal(next.data.toString(), 'after');
  assert.equal(sender.chan.pending, 0);
  sender.chan.close();
  receiver.chan.close();
});

// ---- unix sockets ---------------------------------------------------------------------------

test('listenUnix, connectUnix and peerCred', async () => {
  const path = join(scratch, 'listen.sock');
  const accepted: number[] = [];
  const server = native.listenUnix(path, (fd) => accepted.push(fd));
  assert.equal(fdFlags(server.fd) & O_CLOEXEC, O_CLOEXEC);

  // 1. A client connects; the server side gets the connection, and each sees the other.
  const client = native.connectUnix(path);
  assert.equal(fdFlags(client) & (O_CLOEXEC | O_NONBLOCK), O_CLOEXEC | O_NONBLOCK);
  const [conn] = await waitFor('a connection', () => accepted.length > 0 && accepted);
  const self = { uid: process.getuid!(), gid: process.getgid!(), pid: process.pid };
  assert.deepEqual(native.peerCred(conn), self);
  assert.deepEqual(native.peerCred(client), self);

  // 2. The two ends talk through channels.
  const c = recorder(client, { framing: 'length' });
  const s = recorder(conn, { framing: 'length' });
  c.chan.send(Buffer.from('ping'));
  assert.equal((await s.count(1))[0].data.toString(), 'ping');
  c.chan.close();
  s.chan.close();

  // 3. Errors name the call and the path.
  const inUse = { code: 'EADDRINUSE', syscall: 'bind' };
  assert.throws(() => native.listenUnix(path, () => undefined), inUse);
  server.close();
  assert.equal(server.fd, -1);
  assert.throws(() => native.connectUnix(path), { code: 'ECONNREFUSED', syscall: 'connect', path });
  const missing = join(scratch, 'missing.sock');
  assert.throws(() => native.connectUnix(missing), {
    code: 'ENOENT',
    syscall: 'connect',
    message: `connect ${missing}: No such file or directory`,
  });
  const notSocket = tempFile('not-a-socket');
  assert.throws(() => native.peerCred(notSocket.fd), { code: 'ENOTSOCK' });
  closeSync(notSocket.fd);
});

// ---- tap and pty ------------------------------------------------------------------------------

function tunUsable(): string | false {
  try {
    closeSync(openSync('/dev/net/tun', 'r+'));
    return false;
  } catch (err) {
    return `/dev/net/tun cannot be opened: ${(err as Error).message}`;
  }
}

function linkExists(name: string): boolean {
  return spawnSync('ip', ['link', 'show', name], { stdio: 'ignore' }).status === 0;
}

test('openTap: a real tap while open, gone once closed', { skip: tunUsable() }, async () => {
  const tap = native.openTap('vmdtest%d');
  assert.match(tap.name, /^vmdtest\d+$/);
  assert.equal(fdFlags(tap.fd) & O_CLOEXEC, O_CLOEXEC);
  assert.ok(linkExists(tap.name));
  // A tap that is open is busy.
  assert.throws(() => native.openTap(tap.name), { code: 'EBUSY', syscall: 'ioctl' });
  closeSync(tap.fd);
  await waitFor(`${tap.name} to go away`, () => !linkExists(tap.name));
  assert.throws(() => native.openTap('x'.repeat(16)), { name: 'TypeError' });
});

test('openPty: a raw slave and a non-blocking master', async () => {
  const pty = native.openPty();
  assert.ok(existsSync(pty.path));
  assert.match(pty.path, /^\/dev\/pts\/\d+$/);
  for (const fd of [pty.master, pty.slave]) assert.equal(fdFlags(fd) & O_CLOEXEC, O_CLOEXEC);
  const buf = Buffer.alloc(64);
  assert.throws(() => readSync(pty.master, buf), { code: 'EAGAIN' });
  // Raw mode: the bytes come through unchanged (no "\r\n" for "\n", no echo).
  writeSync(pty.slave, 'a\nb');
  let got = '';
  await waitFor('the bytes on the master', () => {
    try {
      got += buf.toString('latin1', 0, readSync(pty.master, buf));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
    }
    return got.length >= 3;
  });
  assert.equal(got, 'a\nb');
  closeSync(pty.master);
  closeSync(pty.slave);
});

// ---- hypervisor ----------------------------------------------------------------------------

const QEMU = '/usr/bin/qemu-system-x86_64';
const kvmSkip = !existsSync('/dev/kvm')
  ? '/dev/kvm is absent'
  : !existsSync(QEMU)
    ? `${QEMU} is not installed`
    : false;

test('hypervisor: a KVM QEMU is listed, and terminated', { skip: kvmSkip }, async () => {
  // 1. A halted KVM guest with 2 vCPUs and 128 MiB.
  const log = openSync(join(scratch, 'qemu.log'), 'w+');
  const args = ['-accel', 'kvm', '-S', '-machine', 'q35', '-smp', '2', '-m', '128'];
  const qemu = start(QEMU, [QEMU, ...args, '-display', 'none', '-nodefaults', '-no-user-config'], [
    [log, 1],
    [log, 2],
  ]);
  closeSync(log);
  let exited: ExitStatus | undefined;
  void qemu.exit.then((s) => (exited = s));

  // 2. It shows up with its vCPUs, memory and resident size.
  const vm = await waitFor('the VM in hypervisorInfo', () => {
    if (exited) throw new Error(`qemu exited: ${readFileSync(join(scratch, 'qemu.log'), 'utf8')}`);
    return native.hypervisorInfo().find((v) => v.pid === qemu.pid && v.vcpus === 2);
  });
  assert.equal(vm.id, qemu.pid);
  assert.equal(vm.memoryBytes, 128 * MIB);
  assert.ok(vm.residentBytes > 0);
  assert.equal(vm.name, 'qemu-system-x86');

  // 3. Asked about given processes only, it lists theirs: this one's VM, no other process's.
  const only = native.hypervisorInfo([qemu.pid]);
  assert.equal(only.length, 1);
  assert.deepEqual({ ...only[0], residentBytes: 0 }, { ...vm, residentBytes: 0 });
  assert.deepEqual(native.hypervisorInfo([process.pid]), []);
  assert.deepEqual(native.hypervisorInfo([]), []);
  assert.throws(() => native.hypervisorInfo([0]), { name: 'TypeError' });
  assert.throws(() => native.hypervisorInfo('1' as unknown as number[]), { name: 'TypeError' });

  // 4. Terminating it is a SIGKILL.
  native.hypervisorTerminate(vm.id);
  assert.deepEqual(await qemu.exit, { pid: qemu.pid, code: null, signal: 'SIGKILL' });
  assert.equal(native.hypervisorInfo().find((v) => v.pid === qemu.pid), undefined);
});

test('hypervisorTerminate refuses a process that holds no VM', async () => {
  const sleeper = start('sleep', ['sleep', '30']);
  assert.throws(() => native.hypervisorTerminate(sleeper.pid), { code: 'ESRCH' });
  assert.equal(isGoneOrZombie(sleeper.pid), false);
  assert.equal(sleeper.watch.kill('SIGKILL'), true);
  await sleeper.exit;
  assert.throws(() => native.hypervisorTerminate(sleeper.pid), { code: 'ESRCH' });
  assert.throws(() => native.hypervisorTerminate(-1), { name: 'TypeError' });
});

// ---- leaks -----------------------------------------------------------------------------------

/** Two channels on a socketpair; resolves once both have closed, one way or the other. */
async function channelRound(i: number): Promise<void> {
  const [a, b] = native.socketpair();
  const left = recorder(a, { framing: i % 2 ? 'raw' : 'length' });
  const right = recorder(b, { framing: 'length', maxFds: 1 });
  switch (i % 4) {
    case 0: // both closed by JS
      left.chan.close();
      right.chan.close();
      return;
    case 1: // one closed by JS, the other sees EOF
      left.chan.send(Buffer.from('x'), [0]);
      left.chan.close();
      await right.closing();
      return;
    case 2: // a message with a descriptor, then EMSGSIZE for two
      left.chan.send(Buffer.from('x'), [0]);
      left.chan.send(Buffer.from('y'), [0, 1]);
      await right.closing();
      for (const m of right.messages) for (const fd of m.fds) closeSync(fd);
      left.chan.close();
      return;
    default: {
      // queued bytes and descriptors dropped by close()
      right.chan.close();
      const [c, d] = native.socketpair();
      const stuck = recorder(c, { framing: 'length' });
      while (stuck.chan.pending === 0) stuck.chan.send(Buffer.alloc(256 * 1024), [0, 1, 2]);
      stuck.chan.send(Buffer.from('more'), [0]);
      stuck.chan.close();
      left.chan.close();
      closeSync(d);
    }
  }
}

async function everyFunctionOnce(i: number): Promise<void> {
  if (i % 4 === 0) {
    const pty = native.openPty();
    closeSync(pty.master);
    closeSync(pty.slave);
  }
  if (i % 4 === 1 && !tunUsable()) closeSync(native.openTap('').fd);
  if (i % 4 === 2) native.hypervisorInfo();
  await channelRound(i);
  const fail = (fn: () => unknown) => assert.throws(fn);
  fail(() => native.spawn('/nonexistent', ['x'], {}, []));
  fail(() => native.connectUnix(join(scratch, 'nothing.sock')));
  fail(() => native.watchExit(1, () => undefined));
  const handlers = { message: () => undefined, close: () => undefined };
  fail(() => native.channel(12345, { framing: 'raw' }, handlers));
  fail(() => native.hypervisorTerminate(process.pid));
}

test('no descriptor and no child is leaked', async () => {
  await everyFunctionOnce(0); // the reactor's own descriptors are made once, on first use
  const server = native.listenUnix(join(scratch, 'leak.sock'), (fd) => closeSync(fd));
  server.close();
  const before = fdCount();

  // 1. 200 children, spawned and reaped through their watches.
  const exits = Array.from({ length: 200 }, () => start('true', ['true']).exit);
  assert.ok((await Promise.all(exits)).every((s) => s.code === 0));

  // 2. 200 rounds of channels, ptys, taps and failing calls.
  for (let i = 0; i < 200; i++) await everyFunctionOnce(i);
  for (let i = 0; i < 20; i++) {
    const path = join(scratch, `leak-${i}.sock`);
    const s = native.listenUnix(path, (fd) => closeSync(fd));
    assert.throws(() => native.listenUnix(path, () => undefined));
    closeSync(native.connectUnix(path));
    s.close();
  }

  // 3. Everything is back where it was.
  const now = () => `${before} descriptors (now ${fdCount()}: ${fdLinks()})`;
  await waitFor(now, () => fdCount() === before);
  await waitFor('no children left', () => ourChildren().length === 0);
});
