/**
 * `vmctl start`: builds the start request the way vmctl does, except that vmctl opens every
 * file itself (kernel, initrd, cdrom, disks and their backing images) and passes them to vmd
 * as descriptors. `-w` waits for the guest to be ready; `-c` attaches the console.
 */

import type { StartArgs } from '../control/protocol.js';
import { MAX_DISKS_PER_VM, MAX_NICS_PER_VM } from '../config/types.js';
import { VmdError } from '../errors.js';
import type { VmInfo } from '../vmm/types.js';
import {
  lastOf,
  listOf,
  parseCount,
  parseNewVmName,
  parsePattern,
  parseSeconds,
  parseSizeArg,
  parseVcpus,
} from './args.js';
import { defineCommand, jsonLine, type Context, type OptionSpec } from './command.js';
import { attachConsole } from './console.js';
import { openDisk } from './disk.js';
import { FdList, openRegular } from './files.js';

/** What `start -w` waits for on the console unless --wait-for says otherwise. */
export const DEFAULT_READY_PATTERN = 'GUEST-READY|login:';
/** How long `start -w` waits for the ready pattern, in seconds. */
export const DEFAULT_START_WAIT_S = 120;

const BOOT_DEVICES = ['disk', 'cdrom', 'net'] as const;

/** The flags `start` and `run` share (yargs names). */
export interface StartFlags {
  name?: string;
  B?: string;
  b?: string;
  d?: string | string[];
  i?: string;
  L?: boolean;
  m?: string;
  n?: string | string[];
  r?: string;
  t?: string;
  p?: string;
  initrd?: string;
  cmdline?: string;
}

/** Declares the flags `start` and `run` share. */
const str = (describe: string): OptionSpec => ({ type: 'string', requiresArg: true, describe });

export const START_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  B: str('boot device for this start: disk, cdrom or net'),
  b: str('kernel or BIOS image'),
  d: str('disk image, raw: or qcow2: prefix allowed; repeatable (up to 4)'),
  i: str('number of network interfaces to add'),
  L: { type: 'boolean', describe: 'add a local interface (DHCP from vmd)' },
  m: str('memory size, e.g. 512M or 2G'),
  n: str('add an interface on this switch; repeatable'),
  r: str('cdrom (ISO) image'),
  t: str('start an instance of this configured vm'),
  p: str('number of vcpus'),
  initrd: str('initial ramdisk for a Linux kernel'),
  cmdline: str('kernel command line for a Linux kernel'),
};

export const START_POSITIONAL = { name: 'name', describe: 'vm name' };

/** Whether any flag asks vmd to create (not just start) a VM, as vmctl's VMOP_CREATE_* do. */
function createsVm(f: StartFlags): boolean {
  return (
    [f.B, f.b, f.d, f.i, f.m, f.n, f.r, f.p, f.initrd, f.cmdline].some((v) => v !== undefined) ||
    f.L === true
  );
}

/** -L first (vmctl makes the first interface the local one), then -n switches, then -i. */
function nicsOf(f: StartFlags): NonNullable<StartArgs['nics']> {
  const nics: NonNullable<StartArgs['nics']> = [];
  if (f.L) nics.push({ local: true });
  for (const sw of listOf(f.n)) nics.push({ switch: sw });
  const plain = f.i === undefined ? 0 : parseCount(f.i, 'interface count', 1, MAX_NICS_PER_VM);
  for (let k = 0; k < plain; k++) nics.push({});
  if (nics.length > MAX_NICS_PER_VM) throw new VmdError('usage', 'too many network interfaces');
  return nics;
}

/** The arguments that need no file: checked before anything is opened. */
function plainArgs(f: StartFlags, warnings: string[]): StartArgs {
  const request: StartArgs = { name: parseNewVmName(f.name) };
  const memory = lastOf(f.m);
  if (memory !== undefined) {
    const size = parseSizeArg(memory, 'memory');
    request.memoryBytes = size.bytes;
    if (size.warning) warnings.push(size.warning);
  }
  if (f.p !== undefined) request.vcpus = parseVcpus(f.p);
  if (f.B !== undefined) {
    if (!(BOOT_DEVICES as readonly string[]).includes(f.B)) {
      throw new VmdError('usage', `invalid boot device: ${f.B}`, {
        hint: 'expected disk, cdrom or net',
      });
    }
    request.bootDevice = f.B as StartArgs['bootDevice'];
  }
  if (f.t !== undefined) request.instanceOf = parseNewVmName(f.t);
  if (f.cmdline !== undefined) request.cmdline = f.cmdline;
  const nics = nicsOf(f);
  if (nics.length > 0) request.nics = nics;
  return request;
}

