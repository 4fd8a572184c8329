/**
 * Parsing of vmctl's argument values: VM ids and names, sizes (scan_scaled), counts and
 * timeouts. Every failure is a VmdError 'usage' whose message names the bad value.
 */
import type { Target } from '../control/protocol.js';
import {
  MAX_MEMORY_BYTES,
  MAX_VCPUS_PER_VM,
  MIN_MEMORY_BYTES,
  VM_NAME_MAX,
} from '../config/types.js';
import { parseSize, validateVmName } from '../config/values.js';
import { VmdError } from '../errors.js';
import { fmtScaled } from './format.js';

const UINT32_MAX = 2 ** 32 - 1;
const MIB = 1024 * 1024;

/** yargs gives a repeated option as an array: the values in order, none when absent. */
export function listOf(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

/** The last value of a repeatable option (the later flag wins, as with getopt). */
export function lastOf(value: string | string[] | undefined): string | undefined {
  return listOf(value).at(-1);
}

/**
 * A VM as named on the command line: a number is a vmd id, anything else a name, as vmctl's
 * parse_vmid does. Throws when the name is 64 characters or longer.
 */
export function parseTarget(word: string): Target {
  if (/^\d+$/.test(word) && Number(word) <= UINT32_MAX) return Number(word);
  if (word.length >= VM_NAME_MAX) throw new VmdError('usage', `name too long: ${word}`);
  return word;
}

/** The required VM id or name of a verb. */
export function requireTarget(word: string | undefined): Target {
  if (word === undefined || word === '') throw new VmdError('usage', 'missing vm id or name');
  return parseTarget(word);
}

/** A name for a new VM: not numeric, and valid by vmd's rules. */
export function parseNewVmName(word: string | undefined): string {
  if (word === undefined || word === '') throw new VmdError('usage', 'missing vm name');
  if (/^\d+$/.test(word)) throw new VmdError('usage', `invalid vm name: ${word}`);
  const problem = validateVmName(word);
  if (problem) throw new VmdError('usage', `${problem}: ${word}`);
  return word;
}

export interface ParsedSize {
  bytes: number;
  /** Set when the size was rounded down to whole MiB: `memory size rounded to 1.0G`. */
  warning?: string;
}

/**
 * A memory or disk size as vmctl's parse_size reads it: scan_scaled units, at least 1 MiB,
 * memory at most 128G, rounded down to whole MiB with a warning.
 */
export function parseSizeArg(text: string, what: 'memory' | 'disk'): ParsedSize {
  let bytes: number;
  try {
    bytes = parseSize(text);
  } catch {
    throw new VmdError('usage', `invalid ${what} size: ${text}`);
  }
  if (bytes < MIN_MEMORY_BYTES) throw new VmdError('usage', `${what} size must be at least 1MB`);
  if (what === 'memory' && bytes > MAX_MEMORY_BYTES) {
    throw new VmdError('usage', `memory size too large (limit is ${fmtScaled(MAX_MEMORY_BYTES)})`);
  }
  const rounded = Math.floor(bytes / MIB) * MIB;
  if (rounded === bytes) return { bytes };
  return { bytes: rounded, warning: `${what} size rounded to ${fmtScaled(rounded)}` };
}

/** A whole number in [min, max]; `what` names it in the error. */
export function parseCount(text: string, what: string, min: number, max: number): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(n >= min && n <= max)) {
    throw new VmdError('usage', `invalid ${what}: ${text}`, { hint: `expected ${min} to ${max}` });
  }
  return n;
}

/** Number of vcpus (-p). */
export function parseVcpus(text: string): number {
  return parseCount(text, 'number of vcpus', 1, MAX_VCPUS_PER_VM);
}

/** A duration in seconds (decimals allowed) as milliseconds; `flag` names it in errors. */
export function parseSeconds(text: string | number, flag = '--timeout'): number {
  const s = String(text);
  const n = /^\d+(\.\d+)?$/.test(s) ? Number(s) : NaN;
  if (!Number.isFinite(n)) {
    throw new VmdError('usage', `invalid ${flag}: ${s}`, { hint: 'expected a number of seconds' });
  }
  return Math.round(n * 1000);
}

/** Compiles a user's pattern; throws a usage error naming the flag. */
export function parsePattern(text: string, flag: string): RegExp {
  try {
    return new RegExp(text, 'm');
  } catch (err) {
    // V8 says "Invalid regular expression: /(/m: Unterminated group"; keep the reason.
    const reason = (err as Error).message.split(': ').at(-1) ?? '';
    throw new VmdError('usage', `invalid ${flag} pattern: ${text}: ${reason.toLowerCase()}`);
  }
}
