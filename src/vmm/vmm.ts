/**
 * The VM table: vmd's vmm process in TypeScript. It starts each VM as a child with its
 * descriptors, answers terminate / info / pause / unpause / send / receive / verbose /
 * reset, reaps exits, and stops every VM when it goes.
 */
import { EventEmitter } from 'node:events';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { endianness } from 'node:os';

import type { Engine, EngineVm, LaunchSpec, VmExit } from '../engine/types.js';
import { VmdError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  closeAll,
  hypervisorInfo,
  openPty,
  type HypervisorVm,
  type Pty,
  type Tap,
} from '../native.js';
import { ConsoleLog, CONSOLE_LOG_BYTES } from './console.js';
import { DhcpServer, localLeases } from './dhcp.js';
import { openTaps } from './network.js';
import { checkParams, describeParams, paramFds } from './params.js';
import { INSTANCE_VAR, killStale, VM_VAR } from './stale.js';
import { readHeader, writeHeader } from './stream.js';
import {
  VM_FLAG,
  type Owner,
  type TerminateResult,
  type VmConfig,
  type VmInfo,
  type VmParams,
  type VmState,
} from './types.js';

/** Deadline for a VM process to come up and answer on its monitor. */
export const START_TIMEOUT_MS = 30_000;
/** How often the power button is pressed again while a graceful stop is pending. */
export const POWER_BUTTON_RETRY_MS = 2_000;
/** After SIGTERM, how long a forced stop waits before SIGKILL. */
export const FORCE_KILL_GRACE_MS = 2_000;
/** Default deadline of a graceful stop at shutdown before it is forced. */
export const SHUTDOWN_TIMEOUT_MS = 30_000;
/** Deadline for writing a VM's state in send. */
export const SEND_TIMEOUT_MS = 120_000;
/** How long the console may keep draining after the VM process exited. */
const CONSOLE_DRAIN_MS = 500;

export interface VmmOptions {
  engine: Engine;
  log: Logger;
  /** Names this daemon instance in its VM processes, so a successor can find leftovers. */
  instance: string;
  startTimeoutMs?: number;
  consoleLogBytes?: number;
  /** IPv4 prefix of local interfaces (vmctl start -L); default 100.64.0.0/10. */
  localPrefix?: string;
}

export interface StartOptions {
  /** The user who starts the VM. */
  uid: number;
  gid?: number | null;
  /** Keep the VM in the table when it stops (a VM from configuration). */
  fromConfig?: boolean;
  /** Start with the CPUs stopped. */
  paused?: boolean;
}

export interface TerminateOptions {
  force?: boolean;
  /** Graceful stop deadline, after which the stop is forced. */
  timeoutMs?: number;
  /** Resolve only once the VM process is gone. */
  wait?: boolean;
}

export interface ReceiveOptions {
  /** Name of the new VM; default the name in the stream. */
  name?: string;
  uid: number;
  gid?: number | null;
  /** Opens the files the configuration names (the caller decides with whose rights). */
  open(config: VmConfig): Promise<VmParams> | VmParams;
}

/** An event of the table, as `vmctl events` shows them. */
export interface VmEvent {
  type: 'start' | 'stopping' | 'pause' | 'unpause' | 'reboot' | 'exit';
  vm: VmInfo;
  exit?: VmExit;
}

interface VmEntry {
  id: number;
  name: string;
  flags: number;
  fromConfig: boolean;
  disabled: boolean;
  owner: Owner;
  uid: number;
  gid: number | null;
  config: VmConfig | null;
  starting: Promise<unknown> | null;
  proc: EngineVm | null;
  /** /proc/<pid>/statm of proc, opened on the first status that asks (see residentOf). */
  statm: number | null;
  console: ConsoleLog | null;
  tty: string | null;
  taps: Tap[];
  startedAt: Date | null;
  timers: NodeJS.Timeout[];
  lastExit: VmExit | null;
}

/** The VM table. Emits 'event' (VmEvent) for every state change. */
export class Vmm extends EventEmitter {
  private readonly vms = new Map<number, VmEntry>();
  /** name → id; ids stay stable for as long as the daemon runs, as vmd's do. */
  private readonly ids = new Map<string, number>();
  private nextId = 1;
  private readonly exitWaiters = new Map<number, ((exit: VmExit) => void)[]>();
  /** Serves the local interfaces; it opens sockets only while one exists. */
  private readonly dhcp: DhcpServer;

