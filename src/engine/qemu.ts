/**
 * The QEMU engine: each VM is a qemu-system-x86_64 child of ours, spawned by the addon with
 * every file as an inherited descriptor, in QEMU's seccomp sandbox, as an unprivileged user,
 * in an empty working directory, and driven over QMP on a socketpair.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import {
  accessSync,
  chownSync,
  closeSync,
  constants,
  fstatSync,
  openSync,
  readFile,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { Socket } from 'node:net';
import { delimiter, join } from 'node:path';

import { VmdError } from '../errors.js';
import type { Logger } from '../log.js';
import { socketpair, spawn, watchExit, type ExitStatus, type ProcessWatch } from '../native.js';
import { chooseAccel } from './accel.js';
import { QmpClient, type QmpEvent } from './qmp.js';
import { buildQemuCommand } from './qemu-args.js';
import type {
  Accel,
  AccelSetting,
  Engine,
  EngineVm,
  LaunchOptions,
  LaunchSpec,
  VmExit,
} from './types.js';

export interface QemuEngineOptions {
  /** The QEMU binary, a path or a name looked up in PATH. */
  binary?: string;
  accel?: AccelSetting;
  machine?: string;
  /** Credentials VM processes run with; null keeps the daemon's own. */
  user?: { uid: number; gid: number } | null;
  /** An empty directory VM processes run in. */
  workDir: string;
  /** QEMU's seccomp sandbox; default on. */
  sandbox?: boolean;
  /** Where private copies of boot files the VM user may not read are made; default tmpdir. */
  scratchDir?: string;
  log: Logger;
}

/** How long the error output may lag behind the exit before the exit is reported anyway. */
const STDERR_DRAIN_MS = 1000;
/** Lines of error output kept per VM process. */
const STDERR_LINES = 20;
/** Interval between migration status polls. */
const MIGRATE_POLL_MS = 20;

/** Creates the QEMU engine; resolves the accelerator once and logs why. */
export function createQemuEngine(opts: QemuEngineOptions): Engine {
  const choice = chooseAccel(opts.accel ?? 'auto');
  opts.log.info(`engine qemu: ${choice.reason}`);
  return new QemuEngine(opts, choice.accel, choice.reason);
}

class QemuEngine implements Engine {
  readonly name = 'qemu';
  private readonly binary: string;

  constructor(
    private readonly opts: QemuEngineOptions,
    readonly accel: Accel,
    readonly accelReason: string,
  ) {
    this.binary = findBinary(opts.binary ?? 'qemu-system-x86_64');
  }

  async launch(spec: LaunchSpec, launchOpts: LaunchOptions): Promise<EngineVm> {
    const copies: number[] = [];
    try {
      const boot = { ...spec };
      for (const key of ['kernelFd', 'initrdFd'] as const) {
        const fd = spec[key];
        if (fd === undefined || readableBy(fd, this.opts.user)) continue;
        boot[key] = await privateCopy(fd, this.opts.scratchDir ?? tmpdir(), this.opts.user!);
        copies.push(boot[key]);
      }
      return await this.spawnVm(boot, launchOpts);
    } finally {
      for (const fd of copies) closeSync(fd);
    }
  }

  private async spawnVm(spec: LaunchSpec, launchOpts: LaunchOptions): Promise<EngineVm> {
    const [qmpParent, qmpChild] = socketpair();
    let errParent: number, errChild: number;
    try {
      [errParent, errChild] = socketpair();
    } catch (err) {
      closeSync(qmpParent);
      closeSync(qmpChild);
      throw err;
    }
    const cmd = buildQemuCommand(spec, {
      accel: this.accel,
      machine: this.opts.machine ?? 'q35',
      sandbox: this.opts.sandbox ?? true,
      qmpFd: qmpChild,
      stderrFd: errChild,
    });
    const label = `vm ${spec.name} (id ${spec.vmId})`;
    this.opts.log.debug(`${label}: exec ${this.binary} ${cmd.argv.join(' ')}`);
    let pid: number;
    try {
      pid = spawn(this.binary, [this.binary, ...cmd.argv], spec.marker, cmd.fds, this.spawnCreds());
    } catch (err) {
      for (const fd of [qmpParent, errParent]) closeSync(fd);
      throw new VmdError('engine', `cannot start ${this.binary}: ${(err as Error).message}`, {
        cause: err,
      });
    } finally {
      closeSync(qmpChild);
      closeSync(errChild);
    }
    const vm = new QemuVm(pid, this.accel, qmpParent, errParent, this.opts.log, label);
    await vm.started(launchOpts.timeoutMs, spec.incomingFd !== undefined);
    return vm;
  }

