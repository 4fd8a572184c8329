/**
 * vmd's parent logic over the vmm core: vm.conf, switches, the control socket, permissions
 * and every verb. It owns no VM state of its own; the core does.
 */
import { closeSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Socket } from 'node:net';
import { availableParallelism } from 'node:os';

import { formatDiagnostic, parseConfigFile } from '../config/index.js';
import type { VmConfig as ConfVm, VmdConfig } from '../config/types.js';
import { createQemuEngine } from '../engine/qemu.js';
import type { AccelSetting } from '../engine/types.js';
import { VmdError } from '../errors.js';
import type { Logger } from '../log.js';
import { socketpair } from '../native.js';
import { ipCommand } from '../vmm/network.js';
import type { VmInfo, VmParams } from '../vmm/types.js';
import { Vmm, type VmEvent } from '../vmm/vmm.js';
import { openConfigured } from './configured.js';
import { checkInstance, mergeInstance, withoutMac } from './instances.js';
import { checkControl, checkVerb, mayControl, type Caller } from './permissions.js';
import type { ConsoleArgs, StartArgs, StopArgs, Target, WaitArgs } from './protocol.js';
import { ControlServer, type Session } from './server.js';
import type { Request } from './protocol.js';

export interface DaemonOptions {
  configPath: string;
  /** A missing config file is fine (the default /etc/vm.conf may not exist). */
  configOptional: boolean;
  macros: Record<string, string>;
  socketPath: string;
  accel: AccelSetting;
  /** User VM processes run as; null keeps the daemon's. */
  vmUser: { uid: number; gid: number } | null;
  /** Where the daemon keeps its runtime files (an empty working directory for VMs). */
  stateDir: string;
  log: Logger;
  /** Deadline of the graceful part of stopping every VM at exit. */
  shutdownTimeoutMs: number;
}

/** How many ended VMs are remembered (twice: by name and by id) for repeated stops. */
const DEPARTED_MAX = 2 * 1024;

const ok = (result: unknown, fds?: number[]) => ({ result, fds });

/** Reads a config file, failing with every error as `file:line: message`. */
export function loadConfig(path: string, optional: boolean, macros: Record<string, string>): VmdConfig {
  const parsed = parseConfigFile(path, {
    macros,
    allowMissing: optional,
    onlineCpus: availableParallelism(),
  });
  if (parsed.errors.length > 0) {
    const lines = parsed.errors.map((d) => formatDiagnostic(d));
    throw new VmdError('usage', lines.join('\n'));
  }
  return parsed.config;
}

export class Daemon {
  readonly vmm: Vmm;
  private server: ControlServer | null = null;
  private config: VmdConfig;
  private readonly configured = new Map<string, ConfVm>();
  /** Bridges vmd created, removed again by reset switches and at exit. */
  private readonly createdBridges = new Set<string>();
  private readonly timers = new Set<NodeJS.Timeout>();
  /** VMs that ended and left the table, so that stop and wait can be repeated safely. */
  private readonly departed = new Map<string, VmInfo>();
  private stopping: Promise<void> | null = null;

  private constructor(
    private readonly opts: DaemonOptions,
    config: VmdConfig,
  ) {
    this.config = config;
    mkdirSync(`${opts.stateDir}/empty`, { recursive: true, mode: 0o755 });
    if (opts.vmUser) checkReachable(`${opts.stateDir}/empty`, opts.vmUser);
    const engine = createQemuEngine({
      accel: opts.accel,
      user: opts.vmUser,
      workDir: `${opts.stateDir}/empty`,
      scratchDir: opts.stateDir,
      log: opts.log,
    });
    this.vmm = new Vmm({ engine, log: opts.log, instance: opts.socketPath });
    this.vmm.on('event', (event: VmEvent) => this.remember(event));
  }

