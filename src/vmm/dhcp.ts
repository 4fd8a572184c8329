/**
 * DHCP for local interfaces (vmctl start -L): the guest end of each point-to-point link
 * learns its address, a /31 mask and the host end as its router. A subset of RFC 2131:
 * DISCOVER gets an OFFER, REQUEST an ACK or a NAK; DECLINE, RELEASE and INFORM get nothing,
 * since each link has one fixed address. A MAC without a lease is ignored, so the server
 * stays silent towards anything that is not a VM's local NIC.
 *
 * No DNS server (option 6) is offered: nothing on the host is known to answer on the link's
 * address, and a guest that is told of a resolver that never answers waits on every lookup.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';

import type { Logger } from '../log.js';
import { localAddresses, LOCAL_PREFIX } from './network.js';

export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;
/** Lease time offered; a guest renews at half of it, by unicast to the host address. */
export const LEASE_SECONDS = 24 * 60 * 60;
/** The mask of a local link: two addresses, host and guest (RFC 3021). */
export const LOCAL_NETMASK = '255.255.255.254';

/** Message types (option 53). */
export const DHCP_TYPE = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
} as const;

const TYPE_NAMES: Record<number, string> = {
  [DHCP_TYPE.OFFER]: 'offer',
  [DHCP_TYPE.ACK]: 'ack',
  [DHCP_TYPE.NAK]: 'nak',
};

/** Option codes this server reads or writes. */
export const DHCP_OPTION = {
  PAD: 0,
  SUBNET_MASK: 1,
  ROUTER: 3,
  REQUESTED_ADDRESS: 50,
  LEASE_TIME: 51,
  MESSAGE_TYPE: 53,
  SERVER_ID: 54,
  END: 255,
} as const;

const BOOTREQUEST = 1;
const BOOTREPLY = 2;
const HTYPE_ETHERNET = 1;
const MAC_LENGTH = 6;
const MAGIC_COOKIE = 0x63825363;
const COOKIE_OFFSET = 236;
const OPTIONS_OFFSET = 240;
/** BOOTP clients may drop shorter messages (RFC 1542 §3.4), so replies are padded to this. */
const MIN_REPLY_BYTES = 300;
const ANY = '0.0.0.0';
const LIMITED_BROADCAST = '255.255.255.255';

/** What one VM NIC on a local link is given. */
export interface DhcpLease {
  /** The guest NIC's MAC, lowercase with colons. */
  mac: string;
  /** The address the guest gets. */
  guest: string;
  /** The host end of the link: router and server identifier. */
  host: string;
  netmask: string;
}

/** A decoded DHCP message (request or reply). */
export interface DhcpMessage {
  op: number;
  xid: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** Client hardware address, lowercase with colons. */
  chaddr: string;
  /** Option 53. */
  type: number;
  /** Options by code; a repeated option is the concatenation of its parts (RFC 3396). */
  options: Map<number, Buffer>;
}

/** A reply and where it goes. */
export interface DhcpReply {
  lease: DhcpLease;
  /** Message type (option 53) of the reply. */
  type: number;
  packet: Buffer;
  /** Destination address; the port is always DHCP_CLIENT_PORT. */
  address: string;
}

/** The leases of the local NICs among nics of VM vmId, with vmd's addressing. */
export function localLeases(
  vmId: number,
  nics: readonly { lladdr: string; local: boolean }[],
  prefix = LOCAL_PREFIX,
): DhcpLease[] {
  return nics.flatMap((nic, i) => {
    if (!nic.local) return [];
    const { host, guest } = localAddresses(vmId, i, prefix);
    return [{ mac: nic.lladdr.toLowerCase(), guest, host, netmask: LOCAL_NETMASK }];
  });
}

/** Decodes an Ethernet DHCP message; null for anything short, malformed or not DHCP. */
export function parseMessage(packet: Buffer): DhcpMessage | null {
  if (packet.length < OPTIONS_OFFSET || packet.readUInt32BE(COOKIE_OFFSET) !== MAGIC_COOKIE) {
    return null;
  }
  if (packet[1] !== HTYPE_ETHERNET || packet[2] !== MAC_LENGTH) return null;
  const options = parseOptions(packet.subarray(OPTIONS_OFFSET));
  if (!options || !hasLength(options, DHCP_OPTION.MESSAGE_TYPE, 1)) return null;
  for (const code of [DHCP_OPTION.REQUESTED_ADDRESS, DHCP_OPTION.SERVER_ID]) {
    if (options.has(code) && !hasLength(options, code, 4)) return null;
  }
  return {
    op: packet[0],
    xid: packet.readUInt32BE(4),
    flags: packet.readUInt16BE(10),
    ciaddr: readAddress(packet, 12),
    yiaddr: readAddress(packet, 16),
    siaddr: readAddress(packet, 20),
    giaddr: readAddress(packet, 24),
    chaddr: [...packet.subarray(28, 28 + MAC_LENGTH)].map(hexByte).join(':'),
    type: options.get(DHCP_OPTION.MESSAGE_TYPE)![0],
    options,
  };
}