  private spawnCreds(): { cwd: string; uid?: number; gid?: number; groups?: number[] } {
    const user = this.opts.user;
    if (!user) return { cwd: this.opts.workDir };
    const groups = this.accel === 'kvm' ? kvmGroups(user) : [];
    return { cwd: this.opts.workDir, uid: user.uid, gid: user.gid, groups };
  }
}

/**
 * Whether the VM user can reopen fd's file: QEMU reads -kernel and -initrd through
 * /proc/self/fd/N, and opening that link checks the file's permissions again.
 */
function readableBy(fd: number, user: { uid: number; gid: number } | null | undefined): boolean {
  if (!user || user.uid === 0) return true;
  const st = fstatSync(fd);
  if (st.uid === user.uid) return (st.mode & 0o400) !== 0;
  if (st.gid === user.gid) return (st.mode & 0o040) !== 0;
  return (st.mode & 0o004) !== 0;
}

/** A read-only descriptor of an unlinked copy of fd's contents that only user can read. */
async function privateCopy(fd: number, dir: string, user: { uid: number; gid: number }): Promise<number> {
  const data = await new Promise<Buffer>((resolve, reject) => {
    readFile(fd, (err, buf) => (err ? reject(err) : resolve(buf)));
  });
  const path = join(dir, `vmd-boot-${process.pid}-${randomBytes(6).toString('hex')}`);
  writeFileSync(path, data, { mode: 0o600, flag: 'wx' });
  try {
    chownSync(path, user.uid, user.gid);
    return openSync(path, 'r');
  } finally {
    unlinkSync(path);
  }
}

/** Supplementary groups that let the VM user open /dev/kvm, where its group grants that. */
function kvmGroups(user: { uid: number; gid: number }): number[] {
  const st = statSync('/dev/kvm');
  if (user.uid === 0 || st.uid === user.uid) return [];
  if ((st.mode & 0o060) === 0o060) return [st.gid];
  if ((st.mode & 0o006) === 0o006) return [];
  throw new VmdError('engine', `accel kvm: /dev/kvm is not accessible to uid ${user.uid}`, {
    hint: 'give the device a group with read-write access, or use accel tcg',
  });
}

function findBinary(name: string): string {
  if (name.includes('/')) return name;
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // keep looking
    }
  }
  throw new VmdError('engine', `${name}: not found in PATH`, {
    hint: 'install QEMU (Debian: apt-get install qemu-system-x86)',
  });
}

class QemuVm extends EventEmitter implements EngineVm {
  private readonly qmp: QmpClient;
  private readonly watch: ProcessWatch;
  private readonly stderr: Socket;
  private readonly errLines: string[] = [];
  private errTail = '';
  private errDone: Promise<void>;
  private shutdownReason: string | null = null;
  private exit: VmExit | null = null;

  constructor(
    readonly pid: number,
    readonly accel: Accel,
    qmpFd: number,
    errFd: number,
    private readonly log: Logger,
    private readonly label: string,
  ) {
    super();
    this.stderr = new Socket({ fd: errFd, readable: true, writable: false });
    this.errDone = new Promise((resolve) => this.stderr.once('close', () => resolve()));
    this.stderr.on('data', (chunk: Buffer) => this.collectError(chunk));
    this.stderr.on('error', () => undefined);
    this.qmp = new QmpClient(qmpFd, log, label);
    this.qmp.on('event', (ev: QmpEvent) => this.onEvent(ev));
    this.qmp.on('close', () => undefined);
    this.watch = watchExit(pid, (status) => void this.onExit(status));
  }

