/**
 * The control protocol between vmctl (or any client of the library) and vmd: JSON messages,
 * each with a 4-byte length prefix, over a unix stream socket; files travel as descriptors
 * attached to the message that refers to them by index.
 *
 *   request   { id, verb, args }                     (+ descriptors)
 *   progress  { id, stream: ... }                    zero or more, for streaming verbs
 *   reply     { id, ok: true, result } | { id, ok: false, error: { code, message, hint? } }
 */
import { VmdError, isErrorCode, type ErrorCode } from '../errors.js';

/** Largest message either side accepts. */
export const MAX_MESSAGE_BYTES = 256 * 1024;
/** Most descriptors one message may carry (kernel, initrd, cdrom, 4 disks with 3 bases each). */
export const MAX_MESSAGE_FDS = 20;
/** Default path of the control socket. */
export const DEFAULT_SOCKET = '/run/vmd.sock';

export type Verb =
  | 'start' | 'stop' | 'status' | 'wait' | 'pause' | 'unpause' | 'console' | 'send'
  | 'receive' | 'load' | 'reload' | 'reset' | 'log' | 'events';

export const VERBS: readonly Verb[] = [
  'start', 'stop', 'status', 'wait', 'pause', 'unpause', 'console', 'send', 'receive', 'load',
  'reload', 'reset', 'log', 'events',
];

/** A VM named by id (number) or name (string). */
export type Target = number | string;

export interface DiskArg {
  /** Index of the image's descriptor in the message. */
  fd: number;
  bases?: number[];
  format: 'raw' | 'qcow2';
  path?: string;
}

export interface StartArgs {
  name: string;
  memoryBytes?: number;
  vcpus?: number;
  kernel?: { fd: number; path?: string };
  initrd?: { fd: number; path?: string };
  cdrom?: { fd: number; path?: string };
  cmdline?: string;
  disks?: DiskArg[];
  /** Interfaces: count from -i, switches from -n, local from -L. */
  nics?: { switch?: string; local?: boolean; lladdr?: string }[];
  bootDevice?: 'disk' | 'cdrom' | 'net';
  /** Start an instance of this configured VM. */
  instanceOf?: string;
  /** Force the VM off when this connection closes (a throwaway VM, as `vmctl run` makes). */
  stopOnDisconnect?: boolean;
}

export interface StopArgs {
  target?: Target;
  all?: boolean;
  force?: boolean;
  wait?: boolean;
  timeoutMs?: number;
}

export type WaitFor = 'stopped' | 'running' | { console: string };

export interface WaitArgs {
  target: Target;
  for: WaitFor;
  timeoutMs?: number;
}

export interface ConsoleArgs {
  target: Target;
  /** attach: interactive (a socket is returned); follow: stream output; log: kept output. */
  mode: 'attach' | 'follow' | 'log';
}

export interface Request {
  id: number;
  verb: Verb;
  args: Record<string, unknown>;
}

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  hint?: string;
}

export type Reply =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: ErrorBody }
  | { id: number; stream: unknown };

type Check = (v: unknown) => boolean;

const isInt: Check = (v) => Number.isSafeInteger(v);
const isNat: Check = (v) => isInt(v) && (v as number) >= 0;
const isStr: Check = (v) => typeof v === 'string';
const isBool: Check = (v) => typeof v === 'boolean';
const isTarget: Check = (v) => isNat(v) || (isStr(v) && (v as string).length > 0);
const oneOf = (...xs: string[]): Check => (v) => typeof v === 'string' && xs.includes(v);
const arrayOf = (c: Check, max: number): Check => (v) =>
  Array.isArray(v) && v.length <= max && v.every(c);
