// Pure parts of the QEMU engine and the core: command lines, parameter checks, stream
// headers, accelerator choice.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { chooseAccel } from '../../src/engine/accel.js';
import { buildQemuCommand } from '../../src/engine/qemu-args.js';
import type { LaunchSpec } from '../../src/engine/types.js';
import { VmdError } from '../../src/errors.js';
import { checkParams, checkVmName, defaultMac } from '../../src/vmm/params.js';
import { localAddresses } from '../../src/vmm/network.js';
import { encodeHeader } from '../../src/vmm/stream.js';
import type { VmConfig } from '../../src/vmm/types.js';

const BASE: LaunchSpec = {
  vmId: 7,
  name: 'web1',
  memoryBytes: 256 * 1024 * 1024,
  vcpus: 2,
  disks: [],
  nics: [],
  consoleFd: 40,
  marker: {},
};
const CTX = { accel: 'tcg' as const, machine: 'q35', sandbox: true, qmpFd: 41, stderrFd: 42 };

function argAfter(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag ? [argv[i + 1]] : []));
}

test('qemu command: fixed descriptors, monitor, console and sandbox', () => {
  const { argv, fds } = buildQemuCommand(BASE, CTX);
  assert.deepEqual(fds.slice(0, 3), [[42, 2], [41, 3], [40, 4]]);
  assert.deepEqual(argAfter(argv, '-chardev'), [
    'socket,id=qmp,fd=3',
    'serial,id=con0,path=/dev/fdset/1',
  ]);
  assert.deepEqual(argAfter(argv, '-m'), ['256M']);
  assert.deepEqual(argAfter(argv, '-smp'), ['2']);
  assert.deepEqual(argAfter(argv, '-accel'), ['tcg']);
  assert.ok(argv.includes('-nodefaults') && argv.includes('-no-user-config'));
  assert.match(argAfter(argv, '-sandbox')[0], /^on,.*spawn=deny/);
  assert.ok(!argv.includes('-cpu'), 'tcg keeps the default CPU model');
});

test('qemu command: kernel, disks with a backing chain, taps, incoming', () => {
  const spec: LaunchSpec = {
    ...BASE,
    kernelFd: 50,
    initrdFd: 51,
    cmdline: 'console=ttyS0',
    disks: [
      { fds: [52], format: 'raw', readOnly: false },
      { fds: [53, 54], format: 'qcow2', readOnly: false },
    ],
    nics: [{ fd: 55, mac: 'fe:e1:bb:d1:00:07' }],
    incomingFd: 56,
  };
  const { argv, fds } = buildQemuCommand(spec, { ...CTX, accel: 'kvm' });
  const child = new Map(fds.map(([p, c]) => [p, c]));
  assert.equal(new Set(fds.map(([, c]) => c)).size, fds.length, 'child numbers are unique');
  assert.deepEqual(argAfter(argv, '-kernel'), [`/proc/self/fd/${child.get(50)}`]);
  assert.deepEqual(argAfter(argv, '-initrd'), [`/proc/self/fd/${child.get(51)}`]);
  assert.deepEqual(argAfter(argv, '-append'), ['console=ttyS0']);
  assert.deepEqual(argAfter(argv, '-add-fd'), [
    'fd=4,set=1',
    `fd=${child.get(52)},set=2`,
    `fd=${child.get(53)},set=3`,
    `fd=${child.get(54)},set=4`,
  ]);
  const blockdevs = argAfter(argv, '-blockdev');
  assert.ok(blockdevs.includes('driver=raw,node-name=hd0,file=hd0-f'));
  assert.ok(blockdevs.includes('driver=qcow2,node-name=hd1,file=hd1-f,backing=hd1-b1'));
  assert.ok(blockdevs.includes('driver=file,node-name=hd1-b1-f,filename=/dev/fdset/4,read-only=on'));
  assert.deepEqual(argAfter(argv, '-netdev'), [`tap,id=net0,fd=${child.get(55)}`]);
  assert.deepEqual(argAfter(argv, '-incoming'), [`fd:${child.get(56)}`]);
  assert.deepEqual(argAfter(argv, '-cpu'), ['host']);
});

