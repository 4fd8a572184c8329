/**
 * A VM's console: the daemon keeps the master end of the pty the VM writes to, logs what the
 * guest prints (bounded), and relays it to anyone attached. Keeping the master in the daemon
 * means the guest never blocks on an unread console and output from boot is never lost.
 */
import { EventEmitter } from 'node:events';
import { write } from 'node:fs';
import { ReadStream } from 'node:tty';

import { VmdError } from '../errors.js';

/** Default bound of the kept console output. */
export const CONSOLE_LOG_BYTES = 1024 * 1024;

/**
 * Output of one console. Emits 'data' (Buffer) for new output and 'end' when the VM side is
 * gone. `offset` counts every byte ever received, so followers can tell what they missed.
 */
export class ConsoleLog extends EventEmitter {
  private chunks: Buffer[] = [];
  private size = 0;
  private total = 0;
  private stream: ReadStream | null;
  private ended = false;

  /** Takes ownership of the pty master fd. */
  constructor(
    private readonly master: number,
    private readonly limit = CONSOLE_LOG_BYTES,
  ) {
    super();
    this.stream = new ReadStream(master);
    this.stream.on('data', (data: Buffer) => this.append(data));
    // EIO is how a pty master reports that the slave side has closed.
    this.stream.on('error', () => this.finish());
    this.stream.on('end', () => this.finish());
  }

  /** Bytes received since the console was opened. */
  get offset(): number {
    return this.total;
  }

  get isEnded(): boolean {
    return this.ended;
  }

  /** The kept output (at most the bound), and the offset of its first byte. */
  snapshot(): { data: Buffer; start: number } {
    return { data: Buffer.concat(this.chunks), start: this.total - this.size };
  }

  /** Sends input to the guest. */
  input(data: Buffer): Promise<void> {
    if (this.ended || !this.stream) return Promise.reject(new VmdError('state', 'console closed'));
    return new Promise((resolve, reject) => {
      write(this.master, data, (err) => (err ? reject(err) : resolve()));
    });
  }

  /**
   * Resolves with the match once the output after `from` (an offset; default: everything
   * kept) matches re; rejects at the deadline or when the console ends.
   */
  waitFor(re: RegExp, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const kept = this.snapshot();
      const skip = Math.max(0, from - kept.start);
      let text = kept.data.subarray(skip).toString('utf8');
      const cleanup = () => {
        clearTimeout(timer);
        this.off('data', onData);
        this.off('end', onEnd);
      };
      const check = (): boolean => {
        const m = re.exec(text);
        if (m) {
          cleanup();
          resolve(m);
        }
        return m !== null;
      };
      const onData = (data: Buffer) => {
        text += data.toString('utf8');
        // Keep the window bounded; a pattern longer than the log bound cannot be waited for.
        if (text.length > this.limit) text = text.slice(text.length - this.limit);
        check();
      };
      const onEnd = () => {
        cleanup();
        reject(new VmdError('state', `console ended before ${String(re)} appeared`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new VmdError('timeout', `${String(re)} did not appear within ${timeoutMs}ms`));
      }, timeoutMs);
      if (check()) return;
      if (this.ended) return onEnd();
      this.on('data', onData);
      this.on('end', onEnd);
    });
  }

  /** Stops reading and closes the master (the stream owns the descriptor). */
  close(): void {
    if (!this.stream) return;
    const stream = this.stream;
    this.stream = null;
    stream.removeAllListeners('data');
    stream.destroy();
    this.finish();
  }

  private append(data: Buffer): void {
    this.chunks.push(data);
    this.size += data.length;
    this.total += data.length;
    while (this.size - this.chunks[0].length >= this.limit && this.chunks.length > 1) {
      this.size -= this.chunks.shift()!.length;
    }
    if (this.size > this.limit && this.chunks.length === 1) {
      this.chunks[0] = this.chunks[0].subarray(this.size - this.limit);
      this.size = this.limit;
    }
    this.emit('data', data);
  }

  private finish(): void {
    if (this.ended) return;
    this.ended = true;
    this.emit('end');
  }
}
