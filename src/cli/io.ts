/**
 * The process's own streams for vmctl. Node makes process.stdout and process.stderr on first
 * use, and making one for a pipe loads the net module, which costs about as much as the rest
 * of a `vmctl status`. A verb that only returns its output never makes them: the text goes to
 * the descriptor with write(2), and a descriptor that is not a character device cannot be a
 * terminal, so asking mostly needs no stream either.
 */
import { fstatSync, statSync, writeSync } from 'node:fs';

import type { Io, OutputName } from './command.js';

const FD: Readonly<Record<OutputName, number>> = { stdout: 1, stderr: 2 };

/** The Io of this process, and a way to wait for what its streams still hold. */
export interface ProcessIo extends Io {
  /** Resolves once stdout has handed its pending writes to the kernel (a slow reader's pipe). */
  drained(): Promise<void>;
}

/** The Io of this process: streams made when a verb first touches them. */
export function processIo(): ProcessIo {
  const made = { stdout: false, stderr: false };
  const stream = (name: OutputName) => {
    const out = process[name];
    if (!made[name]) {
      made[name] = true;
      // A reader that went away (`vmctl events | head`) must not crash vmctl; the verbs that
      // stream learn of it through ctx.stdoutGone.
      out.on('error', () => undefined);
    }
    return out;
  };
  return {
    get stdin() {
      return process.stdin;
    },
    get stdout() {
      return stream('stdout');
    },
    get stderr() {
      return stream('stderr');
    },
    env: process.env,
    isTerminal: (name) => mayBeTerminal(FD[name]) && stream(name).isTTY === true,
    write(name, text) {
      if (made[name]) {
        process[name].write(text);
        return;
      }
      const rest = writeAll(FD[name], Buffer.from(text));
      if (rest.length > 0) stream(name).write(rest);
    },
    drained: () =>
      made.stdout ? new Promise((resolve) => process.stdout.write('', () => resolve())) : Promise.resolve(),
  };
}

/**
 * Whether fd may be a terminal: a character device other than /dev/null (where scripts and
 * benchmarks send what they do not read). Only then is the stream asked.
 */
function mayBeTerminal(fd: number): boolean {
  try {
    const st = fstatSync(fd);
    return st.isCharacterDevice() && st.rdev !== statSync('/dev/null').rdev;
  } catch {
    return false;
  }
}

/**
 * Writes buf to fd; returns what is left when fd would block (a non-blocking pipe that is
 * full), for the stream to finish. A reader that has gone takes nothing more, as with the
 * stream.
 */
function writeAll(fd: number, buf: Buffer): Buffer {
  let done = 0;
  try {
    while (done < buf.length) done += writeSync(fd, buf, done);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EAGAIN') return buf.subarray(done);
    if (code !== 'EPIPE') throw err;
  }
  return buf.subarray(buf.length);
}
