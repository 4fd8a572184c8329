/**
 * The one error type of vmd-ts. Every failure that reaches a user carries a code from
 * ERROR_CODES; the code decides the process exit status of vmctl and the "code" field of a
 * JSON error.
 */

/** Error codes, each with the vmctl exit status it maps to. */
export const ERROR_CODES = {
  /** A request failed for a reason not covered below. */
  failure: 1,
  /** Bad arguments or a malformed request. */
  usage: 2,
  /** The named VM, file or object does not exist. */
  notfound: 3,
  /** The caller may not do this. */
  permission: 4,
  /** The VM is in the wrong state for the request (e.g. already running). */
  state: 5,
  /** A wait reached its deadline. */
  timeout: 6,
  /** The hypervisor or engine (QEMU, the addon) failed. */
  engine: 7,
  /** A bug: something that should not happen. */
  internal: 1,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** An error with a code from ERROR_CODES and an optional hint for the user. */
export class VmdError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options?: { hint?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'VmdError';
    this.code = code;
    this.hint = options?.hint;
  }

  /** The JSON form used on the wire and by `--json`. */
  toJSON(): { code: ErrorCode; message: string; hint?: string } {
    const out: { code: ErrorCode; message: string; hint?: string } = {
      code: this.code,
      message: this.message,
    };
    if (this.hint !== undefined) out.hint = this.hint;
    return out;
  }
}

/** The exit status for an error code. */
export function exitCodeOf(code: ErrorCode): number {
  return ERROR_CODES[code];
}

/** Whether a value is an ErrorCode. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
}

/** Node's errno-style error, as thrown by the addon and node:fs. */
export interface ErrnoError extends Error {
  code?: string;
  errno?: number;
  syscall?: string;
}

/** Whether an error is a Node errno error with the given code. */
export function hasErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as ErrnoError).code === code;
}

/** Turns any thrown value into a VmdError, keeping VmdErrors as they are. */
export function toVmdError(err: unknown, fallback: ErrorCode = 'internal'): VmdError {
  if (err instanceof VmdError) return err;
  if (err instanceof Error) return new VmdError(fallback, err.message, { cause: err });
  return new VmdError(fallback, String(err));
}