  private remember(event: VmEvent): void {
    if (event.type === 'start') {
      this.departed.delete(event.vm.name);
      this.departed.delete(String(event.vm.id));
      return;
    }
    if (event.type !== 'exit' || event.vm.fromConfig) return;
    const gone = { ...event.vm, state: 'stopped' as const, pid: null, tty: null };
    this.departed.set(event.vm.name, gone);
    this.departed.set(String(event.vm.id), gone);
    // Bounded: the oldest entries go first (a Map keeps insertion order).
    for (const key of this.departed.keys()) {
      if (this.departed.size <= DEPARTED_MAX) break;
      this.departed.delete(key);
    }
  }

  /** Parses the config, kills leftovers, sets up switches and the socket, starts VMs. */
  static async create(opts: DaemonOptions): Promise<Daemon> {
    const config = loadConfig(opts.configPath, opts.configOptional, opts.macros);
    const daemon = new Daemon(opts, config);
    await daemon.vmm.init();
    await daemon.applyConfig(config, false);
    daemon.server = new ControlServer({
      path: opts.socketPath,
      gid: config.socketOwner?.gid ?? null,
      log: opts.log,
      handle: (session, req, fds) => daemon.dispatch(session, req, fds),
    });
    if (config.socketOwner && config.socketOwner.uid !== 0) {
      opts.log.warn('socket owner: only the group of the socket is used; the owner stays root');
    }
    opts.log.info(`listening on ${opts.socketPath}`);
    daemon.startEnabled();
    return daemon;
  }

  /** Re-reads the config file: stopped VMs are replaced, running ones left alone. */
  async reload(): Promise<void> {
    const config = loadConfig(this.opts.configPath, this.opts.configOptional, this.opts.macros);
    for (const info of this.vmm.info()) {
      if (info.fromConfig && info.state === 'stopped') this.vmm.undefine(info.id);
    }
    this.configured.clear();
    this.config = config;
    await this.applyConfig(config, false);
    this.startEnabled();
    this.opts.log.info(`reloaded ${this.opts.configPath}`);
  }

  /** Stops every VM (graceful within the deadline, then forced) and closes the socket. */
  shutdown(): Promise<void> {
    this.stopping ??= (async () => {
      for (const t of this.timers) clearTimeout(t);
      this.server?.close();
      await this.vmm.shutdown(this.opts.shutdownTimeoutMs);
      await this.removeBridges();
      this.opts.log.info('all VMs stopped, exiting');
    })();
    return this.stopping;
  }

  private async applyConfig(config: VmdConfig, additive: boolean): Promise<void> {
    if (!additive) this.vmm.setLocalPrefix(config.localPrefix.inet);
    for (const sw of config.switches) {
      if (sw.enabled) await this.ensureBridge(sw.interface, sw.up);
    }
    for (const entry of config.vms) {
      const parent = entry.instanceOf === undefined ? undefined : this.configured.get(entry.instanceOf);
      const vm = parent ? mergeInstance(parent, entry) : entry;
      if (additive && this.configured.has(vm.name)) continue;
      this.configured.set(vm.name, vm);
      const owner = { uid: vm.owner?.uid ?? 0, gid: vm.owner?.gid ?? null };
      this.vmm.define(vm.name, owner, !vm.enabled, { memoryBytes: vm.memoryBytes, vcpus: vm.vcpus });
    }
  }

