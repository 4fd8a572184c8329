/**
 * vmd: the daemon. `vmd [-dnv] [-D macro=value] [-f file] [--socket path]`.
 * Without -d it detaches and logs to syslog (the journal on systemd hosts).
 */
import { spawn as spawnChild } from 'node:child_process';
import { closeSync, writeSync } from 'node:fs';
import yargs from 'yargs/yargs';

import { formatDiagnostic, parseConfigFile, UserDb } from '../config/index.js';
import { Daemon } from '../control/daemon.js';
import { DEFAULT_SOCKET } from '../control/protocol.js';
import type { AccelSetting } from '../engine/types.js';
import { exitCodeOf, toVmdError, VmdError } from '../errors.js';
import { createLogger, stderrSink, type LogLevel, type LogSink } from '../log.js';

const DEFAULT_CONFIG = '/etc/vm.conf';
/**
 * Set in the environment of the detached daemon vmd re-runs itself as; its fd 3 reports
 * readiness. A process that has it never detaches again.
 */
const CHILD_ENV = 'VMD_TS_DETACHED';

interface VmdArgs {
  d: boolean;
  n: boolean;
  v: number;
  D: string[];
  f?: string;
  socket: string;
  accel: AccelSetting;
  user?: string;
  'state-dir': string;
  'shutdown-timeout': number;
}

function parseArgs(argv: string[]): VmdArgs {
  return yargs(argv)
    .scriptName('vmd')
    .usage('usage: vmd [-dnv] [-D macro=value] [-f file] [--socket path]')
    .option('d', { type: 'boolean', default: false, describe: 'stay in the foreground, log to stderr' })
    .option('n', { type: 'boolean', default: false, describe: 'check the configuration and exit' })
    .option('v', { type: 'count', describe: 'more verbose logging (-vv: debug)' })
    .option('D', { type: 'string', array: true, default: [], describe: 'define macro=value' })
    .option('f', { type: 'string', describe: `configuration file (default ${DEFAULT_CONFIG})` })
    .option('socket', { type: 'string', default: DEFAULT_SOCKET, describe: 'control socket path' })
    .option('accel', {
      choices: ['auto', 'kvm', 'tcg'] as const,
      default: 'auto' as const,
      describe: 'accelerator: kvm, tcg, or auto (KVM where it can run a guest)',
    })
    .option('user', { type: 'string', describe: 'user VM processes run as (default _vmd, else nobody)' })
    .option('state-dir', { type: 'string', default: '/run/vmd', describe: 'runtime directory' })
    .option('shutdown-timeout', {
      type: 'number',
      default: 30,
      describe: 'seconds VMs get to power off at exit before they are forced',
    })
    .strict()
    .help('help')
    .alias('help', 'h')
    .version(false)
    .fail((msg, err) => {
      throw new VmdError('usage', msg ?? err?.message ?? 'bad arguments');
    })
    .parseSync();
}

function macrosOf(defs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const def of defs) {
    const eq = def.indexOf('=');
    if (eq <= 0) throw new VmdError('usage', `-D ${def}: expected macro=value`);
    out[def.slice(0, eq)] = def.slice(eq + 1);
  }
  return out;
}

/** `vmd -n`: prints diagnostics and `configuration OK`; returns the exit code. */
function checkConfig(path: string, optional: boolean, macros: Record<string, string>): number {
  const parsed = parseConfigFile(path, { macros, allowMissing: optional });
  for (const d of [...parsed.errors, ...parsed.warnings]) process.stderr.write(formatDiagnostic(d) + '\n');
  if (parsed.errors.length > 0) return 1;
  process.stderr.write('configuration OK\n');
  return 0;
}

function vmUser(name: string | undefined): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const db = new UserDb();
  const user = name ? db.userByName(name) : (db.userByName('_vmd') ?? db.userByName('nobody'));
  if (!user) throw new VmdError('usage', `user ${name ? `"${name}"` : '_vmd or nobody'}: not found`);
  return { uid: user.uid, gid: user.gid };
}

/** A sink that hands lines to logger(1), which passes them to syslog or the journal. */
function syslogSink(): LogSink {
  const child = spawnChild('logger', ['-t', 'vmd', `--id=${process.pid}`, '--prio-prefix'], {
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  child.on('error', () => undefined);
  child.stdin.on('error', () => undefined);
  const prio: Record<LogLevel, number> = { warn: 3 * 8 + 4, info: 3 * 8 + 6, debug: 3 * 8 + 7 };
  return (level, line) => {
    child.stdin.write(`<${prio[level]}>${line}\n`);
  };
}

/** Re-runs vmd detached and returns once it is ready (or has failed). */
async function detach(argv: string[]): Promise<number> {
  const child = spawnChild(process.execPath, [...process.execArgv, process.argv[1], ...argv], {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    env: { ...process.env, [CHILD_ENV]: '1' },
  });
  const pipe = child.stdio[3] as NodeJS.ReadableStream;
  let text = '';
  pipe.on('data', (d: Buffer) => (text += d.toString()));
  await new Promise((resolve) => pipe.on('end', resolve));
  if (text.startsWith('ready')) {
    child.unref();
    return 0;
  }
  process.stderr.write(text || 'vmd: the daemon exited while starting\n');
  return 1;
}

/** Runs vmd; resolves with its exit code. */
export async function main(argv: string[]): Promise<number> {
  let args: VmdArgs;
  try {
    args = parseArgs(argv);
  } catch (err) {
    process.stderr.write(`vmd: ${toVmdError(err).message}\n`);
    return exitCodeOf('usage');
  }
  const configPath = args.f ?? DEFAULT_CONFIG;
  const optional = args.f === undefined;
  const child = process.env[CHILD_ENV] === '1';
  delete process.env[CHILD_ENV];
  /** Tells the waiting parent how start-up went (fd 3 is its pipe); written at once. */
  const report = child
    ? (text: string) => {
        writeSync(3, text);
        closeSync(3);
      }
    : null;
  try {
    const macros = macrosOf(args.D);
    if (args.n) return checkConfig(configPath, optional, macros);
    if (!args.d && !child) return await detach(argv);
    const sink = args.d ? stderrSink() : syslogSink();
    const log = createLogger(sink, args.v);
    const daemon = await Daemon.create({
      configPath, configOptional: optional, macros, socketPath: args.socket, accel: args.accel,
      vmUser: vmUser(args.user), stateDir: args['state-dir'], log,
      shutdownTimeoutMs: args['shutdown-timeout'] * 1000,
    });
    report?.('ready\n');
    return await serve(daemon, log);
  } catch (err) {
    const e = toVmdError(err);
    const text = e.message.split('\n').map((l) => `vmd: ${l}\n`).join('');
    if (report) report(text);
    else process.stderr.write(text);
    return exitCodeOf(e.code);
  }
}

/** Serves until SIGTERM or SIGINT; SIGHUP reloads. */
function serve(daemon: Daemon, log: ReturnType<typeof createLogger>): Promise<number> {
  process.on('SIGHUP', () => {
    daemon.reload().catch((err: Error) => log.warn(`reload failed: ${err.message}`));
  });
  return new Promise((resolve) => {
    const stop = (signal: string) => {
      log.info(`${signal}: stopping every VM`);
      daemon.shutdown().then(
        () => resolve(0),
        (err: Error) => {
          log.warn(`shutdown: ${err.message}`);
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

