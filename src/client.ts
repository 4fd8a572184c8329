/**
 * The client library: what vmctl uses to talk to vmd, for any program to use.
 *
 *   import { connect } from 'vmd-ts';
 *   const client = await connect();
 *   for (const vm of await client.status()) console.log(vm.name, vm.state);
 *   client.close();
 */
import { closeSync } from 'node:fs';

import type {
  ConsoleArgs,
  Reply,
  StartArgs,
  StopArgs,
  Target,
  Verb,
  WaitFor,
} from './control/protocol.js';
import { DEFAULT_SOCKET, encode, MAX_MESSAGE_BYTES, MAX_MESSAGE_FDS, replyError } from './control/protocol.js';
import { VmdError, type ErrnoError } from './errors.js';
import { channel, connectUnix, type Channel } from './native.js';
import type { VmEvent } from './vmm/vmm.js';
import type { TerminateResult, VmInfo } from './vmm/types.js';

export interface ConnectOptions {
  /** The control socket; default $VMD_SOCKET, else /run/vmd.sock. */
  socket?: string;
}

export interface Response {
  result: unknown;
  /** Descriptors that came with the reply; the caller owns them. */
  fds: number[];
}

interface Waiter {
  resolve(r: Response): void;
  reject(err: Error): void;
  onStream?: (data: unknown, fds: number[]) => void;
}

/** The socket path a client uses: the option, else $VMD_SOCKET, else the default. */
export function socketPath(opts: ConnectOptions = {}): string {
  return opts.socket ?? process.env.VMD_SOCKET ?? DEFAULT_SOCKET;
}

/** Connects to vmd. */
export function connect(opts: ConnectOptions = {}): Promise<Client> {
  const path = socketPath(opts);
  let fd: number;
  try {
    fd = connectUnix(path);
  } catch (err) {
    const e = err as ErrnoError;
    const why =
      e.code === 'ENOENT'
        ? 'no such socket (is vmd running?)'
        : (e.message.split(': ').at(-1) ?? e.message).toLowerCase();
    return Promise.reject(new VmdError('failure', `connect: ${path}: ${why}`, { cause: err }));
  }
  return Promise.resolve(new Client(fd));
}

export interface StopResult {
  id: number;
  name: string;
  result: TerminateResult | 'not-running';
}

/** A connection to vmd. Requests may run concurrently. */
export class Client {
  private readonly chan: Channel;
  private readonly waiters = new Map<number, Waiter>();
  private nextId = 1;
  private closed: Error | null = null;

  constructor(fd: number) {
    this.chan = channel(
      fd,
      { framing: 'length', maxMessageBytes: MAX_MESSAGE_BYTES, maxFds: MAX_MESSAGE_FDS },
      {
        message: (data, fds) => this.onMessage(data, fds),
        close: (err) => this.fail(err ?? new VmdError('failure', 'vmd closed the connection')),
      },
    );
  }

  /** Sends a request; resolves with the reply. fds go with it (the caller keeps its copies). */
  request(
    verb: Verb,
    args: object = {},
    fds: readonly number[] = [],
    onStream?: (data: unknown, fds: number[]) => void,
  ): Promise<Response> {
    if (this.closed) return Promise.reject(this.closed);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiters.set(id, { resolve, reject, onStream });
      try {
        this.chan.send(encode({ id, verb, args: args as Record<string, unknown> }), fds);
      } catch (err) {
        this.waiters.delete(id);
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  async status(target?: Target, running?: boolean): Promise<VmInfo[]> {
    return (await this.request('status', { target, running })).result as VmInfo[];
  }

  /** Starts a VM; file descriptors are referenced by index from args. */
  async start(args: StartArgs, fds: readonly number[] = []): Promise<VmInfo> {
    return (await this.request('start', args, fds)).result as VmInfo;
  }

  async stop(args: StopArgs): Promise<StopResult[]> {
    return (await this.request('stop', args)).result as StopResult[];
  }

  async wait(target: Target, what: WaitFor, timeoutMs?: number): Promise<VmInfo> {
    return (await this.request('wait', { target, for: what, timeoutMs })).result as VmInfo;
  }

  async pause(target: Target): Promise<VmInfo> {
    return (await this.request('pause', { target })).result as VmInfo;
  }

  async unpause(target: Target): Promise<VmInfo> {
    return (await this.request('unpause', { target })).result as VmInfo;
  }

  /** A socket relaying the console (see ConsoleArgs.mode); the caller owns the fd. */
  async console(target: Target, mode: ConsoleArgs['mode']): Promise<{ vm: VmInfo; fd: number }> {
    const r = await this.request('console', { target, mode });
    if (r.fds.length !== 1) {
      r.fds.forEach((fd) => closeSync(fd));
      throw new VmdError('failure', 'console: vmd sent no console socket');
    }
    return { vm: (r.result as { vm: VmInfo }).vm, fd: r.fds[0] };
  }

  /** Writes a VM's state to fd and ends the VM. */
  async send(target: Target, fd: number): Promise<{ id: number; name: string }> {
    return (await this.request('send', { target }, [fd])).result as { id: number; name: string };
  }

  /** Starts a VM from a stream read from fd. */
  async receive(fd: number, name?: string): Promise<VmInfo> {
    return (await this.request('receive', { name }, [fd])).result as VmInfo;
  }

  async load(path: string): Promise<void> {
    await this.request('load', { path });
  }

  async reload(): Promise<void> {
    await this.request('reload');
  }

  async reset(what: 'all' | 'vms' | 'switches' = 'all'): Promise<void> {
    await this.request('reset', { what });
  }

  async log(level: 'brief' | 'verbose'): Promise<void> {
    await this.request('log', { level });
  }

  /** Calls onEvent for every event until the connection closes. */
  events(onEvent: (event: VmEvent) => void): Promise<void> {
    return this.request('events', {}, [], (data) => onEvent(data as VmEvent)).then(() => undefined);
  }

  close(): void {
    if (this.closed) return;
    this.chan.close();
    this.fail(new VmdError('failure', 'connection closed'));
  }

  private onMessage(data: Buffer, fds: number[]): void {
    let reply: Reply;
    try {
      reply = JSON.parse(data.toString('utf8')) as Reply;
    } catch {
      fds.forEach((fd) => closeSync(fd));
      return;
    }
    const waiter = this.waiters.get(reply.id);
    if (!waiter) {
      fds.forEach((fd) => closeSync(fd));
      return;
    }
    if ('stream' in reply) {
      if (waiter.onStream) waiter.onStream(reply.stream, fds);
      else fds.forEach((fd) => closeSync(fd));
      return;
    }
    this.waiters.delete(reply.id);
    if (reply.ok) waiter.resolve({ result: reply.result, fds });
    else {
      fds.forEach((fd) => closeSync(fd));
      waiter.reject(replyError(reply.error));
    }
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.closed = err;
    for (const w of this.waiters.values()) w.reject(err);
    this.waiters.clear();
  }
}
