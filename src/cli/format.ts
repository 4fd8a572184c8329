/**
 * vmctl's rendering, kept pure so it can be tested against golden files: fmt_scaled sizes,
 * the status table, owner names, event lines, progress text, error text and colour.
 */
import type { VmEvent } from '../vmm/vmm.js';
import type { VmInfo } from '../vmm/types.js';
import { exitCodeOf, type VmdError } from '../errors.js';

const SCALE_CHARS = 'BKMGTPE';
/** vmctl's owner buffer holds 16 bytes with the NUL: longer owners are cut. */
const OWNER_MAX = 15;
/** Header of `vmctl status`, columns as vmctl's `%5s %5s %5s %7s %7s %7s %12s %8s %s`. */
const STATUS_COLUMNS = ['ID', 'PID', 'VCPUS', 'MAXMEM', 'CURMEM', 'TTY', 'OWNER', 'STATE', 'NAME'];
const STATUS_WIDTHS = [5, 5, 5, 7, 7, 7, 12, 8, 0];

/**
 * A byte count the way fmt_scaled(3) prints it: 1024-based units B K M G T P E; a whole
 * number for bytes and for values of 100 or more in their unit, else one decimal
 * (`93.4M`, `1.0G`); 0 is `0B`.
 */
export function fmtScaled(bytes: number | bigint): string {
  const n = typeof bytes === 'bigint' ? bytes : BigInt(Math.trunc(bytes));
  const neg = n < 0n;
  const abs = neg ? -n : n;
  let unit = 0;
  while (unit < SCALE_CHARS.length - 1 && abs / 1024n >= 1024n ** BigInt(unit)) unit++;
  const factor = 1024n ** BigInt(unit);
  let whole = abs / factor;
  // The remainder in units of the next smaller scale (0..1023), then rounded to tenths.
  let tenths = unit === 0 ? 0n : (((abs % factor) / (factor / 1024n)) * 10n + 512n) / 1024n;
  if (tenths >= 10n) {
    whole++;
    tenths = 0n;
  }
  const sign = neg ? '-' : '';
  if (whole === 0n) return '0B';
  if (unit === 0 || whole >= 100n) {
    if (tenths >= 5n) whole++;
    return `${sign}${whole}${SCALE_CHARS[unit]}`;
  }
  return `${sign}${whole}.${tenths}${SCALE_CHARS[unit]}`;
}

/** Where owner names come from; UserDb fits. */
export interface UserLookup {
  userById(uid: number): { name: string } | undefined;
  groupById(gid: number): { name: string } | undefined;
}

/** `user`, or `user:group` when the VM has a group; numbers where no name is known. */
export function ownerName(uid: number, gid: number | null, users: UserLookup): string {
  let owner = users.userById(uid)?.name ?? String(uid);
  if (gid !== null) owner += `:${users.groupById(gid)?.name ?? String(gid)}`;
  return owner.slice(0, OWNER_MAX);
}

/**
 * The colour depth to use for a stream: FORCE_COLOR wins (0 or false turns colour off),
 * then NO_COLOR, then colour only on a terminal that is not dumb; undefined leaves the depth
 * to what the terminal supports. Chalk alone does not honour NO_COLOR, hence this.
 */
export function colourLevel(env: NodeJS.ProcessEnv, isTTY: boolean): 0 | 1 | 2 | 3 | undefined {
  const force = env.FORCE_COLOR;
  if (force !== undefined) {
    if (force === '' || force === 'true') return 1;
    if (force === 'false') return 0;
    const n = Number.parseInt(force, 10);
    return Number.isNaN(n) ? 1 : (Math.max(0, Math.min(n, 3)) as 0 | 1 | 2 | 3);
  }
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return 0;
  if (!isTTY || env.TERM === 'dumb') return 0;
  return undefined;
}

/** The styles vmctl colours text with; a chalk instance is one. */
export interface Paint {
  green(text: string): string;
  yellow(text: string): string;
  cyan(text: string): string;
  dim(text: string): string;
  red(text: string): string;
}

const same = (text: string) => text;

/** Styles that leave text as it is. */
export const PLAIN: Paint = { green: same, yellow: same, cyan: same, dim: same, red: same };