  /** Resolves once QEMU answers on its monitor (and, when restoring, has loaded the state). */
  async started(timeoutMs: number, incoming: boolean): Promise<void> {
    try {
      await this.qmp.handshake(timeoutMs);
      if (incoming) await this.incomingDone(timeoutMs);
    } catch (err) {
      const exit = this.exit ?? (await this.killAndWait());
      if (err instanceof VmdError && err.code === 'timeout') throw err;
      throw this.startError(exit);
    }
  }

  private killAndWait(): Promise<VmExit> {
    const exited = new Promise<VmExit>((resolve) => this.once('exit', resolve));
    this.kill('SIGKILL');
    return exited;
  }

  rebootEndsVm(): Promise<void> {
    return this.qmp.execute('set-action', { reboot: 'shutdown' }).then(() => undefined);
  }

  powerButton(): Promise<void> {
    return this.qmp.execute('system_powerdown').then(() => undefined);
  }

  pause(): Promise<void> {
    return this.qmp.execute('stop').then(() => undefined);
  }

  resume(): Promise<void> {
    return this.qmp.execute('cont').then(() => undefined);
  }

  async saveTo(fd: number, timeoutMs: number): Promise<void> {
    await this.qmp.execute('getfd', { fdname: 'vmd-send' }, [fd]);
    // The default cap (128 MiB/s) makes a local save ten times slower than the disk allows.
    await this.qmp.execute('migrate-set-parameters', { 'max-bandwidth': 8 * 1024 ** 3 });
    await this.qmp.execute('migrate', { uri: 'fd:vmd-send' });
    await this.migrationDone(timeoutMs);
  }

  kill(signal: string): boolean {
    return this.watch.kill(signal);
  }

  detach(): void {
    this.qmp.close();
  }

  private async incomingDone(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const st = await this.qmp.execute<{ status: string }>('query-status');
      if (st.status !== 'inmigrate') return;
      if (Date.now() > deadline) {
        throw new VmdError('timeout', `restore did not finish within ${timeoutMs}ms`);
      }
      await delay(MIGRATE_POLL_MS);
    }
  }

  private async migrationDone(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const info = await this.qmp.execute<{ status?: string; 'error-desc'?: string }>(
        'query-migrate',
      );
      if (info.status === 'completed') return;
      if (info.status === 'failed' || info.status === 'cancelled') {
        throw new VmdError('engine', `save failed: ${info['error-desc'] ?? info.status}`);
      }
      if (Date.now() > deadline) {
        await this.qmp.execute('migrate_cancel').catch(() => undefined);
        throw new VmdError('timeout', `save did not finish within ${timeoutMs}ms`);
      }
      await delay(MIGRATE_POLL_MS);
    }
  }

  private onEvent(ev: QmpEvent): void {
    switch (ev.event) {
      case 'SHUTDOWN':
        this.shutdownReason = typeof ev.data?.reason === 'string' ? ev.data.reason : null;
        break;
      case 'RESET':
        if (ev.data?.guest === true) this.emit('reset');
        break;
      case 'STOP':
        this.emit('stop');
        break;
      case 'RESUME':
        this.emit('resume');
        break;
      case 'POWERDOWN':
        this.emit('powerdown');
        break;
    }
  }

  private async onExit(status: ExitStatus): Promise<void> {
    await Promise.race([this.errDone, delay(STDERR_DRAIN_MS)]);
    this.stderr.destroy();
    this.qmp.close();
    this.exit = {
      ...status,
      reason: this.shutdownReason,
      lastError: this.errLines.at(-1) ?? (this.errTail.trim() || null),
    };
    this.emit('exit', this.exit);
  }

  private collectError(chunk: Buffer): void {
    const text = this.errTail + chunk.toString('utf8');
    const lines = text.split('\n');
    this.errTail = lines.pop() ?? '';
    for (const raw of lines) {
      const line = raw.replace(/^qemu-system-[\w-]+: /, '').trim();
      if (line.length === 0) continue;
      this.log.warn(`${this.label}: qemu: ${line}`);
      this.errLines.push(line);
      if (this.errLines.length > STDERR_LINES) this.errLines.shift();
    }
  }

  private startError(exit: VmExit): VmdError {
    const how = exit.signal ? `killed by ${exit.signal}` : `exited with status ${exit.code}`;
    return new VmdError('engine', exit.lastError ?? `qemu ${how} while starting`);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
