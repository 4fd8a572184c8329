/**
 * Value syntax shared by vm.conf and vmctl: sizes, VM names, MAC addresses, interface and
 * group names, local prefixes, and the `file:line: message` form of a diagnostic.
 */
import { VmdError } from '../errors.js';
import {
  IFNAMSIZ,
  MAX_MEMORY_BYTES,
  MIN_MEMORY_BYTES,
  VM_NAME_MAX,
  type ConfigDiagnostic,
} from './types.js';

const LLONG_MAX = 2n ** 63n - 1n;
const LLONG_MIN = -(2n ** 63n);
const SCALE_CHARS = 'BKMGTPE';
/** scan_scaled gives up on this many digits (three per scale step). */
const SCAN_MAX_DIGITS = SCALE_CHARS.length * 3;
const MIB = 1024 * 1024;

const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9';
const isAsciiAlnum = (c: string | undefined): boolean =>
  c !== undefined && /^[A-Za-z0-9]$/.test(c);
const isCSpace = (c: string | undefined): boolean => c !== undefined && ' \t\n\v\f\r'.includes(c);

type ScanResult = bigint | 'invalid' | 'range';

/** One digit of the whole part; 'range' once the number cannot fit a long long. */
function addWholeDigit(whole: bigint, digit: bigint, ndigits: number): bigint | 'range' {
  if (ndigits >= SCAN_MAX_DIGITS || whole > LLONG_MAX / 10n) return 'range';
  const next = whole * 10n + digit;
  return next > LLONG_MAX ? 'range' : next;
}

/** Applies the unit at text[at] to whole and fraction, the way scan_scaled(3) does. */
function applyScale(text: string, at: number, whole: bigint, frac: bigint, fracDigits: number,
  negative: boolean): ScanResult {
  const c = text.charAt(at);
  if (!/^[BKMGTPE]$/i.test(c)) return 'invalid';
  const unit = SCALE_CHARS.indexOf(c.toUpperCase());
  if (isAsciiAlnum(text[at + 1])) return 'invalid';
  const factor = 1024n ** BigInt(unit);
  if (whole > LLONG_MAX / factor || whole < LLONG_MIN / factor) return 'range';
  // The fraction is cut a digit at a time until scaling it cannot overflow.
  while (frac >= LLONG_MAX / factor) {
    frac /= 10n;
    fracDigits--;
  }
  frac *= factor;
  for (let i = 0; i < fracDigits - 1; i++) frac /= 10n;
  return negative ? whole * factor - frac : whole * factor + frac;
}

/**
 * scan_scaled(3) in BigInt: optional sign, digits with at most one '.', then an optional
 * unit B K M G T P E (either case, 1024-based) that must not be followed by a letter or
 * digit. Without a unit the fraction is dropped. Unlike scan_scaled, text with no digit
 * at all ("", "K") is invalid rather than 0.
 */
function scanScaled(text: string): ScanResult {
  let i = 0;
  while (isCSpace(text[i])) i++;
  let sign = 0;
  while (text[i] === '-' || text[i] === '+') {
    if (sign !== 0) return 'invalid';
    sign = text[i] === '-' ? -1 : 1;
    i++;
  }
  let whole = 0n;
  let frac = 0n;
  let ndigits = 0;
  let fracDigits = 0;
  let sawDigit = false;
  for (; isDigit(text[i]) || text[i] === '.'; i++) {
    if (text[i] === '.') {
      if (fracDigits > 0) return 'invalid';
      fracDigits = 1;
      continue;
    }
    sawDigit = true;
    const digit = BigInt(text.charCodeAt(i) - 48);
    if (fracDigits === 0) {
      const next = addWholeDigit(whole, digit, ++ndigits);
      if (next === 'range') return next;
      whole = next;
    } else if (fracDigits < SCAN_MAX_DIGITS - 1) {
      fracDigits++;
      if (frac > LLONG_MAX / 10n || frac * 10n + digit > LLONG_MAX) return 'range';
      frac = frac * 10n + digit;
    }
  }
  if (!sawDigit) return 'invalid';
  if (sign === -1) whole = -whole;
  if (i === text.length) return whole;
  return applyScale(text, i, whole, frac, fracDigits, sign === -1);
}

