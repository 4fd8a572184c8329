/**
 * The header of a send/receive stream. It comes before the engine's own state stream, so a
 * receiver can refuse a damaged or foreign stream before it starts anything:
 *
 *   magic "vmd-ts-vm\n" (10 bytes) | version u32be | length u32be | config JSON (length
 *   bytes) | crc32 u32be of everything before it
 */
import { read, write } from 'node:fs';
import { crc32 } from 'node:zlib';

import { hasErrno, VmdError } from '../errors.js';
import type { VmConfig } from './types.js';

export const STREAM_MAGIC = Buffer.from('vmd-ts-vm\n', 'latin1');
export const STREAM_VERSION = 1;
/** A configuration is a few hundred bytes; anything near this is not ours. */
const MAX_CONFIG_BYTES = 64 * 1024;
const FIXED_BYTES = STREAM_MAGIC.length + 8;
const AGAIN_DELAY_MS = 5;

/** The header bytes for a VM configuration. */
export function encodeHeader(config: VmConfig): Buffer {
  const json = Buffer.from(JSON.stringify(config), 'utf8');
  const head = Buffer.alloc(FIXED_BYTES);
  STREAM_MAGIC.copy(head);
  head.writeUInt32BE(STREAM_VERSION, STREAM_MAGIC.length);
  head.writeUInt32BE(json.length, STREAM_MAGIC.length + 4);
  const body = Buffer.concat([head, json]);
  const sum = Buffer.alloc(4);
  sum.writeUInt32BE(crc32(body));
  return Buffer.concat([body, sum]);
}

/** Writes the header to fd. */
export async function writeHeader(fd: number, config: VmConfig): Promise<void> {
  const buf = encodeHeader(config);
  let off = 0;
  while (off < buf.length) {
    off += await retryAgain(
      () =>
        new Promise<number>((resolve, reject) => {
          write(fd, buf, off, buf.length - off, null, (err, n) => (err ? reject(err) : resolve(n)));
        }),
    );
  }
}

/**
 * Reads and checks the header from fd, consuming exactly its bytes, so the engine's stream
 * follows at the descriptor's position.
 */
export async function readHeader(fd: number): Promise<VmConfig> {
  const head = await readUpTo(fd, FIXED_BYTES);
  const magic = head.subarray(0, STREAM_MAGIC.length);
  if (!STREAM_MAGIC.subarray(0, magic.length).equals(magic) || magic.length === 0) {
    throw new VmdError('failure', 'stream is not a vmd-ts VM stream (bad magic)');
  }
  if (head.length < FIXED_BYTES) throw new VmdError('failure', 'stream truncated in its header');
  const version = head.readUInt32BE(STREAM_MAGIC.length);
  if (version !== STREAM_VERSION) {
    throw new VmdError('failure', `stream format version ${version} is not supported`);
  }
  const length = head.readUInt32BE(STREAM_MAGIC.length + 4);
  if (length > MAX_CONFIG_BYTES) throw new VmdError('failure', 'stream header damaged (bad length)');
  const rest = await readExactly(fd, length + 4);
  const body = Buffer.concat([head, rest.subarray(0, length)]);
  if (crc32(body) !== rest.readUInt32BE(length)) {
    throw new VmdError('failure', 'stream header damaged (checksum mismatch)');
  }
  try {
    return checkConfig(JSON.parse(rest.subarray(0, length).toString('utf8')));
  } catch (err) {
    if (err instanceof VmdError) throw err;
    throw new VmdError('failure', 'stream header damaged (bad configuration)');
  }
}

function checkConfig(value: unknown): VmConfig {
  const c = value as VmConfig;
  const ok =
    typeof c === 'object' && c !== null &&
    typeof c.name === 'string' && Number.isSafeInteger(c.memoryBytes) &&
    Number.isInteger(c.vcpus) && Array.isArray(c.disks) && Array.isArray(c.nics);
  if (!ok) throw new VmdError('failure', 'stream header damaged (bad configuration)');
  return c;
}

async function readExactly(fd: number, size: number): Promise<Buffer> {
  const buf = await readUpTo(fd, size);
  if (buf.length < size) throw new VmdError('failure', 'stream truncated in its header');
  return buf;
}

/** Reads size bytes, or fewer when the stream ends first. */
async function readUpTo(fd: number, size: number): Promise<Buffer> {
  const buf = Buffer.alloc(size);
  let off = 0;
  while (off < size) {
    const n = await retryAgain(
      () =>
        new Promise<number>((resolve, reject) => {
          read(fd, buf, off, size - off, null, (err, count) => (err ? reject(err) : resolve(count)));
        }),
    );
    if (n === 0) return buf.subarray(0, off);
    off += n;
  }
  return buf;
}

/** A pipe or socket handed over by a client may be non-blocking: wait and try again. */
async function retryAgain(op: () => Promise<number>): Promise<number> {
  for (;;) {
    try {
      return await op();
    } catch (err) {
      if (!hasErrno(err, 'EAGAIN')) throw err;
      await new Promise((resolve) => setTimeout(resolve, AGAIN_DELAY_MS));
    }
  }
}
