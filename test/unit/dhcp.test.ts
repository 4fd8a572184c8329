// The DHCP server's packet logic: requests built byte by byte, as a client sends them,
// and the replies checked field by field.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  answer,
  DHCP_TYPE,
  LEASE_SECONDS,
  localLeases,
  parseMessage,
  type DhcpLease,
  type DhcpMessage,
} from '../../src/vmm/dhcp.js';

const LEASE: DhcpLease = {
  mac: 'fe:e1:bb:d1:00:07',
  guest: '100.64.7.3',
  host: '100.64.7.2',
  netmask: '255.255.255.254',
};
const lookup = (mac: string) => (mac === LEASE.mac ? LEASE : undefined);

interface RequestFields {
  type: number;
  mac?: string;
  xid?: number;
  flags?: number;
  ciaddr?: number[];
  giaddr?: number[];
  /** Extra raw options, before END. */
  options?: number[];
}

/** A client message as the bytes on the wire, without the help of the code under test. */
function request(f: RequestFields): Buffer {
  const packet = Buffer.alloc(240);
  packet[0] = 1; // BOOTREQUEST
  packet[1] = 1; // Ethernet
  packet[2] = 6;
  packet.writeUInt32BE(f.xid ?? 0x1234abcd, 4);
  packet.writeUInt16BE(f.flags ?? 0, 10);
  Buffer.from(f.ciaddr ?? [0, 0, 0, 0]).copy(packet, 12);
  Buffer.from(f.giaddr ?? [0, 0, 0, 0]).copy(packet, 24);
  const mac = (f.mac ?? LEASE.mac).split(':').map((h) => parseInt(h, 16));
  Buffer.from(mac).copy(packet, 28);
  Buffer.from([99, 130, 83, 99]).copy(packet, 236);
  return Buffer.concat([packet, Buffer.from([53, 1, f.type, ...(f.options ?? []), 255])]);
}

function replyTo(packet: Buffer): { msg: DhcpMessage; address: string; bytes: number } {
  const out = answer(packet, lookup);
  assert.ok(out, 'a reply');
  const msg = parseMessage(out.packet);
  assert.ok(msg, 'the reply parses');
  return { msg, address: out.address, bytes: out.packet.length };
}

function option(msg: DhcpMessage, code: number): number[] | undefined {
  const value = msg.options.get(code);
  return value ? [...value] : undefined;
}

test('DISCOVER gets an OFFER of the guest address, /31 mask and the host as router', () => {
  const { msg, address, bytes } = replyTo(request({ type: DHCP_TYPE.DISCOVER, xid: 0xdeadbeef }));
  assert.equal(msg.op, 2);
  assert.equal(msg.type, DHCP_TYPE.OFFER);
  assert.equal(msg.xid, 0xdeadbeef);
  assert.equal(msg.chaddr, LEASE.mac);
  assert.equal(msg.yiaddr, '100.64.7.3');
  assert.equal(msg.ciaddr, '0.0.0.0');
  assert.deepEqual(option(msg, 54), [100, 64, 7, 2], 'server id');
  assert.deepEqual(option(msg, 1), [255, 255, 255, 254], 'subnet mask');
  assert.deepEqual(option(msg, 3), [100, 64, 7, 2], 'router');
  assert.deepEqual(option(msg, 51), [0, 1, 0x51, 0x80], 'lease time of a day');
  assert.equal(LEASE_SECONDS, 86_400);
  assert.equal(option(msg, 6), undefined, 'no DNS server');
  assert.equal(address, '255.255.255.255', 'a client without an address gets a broadcast');
  assert.ok(bytes >= 300, 'padded to the BOOTP minimum');
});

test('the broadcast flag is echoed, and replies are broadcast whichever way it is set', () => {
  for (const flags of [0, 0x8000]) {
    const { msg, address } = replyTo(request({ type: DHCP_TYPE.DISCOVER, flags }));
    assert.equal(msg.flags, flags);
    assert.equal(address, '255.255.255.255');
  }
});

test('REQUEST for the offered address gets an ACK with the lease', () => {
  const selecting = request({
    type: DHCP_TYPE.REQUEST,
    options: [50, 4, 100, 64, 7, 3, 54, 4, 100, 64, 7, 2],
  });
  const { msg, address } = replyTo(selecting);
  assert.equal(msg.type, DHCP_TYPE.ACK);
  assert.equal(msg.yiaddr, '100.64.7.3');
  assert.deepEqual(option(msg, 3), [100, 64, 7, 2]);
  assert.deepEqual(option(msg, 1), [255, 255, 255, 254]);
  assert.equal(address, '255.255.255.255');
});

