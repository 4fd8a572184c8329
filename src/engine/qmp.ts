/**
 * A QMP client over an already-connected unix socket (one end of a socketpair whose other
 * end QEMU inherited). Reads go through the addon's channel so that no descriptor is ever
 * lost, and commands like getfd can carry a descriptor with their bytes.
 */
import { EventEmitter } from 'node:events';

import { VmdError } from '../errors.js';
import type { Logger } from '../log.js';
import { channel, closeAll, type Channel } from '../native.js';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
}

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(err: Error): void;
}

/** Largest line accepted from QEMU; a QMP reply is far below this. */
const MAX_LINE_BYTES = 16 * 1024 * 1024;

/**
 * One QMP session. Emits 'event' (QmpEvent) and 'close' (Error | undefined) once.
 * Call handshake() first; commands sent before it fail.
 */
export class QmpClient extends EventEmitter {
  private readonly chan: Channel;
  private readonly pending = new Map<number, Pending>();
  private readonly greeting: Promise<void>;
  private greeted!: () => void;
  private buffer = '';
  private nextId = 1;
  private closed: Error | null = null;

  /** Takes ownership of fd, a connected socket whose peer is QEMU's monitor. */
  constructor(
    fd: number,
    private readonly log: Logger,
    private readonly label: string,
  ) {
    super();
    this.greeting = new Promise((resolve) => {
      this.greeted = resolve;
    });
    this.chan = channel(fd, { framing: 'raw', maxFds: 0 }, {
      message: (data, fds) => this.receive(data, fds),
      close: (err) => this.fail(err ?? new Error('monitor connection closed')),
    });
  }

  /** Waits for the greeting and enters command mode, or fails after timeoutMs. */
  async handshake(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new VmdError('timeout', `no QMP greeting within ${timeoutMs}ms`));
      }, timeoutMs);
    });
    const closed = new Promise<never>((_, reject) => {
      this.once('close', (err: Error) => reject(err));
    });
    try {
      await Promise.race([this.greeting, deadline, closed]);
      await Promise.race([this.execute('qmp_capabilities'), deadline, closed]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Runs one command; rejects with QEMU's error description. fds go with the command. */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    fds: readonly number[] = [],
  ): Promise<T> {
    if (this.closed) return Promise.reject(this.closed);
    const id = this.nextId++;
    const message: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) message.arguments = args;
    this.log.debug(`${this.label}: qmp ${command}${args ? ' ' + JSON.stringify(args) : ''}`);
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve, reject });
      this.chan.send(Buffer.from(JSON.stringify(message) + '\n'), fds);
    });
  }

  /** Closes the session; pending commands fail. QEMU keeps running without a monitor. */
  close(): void {
    if (this.closed) return;
    this.chan.close();
    this.fail(new Error('monitor connection closed'));
  }

  get isClosed(): boolean {
    return this.closed !== null;
  }

  private receive(data: Buffer, fds: number[]): void {
    closeAll(fds);
    this.buffer += data.toString('utf8');
    if (this.buffer.length > MAX_LINE_BYTES) {
      this.chan.close();
      this.fail(new VmdError('engine', 'QMP line too long'));
      return;
    }
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line.length > 0) this.dispatch(line);
    }
  }

  private dispatch(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.log.warn(`${this.label}: unparsable QMP line: ${line.slice(0, 200)}`);
      return;
    }
    if ('QMP' in msg) {
      this.greeted();
    } else if (typeof msg.event === 'string') {
      this.log.debug(`${this.label}: qmp event ${msg.event}`);
      this.emit('event', { event: msg.event, data: msg.data });
    } else if (typeof msg.id === 'number') {
      this.settle(msg.id, msg);
    }
  }

  private settle(id: number, msg: Record<string, unknown>): void {
    const waiter = this.pending.get(id);
    if (!waiter) return;
    this.pending.delete(id);
    if ('error' in msg) {
      const error = msg.error as { class?: string; desc?: string };
      waiter.reject(new VmdError('engine', `${waiter.command}: ${error.desc ?? 'failed'}`));
    } else {
      waiter.resolve(msg.return);
    }
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.closed = err;
    for (const waiter of this.pending.values()) waiter.reject(err);
    this.pending.clear();
    this.emit('close', err);
  }
}