/** The options field as a map; null when an option runs past the end of the packet. */
function parseOptions(data: Buffer): Map<number, Buffer> | null {
  const options = new Map<number, Buffer>();
  let i = 0;
  while (i < data.length) {
    const code = data[i];
    if (code === DHCP_OPTION.END) break;
    if (code === DHCP_OPTION.PAD) {
      i += 1;
      continue;
    }
    if (i + 1 >= data.length) return null;
    const end = i + 2 + data[i + 1];
    if (end > data.length) return null;
    const value = data.subarray(i + 2, end);
    const earlier = options.get(code);
    options.set(code, earlier ? Buffer.concat([earlier, value]) : value);
    i = end;
  }
  return options;
}

/**
 * The reply to a client message, or null when there is none to give: not a request, a MAC
 * without a lease (lookup returns none), relayed, or a type this server does not answer.
 */
export function answer(
  packet: Buffer,
  lookup: (mac: string) => DhcpLease | undefined,
): DhcpReply | null {
  const msg = parseMessage(packet);
  // A relay agent cannot sit on a point-to-point tap, so a relayed message is not ours.
  if (!msg || msg.op !== BOOTREQUEST || msg.giaddr !== ANY) return null;
  const lease = lookup(msg.chaddr);
  if (!lease) return null;
  if (msg.type === DHCP_TYPE.DISCOVER) return reply(msg, lease, DHCP_TYPE.OFFER);
  if (msg.type === DHCP_TYPE.REQUEST) return answerRequest(msg, lease);
  return null;
}

function answerRequest(msg: DhcpMessage, lease: DhcpLease): DhcpReply | null {
  const serverId = optionAddress(msg, DHCP_OPTION.SERVER_ID);
  // The client took another server's offer: that server answers, not us.
  if (serverId !== undefined && serverId !== lease.host) return null;
  // SELECTING and INIT-REBOOT name the address in option 50, RENEWING in ciaddr.
  const wanted = optionAddress(msg, DHCP_OPTION.REQUESTED_ADDRESS) ?? msg.ciaddr;
  return reply(msg, lease, wanted === lease.guest ? DHCP_TYPE.ACK : DHCP_TYPE.NAK);
}

/**
 * Builds a reply of type to msg. A NAK, or a client without an address yet, gets a limited
 * broadcast whatever its broadcast flag says: unicast to a client without an address would
 * need an ARP entry that only the kernel can make, and RFC 2131 §4.1 allows a broadcast
 * instead. A client with an address (renewing) gets it by unicast, as §4.1 says.
 */
function reply(msg: DhcpMessage, lease: DhcpLease, type: number): DhcpReply {
  const nak = type === DHCP_TYPE.NAK;
  const header = Buffer.alloc(OPTIONS_OFFSET);
  header[0] = BOOTREPLY;
  header[1] = HTYPE_ETHERNET;
  header[2] = MAC_LENGTH;
  header.writeUInt32BE(msg.xid, 4);
  header.writeUInt16BE(msg.flags, 10);
  if (type === DHCP_TYPE.ACK) writeAddress(header, 12, msg.ciaddr);
  if (!nak) writeAddress(header, 16, lease.guest);
  Buffer.from(msg.chaddr.split(':').map((h) => parseInt(h, 16))).copy(header, 28);
  header.writeUInt32BE(MAGIC_COOKIE, COOKIE_OFFSET);
  const options = encodeOptions(replyOptions(lease, type));
  // Buffer.concat zero-fills up to the total length asked for.
  const size = Math.max(MIN_REPLY_BYTES, header.length + options.length);
  const address = !nak && msg.ciaddr !== ANY ? msg.ciaddr : LIMITED_BROADCAST;
  return { lease, type, packet: Buffer.concat([header, options], size), address };
}

/** The options of a reply: a NAK carries only its type and the server's identity. */
function replyOptions(lease: DhcpLease, type: number): [number, Buffer][] {
  const options: [number, Buffer][] = [
    [DHCP_OPTION.MESSAGE_TYPE, Buffer.from([type])],
    [DHCP_OPTION.SERVER_ID, addressBytes(lease.host)],
  ];
  if (type === DHCP_TYPE.NAK) return options;
  const time = Buffer.alloc(4);
  time.writeUInt32BE(LEASE_SECONDS);
  options.push(
    [DHCP_OPTION.LEASE_TIME, time],
    [DHCP_OPTION.SUBNET_MASK, addressBytes(lease.netmask)],
    [DHCP_OPTION.ROUTER, addressBytes(lease.host)],
  );
  return options;
}

function encodeOptions(options: readonly [number, Buffer][]): Buffer {
  const parts = options.map(([code, value]) => [Buffer.from([code, value.length]), value]);
  return Buffer.concat([...parts.flat(), Buffer.from([DHCP_OPTION.END])]);
}

function hasLength(options: Map<number, Buffer>, code: number, length: number): boolean {
  return options.get(code)?.length === length;
}

function optionAddress(msg: DhcpMessage, code: number): string | undefined {
  const value = msg.options.get(code);
  return value ? readAddress(value, 0) : undefined;
}