  /** Starts enabled configured VMs in staggered batches, as vmd does. */
  private startEnabled(): void {
    const { parallel, delaySec } = this.config.staggeredStart;
    const queue = [...this.configured.values()].filter((vm) => {
      const info = this.vmm.lookup(vm.name);
      return vm.enabled && info?.state === 'stopped';
    });
    for (const vm of queue) this.vmm.setWaiting(vm.name, true);
    queue.forEach((vm, i) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        this.vmm.setWaiting(vm.name, false);
        this.startConfigured(vm, vm.owner?.uid ?? 0).catch((err: Error) => {
          this.opts.log.warn(`failed to start vm ${vm.name}: ${err.message}`);
        });
      }, Math.floor(i / Math.max(1, parallel)) * delaySec * 1000);
      this.timers.add(t);
    });
  }

  private startConfigured(
    vm: ConfVm,
    uid: number,
    gid?: number,
    kernelFd?: number,
    fds?: RequestFds,
  ): Promise<VmInfo> {
    const params = openConfigured(vm, this.bridges(), kernelFd === undefined ? {} : { kernel: { fd: kernelFd } });
    fds?.adopt();
    return this.vmm.start(params, { uid, gid, fromConfig: true });
  }

  private bridges(): Map<string, string> {
    return new Map(this.config.switches.filter((s) => s.enabled).map((s) => [s.name, s.interface]));
  }

  private async ensureBridge(name: string, up: boolean): Promise<void> {
    if (!existsSync(`/sys/class/net/${name}`)) {
      await ipCommand(['link', 'add', 'name', name, 'type', 'bridge']);
      this.createdBridges.add(name);
      this.opts.log.info(`switch: created bridge ${name}`);
    }
    await ipCommand(['link', 'set', 'dev', name, up ? 'up' : 'down']);
  }

  private async removeBridges(): Promise<void> {
    for (const name of this.createdBridges) {
      await ipCommand(['link', 'del', 'dev', name]).catch((err: Error) => this.opts.log.warn(err.message));
    }
    this.createdBridges.clear();
  }

  /** Runs one request; the handler owns fds, so unused ones are closed here. */
  private async dispatch(session: Session, req: Request, fds: number[]) {
    const bag = new RequestFds(req.verb, fds);
    try {
      checkVerb(session.caller, req.verb);
      return await this.handle(session, req, bag);
    } finally {
      bag.release();
    }
  }

  private handle(session: Session, req: Request, fds: RequestFds) {
    const caller = session.caller;
    switch (req.verb) {
      case 'start':
        return this.start(session, req.args as unknown as StartArgs, fds);
      case 'stop':
        return this.stop(caller, req.args);
      case 'status':
        return Promise.resolve(ok(this.status(req.args as { target?: Target; running?: boolean })));
      case 'wait':
        return this.wait(caller, req.args as unknown as WaitArgs);
      case 'pause':
      case 'unpause':
        return this.pause(caller, req.verb, req.args.target as Target);
      case 'console':
        return this.console(caller, req.args as unknown as ConsoleArgs);
      case 'send':
        return this.send(req.args.target as Target, fds.adoptOne(0));
      case 'receive':
        return this.receive(caller, req.args.name as string | undefined, fds.adoptOne(0));
      case 'load':
        return this.load(req.args.path as string);
      case 'reload':
        return this.reload().then(() => ok({}));
      case 'reset':
        return this.reset((req.args.what as string | undefined) ?? 'all');
      case 'log':
        this.vmm.setVerbose(req.args.level === 'verbose' ? 2 : 0);
        return Promise.resolve(ok({ level: req.args.level }));
      case 'events':
        return this.events(session, req.id);
    }
  }

  private find(target: Target, departed = false): VmInfo {
    const vm = this.vmm.lookup(target) ?? (departed ? this.departed.get(String(target)) : undefined);
    if (!vm) throw new VmdError('notfound', `vm ${typeof target === 'number' ? target : `"${target}"`}: not found`);
    return vm;
  }

  private async start(session: Session, a: StartArgs, fds: RequestFds) {
    const caller = session.caller;
    const conf = this.configured.get(a.name);
    const kernelFd = a.kernel ? fds.get(a.kernel.fd) : undefined;
    if (conf) {
      checkControl(caller, this.vmm.lookup(a.name)!, 'start');
      const extra = Object.keys(a).filter((k) => k !== 'name' && k !== 'kernel');
      if (extra.length > 0) {
        throw new VmdError('state', `vm "${a.name}": defined in configuration; only -b may be given`);
      }
      return ok(await this.startConfigured(conf, caller.uid, caller.gid, kernelFd, fds));
    }
    const parent = a.instanceOf === undefined ? undefined : this.parentFor(caller, a);
    if (!parent && caller.uid !== 0) {
      throw new VmdError('permission', `start: vm "${a.name}": permission denied (only root may create VMs)`);
    }
    const own: VmParams = {
      name: a.name,
      memoryBytes: a.memoryBytes,
      vcpus: a.vcpus,
      kernel: kernelFd === undefined ? undefined : { fd: kernelFd, path: a.kernel?.path },
      initrd: a.initrd && { fd: fds.get(a.initrd.fd), path: a.initrd.path },
      cdrom: a.cdrom && { fd: fds.get(a.cdrom.fd), path: a.cdrom.path },
      cmdline: a.cmdline,
      disks: (a.disks ?? []).map((d) => ({
        image: { fd: fds.get(d.fd), path: d.path },
        bases: d.bases?.map((b) => ({ fd: fds.get(b) })),
        format: d.format,
      })),
      nics: a.nics?.map((n) => ({ ...n, switch: n.switch && this.bridgeOf(n.switch) })),
      bootDevice: a.bootDevice,
    };
    const params = parent ? { ...this.inherited(parent, own), ...defined(own) } : own;
    fds.adopt();
    // As in vmd, a VM made from the command line belongs to its user, not to a group.
    const info = await this.vmm.start(params, { uid: caller.uid });
    if (a.stopOnDisconnect) this.stopOnClose(session, info);
    return ok(info);
  }

  /** The configured parent of an instance the caller may make. */
  private parentFor(caller: Caller, a: StartArgs): ConfVm {
    const parent = this.configured.get(a.instanceOf!);
    if (!parent) throw new VmdError('notfound', `vm "${a.instanceOf}": not found (no such parent)`);
    checkInstance(caller, parent, a);
    if (this.vmm.lookup(a.name)) throw new VmdError('state', `vm "${a.name}": already exists`);
    return parent;
  }

  private stopOnClose(session: Session, info: VmInfo): void {
    session.onClose(() => {
      if (this.vmm.lookup(info.id)?.pid !== info.pid) return;
      this.opts.log.info(`vm ${info.name} (id ${info.id}): its client went away, stopping it`);
      this.vmm.terminate(info.id, { force: true }).catch(() => undefined);
    });
  }

  /**
   * What an instance takes from its parent, opened by vmd (vm.conf named the files): what
   * the instance does not set itself, never the disks, which two VMs must not share.
   */
  private inherited(parent: ConfVm, own: VmParams): VmParams {
    const files: ConfVm = {
      ...parent,
      disks: [],
      kernel: own.kernel ? undefined : parent.kernel,
      initrd: own.initrd ? undefined : parent.initrd,
      cdrom: own.cdrom ? undefined : parent.cdrom,
      interfaces: parent.interfaces.map((i) => withoutMac(i)),
    };
    // The instance belongs to whoever starts it, not to the parent's owner.
    const params = openConfigured(files, this.bridges());
    delete params.owner;
    return params;
  }

  private bridgeOf(name: string): string {
    const bridge = this.bridges().get(name);
    if (!bridge) throw new VmdError('notfound', `switch "${name}" not found`);
    return bridge;
  }

  private async stop(caller: Caller, a: StopArgs) {
    const targets = a.all
      ? this.vmm.info().filter((vm) => vm.pid !== null && mayControl(caller, vm))
      : [this.find(a.target ?? 0, true)];
    const results = await Promise.all(
      targets.map(async (vm) => {
        checkControl(caller, vm, 'stop');
        if (!this.vmm.lookup(vm.id) || (vm.pid === null && vm.state !== 'starting')) {
          return { id: vm.id, name: vm.name, result: 'not-running' };
        }
        const result = await this.vmm.terminate(vm.id, {
          force: a.force,
          timeoutMs: a.timeoutMs,
          wait: a.wait || a.timeoutMs !== undefined,
        });
        return { id: vm.id, name: vm.name, result };
      }),
    );
    return ok(results);
  }

  private status(a: { target?: Target; running?: boolean }): VmInfo[] {
    return this.vmm.info().filter((vm) => {
      if (a.running && vm.pid === null) return false;
      if (a.target === undefined) return true;
      return typeof a.target === 'number' ? vm.id === a.target : vm.name === a.target;
    });
  }

  private async wait(caller: Caller, a: WaitArgs) {
    const vm = this.find(a.target, a.for === 'stopped');
    checkControl(caller, vm, 'wait');
    const timeoutMs = a.timeoutMs;
    const what = `vm "${vm.name}"`;
    let work: Promise<unknown>;
    if (a.for === 'stopped') {
      const running = vm.pid !== null && this.vmm.lookup(vm.id) !== undefined;
      work = running ? this.vmm.waitExit(vm.id) : Promise.resolve();
    } else if (a.for === 'running') {
      work = this.untilRunning(vm.id);
    } else {
      let re: RegExp;
      try {
        re = new RegExp(a.for.console, 'm');
      } catch (err) {
        throw new VmdError('usage', `wait: bad pattern: ${(err as Error).message}`);
      }
      const console = this.vmm.console(vm.id);
      // The deadline below is the one that reports; the console's own is only a backstop.
      work = console.waitFor(re, 2 ** 31 - 1, 0);
    }
    await withDeadline(work, timeoutMs, `${what}: still waiting after ${(timeoutMs ?? 0) / 1000}s`);
    return ok(this.vmm.lookup(vm.id) ?? { ...vm, state: 'stopped', pid: null });
  }

  private untilRunning(id: number): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        const state = this.vmm.lookup(id)?.state;
        if (state === 'running' || state === 'paused') {
          this.vmm.off('event', check);
          resolve();
        }
      };
      this.vmm.on('event', check);
      check();
    });
  }

  private async pause(caller: Caller, verb: 'pause' | 'unpause', target: Target) {
    const vm = this.find(target);
    checkControl(caller, vm, verb);
    return ok(verb === 'pause' ? await this.vmm.pause(vm.id) : await this.vmm.unpause(vm.id));
  }

  /** Hands the client one end of a socketpair relaying the console. */
  private console(caller: Caller, a: ConsoleArgs) {
    const vm = this.find(a.target);
    checkControl(caller, vm, 'console');
    const log = this.vmm.console(vm.id);
    const [mine, theirs] = socketpair();
    // Half-open: a client whose input ended still gets the guest's answer.
    const sock = new Socket({ fd: mine, readable: true, writable: true, allowHalfOpen: true });
    sock.on('error', () => sock.destroy());
    if (a.mode !== 'attach') sock.write(log.snapshot().data);
    if (a.mode === 'log' || log.isEnded) {
      sock.end();
      return Promise.resolve(ok({ vm }, [theirs]));
    }
    const onData = (data: Buffer) => sock.write(data);
    const onEnd = () => sock.end();
    log.on('data', onData);
    log.once('end', onEnd);
    sock.on('close', () => {
      log.off('data', onData);
      log.off('end', onEnd);
    });
    if (a.mode === 'attach') {
      sock.on('data', (input: Buffer) => void log.input(input).catch(() => sock.destroy()));
    }
    return Promise.resolve(ok({ vm }, [theirs]));
  }

  private async send(target: Target, fd: number) {
    const vm = this.find(target);
    try {
      await this.vmm.send(vm.id, fd);
    } finally {
      closeSync(fd);
    }
    return ok({ id: vm.id, name: vm.name });
  }

  private async receive(caller: Caller, name: string | undefined, fd: number) {
    const info = await this.vmm.receive(fd, {
      name,
      uid: caller.uid,
      gid: caller.gid,
      open: (config) => {
        const conf: ConfVm = {
          name: config.name, enabled: true, memoryBytes: config.memoryBytes, vcpus: config.vcpus,
          kernel: config.kernel, initrd: config.initrd, cmdline: config.cmdline, cdrom: config.cdrom,
          disks: config.disks.map((d) => ({ path: d.path ?? '', format: d.format })),
          interfaces: config.nics.map((n) => ({ local: n.local, locked: false, up: true, lladdr: n.lladdr })),
          bootDevice: config.bootDevice, sev: false, seves: false, source: { file: '-', line: 0 },
        };
        const params = openConfigured(conf, this.bridges());
        params.nics = config.nics.map((n) => ({ lladdr: n.lladdr, local: n.local, switch: n.switch }));
        return params;
      },
    });
    return ok(info);
  }

  private async load(path: string) {
    if (!existsSync(path)) throw new VmdError('notfound', `load: ${path}: no such file`);
    const config = loadConfig(path, false, this.opts.macros);
    this.config.switches.push(...config.switches);
    await this.applyConfig(config, true);
    this.startEnabled();
    return ok({ path });
  }

  private async reset(what: string) {
    if (what === 'all' || what === 'vms') {
      await this.vmm.reset();
      this.configured.clear();
    }
    if (what === 'all' || what === 'switches') await this.removeBridges();
    return ok({ what });
  }

  /** Streams table events until the client goes away. */
  private events(session: Session, id: number) {
    return new Promise<{ result: unknown }>((resolve) => {
      const forward = (event: VmEvent) => {
        if (!session.stream(id, event)) this.vmm.off('event', forward);
      };
      this.vmm.on('event', forward);
      session.onClose(() => {
        this.vmm.off('event', forward);
        resolve(ok({}));
      });
    });
  }
}