  constructor(private readonly opts: VmmOptions) {
    super();
    this.dhcp = new DhcpServer(opts.log);
  }

  /** Kills VMs an earlier daemon of this instance left behind; call before the first start. */
  async init(): Promise<void> {
    const killed = await killStale(this.opts.instance, this.opts.log);
    if (killed > 0) this.opts.log.info(`killed ${killed} VM process(es) left by an earlier vmd`);
  }

  /**
   * Adds or updates a stopped VM from configuration; returns its id. sizes is what status
   * shows for it until it runs.
   */
  define(
    name: string,
    owner: Owner,
    disabled = false,
    sizes: { memoryBytes?: number; vcpus?: number } = {},
  ): number {
    const vm = this.byName(name) ?? this.newEntry(name, owner, true);
    vm.fromConfig = true;
    vm.disabled = disabled;
    if (!vm.proc && !vm.starting) {
      vm.owner = owner;
      vm.config = describeParams({ name, ...sizes }, vm.id);
    }
    return vm.id;
  }

  /** Forgets a stopped VM (configured or not); running VMs are left alone. */
  undefine(id: number): boolean {
    const vm = this.vms.get(id);
    if (!vm || vm.proc || vm.starting) return false;
    vm.console?.close();
    this.vms.delete(id);
    return true;
  }

  /** Marks a stopped configured VM as queued for a staggered start (or not). */
  setWaiting(name: string, waiting: boolean): void {
    const vm = this.byName(name);
    if (!vm || vm.proc) return;
    if (waiting) vm.flags |= VM_FLAG.WAITING;
    else vm.flags &= ~VM_FLAG.WAITING;
  }

  /** Looks a VM up by id or name. */
  lookup(idOrName: number | string): VmInfo | undefined {
    const vm = typeof idOrName === 'number' ? this.vms.get(idOrName) : this.byName(idOrName);
    return vm ? this.describe(vm) : undefined;
  }

  /**
   * All VMs, merged with what the hypervisor reports about their processes. Only VMs on a
   * hypervisor are asked about; TCG ones are plain processes, described from /proc.
   */
  info(): VmInfo[] {
    const pids: number[] = [];
    for (const vm of this.vms.values()) {
      if (vm.proc && vm.proc.accel !== 'tcg') pids.push(vm.proc.pid);
    }
    const hv = pids.length > 0 ? hypervisorInfo(pids) : [];
    return [...this.vms.values()].sort((a, b) => a.id - b.id).map((vm) => this.describe(vm, hv));
  }

  /**
   * Starts a VM. Takes ownership of every descriptor in params, even on failure. A VM of
   * that name from configuration is started under its id; any other existing VM is an error.
   */
  async start(params: VmParams, opts: StartOptions, incomingFd?: number): Promise<VmInfo> {
    let vm: VmEntry | undefined;
    try {
      checkParams(params);
      vm = this.claim(params, opts);
    } catch (err) {
      closeAll([...paramFds(params), ...(incomingFd === undefined ? [] : [incomingFd])]);
      throw err;
    }
    const started = this.launch(vm, params, opts, incomingFd);
    vm.starting = started;
    try {
      await started;
    } finally {
      vm.starting = null;
    }
    const info = this.describe(vm);
    this.opts.log.info(`${label(vm)}: started, pid ${info.pid}, tty ${vm.tty}`);
    this.emitEvent('start', vm);
    return info;
  }

  /**
   * Stops a VM with vmd's rules: forced kills now; graceful makes a reboot end the VM and
   * presses the power button; asking again while a stop is pending reports it as such.
   */
  async terminate(id: number, opts: TerminateOptions = {}): Promise<TerminateResult> {
    const vm = this.mustFind(id);
    if (vm.starting) await vm.starting.catch(() => undefined);
    const proc = vm.proc;
    if (!proc) throw new VmdError('state', `${quoted(vm)}: not running`);
    const exited = this.waitExit(vm.id);
    if (opts.force) {
      this.forceStop(vm, proc);
      await exited;
      return 'terminated';
    }
    const first = !(vm.flags & VM_FLAG.SHUTDOWN);
    if (first) await this.requestStop(vm, proc);
    if (opts.timeoutMs !== undefined) this.escalateAfter(vm, proc, opts.timeoutMs);
    if (opts.wait) {
      await exited;
      return 'terminated';
    }
    return first ? 'requested' : 'stopping';
  }