test('vm names follow vmctl rules', () => {
  assert.equal(checkVmName('web-1.example_2'), undefined);
  assert.match(checkVmName('x'.repeat(64))!, /too long/);
  assert.equal(checkVmName('x'.repeat(63)), undefined);
  for (const bad of ['-a', '.a', '_a', 'a b', 'a/b', '']) assert.ok(checkVmName(bad), bad);
});

test('parameter checks name the problem', () => {
  const kernel = { fd: 3 };
  const cases: [object, RegExp][] = [
    [{ name: 'a', kernel, memoryBytes: 1000 }, /memory size must be at least 1M/],
    [{ name: 'a', kernel, memoryBytes: 2 ** 50 }, /exceeds the host/],
    [{ name: 'a', kernel, vcpus: 0 }, /vcpus must be/],
    [{ name: 'a', disks: Array(5).fill({ image: kernel, format: 'raw' }) }, /too many disks/],
    [{ name: 'a', kernel, nics: Array(5).fill({}) }, /too many network interfaces/],
    [{ name: 'a' }, /no kernel or disk\/cdrom specified/],
    [{ name: 'a', kernel, nics: [{ lladdr: 'zz' }] }, /invalid lladdr/],
  ];
  for (const [params, re] of cases) {
    assert.throws(
      () => checkParams(params as never, 2 ** 40),
      (err: unknown) => err instanceof VmdError && err.code === 'usage' && re.test(err.message),
    );
  }
});

test('macs and local addresses follow vmd', () => {
  assert.equal(defaultMac(3, 0), 'fe:e1:bb:d1:00:03');
  assert.equal(defaultMac(258, 1), 'fe:e1:bb:d2:01:02');
  assert.deepEqual(localAddresses(1, 0), { host: '100.64.1.2', guest: '100.64.1.3' });
  assert.deepEqual(localAddresses(2, 1), { host: '100.64.2.4', guest: '100.64.2.5' });
  assert.throws(() => localAddresses(300, 0, '10.0.0.0/16'), /range exceeded/);
});

test('stream header: layout and checksum', () => {
  const config: VmConfig = { name: 'a', memoryBytes: 1 << 20, vcpus: 1, disks: [], nics: [] };
  const header = encodeHeader(config);
  assert.equal(header.subarray(0, 10).toString('latin1'), 'vmd-ts-vm\n');
  assert.equal(header.readUInt32BE(10), 1);
  const length = header.readUInt32BE(14);
  assert.deepEqual(JSON.parse(header.subarray(18, 18 + length).toString()), config);
  assert.equal(header.length, 18 + length + 4);
});

test('accel auto: PVM and missing /dev/kvm mean tcg, with the reason', () => {
  const dir = mkdtempSync(join(tmpdir(), 'accel-'));
  const kvm = join(dir, 'kvm');
  const pvm = join(dir, 'kvm_pvm');
  assert.deepEqual(chooseAccel('auto', { kvmDevice: kvm, pvmModule: pvm }), {
    accel: 'tcg',
    reason: `using tcg: ${kvm} missing`,
  });
  assert.throws(() => chooseAccel('kvm', { kvmDevice: kvm, pvmModule: pvm }), /accel kvm/);
  writeFileSync(kvm, '');
  assert.equal(chooseAccel('auto', { kvmDevice: kvm, pvmModule: pvm }).accel, 'kvm');
  writeFileSync(pvm, '');
  const choice = chooseAccel('auto', { kvmDevice: kvm, pvmModule: pvm });
  assert.equal(choice.accel, 'tcg');
  assert.match(choice.reason, /PVM/);
  assert.equal(chooseAccel('kvm', { kvmDevice: kvm, pvmModule: pvm }).accel, 'kvm');
  assert.equal(chooseAccel('tcg').accel, 'tcg');
});