/** Opens the files the flags name into fds and adds them to the request. */
function openFiles(f: StartFlags, request: StartArgs, fds: FdList): void {
  const ro = (what: string, path: string) => {
    const file = openRegular(what, path, false);
    return { fd: fds.add(file.fd), path: file.path };
  };
  if (f.b !== undefined) request.kernel = ro('kernel', f.b);
  if (f.initrd !== undefined) request.initrd = ro('initrd', f.initrd);
  if (f.r !== undefined) request.cdrom = ro('cdrom', f.r);
  const disks = listOf(f.d).map((d) => openDisk(d, fds));
  if (disks.length > 0) request.disks = disks;
}

/**
 * The start request for the flags, with the files opened into fds (the caller closes them,
 * also on error), and vmctl's warnings. Throws VmdError 'usage' on bad flags, and the file's
 * error (notfound, permission) when a file cannot be opened.
 */
export function buildStartRequest(
  f: StartFlags,
  fds: FdList,
): { request: StartArgs; warnings: string[] } {
  const warnings: string[] = [];
  const request = plainArgs(f, warnings);
  if (listOf(f.d).length > MAX_DISKS_PER_VM) throw new VmdError('usage', 'too many disks');
  // An instance may take its kernel from its parent.
  const kernelless = f.b === undefined && f.t === undefined;
  if ((f.initrd !== undefined || f.cmdline !== undefined) && kernelless) {
    throw new VmdError('usage', '--initrd and --cmdline need a kernel (-b)');
  }
  if (createsVm(f) && f.t === undefined) {
    if (f.b === undefined && f.d === undefined && f.r === undefined) {
      throw new VmdError('usage', 'no kernel or disk/cdrom specified');
    }
    if (f.d === undefined) warnings.push('starting without disks');
    if (request.nics === undefined) warnings.push('starting without network interfaces');
  }
  openFiles(f, request, fds);
  return { request, warnings };
}

/**
 * Sends a start request; the descriptors are closed once vmd has its copies. A throwaway VM
 * is forced off by vmd when this connection closes, however vmctl ends.
 */
export async function startVm(ctx: Context, f: StartFlags, throwaway = false): Promise<VmInfo> {
  const fds = new FdList();
  ctx.defer(() => fds.closeAll());
  try {
    const { request, warnings } = buildStartRequest(f, fds);
    if (throwaway) request.stopOnDisconnect = true;
    warnings.forEach((w) => ctx.notice(w));
    const client = await ctx.client();
    ctx.debug(`start request: ${JSON.stringify(request)}`);
    const info = await client.start(request, fds.fds);
    ctx.notice(`started vm ${info.id} successfully, tty ${info.tty ?? '-'}`);
    return info;
  } finally {
    fds.closeAll();
  }
}

interface StartCliArgs extends StartFlags {
  c?: boolean;
  w?: boolean;
  'wait-for'?: string;
  timeout?: string;
}

export const startCommand = defineCommand<StartCliArgs>({
  usage:
    'usage: vmctl start [-cLw] [-B device] [-b kernel] [-d disk] [-i count] [-m size]\n' +
    '         [-n switch] [-p vcpus] [-r iso] [-t parent] [--initrd path] [--cmdline text]\n' +
    '         [--wait-for regex] [--timeout seconds] name',
  epilogue:
    `-w waits until the console shows the guest's ready marker, by default the pattern\n` +
    `/${DEFAULT_READY_PATTERN}/ (a guest prints GUEST-READY, or a login prompt), for at most\n` +
    `${DEFAULT_START_WAIT_S} seconds; --wait-for sets the pattern (and implies -w), --timeout\n` +
    'the limit.\n' +
    'Files are opened by vmctl with your rights and passed to vmd as descriptors.',
  positional: START_POSITIONAL,
  options: {
    ...START_OPTIONS,
    c: { type: 'boolean', describe: 'attach the console after starting' },
    w: { type: 'boolean', describe: 'wait until the guest is ready' },
    'wait-for': str('ready pattern (regex) for -w'),
    timeout: str(`seconds -w waits (default ${DEFAULT_START_WAIT_S})`),
  },
  async run(args, ctx) {
    const waitFor = args['wait-for'] ?? (args.w ? DEFAULT_READY_PATTERN : undefined);
    if (waitFor !== undefined) parsePattern(waitFor, '--wait-for');
    const timeoutMs = parseSeconds(args.timeout ?? DEFAULT_START_WAIT_S);
    if (args.c && ctx.json) throw new VmdError('usage', '-c cannot be used with --json');
    let info = await startVm(ctx, args);
    if (waitFor !== undefined) {
      const client = await ctx.client();
      info = await client.wait(info.id, { console: waitFor }, timeoutMs);
      ctx.notice(`vm ${info.name} is ready`);
    }
    if (args.c) return attachConsole(ctx, info.id);
    return { output: ctx.json ? jsonLine(info) : undefined };
  },
});