/**
 * The styles for output to a stream with this environment (see colourLevel). Chalk is
 * loaded only when there is colour to paint: scripts reading a pipe do not pay for it.
 */
export async function paintFor(env: NodeJS.ProcessEnv, isTTY: boolean): Promise<Paint> {
  const level = colourLevel(env, isTTY);
  if (level === 0) return PLAIN;
  const { Chalk, supportsColor } = await import('chalk');
  return new Chalk({ level: level ?? (supportsColor ? supportsColor.level : 1) });
}

/** A state word in its colour; callers pad first, so escapes never upset widths. */
export function colourState(state: string, text: string, c: Paint): string {
  switch (state) {
    case 'running':
      return c.green(text);
    case 'paused':
      return c.yellow(text);
    case 'stopping':
    case 'starting':
    case 'waiting':
      return c.cyan(text);
    case 'stopped':
      return c.dim(text);
    default:
      return c.red(text);
  }
}

function cell(text: string, width: number): string {
  return text.padStart(width);
}

/** One row of the status table, uncoloured, as an array of cells. */
function statusCells(vm: VmInfo, users: UserLookup): string[] {
  const running = vm.pid !== null;
  return [
    String(vm.id),
    running ? String(vm.pid) : '-',
    String(vm.vcpus),
    fmtScaled(vm.memoryBytes),
    running && vm.residentBytes !== null ? fmtScaled(vm.residentBytes) : '-',
    running && vm.tty ? vm.tty.replace(/^\/dev\//, '') : '-',
    ownerName(vm.uid, vm.gid, users),
    vm.state,
    vm.name,
  ];
}

/**
 * `vmctl status` output: the header, then one row per VM in the order given, with
 * vmctl's columns and widths. Only the STATE column is coloured, and only by `c`.
 */
export function statusTable(vms: readonly VmInfo[], users: UserLookup, c = PLAIN): string {
  const lines = [STATUS_COLUMNS.map((h, i) => cell(h, STATUS_WIDTHS[i])).join(' ')];
  for (const vm of vms) {
    const cells = statusCells(vm, users).map((t, i) => cell(t, STATUS_WIDTHS[i]));
    cells[7] = colourState(vm.state, cells[7], c);
    lines.push(cells.join(' '));
  }
  return lines.join('\n') + '\n';
}

/** How a VM process ended, for humans: `exit 0`, `signal SIGKILL`, plus QEMU's reason. */
export function describeExit(exit: NonNullable<VmEvent['exit']>): string {
  const how = exit.signal !== null ? `signal ${exit.signal}` : `exit ${exit.code ?? '?'}`;
  return exit.reason ? `${how} (${exit.reason})` : how;
}

/** One readable line for an event: time, type, name, id, state and, for exits, the status. */
export function formatEvent(event: VmEvent, at: Date): string {
  const vm = event.vm;
  const parts = [at.toISOString(), event.type.padEnd(8), `vm ${vm.name}`, `id ${vm.id}`, vm.state];
  if (event.exit) parts.push(describeExit(event.exit));
  return parts.join(' ');
}

/** The progress text of a transfer: `93.4M, 12.1M/s`. */
export function formatProgress(bytes: number, elapsedMs: number): string {
  const rate = elapsedMs > 0 ? (bytes * 1000) / elapsedMs : 0;
  return `${fmtScaled(bytes)}, ${fmtScaled(rate)}/s`;
}

/**
 * The text of an error on stderr: `vmctl: verb: message`, and a `hint: ...` line when
 * hints are wanted (on a terminal). Without a verb (bad command word): `vmctl: message`.
 */
export function errorText(err: VmdError, verb: string | undefined, withHint: boolean): string {
  const where = verb ? `${verb}: ` : '';
  let text = `vmctl: ${where}${err.message}\n`;
  if (withHint && err.hint) text += `hint: ${err.hint}\n`;
  return text;
}

/** The --json form of an error, one line: {"error":{code,message,hint?},"exitCode":N}. */
export function errorJson(err: VmdError): string {
  return JSON.stringify({ error: err.toJSON(), exitCode: exitCodeOf(err.code) }) + '\n';
}
