/**
 * Typed access to the native addon (native/*.cc): only what Node cannot do itself.
 * Every function throws Node-style errors (code, errno, syscall) and leaks no descriptor.
 */
import { closeSync, existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A parent descriptor and the number it gets in the child. */
export type FdMapping = readonly [parentFd: number, childFd: number];

export interface SpawnOptions {
  /** Working directory of the child; default: the parent's. */
  cwd?: string;
  /** Start a new session (setsid); default true. */
  setsid?: boolean;
  /** Linux: signal the child gets when the spawning thread dies; 0 for none; default SIGKILL. */
  deathSignal?: number;
  /** Credentials to switch to before exec (needs privilege); groups replaces supplementary. */
  uid?: number;
  gid?: number;
  groups?: number[];
}

export interface ExitStatus {
  pid: number;
  /** Exit code, or null when a signal ended the process. */
  code: number | null;
  /** Signal name (e.g. 'SIGKILL'), or null on a normal exit. */
  signal: string | null;
}

/** A child being watched; it holds a pidfd, so kill() never hits a reused pid. */
export interface ProcessWatch {
  readonly pid: number;
  /** Sends a signal (name or number, default SIGTERM); false once the process has exited. */
  kill(signal?: string | number): boolean;
  /** Lets the event loop exit while the child runs (default: the watch keeps it alive). */
  unref(): void;
  ref(): void;
}

export interface ChannelOptions {
  /** 'length': 4-byte big-endian length prefix per message; 'raw': bytes as they arrive. */
  framing: 'length' | 'raw';
  /** Largest message accepted (length framing); a bigger one closes with EMSGSIZE. */
  maxMessageBytes?: number;
  /** Most descriptors accepted with one message; more closes with EMSGSIZE. */
  maxFds?: number;
}

export interface ChannelHandlers {
  /** A message (or chunk, for raw framing) and the descriptors that came with it; the
   *  handler owns those descriptors and must close them. */
  message(data: Buffer, fds: number[]): void;
  /** The peer closed (err undefined) or the channel failed; the descriptor is closed. */
  close(err?: Error): void;
}

/** A unix stream socket read with recvmsg off the JS thread, so no passed fd is dropped. */
export interface Channel {
  readonly fd: number;
  /** Queues a message; fds are duplicated first, so the caller keeps its own copies. */
  send(data: Buffer, fds?: readonly number[]): void;
  /** Bytes queued but not yet written. */
  readonly pending: number;
  /** Closes now; queued bytes are dropped. The close handler is not called. */
  close(): void;
  ref(): void;
  unref(): void;
}

export interface UnixServer {
  readonly fd: number;
  close(): void;
  ref(): void;
  unref(): void;
}

export interface Tap {
  fd: number;
  name: string;
}

export interface Pty {
  master: number;
  slave: number;
  /** Path of the slave, e.g. /dev/pts/5. */
  path: string;
}

export interface PeerCred {
  uid: number;
  gid: number;
  /** The peer's pid, or -1 where the platform does not say (OpenBSD getpeereid). */
  pid: number;
}

/** A VM the hypervisor knows, whoever started it. */
export interface HypervisorVm {
  /** The hypervisor's id: the pid of the VM process on Linux, the vmm(4) id on OpenBSD. */
  id: number;
  pid: number;
  vcpus: number;
  /** Guest memory size in bytes, 0 where unknown. */
  memoryBytes: number;
  /** Resident memory of the VM process in bytes. */
  residentBytes: number;
  /** Process name on Linux, VM name on OpenBSD. */
  name: string;
}

interface Addon {
  spawn(file: string, argv: string[], env: string[], fds: number[], opts: SpawnOptions): number;
  watchExit(pid: number, cb: (status: ExitStatus) => void): ProcessWatch;
  socketpair(): [number, number];
  channel(fd: number, opts: ChannelOptions, handlers: ChannelHandlers): Channel;
  listenUnix(path: string, backlog: number, onConnection: (fd: number) => void): UnixServer;
  connectUnix(path: string): number;
  openTap(name: string): Tap;
  openPty(): Pty;
  peerCred(fd: number): PeerCred;
  hypervisorInfo(pids?: readonly number[]): HypervisorVm[];
  hypervisorTerminate(id: number): void;
}

const ADDON_NAME = 'vmd_native.node';

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      const { name } = JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string };
      if (name === 'vmd-ts') return dir;
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('vmd-ts: cannot find the package root');
    dir = up;
  }
}