/** Fails unless every directory on the path lets others through (VMs run as another user). */
function checkReachable(dir: string, user: { uid: number; gid: number }): void {
  for (let d = resolve(dir); ; d = dirname(d)) {
    const st = statSync(d);
    const bit = st.uid === user.uid ? 0o100 : st.gid === user.gid ? 0o010 : 0o001;
    if (!(st.mode & bit)) {
      throw new VmdError('failure', `state dir ${dir}: ${d} is not searchable by uid ${user.uid}`, {
        hint: 'VM processes run unprivileged; give the directory mode 0755',
      });
    }
    if (d === dirname(d)) return;
  }
}

/**
 * The descriptors that came with one request. A handler gets them by index and adopts them
 * once something owns them (the core, from start on); whatever is not adopted is closed
 * when the request ends, whichever way it ends.
 */
class RequestFds {
  private readonly borrowed = new Set<number>();
  private readonly adopted = new Set<number>();

  constructor(
    private readonly verb: string,
    private readonly fds: readonly number[],
  ) {}

  get(index: number): number {
    if (index >= this.fds.length || this.borrowed.has(index)) {
      throw new VmdError('usage', `${this.verb}: descriptor ${index} missing`);
    }
    this.borrowed.add(index);
    return this.fds[index];
  }

  /** Every descriptor got so far now belongs to someone else. */
  adopt(): void {
    for (const i of this.borrowed) this.adopted.add(i);
  }

  /** get() and adopt() in one, for verbs that take a single descriptor. */
  adoptOne(index: number): number {
    const fd = this.get(index);
    this.adopt();
    return fd;
  }

  release(): void {
    this.fds.forEach((fd, i) => {
      if (!this.adopted.has(i)) closeSync(fd);
    });
  }
}

/** The fields of an object that are set. */
function defined<T extends object>(obj: T): Partial<T> {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function withDeadline(work: Promise<unknown>, timeoutMs: number | undefined, message: string) {
  if (timeoutMs === undefined) return work;
  let timer: NodeJS.Timeout;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new VmdError('timeout', message)), timeoutMs);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}