test('a renewing client (ciaddr set) is answered by unicast with ciaddr echoed', () => {
  const { msg, address } = replyTo(request({ type: DHCP_TYPE.REQUEST, ciaddr: [100, 64, 7, 3] }));
  assert.equal(msg.type, DHCP_TYPE.ACK);
  assert.equal(msg.ciaddr, '100.64.7.3');
  assert.equal(address, '100.64.7.3');
});

test('REQUEST for another address gets a NAK without lease options', () => {
  const wrong = request({ type: DHCP_TYPE.REQUEST, options: [50, 4, 192, 168, 1, 50] });
  const { msg, address } = replyTo(wrong);
  assert.equal(msg.type, DHCP_TYPE.NAK);
  assert.equal(msg.yiaddr, '0.0.0.0');
  assert.deepEqual(option(msg, 54), [100, 64, 7, 2]);
  assert.equal(option(msg, 51), undefined);
  assert.equal(option(msg, 3), undefined);
  assert.equal(address, '255.255.255.255', 'a NAK is always broadcast');
});

test('requests that are not ours get no answer', () => {
  const cases: [string, Buffer][] = [
    ['unknown MAC', request({ type: DHCP_TYPE.DISCOVER, mac: '52:54:00:12:34:56' })],
    [
      'another server chosen',
      request({ type: DHCP_TYPE.REQUEST, options: [50, 4, 100, 64, 7, 3, 54, 4, 10, 0, 0, 1] }),
    ],
    ['relayed', request({ type: DHCP_TYPE.DISCOVER, giaddr: [10, 0, 0, 1] })],
    ['RELEASE', request({ type: DHCP_TYPE.RELEASE, ciaddr: [100, 64, 7, 3] })],
    ['INFORM', request({ type: DHCP_TYPE.INFORM, ciaddr: [100, 64, 7, 3] })],
  ];
  for (const [what, packet] of cases) assert.equal(answer(packet, lookup), null, what);
});

test('garbage, short and malformed packets are dropped without throwing', () => {
  const good = request({ type: DHCP_TYPE.DISCOVER });
  const reply = Buffer.from(good);
  reply[0] = 2;
  const badCookie = Buffer.from(good);
  badCookie[236] = 0;
  const badHlen = Buffer.from(good);
  badHlen[2] = 16;
  const header = good.subarray(0, 240);
  const withOptions = (...bytes: number[]) => Buffer.concat([header, Buffer.from(bytes)]);
  const cases: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['one byte', Buffer.from([1])],
    ['header cut short', good.subarray(0, 239)],
    ['no options at all', header],
    ['a BOOTREPLY', reply],
    ['bad magic cookie', badCookie],
    ['not Ethernet', badHlen],
    ['option longer than the packet', withOptions(53, 9, 1)],
    ['option length byte missing', withOptions(53)],
    ['message type of two bytes', withOptions(53, 2, 1, 1, 255)],
    [
      'requested address of three bytes',
      request({ type: DHCP_TYPE.REQUEST, options: [50, 3, 100, 64, 7] }),
    ],
    ['random bytes', Buffer.from(Array.from({ length: 600 }, (_, i) => (i * 151 + 7) & 0xff))],
  ];
  for (const [what, packet] of cases) {
    assert.equal(answer(packet, lookup), null, what);
  }
  assert.ok(answer(good, lookup), 'the untouched packet is answered');
});

test('options: padding is skipped, a missing END is tolerated, split options are joined', () => {
  const padded = request({ type: DHCP_TYPE.DISCOVER, options: [0, 0, 0] });
  assert.equal(answer(padded, lookup)?.type, DHCP_TYPE.OFFER);
  const noEnd = request({ type: DHCP_TYPE.DISCOVER }).subarray(0, 243);
  assert.equal(answer(noEnd, lookup)?.type, DHCP_TYPE.OFFER);
  const split = request({ type: DHCP_TYPE.REQUEST, options: [50, 2, 100, 64, 50, 2, 7, 3] });
  assert.equal(answer(split, lookup)?.type, DHCP_TYPE.ACK);
});

test('leases follow the local addressing and skip NICs that are not local', () => {
  const nics = [
    { lladdr: 'FE:E1:BB:D1:00:07', local: true },
    { lladdr: 'fe:e1:bb:d2:00:07', local: false },
    { lladdr: 'fe:e1:bb:d3:00:07', local: true },
  ];
  assert.deepEqual(localLeases(7, nics), [
    LEASE,
    { ...LEASE, mac: 'fe:e1:bb:d3:00:07', guest: '100.64.7.7', host: '100.64.7.6' },
  ]);
});
