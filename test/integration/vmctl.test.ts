// vmctl and vmd end to end, as users run them: every verb on real guests, exit codes,
// golden output, `vmd -n`, and the permission model with real unprivileged users.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ReadStream } from 'node:tty';
import { after, before, describe, test } from 'node:test';

import { openPty } from '../../src/native.js';
import type { VmInfo } from '../../src/vmm/types.js';
import { run, startDaemon, VMCTL, VMD, vmctl, type RunningDaemon } from '../helpers/daemon.js';
import { GUEST_CMDLINE, INITRD, KERNEL, ROOT, vmTaps, waitUntil } from '../helpers/vm.js';

const GROUP = 'vmdtest';
const OPS = 'vmdtest-ops';
const USERS = {
  alice: { name: 'vmdtest-alice', groups: [GROUP] },
  bob: { name: 'vmdtest-bob', groups: [GROUP] },
  carol: { name: 'vmdtest-carol', groups: [GROUP, OPS] },
  eve: { name: 'vmdtest-eve', groups: [] as string[] },
};
type Who = keyof typeof USERS;
const ids: Record<Who, { uid: number; gid: number }> = {} as never;
const CMDLINE = GUEST_CMDLINE;
const GUEST = `boot "${KERNEL}"\n\tinitrd "${INITRD}"\n\tcmdline "${CMDLINE}"\n\tmemory 128M`;
const FIXTURES = join(ROOT, 'test', 'fixtures');

function sh(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function removeUsers(): void {
  for (const u of Object.values(USERS)) {
    try {
      sh('userdel', [u.name]);
    } catch {
      // not there
    }
  }
  for (const g of [GROUP, OPS]) {
    try {
      sh('groupdel', [g]);
    } catch {
      // not there
    }
  }
}

function createUsers(): void {
  removeUsers();
  sh('groupadd', [GROUP]);
  sh('groupadd', [OPS]);
  for (const [who, u] of Object.entries(USERS) as [Who, (typeof USERS)[Who]][]) {
    const extra = u.groups.length ? ['-G', u.groups.join(',')] : [];
    sh('useradd', ['-M', '-N', '-g', 'nogroup', '-s', '/usr/sbin/nologin', ...extra, u.name]);
    const uid = Number(execFileSync('id', ['-u', u.name], { encoding: 'utf8' }));
    ids[who] = { uid, gid: 65534 };
  }
}

/** The status table with the columns that change between runs masked, at their widths. */
function maskTable(text: string): string {
  return text
    .split('\n')
    .map((line) => {
      if (!/^\s+\d+ +\d+ /.test(line)) return line;
      return line.slice(0, 6) + '  PID' + line.slice(11, 26) + ' CURMEM' + line.slice(33, 34) +
        '    TTY' + line.slice(41);
    })
    .join('\n');
}

/**
 * vmctl console on a real terminal: raw mode, typed input reaches the guest, and `~.` at the
 * start of a line detaches with cu's [EOT].
 */
async function interactiveConsole(name: string): Promise<void> {
  const pty = openPty();
  const child = spawn(process.execPath, [VMCTL, '--socket', vmd.socket, 'console', name], {
    stdio: [pty.slave, pty.slave, pty.slave],
  });
  closeSync(pty.slave);
  const screen = new ReadStream(pty.master);
  let text = '';
  screen.on('data', (d: Buffer) => (text += d.toString()));
  screen.on('error', () => undefined);
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const type = (s: string) => writeSync(pty.master, s);
  // Raw mode is on once the terminal stops echoing; then the guest answers what is typed.
  type('echo TYPED-$((2*21))\r');
  await waitUntil('the guest answers typed input', () => /TYPED-42/.test(text), 20_000);
  type('\r~.');
  assert.equal(await exited, 0);
  await waitUntil('[EOT]', () => text.includes('[EOT]'), 5_000);
  screen.destroy();
}

/** The VMs of a `status --json` run. */
function statusOf(r: { stdout: string }): VmInfo[] {
  return JSON.parse(r.stdout) as VmInfo[];
}

let vmd: RunningDaemon;
const as = (who: Who, args: string[]) => vmctl(vmd, args, ids[who]);
const root = (args: string[], input?: string | Buffer) => vmctl(vmd, args, { input });

before(async () => {
  createUsers();
  vmd = await startDaemon(
    [
      `socket owner :${GROUP}`,
      `vm "alicevm" {\n\tdisable\n\t${GUEST}\n\towner ${USERS.alice.name}\n}`,
      `vm "opsvm" {\n\tdisable\n\t${GUEST}\n\towner :${OPS}\n}`,
      `vm "atboot" {\n\t${GUEST}\n}`,
      `vm "tmpl" {\n\tdisable\n\t${GUEST}\n\tallow instance { memory, owner ${USERS.bob.name} }\n}`,
      'vm "tmpl" instance "fromconf" {\n\tdisable\n\tmemory 64M\n}',
      '',
    ].join('\n'),
  );
});

after(async () => {
  const code = await vmd.stop();
  removeUsers();
  assert.equal(code, 0, vmd.log());
  assert.deepEqual(vmTaps(), []);
});

describe('vmd -n', () => {
  for (const name of ['ok', 'bad']) {
    test(`${name}.conf matches its golden output`, async () => {
      const dir = join(FIXTURES, 'vmd-n');
      const r = await run(process.execPath, [VMD, '-n', '-f', join(dir, `${name}.conf`)]);
      assert.equal(r.code, name === 'ok' ? 0 : 1);
      assert.equal(r.stdout, '');
      const golden = readFileSync(join(dir, `${name}.out`), 'utf8');
      assert.equal(r.stderr.split(`${dir}/`).join(''), golden);
    });
  }
});

describe('usage and lookup errors', () => {
  test('exit codes and messages for bad input', async () => {
    const cases: [string[], number, RegExp][] = [
      [['st'], 2, /^vmctl: ambiguous argument: st$/m],
      [['frobnicate'], 2, /^vmctl: unknown argument: frobnicate$/m],
      [['stop', 'nosuchvm'], 3, /^vmctl: stop: vm "nosuchvm": not found$/m],
      [['pause', '99'], 3, /^vmctl: pause: vm 99: not found$/m],
      [['start', '-m', '10Q', '-b', KERNEL, 'x'], 2, /invalid memory size/],
      [['start', '-b', '/nonexistent/k', 'x'], 3, /\/nonexistent\/k/],
      [['wait', '--for', 'soon', 'alicevm'], 2, /--for/],
    ];
    for (const [args, code, re] of cases) {
      const r = await root(args);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stdout, '');
    }
  });

  test('--json errors are one object on stderr and nothing on stdout', async () => {
    const r = await root(['--json', 'stop', 'nosuchvm']);
    assert.equal(r.code, 3);
    assert.equal(r.stdout, '');
    const body = JSON.parse(r.stderr) as { error: { code: string; message: string }; exitCode: number };
    assert.equal(body.error.code, 'notfound');
    assert.equal(body.error.message, 'vm "nosuchvm": not found');
    assert.equal(body.exitCode, 3);
  });

  test('--help documents the exit codes', async () => {
    const r = await root(['--help']);
    assert.equal(r.code, 0);
    for (const n of [0, 1, 2, 3, 4, 5, 6, 7]) assert.match(r.stdout, new RegExp(`^\\s+${n}\\s`, 'm'));
  });
});

