// The vmm core on real QEMU guests (TCG): start, stop in every way, exits, pause, send and
// receive, start failures, stale VM cleanup and descriptor hygiene.
import assert from 'node:assert/strict';
import { spawn as spawnChild } from 'node:child_process';
import { once } from 'node:events';
import {
  chmodSync,
  closeSync,
  copyFileSync,
  mkdtempSync,
  openSync,
  readFileSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';

import { VmdError } from '../../src/errors.js';
import { spawn, watchExit } from '../../src/native.js';
import { findStale, INSTANCE_VAR } from '../../src/vmm/stale.js';
import type { VmConfig, VmParams } from '../../src/vmm/types.js';
import type { VmEvent } from '../../src/vmm/vmm.js';
import {
  BOOT_TIMEOUT_MS,
  childPids,
  fdCount,
  fdTargets,
  guestParams,
  KERNEL,
  makeVmm,
  vmTaps,
  waitUntil,
} from '../helpers/vm.js';

const READY = /GUEST-READY/;
// busybox sh asks for the cursor position (ESC [6n) right after its prompt.
// eslint-disable-next-line no-control-regex
const PROMPT = /\/ # (?:\x1b\[6n)?$/;
const tmp = mkdtempSync(join(tmpdir(), 'vmd-vmm-test-'));

const vmm = makeVmm();
const events: VmEvent[] = [];
vmm.on('event', (e: VmEvent) => events.push(e));

/** Types a line into a VM's console and waits for the answer pattern after it. */
async function ask(id: number, line: string, answer: RegExp, timeoutMs = 20_000): Promise<void> {
  const console = vmm.console(id);
  const from = console.offset;
  await console.input(Buffer.from(line + '\n'));
  await console.waitFor(answer, timeoutMs, from);
}

async function bootedVm(name: string, extra = '', shell = true): Promise<number> {
  const info = await vmm.start(guestParams(name, extra), { uid: 0 });
  await vmm.console(info.id).waitFor(READY, BOOT_TIMEOUT_MS);
  if (shell) await vmm.console(info.id).waitFor(PROMPT, BOOT_TIMEOUT_MS);
  return info.id;
}

function openForReceive(config: VmConfig): VmParams {
  return {
    name: config.name,
    memoryBytes: config.memoryBytes,
    vcpus: config.vcpus,
    cmdline: config.cmdline,
    kernel: { fd: openSync(config.kernel!, 'r'), path: config.kernel },
    initrd: { fd: openSync(config.initrd!, 'r'), path: config.initrd },
  };
}

after(async () => {
  await vmm.shutdown(5_000);
});

describe('guests that boot', () => {
  let main: number;
  let deaf: number;
  let rebooter: number;

  before(async () => {
    [main, deaf, rebooter] = await Promise.all([
      bootedVm('main'),
      bootedVm('deaf', 'guest.powerbutton=ignore'),
      bootedVm('rebooter', 'guest.then=reboot', false),
    ]);
  });

  test('a booted VM shows in info with its process, tty and memory', () => {
    const info = vmm.lookup(main)!;
    assert.equal(info.state, 'running');
    assert.equal(info.name, 'main');
    assert.ok(info.pid && childPids().includes(info.pid));
    assert.match(info.tty ?? '', /^\/dev\/pts\/\d+$/);
    assert.equal(info.memoryBytes, 256 * 1024 * 1024);
    assert.ok((info.residentBytes ?? 0) > 16 * 1024 * 1024, 'resident memory is read');
    assert.equal(info.accel, 'tcg');
    const status = readFileSync(`/proc/${info.pid}/status`, 'latin1');
    assert.match(status, /^Uid:\s+65534\s/m, 'qemu runs unprivileged');
    assert.ok(events.some((e) => e.type === 'start' && e.vm.id === main));
  });

  test('the console answers', async () => {
    await ask(main, 'echo PONG-$((6*7))', /PONG-42/);
  });

  test('pause silences the console and unpause brings the answer', async () => {
    const paused = await vmm.pause(main);
    assert.equal(paused.state, 'paused');
    assert.equal(vmm.lookup(main)!.state, 'paused');
    const console = vmm.console(main);
    const from = console.offset;
    await console.input(Buffer.from('echo AFTER-$((1+2))\n'));
    // Nothing may come from a paused guest; a short quiet window is the observable.
    await assert.rejects(console.waitFor(/AFTER-3/, 1_000, from), { code: 'timeout' });
    await assert.rejects(vmm.pause(main), { code: 'state' });
    assert.equal((await vmm.unpause(main)).state, 'running');
    await console.waitFor(/AFTER-3/, 20_000, from);
  });

  test('a guest reboot keeps the VM, its id and its tty', async () => {
    const before = vmm.lookup(rebooter)!;
    const console = vmm.console(rebooter);
    await console.waitFor(/GUEST-REBOOT[\s\S]*GUEST-READY/, BOOT_TIMEOUT_MS);
    const now = vmm.lookup(rebooter)!;
    assert.equal(now.state, 'running');
    assert.equal(now.pid, before.pid);
    assert.equal(now.tty, before.tty);
    assert.ok(events.some((e) => e.type === 'reboot' && e.vm.id === rebooter));
    assert.equal(await vmm.terminate(rebooter, { force: true }), 'terminated');
  });

  test('a guest that ignores the power button is forced after the deadline', async () => {
    const started = Date.now();
    const result = await vmm.terminate(deaf, { timeoutMs: 3_000, wait: true });
    assert.equal(result, 'terminated');
    assert.ok(Date.now() - started >= 3_000, 'the deadline was honoured');
    const exit = await vmm.waitExit(deaf).catch(() => null);
    assert.equal(exit, null, 'a VM not from configuration is gone from the table');
    const ev = events.find((e) => e.type === 'exit' && e.vm.id === deaf)!;
    assert.equal(ev.exit!.reason, 'host-signal');
  });

  test('send writes the state and ends the VM; receive continues the same shell', async () => {
    await ask(main, 'export MARK=m$((40+2))x', PROMPT);
    const file = join(tmp, 'main.vm');
    const out = openSync(file, 'w');
    await vmm.send(main, out);
    closeSync(out);
    assert.equal(vmm.lookup(main), undefined, 'the sent VM has ended');
    assert.ok(statSync(file).size > 1024 * 1024);
    copyFileSync(file, join(tmp, 'main.copy'));

    const info = await vmm.receive(openSync(file, 'r'), {
      name: 'restored',
      uid: 0,
      open: openForReceive,
    });
    assert.equal(info.state, 'running');
    await ask(info.id, 'echo MARK=$MARK', /MARK=m42x/);
    const console = vmm.console(info.id);
    const exited = vmm.waitExit(info.id);
    assert.equal(await vmm.terminate(info.id), 'requested');
    assert.equal(await vmm.terminate(info.id), 'stopping', 'a second request reports the stop');
    const exit = await exited;
    assert.equal(exit.code, 0);
    assert.equal(exit.reason, 'guest-shutdown');
    assert.match(console.snapshot().data.toString(), /GUEST-POWEROFF/);
  });

  test('damaged, truncated and foreign streams are refused and leave nothing', async () => {
    const good = join(tmp, 'main.copy');
    const fdsBefore = fdCount();
    const corrupt = join(tmp, 'corrupt.vm');
    const bytes = readFileSync(good);
    bytes[20] ^= 0xff;
    writeFileSync(corrupt, bytes);
    const foreign = join(tmp, 'foreign.vm');
    writeFileSync(foreign, 'QEVM not ours at all');
    const truncated = join(tmp, 'truncated.vm');
    copyFileSync(good, truncated);
    truncateSync(truncated, Math.floor(bytes.length / 2));
    const cases: [string, RegExp][] = [
      [corrupt, /checksum mismatch/],
      [foreign, /not a vmd-ts VM stream/],
      [truncated, /vm "restored2": .+/],
    ];
    for (const [file, re] of cases) {
      await assert.rejects(
        vmm.receive(openSync(file, 'r'), { name: 'restored2', uid: 0, open: openForReceive }),
        (err: unknown) => err instanceof VmdError && re.test(err.message),
      );
      assert.equal(vmm.lookup('restored2'), undefined);
    }
    assert.equal(fdCount(), fdsBefore, fdTargets().join('\n'));
  });
});

describe('stops and exits without a boot', () => {
  test('force stop ends a VM at once', async () => {
    const info = await vmm.start(guestParams('forced'), { uid: 0 });
    assert.equal(await vmm.terminate(info.id, { force: true }), 'terminated');
    assert.equal(vmm.lookup(info.id), undefined);
    await assert.rejects(vmm.terminate(info.id), { code: 'notfound' });
  });

  test('a kernel only root can read still boots in an unprivileged VM process', async () => {
    const kernel = join(tmp, 'private-vmlinuz');
    copyFileSync(KERNEL, kernel);
    chmodSync(kernel, 0o600);
    const params = guestParams('private', '', { kernel: { fd: openSync(kernel, 'r'), path: kernel } });
    const info = await vmm.start(params, { uid: 0 });
    await vmm.console(info.id).waitFor(/GUEST-KERNEL/, BOOT_TIMEOUT_MS);
    assert.equal(await vmm.terminate(info.id, { force: true }), 'terminated');
  });

  test('kill -9 of the VM process is reported with the signal', async () => {
    const info = await vmm.start(guestParams('killed'), { uid: 0 });
    const exited = vmm.waitExit(info.id);
    process.kill(info.pid!, 'SIGKILL');
    const exit = await exited;
    assert.equal(exit.signal, 'SIGKILL');
    assert.equal(exit.code, null);
    const ev = events.find((e) => e.type === 'exit' && e.vm.id === info.id)!;
    assert.equal(ev.exit!.signal, 'SIGKILL');
  });

  test('a configured VM goes back to stopped and keeps its id', async () => {
    const id = vmm.define('configured', { uid: 0, gid: null });
    assert.equal(vmm.lookup(id)!.state, 'stopped');
    const info = await vmm.start(guestParams('configured'), { uid: 0, fromConfig: true });
    assert.equal(info.id, id);
    await assert.rejects(vmm.start(guestParams('configured'), { uid: 0 }), { code: 'state' });
    await vmm.terminate(id, { force: true });
    const after = vmm.lookup(id)!;
    assert.equal(after.state, 'stopped');
    assert.equal(after.pid, null);
    assert.equal(after.tty, null);
    await assert.rejects(vmm.terminate(id), { code: 'state' });
    assert.ok(vmm.undefine(id));
  });
});

describe('start failures name the cause and leak nothing', () => {
  test('bad parameters, bad descriptors and bad images', async () => {
    const fdsBefore = fdCount();
    const junk = join(tmp, 'junk.qcow2');
    writeFileSync(junk, Buffer.alloc(1024 * 1024));
    const cases: [VmParams, string, RegExp][] = [
      [guestParams('x'.repeat(64)), 'usage', /name too long/],
      [{ name: 'nokernel' }, 'usage', /no kernel or disk\/cdrom specified/],
      [
        { ...guestParams('badkernel', '', { kernel: { fd: 987 } }) },
        'engine',
        /vm "badkernel": .*(Bad file descriptor|EBADF)/,
      ],
      [
        guestParams('badimage', '', { disks: [{ image: { fd: openSync(junk, 'r+') }, format: 'qcow2' }] }),
        'engine',
        /vm "badimage": .*qcow2/,
      ],
      [
        guestParams('rodisk', '', { disks: [{ image: { fd: openSync(junk, 'r') }, format: 'raw' }] }),
        'engine',
        /vm "rodisk": .*Permission denied/,
      ],
    ];
    for (const [params, code, re] of cases) {
      await assert.rejects(vmm.start(params, { uid: 0 }), (err: unknown) => {
        assert.ok(err instanceof VmdError, String(err));
        assert.equal(err.code, code, err.message);
        assert.match(err.message, re);
        return true;
      });
      assert.equal(vmm.lookup(params.name), undefined, `${params.name} is not in the table`);
    }
    assert.equal(fdCount(), fdsBefore, fdTargets().join('\n'));
    assert.deepEqual(vmTaps(), []);
  });
});

describe('descriptor and process hygiene', () => {
  test('50 start/stop cycles with a tap leave no descriptor, child or tap', async () => {
    const fdsBefore = fdCount();
    const childrenBefore = childPids().length;
    for (let i = 0; i < 50; i++) {
      const info = await vmm.start(guestParams(`cycle${i}`, '', { nics: [{}] }), { uid: 0 });
      assert.deepEqual(vmTaps(), [`vm${info.id}-if0`]);
      await vmm.terminate(info.id, { force: true });
    }
    await waitUntil('children reaped', () => childPids().length === childrenBefore);
    assert.equal(fdCount(), fdsBefore, fdTargets().join('\n'));
    assert.deepEqual(vmTaps(), []);
  });

  test('VMs left by an earlier instance are killed at init', async () => {
    const instance = `stale-${process.pid}`;
    const pid = spawn(
      '/usr/bin/qemu-system-x86_64',
      ['qemu-system-x86_64', '-accel', 'tcg', '-S', '-nodefaults', '-display', 'none'],
      { [INSTANCE_VAR]: instance },
      [],
      { deathSignal: 0 },
    );
    const gone = new Promise((resolve) => watchExit(pid, resolve));
    await waitUntil('the marker is visible', () => findStale(instance).includes(pid));
    const successor = makeVmm(instance);
    await successor.init();
    assert.deepEqual(findStale(instance), []);
    assert.equal(((await gone) as { signal: string }).signal, 'SIGKILL');
  });

  test('VM processes die with the process that started them, unprivileged too', async () => {
    const script = join(tmp, 'parent.mjs');
    const native = new URL('../../src/native.js', import.meta.url).href;
    writeFileSync(
      script,
      `import { spawn } from ${JSON.stringify(native)};
       // As VM processes do: another user (credential changes reset the death signal).
       const pid = spawn('/usr/bin/sleep', ['sleep', '600'], {}, [], { uid: 65534, gid: 65534 });
       process.stdout.write(pid + '\\n');
       setInterval(() => {}, 1000);`,
    );
    const parent = spawnChild(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const [line] = (await once(createInterface({ input: parent.stdout }), 'line')) as [string];
    const orphan = Number(line);
    assert.ok(isAlive(orphan));
    parent.kill('SIGKILL');
    await waitUntil('the orphan is gone', () => !isAlive(orphan));
  });
});

function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
}
