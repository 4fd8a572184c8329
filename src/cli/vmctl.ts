/**
 * vmctl: the command-line client of vmd. `vmctl [-v] [--json] [--socket path] command [arg ...]`.
 * The command word may be any unique prefix of a verb. main() parses, runs one verb, writes
 * its output and errors, and returns the exit code; only bin/vmctl.cjs exits.
 */
import type { Argv } from 'yargs';

import type { Client } from '../client.js';
import { ERROR_CODES, exitCodeOf, toVmdError, VmdError, type ErrorCode } from '../errors.js';
import { GLOBAL_OPTIONS, quickParse, yargsOptions, yargsSpec } from './argv.js';
import { isTerminal, writeTo, type Command, type CommandResult, type Context, type Io } from './command.js';
import { errorJson, errorText } from './format.js';
import { processIo } from './io.js';

export { processIo };
import { matchVerb, type VerbName } from './verbs.js';

/** A verb as `vmctl --help` lists it, and where its implementation lives. */
export interface Verb {
  /** The yargs command string: the verb and its positional argument, e.g. 'stop [id]'. */
  readonly command: string;
  /** One line for the command list of `vmctl --help`. */
  readonly describe: string;
  load(): Promise<Command>;
}

/**
 * Every verb, `show` aside (it resolves to status first). Only the module of the verb being
 * run is loaded: a `vmctl status` does not pay for console, create or run.
 */