/**
 * Parses a size such as "512M", "1.5G", "2048k" or "1073741824" into bytes, with the
 * semantics of vmctl's scan_scaled: units are 1024-based, "1GB" is invalid, a bare number
 * is bytes. Results beyond 2^53 may be rounded.
 * Throws VmdError 'usage' on text that is not a size or does not fit 64 bits.
 */
export function parseSize(text: string): number {
  const result = scanScaled(text);
  if (result === 'invalid') throw new VmdError('usage', `invalid size: ${text}`);
  if (result === 'range') throw new VmdError('usage', `size out of range: ${text}`);
  return Number(result);
}

/** "128G": a byte count as vmd prints a limit (whole units only). */
function formatLimit(bytes: number): string {
  let unit = 0;
  while (bytes >= 1024 && bytes % 1024 === 0 && unit < SCALE_CHARS.length - 1) {
    bytes /= 1024;
    unit++;
  }
  return `${bytes}${SCALE_CHARS.charAt(unit)}`;
}

/**
 * Checks a VM memory size in bytes against vmd's limits (1M to 128G) and rounds it down
 * to a whole MiB. Throws VmdError 'usage' when it is out of range.
 */
export function normalizeMemorySize(bytes: number): number {
  if (bytes < MIN_MEMORY_BYTES) {
    throw new VmdError('usage', 'memory size must be at least 1MB');
  }
  if (bytes > MAX_MEMORY_BYTES) {
    const limit = formatLimit(MAX_MEMORY_BYTES);
    throw new VmdError('usage', `memory size too large (limit is ${limit})`);
  }
  return Math.floor(bytes / MIB) * MIB;
}

/**
 * Checks a VM name: shorter than 64 characters, only letters, digits, '.', '-' and '_',
 * starting with a letter or digit. Returns the error message, or undefined when valid.
 */
export function validateVmName(name: string): string | undefined {
  if (name.length >= VM_NAME_MAX) return 'vm name too long';
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) return 'invalid VM name';
  return undefined;
}

/** Whether a name can be a network interface name on Linux (and OpenBSD). */
export function isValidIfName(name: string): boolean {
  if (name.length === 0 || name.length >= IFNAMSIZ) return false;
  if (name === '.' || name === '..') return false;
  return !/[/:\s]/.test(name);
}

/** Whether a name can be an interface group: shorter than 16, not ending in a digit. */
export function isValidIfGroup(name: string): boolean {
  return name.length > 0 && name.length < IFNAMSIZ && !isDigit(name.at(-1));
}

/** Parses a MAC address as ether_aton(3) does; returns 'xx:xx:xx:xx:xx:xx' or undefined. */
export function parseMac(text: string): string | undefined {
  if (!/^[0-9a-fA-F]{1,2}(:[0-9a-fA-F]{1,2}){5}$/.test(text)) return undefined;
  return text
    .split(':')
    .map((part) => part.toLowerCase().padStart(2, '0'))
    .join(':');
}

/** strtonum(3): a whole decimal number within [min, max], or the reason it is not. */
export function strtonum(text: string, min: number, max: number): number | string {
  if (!/^\s*[-+]?\d+$/.test(text)) return 'invalid';
  const value = Number(text);
  if (value < min) return 'too small';
  if (value > max) return 'too large';
  return value;
}

/**
 * Four octets from dotted decimal with 1 to 4 parts ("10", "172.16", "100.64.0.0").
 * XXX: inet_net_pton(3), vmd's fallback, also takes hex forms; those are refused.
 */
function parseInet4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length > 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) {
    return undefined;
  }
  while (parts.length < 4) parts.push('0');
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