describe('every verb on a real guest', () => {
  test('an enabled VM from vm.conf starts with vmd; reset stops and forgets everything', async () => {
    let r = await root(['wait', '--for', 'console:GUEST-READY', '--timeout', '60', 'atboot']);
    assert.equal(r.code, 0, r.stderr);
    r = await root(['show', '-r']);
    assert.match(r.stdout, /running atboot$/m);
    assert.doesNotMatch(r.stdout, /alicevm/, '-r shows running VMs only');
    assert.equal((await root(['reset', 'vms'])).code, 0);
    assert.equal(statusOf(await root(['status', '--json'])).length, 0);
    assert.equal((await root(['reload'])).code, 0);
    assert.deepEqual(statusOf(await root(['status', '--json'])).map((v) => v.name).sort(),
      ['alicevm', 'atboot', 'fromconf', 'opsvm', 'tmpl']);
    r = await root(['stop', '-w', '--timeout', '60', 'atboot']);
    assert.equal(r.code, 0, r.stderr);
  });

  test('an engine failure exits 7 and names the cause', async () => {
    // A qcow2 magic with a version QEMU does not know: vmctl passes it, QEMU refuses it.
    const junk = join(vmd.dir, 'junk.qcow2');
    const image = Buffer.alloc(1 << 20);
    image.write('QFI\xfb', 'latin1');
    image.writeUInt32BE(99, 4);
    writeFileSync(junk, image);
    const r = await root(['start', '-b', KERNEL, '-d', junk, 'broken']);
    assert.equal(r.code, 7, r.stderr);
    assert.match(r.stderr, /^vmctl: start: vm "broken": .*qcow2 version 99/m);
    assert.equal(statusOf(await root(['status', '--json'])).some((v) => v.name === 'broken'), false);
  });

  test('start -w, status table and JSON, console, pause, wait, stop', async () => {
    let r = await root(['start', '-w', '-m', '128M', '-b', KERNEL, '--initrd', INITRD,
      '--cmdline', CMDLINE, '-i', '1', 'web']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^vmctl: started vm \d+ successfully, tty \/dev\/pts\/\d+$/m);
    assert.equal((await root(['start', '-b', KERNEL, 'web'])).code, 5, 'already running');

    r = await root(['status']);
    assert.equal(r.code, 0);
    assert.equal(maskTable(r.stdout), readFileSync(join(FIXTURES, 'cli', 'e2e-status.txt'), 'utf8'));

    r = await root(['status', '--json', 'web']);
    const [web] = JSON.parse(r.stdout) as { name: string; state: string; pid: number; interfaces: unknown[] }[];
    assert.equal(web.name, 'web');
    assert.equal(web.state, 'running');
    assert.ok(statSync(`/proc/${web.pid}`).isDirectory());
    assert.equal(web.interfaces.length, 1);

    r = await root(['console', '--log', 'web']);
    assert.match(r.stdout, /GUEST-NIC: eth0 fe:e1:bb:d1:00:\w\w/);
    assert.match(r.stdout, /GUEST-READY/);

    r = await root(['console', 'web'], 'echo ANSWER-$((6*7))\n');
    assert.match(r.stdout, /ANSWER-42/);
    await interactiveConsole('web');

    r = await root(['pause', 'web']);
    assert.equal(r.code, 0);
    assert.match(r.stderr, /paused vm \d+ successfully/);
    assert.equal(statusOf(await root(['status', '--json', 'web']))[0].state, 'paused');
    assert.equal((await root(['unpause', 'web'])).code, 0);

    r = await root(['wait', '--for', 'stopped', '--timeout', '1', 'web']);
    assert.equal(r.code, 6, r.stderr);
    r = await root(['wait', '--for', 'console:GUEST-R[E]ADY', '--timeout', '5', 'web']);
    assert.equal(r.code, 0, r.stderr);

    r = await root(['stop', '--timeout', '30', 'web']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout + r.stderr, /terminated vm \d+/);
    r = await root(['stop', 'web']);
    assert.equal(r.code, 0, 'stopping a stopped VM is fine');
    assert.match(r.stdout + r.stderr, /not running/);
    assert.equal((await root(['wait', 'web'])).code, 0);
  });

  test('send to a file and receive from it keep the guest going', async () => {
    let r = await root(['start', '-w', '-b', KERNEL, '--initrd', INITRD, '--cmdline', CMDLINE,
      '-m', '128M', 'mover']);
    assert.equal(r.code, 0, r.stderr);
    await root(['console', 'mover'], 'export KEPT=k$((1+1))k\n');
    r = await root(['wait', '--for', 'console:export KEPT', '--timeout', '10', 'mover']);
    assert.equal(r.code, 0, r.stderr);
    const dump = join(vmd.dir, 'mover.vm');
    r = await run('sh', ['-c', `node ${join(ROOT, 'bin', 'vmctl.cjs')} --socket ${vmd.socket} send mover > ${dump}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /sent vm \d+ successfully/);
    assert.ok(statSync(dump).size > 1 << 20);
    r = await run('sh', ['-c', `node ${join(ROOT, 'bin', 'vmctl.cjs')} --socket ${vmd.socket} receive moved < ${dump}`]);
    assert.equal(r.code, 0, r.stderr);
    r = await root(['console', 'moved'], 'echo KEPT=$KEPT\n');
    assert.match(r.stdout, /KEPT=k2k/);
    r = await run('sh', ['-c', `echo garbage | node ${join(ROOT, 'bin', 'vmctl.cjs')} --socket ${vmd.socket} receive junk`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not a vmd-ts VM stream/);
    assert.equal((await root(['stop', '-f', 'moved'])).code, 0);
  });

  test('run exits with the status the guest reports', async () => {
    const r = await root(['run', '-b', KERNEL, '--initrd', INITRD, '-m', '128M',
      '--cmdline', `${CMDLINE} guest.exit=3`, '--timeout', '120', 'ci']);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stdout, /vmd-exit: 3/);
    assert.equal(statusOf(await root(['status', '--json'])).some((v) => v.name === 'ci'), false);
  });

  test('events, log and the admin verbs', async () => {
    const events = spawn(process.execPath, [VMCTL, '--socket', vmd.socket, 'events', '--json'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const seen: { type: string; vm: { name: string }; exit?: { signal: string } }[] = [];
    const reader = createInterface({ input: events.stdout });
    reader.on('line', (line) => seen.push(JSON.parse(line) as (typeof seen)[number]));
    // The subscription is live once vmd has logged the request (vmd runs with -vv).
    await waitUntil('the subscription', () => /: events \{\}/.test(vmd.log()));
    const r = await root(['start', '-b', KERNEL, '--initrd', INITRD, '-m', '128M', 'ev']);
    assert.equal(r.code, 0, r.stderr);
    await root(['stop', '-f', 'ev']);
    await waitUntil('the exit event', () => seen.some((e) => e.type === 'exit'));
    events.kill();
    const mine = seen.filter((e) => e.vm.name === 'ev').map((e) => e.type);
    assert.deepEqual(mine, ['start', 'exit']);
    assert.equal((await root(['log', 'verbose'])).code, 0);
    assert.equal((await root(['log', 'brief'])).code, 0);
    assert.equal((await root(['reload'])).code, 0);
    assert.equal((await root(['load', '/nonexistent.conf'])).code, 3);
  });
});

describe('instances', () => {
  test('from vm.conf and from vmctl start -t, within what the parent allows', async () => {
    const fromconf = statusOf(await root(['status', '--json', 'fromconf']))[0];
    assert.equal(fromconf.memoryBytes, 64 << 20, 'the instance sets its own memory');
    let r = await as('bob', ['start', '-t', 'tmpl', '-m', '96M', 'bobvm']);
    assert.equal(r.code, 0, r.stderr);
    const bobvm = statusOf(await root(['status', '--json', 'bobvm']))[0];
    assert.equal(bobvm.uid, ids.bob.uid);
    assert.equal(bobvm.memoryBytes, 96 << 20);
    assert.equal(bobvm.config.kernel, KERNEL, 'the kernel comes from the parent');
    assert.equal((await as('bob', ['stop', '-f', 'bobvm'])).code, 0);
    r = await as('bob', ['start', '-t', 'tmpl', '--cmdline', 'x', 'bob2']);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /vm "tmpl" does not allow instances to change boot/);
    r = await as('alice', ['start', '-t', 'tmpl', 'alice2']);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /instances of vm "tmpl" are not allowed/);
    r = await root(['start', '-t', 'nosuch', 'orphan']);
    assert.equal(r.code, 3, r.stderr);
  });
});

describe('permissions with real users', () => {
  test('a user starts, pauses and stops the VM they own', async () => {
    let r = await as('alice', ['start', '-w', 'alicevm']);
    assert.equal(r.code, 0, r.stderr);
    r = await as('alice', ['status', '--json', 'alicevm']);
    assert.equal(statusOf(r)[0].uid, ids.alice.uid);
    assert.equal((await as('alice', ['pause', 'alicevm'])).code, 0);
    assert.equal((await as('alice', ['unpause', 'alicevm'])).code, 0);
    r = await as('bob', ['stop', 'alicevm']);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /permission denied/);
    assert.equal((await as('bob', ['console', '--log', 'alicevm'])).code, 4);
    assert.equal((await as('bob', ['status'])).code, 0, 'everyone sees status');
    r = await as('alice', ['stop', '-f', 'alicevm']);
    assert.equal(r.code, 0, r.stderr);
  });

  test('group owners control a VM root started; others do not', async () => {
    assert.equal((await root(['start', 'opsvm'])).code, 0);
    assert.equal((await as('bob', ['pause', 'opsvm'])).code, 4);
    assert.equal((await as('carol', ['pause', 'opsvm'])).code, 0);
    assert.equal((await as('carol', ['unpause', 'opsvm'])).code, 0);
    assert.equal((await as('carol', ['stop', '-f', 'opsvm'])).code, 0);
  });

  test('only root creates VMs and uses the admin verbs', async () => {
    const r = await as('alice', ['start', '-b', KERNEL, 'mine']);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /only root may create VMs/);
    for (const args of [['reload'], ['log', 'verbose'], ['reset'], ['load', '/etc/vm.conf']]) {
      const res = await as('alice', args);
      assert.equal(res.code, 4, `${args.join(' ')}: ${res.stderr}`);
    }
    assert.equal((await as('bob', ['start', 'alicevm'])).code, 4, 'bob does not own alicevm');
  });

  test('a user outside the socket group cannot connect', async () => {
    const r = await as('eve', ['status']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /connect: .*vmd\.sock: permission denied/);
  });
});