function buildPaths(root: string): string[] {
  return [join(root, 'build', 'Release', ADDON_NAME), join(root, 'build', 'Debug', ADDON_NAME)];
}

/** Where this process keeps the addons it has loaded, by path. */
const LOADED = Symbol.for('vmd-ts.native');

/**
 * Loads the addon at path once per process, whoever asks (vmctl's bundle and the library
 * are separate copies of this module). process.dlopen rather than require: the module
 * loader's resolution costs more than loading the library, and every vmctl run pays it.
 */
function dlopenOnce(path: string): Addon {
  const store = globalThis as { [LOADED]?: Map<string, Addon> };
  const loaded = (store[LOADED] ??= new Map<string, Addon>());
  let found = loaded.get(path);
  if (!found) {
    const mod = { exports: {} as Addon };
    process.dlopen(mod, path);
    found = mod.exports;
    loaded.set(path, found);
  }
  return found;
}

function loadAddon(): Addon {
  const override = process.env.VMD_NATIVE_PATH;
  const tried = override ? [resolve(override)] : buildPaths(packageRoot());
  const errors: string[] = [];
  for (const path of tried) {
    if (!existsSync(path)) {
      errors.push(`${path}: not found`);
      continue;
    }
    try {
      return dlopenOnce(path);
    } catch (err) {
      errors.push(`${path}: ${(err as Error).message}`);
    }
  }
  throw new Error(
    `vmd-ts: cannot load the native addon (run npm run build:native); tried:\n  ` +
      errors.join('\n  '),
  );
}

const addon = loadAddon();

/** Closes descriptors, ignoring any that are already closed. */
export function closeAll(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {
      // already closed: nothing to release
    }
  }
}

/**
 * Starts a program with exactly the given descriptors (fds 0-2 not mapped get /dev/null);
 * returns its pid. Exec failures throw with errno and syscall and leave no zombie.
 * The child must then be watched with watchExit, which reaps it.
 */
export function spawn(
  file: string,
  argv: readonly string[],
  env: Readonly<Record<string, string>>,
  fds: readonly FdMapping[],
  opts: SpawnOptions = {},
): number {
  const envList = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return addon.spawn(file, [...argv], envList, fds.flat(), opts);
}

/** Watches (and reaps) a child started by spawn; never touches Node's own children. */
export function watchExit(pid: number, cb: (status: ExitStatus) => void): ProcessWatch {
  return addon.watchExit(pid, cb);
}

/** A connected AF_UNIX stream pair, both ends non-blocking and close-on-exec. */
export function socketpair(): [number, number] {
  return addon.socketpair();
}

/** Takes ownership of a connected unix socket and exchanges messages with descriptors. */
export function channel(fd: number, opts: ChannelOptions, handlers: ChannelHandlers): Channel {
  return addon.channel(fd, opts, handlers);
}

/** Listens on a unix socket path (which must not exist); each accepted fd is the callee's. */
export function listenUnix(
  path: string,
  onConnection: (fd: number) => void,
  backlog = 64,
): UnixServer {
  return addon.listenUnix(path, backlog, onConnection);
}

/** Connects to a unix socket path; returns the close-on-exec descriptor. */
export function connectUnix(path: string): number {
  return addon.connectUnix(path);
}

/** Opens a tap device: on Linux named name (may hold %d), on OpenBSD the next free /dev/tapN. */
export function openTap(name = ''): Tap {
  return addon.openTap(name);
}

/** Opens a pseudo-terminal in raw mode; both ends close-on-exec. */
export function openPty(): Pty {
  return addon.openPty();
}

/** The credentials of the process at the other end of a unix socket. */
export function peerCred(fd: number): PeerCred {
  return addon.peerCred(fd);
}

/**
 * Every VM the hypervisor runs on this host, or only those of the processes in pids. On Linux
 * a full listing reads every process's descriptors, so name the processes when you can.
 */
export function hypervisorInfo(pids?: readonly number[]): HypervisorVm[] {
  return addon.hypervisorInfo(pids);
}

/** Ends a VM by its hypervisor id (see HypervisorVm.id). */
export function hypervisorTerminate(id: number): void {
  addon.hypervisorTerminate(id);
}