/** Splits "addr/len" into the address and a checked length (default when no '/'). */
function splitPrefix(text: string, min: number, max: number, fallback: number):
  { addr: string; len: number } | string {
  const slash = text.lastIndexOf('/');
  if (slash < 0) return { addr: text, len: fallback };
  const len = strtonum(text.slice(slash + 1), min, max);
  if (typeof len === 'string') return len;
  return { addr: text.slice(0, slash), len };
}

/**
 * Parses `local prefix`: an IPv4 address, optionally shortened ("10"), with a length of
 * 1 to 16 (default 16) and no host bits set. Returns 'a.b.c.d/len' or { error }.
 */
export function parseLocalPrefix4(text: string): string | { error: string } {
  const split = splitPrefix(text, 1, 16, 16);
  if (typeof split === 'string') return { error: split };
  const addr = parseInet4(split.addr);
  if (addr === undefined) return { error: 'invalid format' };
  const mask = Number((0xffffffffn << BigInt(32 - split.len)) & 0xffffffffn);
  if (((addr & mask) >>> 0) !== addr) return { error: 'bad mask' };
  const octets = [24, 16, 8, 0].map((shift) => (addr >>> shift) & 0xff);
  return `${octets.join('.')}/${split.len}`;
}

/** Four bytes of a strict dotted quad, or undefined. */
function parseDottedQuad(text: string): number[] | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) {
    return undefined;
  }
  return parts.map(Number);
}

/** Sixteen bytes of an IPv6 address in text form (with '::' and a trailing IPv4), or undefined. */
function parseInet6(text: string): number[] | undefined {
  if (!/^[0-9A-Fa-f:.]+$/.test(text)) return undefined;
  let head = text;
  let tail: number[] = [];
  if (text.includes('.')) {
    const lastColon = text.lastIndexOf(':');
    const quad = parseDottedQuad(text.slice(lastColon + 1));
    if (quad === undefined) return undefined;
    tail = quad;
    head = text.slice(0, lastColon + 1);
    if (!head.endsWith('::')) head = head.slice(0, -1);
  }
  const halves = head.split('::').map((h) => (h === '' ? [] : h.split(':')));
  if (halves.length > 2 || !halves.flat().every((g) => /^[0-9A-Fa-f]{1,4}$/.test(g))) {
    return undefined;
  }
  const want = 8 - tail.length / 2;
  const have = halves.flat().length;
  if (halves.length === 1 ? have !== want : have >= want) return undefined;
  const zeros = Array<string>(want - have).fill('0');
  const words = halves.length === 1 ? halves[0] : [...halves[0], ...zeros, ...halves[1]];
  const bytes = words.flatMap((w) => [parseInt(w, 16) >> 8, parseInt(w, 16) & 0xff]);
  return [...bytes, ...tail];
}

/**
 * Parses `local inet6 prefix`: an IPv6 address with a length of 0 to 64 (default 64) and
 * no bits set past it. Returns 'addr/len' with the address in canonical form, or { error }.
 */
export function parseLocalPrefix6(text: string): string | { error: string } {
  const split = splitPrefix(text, 0, 64, 64);
  if (typeof split === 'string') return { error: split };
  const bytes = parseInet6(split.addr);
  if (bytes === undefined) return { error: 'invalid format' };
  const aligned = bytes.every((byte, i) => {
    const bits = Math.max(0, Math.min(8, split.len - i * 8));
    return (byte & ((0xff00 >> bits) & 0xff)) === byte;
  });
  if (!aligned) return { error: 'bad mask' };
  const canonical = new URL(`http://[${split.addr}]/`).hostname.slice(1, -1);
  return `${canonical}/${split.len}`;
}

/** A diagnostic as `file:line: message` (`file: message` when it has no line). */
export function formatDiagnostic(d: ConfigDiagnostic): string {
  const where = d.line > 0 ? `${d.file}:${d.line}` : d.file;
  const prefix = d.severity === 'warning' ? 'warning: ' : '';
  return `${where}: ${prefix}${d.message}`;
}
