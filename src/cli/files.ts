/**
 * Files vmctl opens itself, with the caller's rights, to pass to vmd as descriptors
 * (SPEC §4: the daemon never opens a path an unprivileged caller chose).
 */
import { closeSync, constants, fstatSync, openSync, realpathSync } from 'node:fs';

import { VmdError, type ErrnoError, type ErrorCode } from '../errors.js';

/** Descriptors opened for one request; the request refers to them by index. */
export class FdList {
  readonly fds: number[] = [];

  /** Adds a descriptor; returns its index in the request. */
  add(fd: number): number {
    this.fds.push(fd);
    return this.fds.length - 1;
  }

  /** Closes every descriptor (vmd has its own copies once the request is sent). */
  closeAll(): void {
    for (const fd of this.fds.splice(0)) {
      try {
        closeSync(fd);
      } catch {
        // Nothing left to release.
      }
    }
  }
}

/** The lowercase strerror text of a Node fs error: `no such file or directory`. */
export function fsReason(err: unknown): string {
  const e = err as ErrnoError;
  const m = /^[A-Z]+: ([^,]+)/.exec(e.message ?? '');
  return (m ? m[1] : (e.message ?? String(err))).toLowerCase();
}

/** The error code a failed open maps to. */
export function fsErrorCode(err: unknown): ErrorCode {
  switch ((err as ErrnoError).code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return 'notfound';
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return 'permission';
    default:
      return 'failure';
  }
}

/** A VmdError for a file operation that failed: `disk /a/b.img: permission denied`. */
export function fileError(what: string, path: string, err: unknown): VmdError {
  return new VmdError(fsErrorCode(err), `${what} ${path}: ${fsReason(err)}`, { cause: err });
}

export interface OpenedFile {
  fd: number;
  /** The realpath of what was opened. */
  path: string;
}

/**
 * Opens a regular file read-only or read-write, after realpath, and checks with fstat that
 * it is a regular file. `what` names it in errors (`kernel`, `disk`, `cdrom`).
 */
export function openRegular(what: string, path: string, writable: boolean): OpenedFile {
  let real: string;
  let fd: number;
  try {
    real = realpathSync(path);
    fd = openSync(real, (writable ? constants.O_RDWR : constants.O_RDONLY) | constants.O_NOCTTY);
  } catch (err) {
    throw fileError(what, path, err);
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new VmdError('usage', `${what} ${path}: not a regular file`);
  }
  return { fd, path: real };
}
