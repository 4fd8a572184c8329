/**
 * vmctl: the command-line client of vmd. `vmctl [-v] [--json] [--socket path] command [arg ...]`.
 * The command word may be any unique prefix of a verb. main() parses, runs one verb, writes
 * its output and errors, and returns the exit code; only bin/vmctl.js exits.
 */
import yargs, { type Argv } from 'yargs';

import type { Client } from '../client.js';
import { ERROR_CODES, exitCodeOf, toVmdError, VmdError, type ErrorCode } from '../errors.js';
import { loadCommand, logCommand, reloadCommand, resetCommand } from './admin.js';
import type { Command, CommandResult, Context, Io } from './command.js';
import { consoleCommand } from './console.js';
import { createCommand } from './create.js';
import { eventsCommand } from './events.js';
import { errorJson, errorText } from './format.js';
import { pauseCommand, unpauseCommand } from './pause.js';
import { receiveCommand } from './receive.js';
import { runCommand } from './run.js';
import { sendCommand } from './send.js';
import { startCommand } from './start.js';
import { statusCommand } from './status.js';
import { stopCommand } from './stop.js';
import { matchVerb, type VerbName } from './verbs.js';
import { waitCommand } from './wait.js';

/** Every verb's handler; `show` resolves to status before this table is consulted. */
export const COMMANDS: Readonly<Record<Exclude<VerbName, 'show'>, Command>> = {
  console: consoleCommand,
  create: createCommand,
  events: eventsCommand,
  load: loadCommand,
  log: logCommand,
  pause: pauseCommand,
  receive: receiveCommand,
  reload: reloadCommand,
  reset: resetCommand,
  run: runCommand,
  send: sendCommand,
  start: startCommand,
  status: statusCommand,
  stop: stopCommand,
  unpause: unpauseCommand,
  wait: waitCommand,
};

/** What each exit status means, for `vmctl --help`. */
export const EXIT_CODE_HELP: Readonly<Record<ErrorCode, string>> = {
  failure: 'failure',
  usage: 'usage error (bad command, flag or value)',
  notfound: 'no such vm, file or object',
  permission: 'permission denied',
  state: 'the vm is in the wrong state (e.g. already running)',
  timeout: 'a wait timed out',
  engine: 'the hypervisor or the engine (QEMU) failed',
  internal: 'failure',
};

const USAGE = 'usage: vmctl [-v] [--json] [--socket path] command [arg ...]';

/** The epilogue of `vmctl --help`: the exit statuses. */
export function exitCodesHelp(): string {
  const lines = new Map<number, string>([
    [0, 'success (stopping a vm that is not running is a success)'],
  ]);
  for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
    const n = exitCodeOf(code);
    if (!lines.has(n)) lines.set(n, EXIT_CODE_HELP[code]);
  }
  lines.set(128, 'and above: run was interrupted by signal (status - 128)');
  const rows = [...lines]
    .sort(([a], [b]) => a - b)
    .map(([n, text]) => `  ${String(n).padStart(3)}  ${text}`);
  return ['Exit status:', ...rows, '', 'Commands may be abbreviated to any unique prefix.'].join(
    '\n',
  );
}

/** Options that come before or after the verb; --socket is the only one with a value. */
interface Prescan {
  /** Index of the command word in argv, or -1. */
  verbAt: number;
  json: boolean;
}

/** Finds the command word and --json without yargs, so that errors can be shaped early. */
export function prescan(argv: readonly string[]): Prescan {
  let verbAt = -1;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') break;
    if (a === '--json') json = true;
    else if (a === '--no-json') json = false;
    else if (a === '--socket') i++;
    else if (!a.startsWith('-') && verbAt < 0) verbAt = i;
  }
  return { verbAt, json };
}

/** yargs' own messages are capitalised and may span lines; ours are one lowercase line. */
function usageMessage(msg: string | null | undefined, err: Error | undefined): string {
  const text = (msg ?? err?.message ?? 'bad arguments').replace(/\s+/g, ' ').trim();
  return text.charAt(0).toLowerCase() + text.slice(1);
}

/** The parser: global options and every verb, each with its own usage and help. */
function parser(argv: string[]): Argv {
  let y = yargs(argv)
    .scriptName('vmctl')
    .usage(USAGE)
    .option('socket', {
      type: 'string',
      requiresArg: true,
      global: true,
      describe: 'control socket (default $VMD_SOCKET, else /run/vmd.sock)',
    })
    .option('json', {
      type: 'boolean',
      global: true,
      describe: 'JSON on stdout; errors as a JSON object on stderr',
    })
    .option('v', { type: 'count', global: true, describe: 'more verbose output' });
  for (const cmd of Object.values(COMMANDS)) {
    y = y.command(cmd.command, cmd.describe, (sub) => {
      const built = cmd.builder(sub.usage(cmd.usage));
      return cmd.epilogue ? built.epilogue(cmd.epilogue) : built;
    });
  }
  return y
    .strict()
    .help('help', 'show help')
    .alias('help', 'h')
    .version(false)
    .exitProcess(false)
    .wrap(Math.min(100, y.terminalWidth()))
    .epilogue(exitCodesHelp())
    .fail((msg, err) => {
      throw err instanceof VmdError ? err : new VmdError('usage', usageMessage(msg, err));
    });
}

