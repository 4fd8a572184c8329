/**
 * Disk images as `vmctl start -d` and `vmctl create` name them: the `raw:` / `qcow2:` prefix,
 * format sniffing as vmctl's parse_disktype does, and the qcow2 backing chain, which the
 * client opens read-only so that vmd never opens a path the caller chose.
 */
import { readSync } from 'node:fs';
import { basename, dirname, isAbsolute, resolve } from 'node:path';

import type { DiskArg } from '../control/protocol.js';
import { VmdError } from '../errors.js';
import { FdList, openRegular, type OpenedFile } from './files.js';

export type DiskFormat = 'raw' | 'qcow2';

/** The first bytes of every qcow image. */
export const QCOW_MAGIC = Buffer.from('QFI\xfb', 'latin1');
/** Most backing images one disk may have (the protocol's limit). */
export const MAX_BACKING_CHAIN = 3;
/** Bytes of the qcow2 header read: magic, version, backing_file_offset, backing_file_size. */
const QCOW2_HEADER_BYTES = 20;
/** The qcow2 spec caps the backing file name at 1023 bytes. */
const QCOW2_BACKING_NAME_MAX = 1023;

export interface DiskSpec {
  path: string;
  /** Set by a `raw:` or `qcow2:` prefix. */
  format?: DiskFormat;
}

/** Splits an optional `raw:` or `qcow2:` prefix off a disk argument. */
export function parseDiskArg(arg: string): DiskSpec {
  const m = /^(raw|qcow2):(.*)$/s.exec(arg);
  if (!m) return { path: arg };
  return { path: m[2], format: m[1] as DiskFormat };
}

/** The format an extension names (.raw, .qcow2, any case), if any. */
export function formatFromExtension(path: string): DiskFormat | undefined {
  const name = basename(path);
  const dot = name.lastIndexOf('.');
  if (dot < 0) return undefined;
  const ext = name.slice(dot + 1).toLowerCase();
  return ext === 'raw' || ext === 'qcow2' ? ext : undefined;
}

/**
 * parse_disktype's order: the qcow magic in `head` (the file's first bytes, if it could be
 * read) makes qcow2; else the extension; else raw.
 */
export function sniffFormat(path: string, head: Buffer | undefined): DiskFormat {
  if (head && head.length >= QCOW_MAGIC.length && head.subarray(0, 4).equals(QCOW_MAGIC)) {
    return 'qcow2';
  }
  return formatFromExtension(path) ?? 'raw';
}

/** Reads up to n bytes at offset from fd. */
export function readAt(fd: number, n: number, offset: number): Buffer {
  const buf = Buffer.alloc(n);
  const got = readSync(fd, buf, 0, n, offset);
  return buf.subarray(0, got);
}

export interface Qcow2Header {
  version: number;
  /** 0 when the image has no backing file. */
  backingFileOffset: number;
  backingFileSize: number;
}

/**
 * The fields of a qcow2 header that name the backing file: backing_file_offset (u64 BE at
 * byte 8) and backing_file_size (u32 BE at byte 16). Throws when buf is not a qcow2 header.
 */
export function parseQcow2Header(buf: Buffer): Qcow2Header {
  if (buf.length < QCOW2_HEADER_BYTES || !buf.subarray(0, 4).equals(QCOW_MAGIC)) {
    throw new VmdError('usage', 'not a qcow2 image');
  }
  const offset = buf.readBigUInt64BE(8);
  if (offset > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new VmdError('usage', 'qcow2 header: backing file offset out of range');
  }
  return {
    version: buf.readUInt32BE(4),
    backingFileOffset: Number(offset),
    backingFileSize: buf.readUInt32BE(16),
  };
}

/** The backing file name stored in an open qcow2 image, or undefined when it has none. */
export function qcow2BackingName(fd: number): string | undefined {
  const header = parseQcow2Header(readAt(fd, QCOW2_HEADER_BYTES, 0));
  if (header.backingFileOffset === 0 || header.backingFileSize === 0) return undefined;
  if (header.backingFileSize > QCOW2_BACKING_NAME_MAX) {
    throw new VmdError('usage', 'qcow2 header: backing file name too long');
  }
  const name = readAt(fd, header.backingFileSize, header.backingFileOffset);
  if (name.length !== header.backingFileSize) {
    throw new VmdError('usage', 'qcow2 header: backing file name past the end of the image');
  }
  return name.toString('utf8');
}

/** Where a backing name points: relative names are taken from the image's directory. */
export function resolveBacking(imagePath: string, name: string): string {
  if (/^[a-z][a-z0-9+.-]*:/i.test(name) && !name.startsWith('/')) {
    // XXX: protocol names (json:, nbd:, ...) would make vmd reach out on its own.
    throw new VmdError('usage', `backing file ${name}: only local files are supported`);
  }
  return isAbsolute(name) ? name : resolve(dirname(imagePath), name);
}

/** The backing name of an open image; header errors name the image. */
function backingOf(file: OpenedFile, what: string): string | undefined {
  try {
    return qcow2BackingName(file.fd);
  } catch (err) {
    if (!(err instanceof VmdError)) throw err;
    throw new VmdError(err.code, `${what} ${file.path}: ${err.message}`);
  }
}

/** The format of an open image, from its prefix or its first bytes. */
function formatOfOpen(spec: DiskSpec, file: OpenedFile): DiskFormat {
  return spec.format ?? sniffFormat(spec.path, readAt(file.fd, QCOW_MAGIC.length, 0));
}

/**
 * The backing chain of an open qcow2 image, nearest first, each opened read-only.
 * XXX: the protocol carries no format for backing images and the engine takes them all as
 * qcow2, so a raw backing image is refused here rather than misread by QEMU.
 */
function openBackingChain(image: OpenedFile, what: string, fds: FdList): number[] {
  const bases: number[] = [];
  let top = image;
  let topWhat = what;
  for (let name = backingOf(top, topWhat); name !== undefined; name = backingOf(top, topWhat)) {
    if (bases.length === MAX_BACKING_CHAIN) {
      throw new VmdError(
        'usage',
        `${what} ${image.path}: backing chain longer than ${MAX_BACKING_CHAIN}`,
      );
    }
    const base = openRegular('backing image', resolveBacking(top.path, name), false);
    bases.push(fds.add(base.fd));
    if (sniffFormat(base.path, readAt(base.fd, QCOW_MAGIC.length, 0)) !== 'qcow2') {
      throw new VmdError(
        'usage',
        `backing image ${base.path}: raw backing images are not supported`,
      );
    }
    top = base;
    topWhat = 'backing image';
  }
  return bases;
}

/**
 * Opens a `-d` disk (read-write) and its backing chain (read-only) into fds; returns the
 * request entry that refers to them by index.
 */
export function openDisk(arg: string, fds: FdList): DiskArg {
  const spec = parseDiskArg(arg);
  const image = openRegular('disk', spec.path, true);
  const index = fds.add(image.fd);
  const format = formatOfOpen(spec, image);
  const disk: DiskArg = { fd: index, format, path: image.path };
  if (format === 'qcow2') {
    const bases = openBackingChain(image, 'disk', fds);
    if (bases.length > 0) disk.bases = bases;
  }
  return disk;
}
