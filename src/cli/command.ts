/**
 * What every vmctl verb shares: the streams it may use, the context main hands it, and the
 * result it returns. A handler returns its output and exit code; only main writes the final
 * output and turns errors into text (see vmctl.ts). Streaming verbs (console, events, run)
 * write to ctx.io.stdout as data arrives.
 */
import { closeSync } from 'node:fs';

import type { Client } from '../client.js';

/** A readable stream as vmctl uses stdin. */
export interface InputStream extends NodeJS.ReadableStream {
  isTTY?: boolean;
  fd?: number;
  setRawMode?(mode: boolean): unknown;
}

/** A writable stream as vmctl uses stdout and stderr. */
export interface OutputStream extends NodeJS.WritableStream {
  isTTY?: boolean;
}

/** The process's streams and environment; tests pass their own. */
export interface Io {
  stdin: InputStream;
  stdout: OutputStream;
  stderr: OutputStream;
  env: NodeJS.ProcessEnv;
  /** Whether stdout or stderr is a terminal; without it, the stream's isTTY. */
  isTerminal?(name: OutputName): boolean;
  /** Writes a verb's final output or an error line; without it, the stream's write. */
  write?(name: OutputName, text: string): void;
}

export type OutputName = 'stdout' | 'stderr';

/** Whether io's stdout or stderr is a terminal. */
export function isTerminal(io: Io, name: OutputName): boolean {
  return io.isTerminal ? io.isTerminal(name) : io[name].isTTY === true;
}

/** Writes text to io's stdout or stderr. */
export function writeTo(io: Io, name: OutputName, text: string): void {
  if (io.write) io.write(name, text);
  else io[name].write(text);
}

export interface CommandResult {
  /** Text for stdout, written by main as is. */
  output?: string;
  /** Default 0. */
  exitCode?: number;
}

/** What a handler gets besides its arguments. */
export interface Context {
  readonly io: Io;
  /** --json: stdout carries one JSON document (or NDJSON); no notices on stderr. */
  readonly json: boolean;
  /** -v count. */
  readonly verbose: number;
  /** The verb being run, for messages. */
  readonly verb: string;
  /** Connects once to vmd (socket from --socket, $VMD_SOCKET or the default); main closes it. */
  client(): Promise<Client>;
  /** "vmctl: text" on stderr, as vmctl's warnx does; nothing under --json. */
  notice(text: string): void;
  /** A line on stderr without the prefix (vmctl's stop messages); nothing under --json. */
  say(text: string): void;
  /** A line on stderr only with -v. */
  debug(text: string): void;
  /** Runs fn when main finishes (closing descriptors, restoring the terminal). */
  defer(fn: () => void): void;
  /** Resolves when stdout's reader has gone (EPIPE): streaming verbs stop then. */
  readonly stdoutGone: Promise<void>;
}

/** An option as a verb declares it; yargs gets it as is for help and usage errors. */
export interface OptionSpec {
  readonly type: 'boolean' | 'string' | 'count';
  readonly describe: string;
  /** A string option that must be followed by its value. */
  readonly requiresArg?: boolean;
  readonly default?: boolean | string;
}

/** A verb's arguments: at most one positional word (a string) and its options. */
export interface ArgSpec {
  readonly positional?: { readonly name: string; readonly describe: string };
  readonly options?: Readonly<Record<string, OptionSpec>>;
}

/**
 * One verb's implementation. Its yargs command string and one-line description live in the
 * verb table of vmctl.ts, which lists every verb without loading any of them.
 */
export interface Command<A = Record<string, unknown>> extends ArgSpec {
  /** The usage line shown by `vmctl VERB --help`. */
  readonly usage: string;
  /** Extra text at the end of `vmctl VERB --help`. */
  readonly epilogue?: string;
  run(args: A, ctx: Context): Promise<CommandResult>;
}

/** Erases a command's argument type for the verb table; the parser has checked the shape. */
export function defineCommand<A>(c: Command<A>): Command {
  return { ...c, run: (args, ctx) => c.run(args as A, ctx) };
}

/** The JSON text of a value plus a newline, for --json output. */
export function jsonLine(value: unknown): string {
  return JSON.stringify(value) + '\n';
}

/** Closes a descriptor, ignoring errors (it may already be gone). */
export function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // Already closed or never valid: nothing to release.
  }
}