interface Parsed {
  args: Record<string, unknown>;
  /** Help text, when --help was asked for. */
  help?: string;
}

async function parse(argv: string[]): Promise<Parsed> {
  let help = '';
  const args = await parser(argv).parseAsync(argv, {}, (_err, _argv, output) => {
    help = output;
  });
  return { args, help: args.help ? help : undefined };
}

/** A context for one verb; `finish` releases what it holds. */
function makeContext(io: Io, verb: string, args: Record<string, unknown>) {
  const json = args.json === true;
  const deferred: (() => void)[] = [];
  let client: Promise<Client> | undefined;
  const ctx: Context = {
    io,
    stdoutGone: readerGone(io.stdout),
    json,
    verbose: typeof args.v === 'number' ? args.v : 0,
    verb,
    client() {
      client ??= import('../client.js').then(({ connect }) =>
        connect({ socket: (args.socket as string | undefined) ?? io.env.VMD_SOCKET }),
      );
      return client;
    },
    notice: (text) => {
      if (!json) io.stderr.write(`vmctl: ${text}\n`);
    },
    say: (text) => {
      if (!json) io.stderr.write(`${text}\n`);
    },
    debug: (text) => {
      if (ctx.verbose > 0) io.stderr.write(`vmctl: debug: ${text}\n`);
    },
    defer: (fn) => deferred.push(fn),
  };
  const finish = async () => {
    for (const fn of deferred.splice(0).reverse()) fn();
    if (client) (await client.catch(() => undefined))?.close();
  };
  return { ctx, finish };
}

/**
 * Resolves when writing to out fails with EPIPE (`vmctl events | head`). The listener also
 * keeps such a write error from crashing vmctl.
 */
function readerGone(out: Io['stdout']): Promise<void> {
  return new Promise((resolve) => {
    out.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') resolve();
    });
  });
}

function writeError(
  io: Io,
  err: unknown,
  verb: string | undefined,
  json: boolean,
  verbose: boolean,
): number {
  const e = toVmdError(err, 'internal');
  if (json) io.stderr.write(errorJson(e));
  else io.stderr.write(errorText(e, verb, io.stderr.isTTY === true));
  if (verbose && !(err instanceof VmdError) && err instanceof Error && err.stack) {
    io.stderr.write(`${err.stack}\n`);
  }
  return exitCodeOf(e.code);
}

function processIo(): Io {
  return { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env };
}

/** The command word at argv[at], resolved to a verb, written back in full for yargs. */
function resolveVerb(
  argv: string[],
  at: number,
): { verb: Exclude<VerbName, 'show'>; argv: string[] } {
  if (at < 0) {
    throw new VmdError('usage', 'missing command', {
      hint: 'run vmctl --help for the list of commands',
    });
  }
  const verb = matchVerb(argv[at]) as Exclude<VerbName, 'show'>;
  const full = [...argv];
  full[at] = verb;
  return { verb, argv: full };
}

/** Runs vmctl with argv (without node and the script); resolves with the exit code. */
export async function main(argv: string[], io: Io = processIo()): Promise<number> {
  const pre = prescan(argv);
  const wantsHelp = pre.verbAt < 0 && argv.some((a) => a === '--help' || a === '-h');
  let verb: string | undefined;
  let verbose = false;
  try {
    if (wantsHelp) {
      io.stdout.write(`${(await parse(argv)).help ?? ''}\n`);
      return 0;
    }
    const resolved = resolveVerb(argv, pre.verbAt);
    verb = resolved.verb;
    const parsed = await parse(resolved.argv);
    if (parsed.help !== undefined) {
      io.stdout.write(`${parsed.help}\n`);
      return 0;
    }
    verbose = (parsed.args.v as number) > 0;
    return await runVerb(io, resolved.verb, parsed.args);
  } catch (err) {
    return writeError(io, err, verb, pre.json, verbose);
  }
}

async function runVerb(
  io: Io,
  verb: Exclude<VerbName, 'show'>,
  args: Record<string, unknown>,
): Promise<number> {
  const { ctx, finish } = makeContext(io, verb, args);
  let result: CommandResult;
  try {
    result = await COMMANDS[verb].run(args, ctx);
  } finally {
    await finish();
  }
  if (result.output) io.stdout.write(result.output);
  return result.exitCode ?? 0;
}
