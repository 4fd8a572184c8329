/**
 * Byte streams of vmctl: sockets made from passed descriptors, line splitting of console
 * output, and copying with a progress line on a terminal.
 */
import { Socket } from 'node:net';
import { StringDecoder } from 'node:string_decoder';

import type { OutputStream } from './command.js';
import { formatProgress } from './format.js';

/** How often the progress line is redrawn. */
const PROGRESS_INTERVAL_MS = 200;

/** Rethrows anything but EPIPE: a reader of stdout that has gone is not an error. */
export function ignoreEpipe(err: unknown): void {
  if ((err as NodeJS.ErrnoException).code !== 'EPIPE') throw err;
}

/** A net.Socket over a connected unix socket descriptor; the socket owns the fd. */
export function socketFromFd(fd: number): Socket {
  return new Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
}

/**
 * Resolves once the peer has sent everything ('end'; the socket is half-open, so 'close'
 * would wait for our side too) or the socket is gone. Errors just end the wait.
 */
export function peerDone(sock: Socket): Promise<void> {
  return new Promise((resolve) => {
    sock.once('end', () => resolve());
    sock.once('close', () => resolve());
    sock.once('error', () => sock.destroy());
  });
}

/**
 * Splits console output into lines: UTF-8 decoded across chunk boundaries, `\n` ends a
 * line, and a `\r` before it is dropped.
 */
export class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private rest = '';

  /** The lines completed by this chunk. */
  push(chunk: Buffer | string): string[] {
    this.rest += typeof chunk === 'string' ? chunk : this.decoder.write(chunk);
    const lines = this.rest.split('\n');
    this.rest = lines.pop() ?? '';
    return lines.map((l) => l.replace(/\r$/, ''));
  }

  /** The unterminated last line, if any. */
  end(): string[] {
    const last = (this.rest + this.decoder.end()).replace(/\r$/, '');
    this.rest = '';
    return last === '' ? [] : [last];
  }
}

/** A progress line on stderr, redrawn in place; silent when not enabled. */
export class Progress {
  private bytes = 0;
  private readonly started = Date.now();
  private lastDraw = 0;

  constructor(
    private readonly out: OutputStream,
    private readonly label: string,
    private readonly enabled: boolean,
  ) {}

  get total(): number {
    return this.bytes;
  }

  add(n: number): void {
    this.bytes += n;
    const now = Date.now();
    if (this.enabled && now - this.lastDraw >= PROGRESS_INTERVAL_MS) {
      this.lastDraw = now;
      this.draw(now);
    }
  }

  /** Draws the final figures and ends the line. */
  finish(): void {
    if (!this.enabled) return;
    this.draw(Date.now());
    this.out.write('\n');
  }

  private draw(now: number): void {
    this.out.write(`\r\x1b[K${this.label}: ${formatProgress(this.bytes, now - this.started)}`);
  }
}

/**
 * Copies src to dst until src ends, counting bytes into progress; dst is not ended (it
 * may be stdout). Rejects on a read or write error.
 */
export function copyStream(
  src: NodeJS.ReadableStream,
  dst: NodeJS.WritableStream,
  progress?: Progress,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      src.removeListener('end', onEnd);
      reject(err);
    };
    const onEnd = () => {
      dst.removeListener('error', onError);
      resolve();
    };
    src.on('data', (chunk: Buffer) => progress?.add(chunk.length));
    src.once('error', onError);
    dst.once('error', onError);
    src.once('end', onEnd);
    src.pipe(dst, { end: false });
  });
}