  /** Resolves with the exit of a running VM, or its last exit if it has stopped. */
  async waitExit(id: number): Promise<VmExit> {
    const vm = this.mustFind(id);
    if (vm.starting) await vm.starting.catch(() => undefined);
    if (!vm.proc) {
      if (vm.lastExit) return vm.lastExit;
      throw new VmdError('state', `${quoted(vm)}: not running`);
    }
    return new Promise((resolve) => {
      const list = this.exitWaiters.get(vm.id) ?? [];
      list.push(resolve);
      this.exitWaiters.set(vm.id, list);
    });
  }

  async pause(id: number): Promise<VmInfo> {
    const vm = this.mustFind(id);
    const proc = this.running(vm);
    if (vm.flags & VM_FLAG.PAUSED) throw new VmdError('state', `${quoted(vm)}: already paused`);
    await proc.pause();
    vm.flags |= VM_FLAG.PAUSED;
    this.opts.log.info(`${label(vm)}: paused`);
    return this.emitEvent('pause', vm);
  }

  async unpause(id: number): Promise<VmInfo> {
    const vm = this.mustFind(id);
    const proc = this.running(vm);
    if (!(vm.flags & VM_FLAG.PAUSED)) throw new VmdError('state', `${quoted(vm)}: not paused`);
    await proc.resume();
    vm.flags &= ~VM_FLAG.PAUSED;
    this.opts.log.info(`${label(vm)}: unpaused`);
    return this.emitEvent('unpause', vm);
  }

  /** The console of a VM (running, or the last run of a configured VM). */
  console(id: number): ConsoleLog {
    const vm = this.mustFind(id);
    if (!vm.console) throw new VmdError('state', `${quoted(vm)}: no console`);
    return vm.console;
  }

  /**
   * Pauses a VM, writes a header and its full state to fd (which stays the caller's), then
   * ends the VM. On failure the VM runs on as it was.
   */
  async send(id: number, fd: number): Promise<void> {
    const vm = this.mustFind(id);
    const proc = this.running(vm);
    const wasPaused = (vm.flags & VM_FLAG.PAUSED) !== 0;
    if (!wasPaused) await this.pause(id);
    try {
      await writeHeader(fd, vm.config!);
      await proc.saveTo(fd, SEND_TIMEOUT_MS);
    } catch (err) {
      if (!wasPaused && vm.proc === proc) await this.unpause(id).catch(() => undefined);
      throw err instanceof VmdError
        ? err
        : new VmdError('failure', `${quoted(vm)}: send: ${(err as Error).message}`);
    }
    this.opts.log.info(`${label(vm)}: sent`);
    vm.flags |= VM_FLAG.SHUTDOWN;
    const exited = this.waitExit(vm.id);
    this.forceStop(vm, proc);
    await exited;
  }

  /**
   * Starts a VM from a send stream on fd (owned by the core from here). The header is read
   * and checked before anything is created; the guest continues where it was.
   */
  async receive(fd: number, opts: ReceiveOptions): Promise<VmInfo> {
    let params: VmParams;
    try {
      const config = await readHeader(fd);
      params = { ...(await opts.open(config)), name: opts.name ?? config.name };
    } catch (err) {
      closeAll([fd]);
      throw err;
    }
    const info = await this.start(params, { uid: opts.uid, gid: opts.gid, paused: true }, fd);
    const vm = this.vms.get(info.id)!;
    vm.flags |= VM_FLAG.RECEIVED;
    await vm.proc!.resume();
    vm.flags &= ~VM_FLAG.PAUSED;
    return this.describe(vm);
  }

  /** Sets the prefix local interfaces of VMs started from now on get their addresses from. */
  setLocalPrefix(prefix: string): void {
    this.opts.localPrefix = prefix;
  }

  /** Sets the log verbosity at run time (0 brief, 1 verbose, 2 debug). */
  setVerbose(level: number): void {
    this.opts.log.verbosity = level;
  }

  /** Force-stops every VM and forgets them all, configured ones included. */
  async reset(): Promise<void> {
    await Promise.all([...this.vms.values()].map((vm) => this.stopForReset(vm)));
    for (const vm of this.vms.values()) vm.console?.close();
    this.vms.clear();
    this.ids.clear();
  }

