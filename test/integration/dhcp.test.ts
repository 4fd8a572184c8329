// DHCP on local interfaces through the core, with real guests (TCG): each guest asks udhcpc
// for its address and gets its end of the link, reaches the host over it, and once the last
// VM is gone the server has left no socket, descriptor or tap behind.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';

import {
  BOOT_TIMEOUT_MS,
  fdCount,
  fdTargets,
  guestParams,
  makeVmm,
  vmTaps,
  waitUntil,
} from '../helpers/vm.js';

// busybox sh asks for the cursor position (ESC [6n) right after its prompt.
// eslint-disable-next-line no-control-regex
const PROMPT = /\/ # (?:\x1b\[6n)?$/;
const DHCP_PORT_HEX = '0043';

const vmm = makeVmm();

after(async () => {
  await vmm.shutdown(5_000);
});

/** Local addresses of IPv4 UDP sockets on port 67, from /proc/net/udp. */
function dhcpListeners(): string[] {
  return readFileSync('/proc/net/udp', 'latin1')
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/)[1] ?? '')
    .filter((local) => local.endsWith(`:${DHCP_PORT_HEX}`));
}

/** Types a line into a VM's console and waits for the answer pattern after it. */
async function ask(id: number, line: string, answer: RegExp, timeoutMs = 20_000): Promise<void> {
  const console = vmm.console(id);
  const from = console.offset;
  await console.input(Buffer.from(line + '\n'));
  await console.waitFor(answer, timeoutMs, from);
}

/** Starts a DHCP guest on one local NIC and waits for its lease and its shell. */
async function leasedVm(name: string): Promise<number> {
  const info = await vmm.start(guestParams(name, 'guest.dhcp', { nics: [{ local: true }] }), {
    uid: 0,
  });
  const console = vmm.console(info.id);
  const host = `100\\.64\\.${info.id}\\.2`;
  const guest = `100\\.64\\.${info.id}\\.3`;
  const lease = new RegExp(`GUEST-DHCP: eth0 ${guest}/31 router ${host}\\r?\\n`);
  await console.waitFor(lease, BOOT_TIMEOUT_MS);
  const nic = new RegExp(`GUEST-NIC: eth0 [0-9a-f:]+ ${guest}/31\\r?\\n`);
  await console.waitFor(nic, BOOT_TIMEOUT_MS);
  await console.waitFor(/GUEST-READY/, BOOT_TIMEOUT_MS);
  await console.waitFor(PROMPT, BOOT_TIMEOUT_MS);
  return info.id;
}

describe('DHCP on local interfaces', () => {
  test('a VM without a local interface opens no DHCP socket', async () => {
    assert.deepEqual(dhcpListeners(), [], 'precondition: nothing else on UDP port 67');
    const info = await vmm.start(guestParams('plain', '', { nics: [{}] }), { uid: 0 });
    assert.deepEqual(dhcpListeners(), []);
    await vmm.terminate(info.id, { force: true });
  });

  test('two guests get their own addresses, reach the host, and leave nothing', async () => {
    // 1. Note what the process holds before any local interface exists.
    const fdsBefore = fdCount();
    assert.deepEqual(dhcpListeners(), []);

    // 2. Boot two guests at once: one listener hears both, the MAC tells them apart.
    const [a, b] = await Promise.all([leasedVm('dhcp-a'), leasedVm('dhcp-b')]);
    assert.notEqual(a, b);
    const listening = dhcpListeners();
    assert.ok(listening.includes(`00000000:${DHCP_PORT_HEX}`), listening.join(' '));
    assert.equal(listening.length, 3, 'the listener and one reply socket per link');

    // 3. Each guest reaches the host end of its link.
    for (const id of [a, b]) {
      await ask(id, `ping -c 1 -W 2 100.64.${id}.2`, /1 packets received/);
    }

    // 4. The first VM's reply socket goes with it; the listener stays for the second.
    await vmm.terminate(a, { force: true });
    await waitUntil('vm a reply socket closed', () => dhcpListeners().length === 2);
    assert.ok(dhcpListeners().includes(`00000000:${DHCP_PORT_HEX}`));

    // 5. With the last VM, every socket, descriptor and tap is gone.
    await vmm.terminate(b, { force: true });
    await waitUntil('nothing on UDP port 67', () => dhcpListeners().length === 0);
    assert.equal(fdCount(), fdsBefore, fdTargets().join('\n'));
    assert.deepEqual(vmTaps(), []);
  });
});
