// vmd as a process: its control socket under abuse, SIGHUP reload and SIGTERM with VMs
// running. Files are passed as descriptors, as vmctl does.
import assert from 'node:assert/strict';
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { connect, type Client } from '../../src/client.js';
import { channel, connectUnix } from '../../src/native.js';
import { run, startDaemon, VMD, type RunningDaemon } from '../helpers/daemon.js';
import { GUEST_CMDLINE, INITRD, KERNEL, vmTaps, waitUntil } from '../helpers/vm.js';

const CMDLINE = GUEST_CMDLINE;

/** A raw connection: send exactly these bytes, collect the replies. */
function rawConnection(socket: string) {
  const replies: Record<string, unknown>[] = [];
  let closed: Error | null | undefined;
  const chan = channel(connectUnix(socket), { framing: 'length', maxMessageBytes: 1 << 20 }, {
    message: (data, fds) => {
      fds.forEach((fd) => closeSync(fd));
      replies.push(JSON.parse(data.toString()) as Record<string, unknown>);
    },
    close: (err) => (closed = err ?? null),
  });
  return { chan, replies, closed: () => closed };
}

async function startGuest(client: Client, name: string, extra = '') {
  const fds = [openSync(KERNEL, 'r'), openSync(INITRD, 'r')];
  try {
    return await client.start(
      {
        name,
        memoryBytes: 256 << 20,
        kernel: { fd: 0, path: KERNEL },
        initrd: { fd: 1, path: INITRD },
        cmdline: `${CMDLINE} ${extra}`,
        nics: [{}],
      },
      fds,
    );
  } finally {
    fds.forEach((fd) => closeSync(fd));
  }
}

describe('the control socket', () => {
  let vmd: RunningDaemon;

  before(async () => {
    vmd = await startDaemon();
  });
  after(async () => {
    assert.equal(await vmd.stop(), 0);
  });

  test('is a 0660 socket', () => {
    const st = statSync(vmd.socket);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o660);
  });

  test('malformed and wrong-typed messages get errors and the connection stays usable', async () => {
    const c = rawConnection(vmd.socket);
    const bad = [
      'not json',
      JSON.stringify({ verb: 'status' }),
      JSON.stringify({ id: 2, verb: 'fly' }),
      JSON.stringify({ id: 3, verb: 'start', args: { name: 42 } }),
      JSON.stringify({ id: 4, verb: 'stop', args: { target: 'x', force: 'yes' } }),
      JSON.stringify({ id: 5, verb: 'status', args: { extra: true } }),
      JSON.stringify({ id: 6, verb: 'send', args: { target: 1 } }),
    ];
    for (const text of bad) c.chan.send(Buffer.from(text));
    c.chan.send(Buffer.from(JSON.stringify({ id: 7, verb: 'status', args: {} })));
    await waitUntil('all replies', () => c.replies.length === bad.length + 1);
    const errors = c.replies.slice(0, bad.length) as { ok: boolean; error: { code: string; message: string } }[];
    for (const r of errors) {
      assert.equal(r.ok, false);
      assert.equal(r.error.code, 'usage');
    }
    assert.match(errors[0].error.message, /not JSON/);
    assert.match(errors[2].error.message, /unknown verb "fly"/);
    assert.match(errors[3].error.message, /start: malformed arguments/);
    assert.match(errors[6].error.message, /send: expects 1 descriptor/);
    assert.deepEqual(c.replies.at(-1), { id: 7, ok: true, result: [] });
    c.chan.close();
  });

  test('an oversized message closes that connection only', async () => {
    const c = rawConnection(vmd.socket);
    c.chan.send(Buffer.alloc(1024 * 1024, 0x20));
    await waitUntil('the connection closed', () => c.closed() !== undefined);
    const client = await connect({ socket: vmd.socket });
    assert.deepEqual(await client.status(), []);
    client.close();
    assert.equal(vmd.proc.exitCode, null, 'vmd is still running');
  });
});

describe('detaching', () => {
  test('without -d vmd returns once it listens, and reports start-up errors', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmd-detach-'));
    chmodSync(dir, 0o755);
    const socket = join(dir, 'vmd.sock');
    const args = [VMD, '--socket', socket, '--state-dir', join(dir, 'run'), '--accel', 'tcg'];
    const bad = await run(process.execPath, [...args, '-f', join(dir, 'missing.conf')]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^vmd: .*missing\.conf: failed to open file: no such file or directory$/m);
    const good = await run(process.execPath, [...args, '-f', '/dev/null']);
    assert.equal(good.code, 0, good.stderr);
    assert.ok(statSync(socket).isSocket(), 'listening when the command returns');
    const client = await connect({ socket });
    assert.deepEqual(await client.status(), []);
    client.close();
    const pid = daemonPid(socket);
    assert.ok(pid, 'the daemon runs on');
    process.kill(pid, 'SIGTERM');
    await waitUntil('the daemon exits', () => !existsSync(`/proc/${pid}`));
  });
});

/** The pid of the vmd serving socket, from the command lines in /proc. */
function daemonPid(socket: string): number | undefined {
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      if (argv.includes(VMD) && argv.includes(socket)) return Number(name);
    } catch {
      // gone
    }
  }
  return undefined;
}

describe('signals', () => {
  test('SIGHUP reloads the configuration without touching running VMs', async () => {
    const vmd = await startDaemon(`vm "one" {\n disable\n memory 64M\n boot "${KERNEL}"\n}\n`);
    const client = await connect({ socket: vmd.socket });
    const running = await startGuest(client, 'running');
    assert.deepEqual((await client.status()).map((v) => v.name), ['one', 'running']);
    writeFileSync(join(vmd.dir, 'vm.conf'), `vm "two" {\n disable\n memory 64M\n boot "${KERNEL}"\n}\n`);
    vmd.proc.kill('SIGHUP');
    await waitUntil('reloaded', async () => {
      const names = (await client.status()).map((v) => v.name).sort();
      return names.join() === 'running,two';
    });
    const after = (await client.status('running'))[0];
    assert.equal(after.pid, running.pid);
    client.close();
    assert.equal(await vmd.stop(), 0);
  });

  test('SIGTERM stops every VM, gracefully, and leaves nothing behind', async () => {
    const vmd = await startDaemon('', ['--shutdown-timeout', '5']);
    const client = await connect({ socket: vmd.socket });
    const vms = await Promise.all([startGuest(client, 'a'), startGuest(client, 'b', 'guest.powerbutton=ignore')]);
    client.close();
    assert.equal(vmTaps().length, 2);
    assert.equal(await vmd.stop(), 0);
    for (const vm of vms) {
      assert.throws(() => readFileSync(`/proc/${vm.pid}/stat`), 'the VM process is gone');
    }
    assert.deepEqual(vmTaps(), []);
    assert.match(vmd.log(), /vm a \(id \d+\): exited/);
    assert.match(vmd.log(), /vm b \(id \d+\): still running after 5000ms, forcing/);
  });
});