export const VERBS: Readonly<Record<Exclude<VerbName, 'show'>, Verb>> = {
  console: {
    command: 'console [id]',
    describe: "attach to a vm's console (~. detaches)",
    load: async () => (await import('./console.js')).consoleCommand,
  },
  create: {
    command: 'create [disk]',
    describe: 'create a disk image (raw or qcow2) without vmd',
    load: async () => (await import('./create.js')).createCommand,
  },
  events: {
    command: 'events',
    describe: 'print vm events as they happen',
    load: async () => (await import('./events.js')).eventsCommand,
  },
  load: {
    command: 'load [file]',
    describe: 'load vms and switches from another configuration file',
    load: async () => (await import('./admin.js')).loadCommand,
  },
  log: {
    command: 'log [level]',
    describe: "set vmd's logging: brief or verbose",
    load: async () => (await import('./admin.js')).logCommand,
  },
  pause: {
    command: 'pause [id]',
    describe: 'pause a vm',
    load: async () => (await import('./pause.js')).pauseCommand,
  },
  receive: {
    command: 'receive [name]',
    describe: 'start a vm from a state stream on stdin',
    load: async () => (await import('./receive.js')).receiveCommand,
  },
  reload: {
    command: 'reload',
    describe: 're-read the configuration without touching running vms',
    load: async () => (await import('./admin.js')).reloadCommand,
  },
  reset: {
    command: 'reset [what]',
    describe: 'stop and forget vms, remove switches, or both (default all)',
    load: async () => (await import('./admin.js')).resetCommand,
  },
  run: {
    command: 'run [name]',
    describe: 'start a throwaway vm, stream its console, exit with the status the guest reports',
    load: async () => (await import('./run.js')).runCommand,
  },
  send: {
    command: 'send [id]',
    describe: "write a vm's state to stdout and end the vm",
    load: async () => (await import('./send.js')).sendCommand,
  },
  start: {
    command: 'start [name]',
    describe: 'start a vm',
    load: async () => (await import('./start.js')).startCommand,
  },
  status: {
    command: 'status [id]',
    describe: 'show the status of vms (alias: show)',
    load: async () => (await import('./status.js')).statusCommand,
  },
  stop: {
    command: 'stop [id]',
    describe: 'stop a vm (or all with -a)',
    load: async () => (await import('./stop.js')).stopCommand,
  },
  unpause: {
    command: 'unpause [id]',
    describe: 'resume a paused vm',
    load: async () => (await import('./pause.js')).unpauseCommand,
  },
  wait: {
    command: 'wait [id]',
    describe: 'wait until a vm stops, runs, or prints a pattern',
    load: async () => (await import('./wait.js')).waitCommand,
  },
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

/**
 * What every parser shares: the global options, strictness, help and failure handling. The
 * help width is set only when help is asked for: asking for the terminal's width makes
 * process.stdout, which a plain run need not pay for. yargs is loaded only here, for help
 * and for argv that quickParse leaves to it.
 */
async function baseParser(argv: string[], help: boolean): Promise<Argv> {
  // The factory alone: the package's main entry also parses process.argv once on loading.
  const { default: yargs } = await import('yargs/yargs');
  const y = yargsOptions(yargs(argv).scriptName('vmctl'), GLOBAL_OPTIONS)
    .strict()
    .help('help', 'show help')
    .alias('help', 'h')
    .version(false)
    // vmctl speaks English whatever the locale, as its messages and vmd's do.
    .locale('en')
    .exitProcess(false)
    .fail((msg, err) => {
      throw err instanceof VmdError ? err : new VmdError('usage', usageMessage(msg, err));
    });
  return help ? y.wrap(Math.min(100, y.terminalWidth())) : y;
}

/** `vmctl --help`: the global options, every verb in one line, the exit statuses. */
async function commandListParser(argv: string[]): Promise<Argv> {
  let y = (await baseParser(argv, true)).usage(USAGE);
  for (const verb of Object.values(VERBS)) y = y.command(verb.command, verb.describe);
  return y.epilogue(exitCodesHelp());
}

/**
 * The parser of one verb, given argv without the command word (main has matched it): the
 * verb is yargs' default command, so that yargs neither matches command words again nor
 * lays out help text that will not be shown.
 */
async function verbParser(argv: string[], cmd: Command, help: boolean): Promise<Argv> {
  const word = cmd.positional ? ` [${cmd.positional.name}]` : '';
  const y = (await baseParser(argv, help)).usage(cmd.usage);
  return y.command(`$0${word}`, false, (sub) => {
    const built = yargsSpec(sub, cmd);
    return cmd.epilogue ? built.epilogue(cmd.epilogue) : built;
  });
}

interface Parsed {
  args: Record<string, unknown>;
  /** Help text, when --help was asked for. */
  help?: string;
}

async function parse(y: Argv, argv: string[]): Promise<Parsed> {
  let help = '';
  const args = await y.parseAsync(argv, {}, (_err, _argv, output) => {
    help = output;
  });
  return { args, help: args.help ? help : undefined };
}

/** argv (without the command word) as yargs reads it for verb; a usage error throws. */
export async function yargsArgs(
  verb: Exclude<VerbName, 'show'>,
  argv: string[],
): Promise<Record<string, unknown>> {
  const cmd = await VERBS[verb].load();
  return (await parse(await verbParser(argv, cmd, false), argv)).args;
}

/** A context for one verb; `finish` releases what it holds. */
function makeContext(io: Io, verb: string, args: Record<string, unknown>) {
  const json = args.json === true;
  const deferred: (() => void)[] = [];
  let client: Promise<Client> | undefined;
  let gone: Promise<void> | undefined;
  const ctx: Context = {
    io,
    get stdoutGone() {
      gone ??= readerGone(io.stdout);
      return gone;
    },
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
      if (!json) writeTo(io, 'stderr', `vmctl: ${text}\n`);
    },
    say: (text) => {
      if (!json) writeTo(io, 'stderr', `${text}\n`);
    },
    debug: (text) => {
      if (ctx.verbose > 0) writeTo(io, 'stderr', `vmctl: debug: ${text}\n`);
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
  if (json) writeTo(io, 'stderr', errorJson(e));
  else writeTo(io, 'stderr', errorText(e, verb, isTerminal(io, 'stderr')));
  if (verbose && !(err instanceof VmdError) && err instanceof Error && err.stack) {
    writeTo(io, 'stderr', `${err.stack}\n`);
  }
  return exitCodeOf(e.code);
}

/** The command word at argv[at], resolved to a verb, and argv without it for the verb's parser. */
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
  return { verb, argv: argv.filter((_, i) => i !== at) };
}

/** Runs vmctl with argv (without node and the script); resolves with the exit code. */
export async function main(argv: string[], io: Io = processIo()): Promise<number> {
  const pre = prescan(argv);
  const wantsHelp = pre.verbAt < 0 && argv.some((a) => a === '--help' || a === '-h');
  let verb: string | undefined;
  let verbose = false;
  try {
    if (wantsHelp) {
      writeTo(io, 'stdout', `${(await parse(await commandListParser(argv), argv)).help ?? ''}\n`);
      return 0;
    }
    const resolved = resolveVerb(argv, pre.verbAt);
    verb = resolved.verb;
    const cmd = await VERBS[resolved.verb].load();
    let args = quickParse(resolved.argv, cmd);
    if (args === undefined) {
      const help = resolved.argv.some((a) => a === '--help' || a === '-h');
      const parser = await verbParser(resolved.argv, cmd, help);
      const parsed = await parse(parser, resolved.argv);
      if (parsed.help !== undefined) {
        writeTo(io, 'stdout', `${parsed.help}\n`);
        return 0;
      }
      args = parsed.args;
    }
    verbose = (args.v as number) > 0;
    return await runVerb(io, resolved.verb, cmd, args);
  } catch (err) {
    return writeError(io, err, verb, pre.json, verbose);
  }
}

async function runVerb(
  io: Io,
  verb: Exclude<VerbName, 'show'>,
  cmd: Command,
  args: Record<string, unknown>,
): Promise<number> {
  const { ctx, finish } = makeContext(io, verb, args);
  let result: CommandResult;
  try {
    result = await cmd.run(args, ctx);
  } finally {
    await finish();
  }
  if (result.output) writeTo(io, 'stdout', result.output);
  return result.exitCode ?? 0;
}