  /**
   * Stops every VM: gracefully within timeoutMs, then forced. Resolves once every VM process
   * is gone.
   */
  async shutdown(timeoutMs = SHUTDOWN_TIMEOUT_MS): Promise<void> {
    const all = [...this.vms.values()].map(async (vm) => {
      if (vm.starting) await vm.starting.catch(() => undefined);
      if (!vm.proc) return;
      await this.terminate(vm.id, { timeoutMs, wait: true }).catch(() => undefined);
    });
    await Promise.all(all);
  }

  private async stopForReset(vm: VmEntry): Promise<void> {
    if (vm.starting) await vm.starting.catch(() => undefined);
    if (vm.proc) await this.terminate(vm.id, { force: true }).catch(() => undefined);
  }

  private claim(params: VmParams, opts: StartOptions): VmEntry {
    const existing = this.byName(params.name);
    if (existing && (existing.proc || existing.starting)) {
      throw new VmdError('state', `${quoted(existing)}: already running`);
    }
    if (existing && !existing.fromConfig) {
      throw new VmdError('state', `${quoted(existing)}: already exists`);
    }
    const owner = params.owner ?? { uid: opts.uid, gid: opts.gid ?? null };
    const vm = existing ?? this.newEntry(params.name, owner, opts.fromConfig ?? false);
    vm.owner = owner;
    vm.uid = opts.uid;
    vm.gid = opts.gid ?? null;
    vm.flags = (vm.flags & VM_FLAG.DISABLED) | VM_FLAG.RUNNING;
    vm.config = describeParams(params, vm.id);
    vm.lastExit = null;
    return vm;
  }

  private newEntry(name: string, owner: Owner, fromConfig: boolean): VmEntry {
    let id = this.ids.get(name);
    if (id === undefined) {
      id = this.nextId++;
      this.ids.set(name, id);
    }
    const vm: VmEntry = {
      id, name, flags: 0, fromConfig, disabled: false, owner, uid: owner.uid, gid: owner.gid,
      config: null, starting: null, proc: null, statm: null, console: null, tty: null, taps: [],
      startedAt: null, timers: [], lastExit: null,
    };
    this.vms.set(id, vm);
    return vm;
  }

  private async launch(
    vm: VmEntry,
    params: VmParams,
    opts: StartOptions,
    incomingFd: number | undefined,
  ): Promise<void> {
    const owned = [...paramFds(params), ...(incomingFd === undefined ? [] : [incomingFd])];
    let pty: Pty | null = null;
    try {
      pty = openPty();
      // One prefix for both: a reload may change it while the taps are set up.
      const prefix = this.opts.localPrefix;
      vm.taps = await openTaps(vm.id, params.nics ?? [], prefix);
      this.dhcp.register(vm.id, localLeases(vm.id, vm.config!.nics, prefix));
      const spec = this.launchSpec(vm, params, pty, incomingFd, opts.paused);
      vm.proc = await this.opts.engine.launch(spec, {
        timeoutMs: this.opts.startTimeoutMs ?? START_TIMEOUT_MS,
      });
    } catch (err) {
      if (pty) closeAll([pty.master]);
      this.release(vm);
      this.opts.log.warn(`${label(vm)}: start failed: ${(err as Error).message}`);
      throw err instanceof VmdError
        ? new VmdError(err.code, `${quoted(vm)}: ${err.message}`, { hint: err.hint, cause: err })
        : new VmdError('engine', `${quoted(vm)}: ${(err as Error).message}`, { cause: err });
    } finally {
      // The VM process holds its own copies now (or there is none).
      closeAll([...owned, ...(pty ? [pty.slave] : []), ...vm.taps.map((t) => t.fd)]);
    }
    vm.tty = pty.path;
    vm.console = new ConsoleLog(pty.master, this.opts.consoleLogBytes ?? CONSOLE_LOG_BYTES);
    vm.startedAt = new Date();
    if (opts.paused) vm.flags |= VM_FLAG.PAUSED;
    this.watch(vm, vm.proc);
    // As vmd does for a one-shot boot device, a reboot ends such a VM.
    if (params.bootDevice) await vm.proc.rebootEndsVm();
  }