function readAddress(data: Buffer, offset: number): string {
  return [...data.subarray(offset, offset + 4)].join('.');
}

function writeAddress(data: Buffer, offset: number, address: string): void {
  addressBytes(address).copy(data, offset);
}

function addressBytes(address: string): Buffer {
  return Buffer.from(address.split('.').map(Number));
}

function hexByte(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/**
 * The server: leases by VM, one socket that hears every request, and one socket per host
 * address that sends the replies of its link. Sockets exist only while a lease does.
 *
 * Why a socket per host address: a reply to a client without an address goes to
 * 255.255.255.255, which names no interface, and with many taps the reply must leave through
 * the right one. Linux picks the outgoing interface of a limited broadcast from the socket's
 * source address when that address is set: the route lookup takes the interface that holds
 * it. So a socket bound to a link's host address broadcasts on that link's tap alone, with no
 * need for SO_BINDTODEVICE or IP_PKTINFO, which node:dgram does not offer. Being the more
 * specific bind, it also receives the unicast requests of renewing guests.
 */
export class DhcpServer {
  private readonly leases = new Map<number, readonly DhcpLease[]>();
  private listener: Socket | null = null;
  /** Reply sockets by host address; ready holds those whose bind has completed. */
  private readonly senders = new Map<string, Socket>();
  private readonly ready = new WeakSet<Socket>();

  constructor(private readonly log: Logger) {}

  /**
   * Serves leases for VM vmId (replacing any it had) and opens the sockets they need. Each
   * host address must already be on its tap. A socket that cannot bind is logged and closed:
   * the VM runs on without DHCP.
   */
  register(vmId: number, leases: readonly DhcpLease[]): void {
    this.unregister(vmId);
    if (leases.length === 0) return;
    this.leases.set(vmId, leases);
    if (!this.listener) {
      const socket = this.open(ANY, (err) => this.onListenerError(socket, err));
      this.listener = socket;
    }
    for (const lease of leases) {
      this.log.debug(`dhcp: vm id ${vmId}: ${lease.guest} for ${lease.mac} via ${lease.host}`);
      if (this.senders.has(lease.host)) continue;
      const socket = this.open(lease.host, (err) => this.onSenderError(lease.host, socket, err));
      this.senders.set(lease.host, socket);
    }
  }

  /** Stops serving VM vmId; with its last lease, every socket is closed. */
  unregister(vmId: number): void {
    if (!this.leases.delete(vmId)) return;
    const inUse = new Set([...this.leases.values()].flat().map((l) => l.host));
    for (const [host, socket] of this.senders) {
      if (inUse.has(host)) continue;
      closeQuietly(socket);
      this.senders.delete(host);
    }
    if (this.leases.size === 0 && this.listener) {
      closeQuietly(this.listener);
      this.listener = null;
      this.log.debug('dhcp: no leases left, sockets closed');
    }
  }

  /** A UDP socket bound to address:67 with broadcasts allowed once bound. */
  private open(address: string, onError: (err: Error) => void): Socket {
    const socket = createSocket({ type: 'udp4', reuseAddr: true });
    socket.on('error', onError);
    socket.on('message', (packet: Buffer, from: RemoteInfo) => this.onMessage(packet, from));
    socket.bind({ address, port: DHCP_SERVER_PORT }, () => {
      socket.setBroadcast(true);
      this.ready.add(socket);
    });
    return socket;
  }

  private onMessage(packet: Buffer, from: RemoteInfo): void {
    const out = answer(packet, (mac) => this.leaseOf(mac));
    if (!out) return;
    const socket = this.senders.get(out.lease.host);
    // Before its bind completes a reply could leave by the wrong interface; the client retries.
    if (!socket || !this.ready.has(socket)) return;
    const what = TYPE_NAMES[out.type] ?? `type ${out.type}`;
    this.log.debug(`dhcp: ${out.lease.mac} (from ${from.address}): ${what} to ${out.address}`);
    socket.send(out.packet, DHCP_CLIENT_PORT, out.address, (err) => {
      if (err) this.log.debug(`dhcp: send to ${out.lease.mac}: ${err.message}`);
    });
  }

  /** The lease of mac; should two VMs share a MAC, the one registered first has it. */
  private leaseOf(mac: string): DhcpLease | undefined {
    for (const leases of this.leases.values()) {
      const lease = leases.find((l) => l.mac === mac);
      if (lease) return lease;
    }
    return undefined;
  }

  private onListenerError(socket: Socket, err: Error): void {
    this.log.warn(`dhcp: ${ANY}:${DHCP_SERVER_PORT}: ${err.message}`);
    closeQuietly(socket);
    if (this.listener === socket) this.listener = null;
  }

  private onSenderError(host: string, socket: Socket, err: Error): void {
    this.log.warn(`dhcp: ${host}:${DHCP_SERVER_PORT}: ${err.message}`);
    closeQuietly(socket);
    if (this.senders.get(host) === socket) this.senders.delete(host);
  }
}

function closeQuietly(socket: Socket): void {
  try {
    socket.close();
  } catch {
    // already closed
  }
}