const shape = (fields: Record<string, [Check, boolean]>): Check => (v) => {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const obj = v as Record<string, unknown>;
  for (const key of Object.keys(obj)) if (!(key in fields)) return false;
  return Object.entries(fields).every(([k, [c, required]]) =>
    obj[k] === undefined ? !required : c(obj[k]),
  );
};
const opt = (c: Check): [Check, boolean] => [c, false];
const req = (c: Check): [Check, boolean] => [c, true];
const fileRef = shape({ fd: req(isNat), path: opt(isStr) });

const ARGS: Record<Verb, Check> = {
  start: shape({
    name: req(isStr),
    memoryBytes: opt(isNat),
    vcpus: opt(isNat),
    kernel: opt(fileRef),
    initrd: opt(fileRef),
    cdrom: opt(fileRef),
    cmdline: opt(isStr),
    disks: opt(arrayOf(shape({
      fd: req(isNat), bases: opt(arrayOf(isNat, 3)), format: req(oneOf('raw', 'qcow2')),
      path: opt(isStr),
    }), 8)),
    nics: opt(arrayOf(shape({ switch: opt(isStr), local: opt(isBool), lladdr: opt(isStr) }), 8)),
    bootDevice: opt(oneOf('disk', 'cdrom', 'net')),
    instanceOf: opt(isStr),
    stopOnDisconnect: opt(isBool),
  }),
  stop: shape({
    target: opt(isTarget), all: opt(isBool), force: opt(isBool), wait: opt(isBool),
    timeoutMs: opt(isNat),
  }),
  status: shape({ target: opt(isTarget), running: opt(isBool) }),
  wait: shape({
    target: req(isTarget),
    for: req((v) => oneOf('stopped', 'running')(v) || shape({ console: req(isStr) })(v)),
    timeoutMs: opt(isNat),
  }),
  pause: shape({ target: req(isTarget) }),
  unpause: shape({ target: req(isTarget) }),
  console: shape({ target: req(isTarget), mode: req(oneOf('attach', 'follow', 'log')) }),
  send: shape({ target: req(isTarget) }),
  receive: shape({ name: opt(isStr) }),
  load: shape({ path: req(isStr) }),
  reload: shape({}),
  reset: shape({ what: opt(oneOf('all', 'vms', 'switches')) }),
  log: shape({ level: req(oneOf('brief', 'verbose')) }),
  events: shape({}),
};

/** Descriptors each verb needs with its request. */
const FDS_NEEDED: Partial<Record<Verb, number>> = { send: 1, receive: 1 };

/** Parses and checks a request; throws a usage error that says what is wrong. */
export function parseRequest(data: Buffer, fdCount: number): Request {
  let msg: unknown;
  try {
    msg = JSON.parse(data.toString('utf8'));
  } catch {
    throw new VmdError('usage', 'malformed request: not JSON');
  }
  const m = msg as Partial<Request>;
  if (typeof m !== 'object' || m === null || !isNat(m.id)) {
    throw new VmdError('usage', 'malformed request: missing id');
  }
  if (!VERBS.includes(m.verb as Verb)) {
    throw new VmdError('usage', `unknown verb ${JSON.stringify(m.verb)}`);
  }
  const verb = m.verb as Verb;
  const args = m.args ?? {};
  if (!ARGS[verb](args)) throw new VmdError('usage', `${verb}: malformed arguments`);
  const needed = FDS_NEEDED[verb] ?? 0;
  if (needed && fdCount !== needed) {
    throw new VmdError('usage', `${verb}: expects ${needed} descriptor(s), got ${fdCount}`);
  }
  return { id: m.id as number, verb, args: args };
}

/** Encodes a message for the wire (the channel adds the length prefix). */
export function encode(message: Request | Reply): Buffer {
  return Buffer.from(JSON.stringify(message), 'utf8');
}

/** The error a reply carries, as a VmdError. */
export function replyError(body: ErrorBody): VmdError {
  const code = isErrorCode(body.code) ? body.code : 'failure';
  return new VmdError(code, body.message, body.hint ? { hint: body.hint } : undefined);
}