  private launchSpec(
    vm: VmEntry,
    params: VmParams,
    pty: Pty,
    incomingFd: number | undefined,
    paused: boolean | undefined,
  ): LaunchSpec {
    const config = vm.config!;
    return {
      vmId: vm.id,
      name: vm.name,
      memoryBytes: config.memoryBytes,
      vcpus: config.vcpus,
      kernelFd: params.kernel?.fd,
      initrdFd: params.initrd?.fd,
      cmdline: params.cmdline,
      cdromFd: params.cdrom?.fd,
      disks: (params.disks ?? []).map((d) => ({
        fds: [d.image.fd, ...(d.bases ?? []).map((b) => b.fd)],
        format: d.format,
        readOnly: d.readOnly ?? false,
      })),
      nics: vm.taps.map((tap, i) => ({ fd: tap.fd, mac: config.nics[i].lladdr })),
      bootDevice: params.bootDevice,
      consoleFd: pty.slave,
      incomingFd,
      startPaused: paused,
      marker: { [INSTANCE_VAR]: this.opts.instance, [VM_VAR]: vm.name },
    };
  }

  private watch(vm: VmEntry, proc: EngineVm): void {
    proc.on('reset', () => {
      this.opts.log.info(`${label(vm)}: guest rebooted`);
      this.emitEvent('reboot', vm);
    });
    proc.on('stop', () => {
      vm.flags |= VM_FLAG.PAUSED;
    });
    proc.on('resume', () => {
      vm.flags &= ~VM_FLAG.PAUSED;
    });
    proc.once('exit', (exit: VmExit) => void this.onExit(vm, exit));
  }

  private async requestStop(vm: VmEntry, proc: EngineVm): Promise<void> {
    vm.flags |= VM_FLAG.SHUTDOWN;
    this.opts.log.info(`${label(vm)}: stopping`);
    this.emitEvent('stopping', vm);
    try {
      await proc.rebootEndsVm();
      // A paused guest cannot see the power button; let it run so that it can power off.
      if (vm.flags & VM_FLAG.PAUSED) {
        await proc.resume();
        vm.flags &= ~VM_FLAG.PAUSED;
      }
      await proc.powerButton();
    } catch (err) {
      if (vm.proc === proc) throw err;
      return;
    }
    // A press made before the guest's handler is up is lost, so press again until it ends.
    const timer = setInterval(() => {
      if (vm.proc !== proc) return;
      proc.powerButton().catch(() => undefined);
    }, POWER_BUTTON_RETRY_MS);
    vm.timers.push(timer);
  }

  private escalateAfter(vm: VmEntry, proc: EngineVm, timeoutMs: number): void {
    const timer = setTimeout(() => {
      if (vm.proc !== proc) return;
      this.opts.log.info(`${label(vm)}: still running after ${timeoutMs}ms, forcing`);
      this.forceStop(vm, proc);
    }, timeoutMs);
    vm.timers.push(timer);
  }

  /** SIGTERM lets QEMU flush its images; SIGKILL follows if it does not go. */
  private forceStop(vm: VmEntry, proc: EngineVm): void {
    vm.flags |= VM_FLAG.SHUTDOWN;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), FORCE_KILL_GRACE_MS);
    vm.timers.push(timer);
  }

  private async onExit(vm: VmEntry, exit: VmExit): Promise<void> {
    const console = vm.console;
    if (console && !console.isEnded) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, CONSOLE_DRAIN_MS);
        console.once('end', () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    console?.close();
    if (vm.statm !== null) closeSync(vm.statm);
    vm.statm = null;
    vm.proc = null;
    vm.lastExit = exit;
    this.release(vm);
    const how = exit.signal ? `killed by ${exit.signal}` : `status ${exit.code}`;
    this.opts.log.info(`${label(vm)}: exited, ${how}${exit.reason ? ` (${exit.reason})` : ''}`);
    this.emitEvent('exit', vm, exit);
    for (const resolve of this.exitWaiters.get(vm.id) ?? []) resolve(exit);
    this.exitWaiters.delete(vm.id);
    if (!vm.fromConfig) this.vms.delete(vm.id);
  }

  /** Returns a VM entry to stopped, releasing what it held. */
  private release(vm: VmEntry): void {
    for (const timer of vm.timers) clearTimeout(timer);
    vm.timers = [];
    this.dhcp.unregister(vm.id);
    vm.taps = [];
    vm.tty = null;
    vm.startedAt = null;
    vm.flags &= VM_FLAG.DISABLED;
    if (!vm.proc && !vm.fromConfig && vm.lastExit === null) this.vms.delete(vm.id);
  }

  private running(vm: VmEntry): EngineVm {
    if (!vm.proc || vm.starting) throw new VmdError('state', `${quoted(vm)}: not running`);
    return vm.proc;
  }

  private mustFind(id: number): VmEntry {
    const vm = this.vms.get(id);
    if (!vm) throw new VmdError('notfound', `vm ${id}: not found`);
    return vm;
  }

  private byName(name: string): VmEntry | undefined {
    for (const vm of this.vms.values()) if (vm.name === name) return vm;
    return undefined;
  }

  private emitEvent(type: VmEvent['type'], vm: VmEntry, exit?: VmExit): VmInfo {
    const info = this.describe(vm);
    const event: VmEvent = exit ? { type, vm: info, exit } : { type, vm: info };
    this.emit('event', event);
    return info;
  }

  /** A VM's info; hv, the hypervisor's list, is scanned only for whole-table listings. */
  private describe(vm: VmEntry, hv: HypervisorVm[] = []): VmInfo {
    const pid = vm.proc?.pid ?? null;
    const hvm = pid === null ? undefined : hv.find((h) => h.pid === pid);
    const config = vm.config ?? { name: vm.name, memoryBytes: 0, vcpus: 0, disks: [], nics: [] };
    return {
      id: vm.id,
      name: vm.name,
      state: stateOf(vm),
      pid,
      vcpus: hvm?.vcpus || config.vcpus,
      memoryBytes: config.memoryBytes,
      residentBytes: pid === null ? null : (hvm?.residentBytes ?? residentOf(vm, pid)),
      tty: vm.tty,
      uid: vm.proc ? vm.uid : vm.owner.uid,
      // The group comes from the owner (configuration) only, as in vmd.
      gid: vm.owner.gid,
      accel: vm.proc?.accel ?? null,
      fromConfig: vm.fromConfig,
      interfaces: vm.proc
        ? config.nics.map((n, i) => ({
            tap: `vm${vm.id}-if${i}`,
            mac: n.lladdr,
            ...(n.switch ? { switch: n.switch } : {}),
          }))
        : [],
      startedAt: vm.startedAt?.toISOString() ?? null,
      config,
    };
  }
}

function stateOf(vm: VmEntry): VmState {
  if (vm.starting) return 'starting';
  if (vm.flags & VM_FLAG.PAUSED) return 'paused';
  if (vm.flags & VM_FLAG.WAITING) return 'waiting';
  if (vm.flags & VM_FLAG.SHUTDOWN) return 'stopping';
  if (vm.flags & VM_FLAG.RUNNING) return 'running';
  return 'stopped';
}

/** Room for a statm line: seven numbers of up to 20 digits. */
const statmLine = Buffer.alloc(160);

/**
 * Resident bytes of a VM's process from /proc (TCG VMs are not in the hypervisor's list).
 * statm counts pages and costs the kernel a third of what status does; the file stays open
 * for the life of the process and each status reads it again from the start, one pread
 * instead of an open, a read and a close per VM, which shows once there are dozens of VMs.
 */
function residentOf(vm: VmEntry, pid: number): number | null {
  try {
    vm.statm ??= openSync(`/proc/${pid}/statm`, 'r');
    const n = readSync(vm.statm, statmLine, 0, statmLine.length, 0);
    const pages = Number(statmLine.toString('latin1', 0, n).split(' ')[1]);
    return Number.isFinite(pages) ? pages * pageBytes() : null;
  } catch {
    return null;
  }
}

const AT_PAGESZ = 6n;
let pageSize: number | undefined;

/**
 * The kernel's page size, from this process's auxiliary vector (pairs of 64-bit type and
 * value in the host's byte order); 4096 if it cannot be read.
 */
function pageBytes(): number {
  if (pageSize !== undefined) return pageSize;
  pageSize = 4096;
  try {
    const auxv = readFileSync('/proc/self/auxv');
    const word = (at: number) =>
      endianness() === 'LE' ? auxv.readBigUInt64LE(at) : auxv.readBigUInt64BE(at);
    for (let at = 0; at + 16 <= auxv.length; at += 16) {
      const value = Number(word(at + 8));
      // A power of two, which also rules out a misread vector.
      if (word(at) === AT_PAGESZ && value > 0 && (value & (value - 1)) === 0) pageSize = value;
    }
  } catch {
    // No /proc/self/auxv: keep the common size.
  }
  return pageSize;
}

/** How log lines name a VM. */
function label(vm: { name: string; id: number }): string {
  return `vm ${vm.name} (id ${vm.id})`;
}

/** How error messages name a VM. */
function quoted(vm: { name: string }): string {
  return `vm "${vm.name}"`;
}

