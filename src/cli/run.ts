/**
 * `vmctl run [start flags] [--timeout S] name`, for CI: starts a throwaway VM, streams its
 * console from boot to stdout, and exits with the status the guest reports. The guest reports
 * it by printing a line `vmd-exit: N` (N from 0 to 255) on its console, then powering off.
 * The VM is force-stopped when vmctl is interrupted (SIGINT, SIGTERM) or times out.
 */
import { constants } from 'node:os';

import { VmdError } from '../errors.js';
import type { VmInfo } from '../vmm/types.js';
import { parseSeconds } from './args.js';
import { defineCommand, jsonLine, type CommandResult, type Context } from './command.js';
import { START_OPTIONS, START_POSITIONAL, startVm, type StartFlags } from './start.js';
import { LineSplitter, peerDone, socketFromFd } from './stream.js';

/** Default limit of a whole run, in seconds; --timeout 0 removes it. */
export const DEFAULT_RUN_TIMEOUT_S = 3600;
/** How long a guest that printed its exit status gets to power off before it is forced. */
export const RUN_EXIT_GRACE_MS = 10_000;
/** How long vmctl waits for the console to drain once the VM has been stopped. */
const RUN_DRAIN_MS = 5_000;
/** The line a guest prints to report its exit status. */
const EXIT_LINE = /^\s*vmd-exit: (\d{1,3})\s*$/;

/** The status in a `vmd-exit: N` console line (0-255), or undefined for any other line. */
export function parseExitLine(line: string): number | undefined {
  const m = EXIT_LINE.exec(line);
  if (!m) return undefined;
  const n = Number(m[1]);
  return n <= 255 ? n : undefined;
}

type Outcome =
  | { kind: 'ended' }
  | { kind: 'timeout' }
  | { kind: 'grace' }
  | { kind: 'signal'; signal: NodeJS.Signals };

/** What the console told us so far. */
interface RunState {
  status?: number;
}

/** Calls onSignal on the first SIGINT or SIGTERM; a second one gets the default action. */
function onSignals(ctx: Context, onSignal: (s: NodeJS.Signals) => void): void {
  const handlers = (['SIGINT', 'SIGTERM'] as const).map((signal) => {
    const handler = () => onSignal(signal);
    process.once(signal, handler);
    return [signal, handler] as const;
  });
  ctx.defer(() => handlers.forEach(([s, h]) => process.removeListener(s, h)));
}

/** Streams the console to stdout until it ends, noting the exit status line. */
async function streamConsole(ctx: Context, vm: VmInfo, state: RunState, onStatus: () => void) {
  const client = await ctx.client();
  const { fd } = await client.console(vm.id, 'follow');
  const sock = socketFromFd(fd);
  const lines = new LineSplitter();
  const onLine = (line: string) => {
    if (ctx.json) ctx.io.stdout.write(jsonLine({ vm: vm.name, line }));
    const status = parseExitLine(line);
    if (status !== undefined && state.status === undefined) {
      state.status = status;
      onStatus();
    }
  };
  sock.on('data', (chunk: Buffer) => {
    if (!ctx.json) ctx.io.stdout.write(chunk);
    lines.push(chunk).forEach(onLine);
  });
  await peerDone(sock);
  sock.destroy();
  lines.end().forEach(onLine);
}

/** Ends the VM now; a VM that is already gone is fine. */
async function forceStop(ctx: Context, vm: VmInfo): Promise<void> {
  try {
    await (await ctx.client()).stop({ target: vm.id, force: true });
  } catch (err) {
    ctx.debug(`force stop of vm ${vm.id}: ${(err as Error).message}`);
  }
}

/** Resolves when p settles or after ms, whichever comes first. */
function bounded(p: Promise<unknown>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    void p.finally(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** The exit code (or error) of a run that has come to an end. */
function verdict(
  ctx: Context,
  vm: VmInfo,
  outcome: Outcome,
  state: RunState,
  timeoutMs: number,
): CommandResult {
  if (outcome.kind === 'signal') {
    ctx.notice(`${outcome.signal}: stopped vm ${vm.id}`);
    return { exitCode: 128 + constants.signals[outcome.signal] };
  }
  if (state.status !== undefined) {
    return {
      output: ctx.json ? jsonLine({ vm: vm.name, id: vm.id, exitStatus: state.status }) : undefined,
      exitCode: state.status,
    };
  }
  if (outcome.kind === 'timeout') {
    throw new VmdError('timeout', `vm "${vm.name}": no exit status after ${timeoutMs / 1000}s`);
  }
  throw new VmdError('failure', `vm "${vm.name}": ended without reporting an exit status`, {
    hint: 'the guest should print "vmd-exit: N" on its console before powering off',
  });
}

interface RunArgs extends StartFlags {
  timeout?: string;
}

export const runCommand = defineCommand<RunArgs>({
  usage:
    'usage: vmctl run [-L] [-B device] [-b kernel] [-d disk] [-i count] [-m size] [-n switch]\n' +
    '         [-p vcpus] [-r iso] [--initrd path] [--cmdline text] [--timeout seconds] name',
  epilogue:
    'The guest reports its status by printing a line "vmd-exit: N" (0-255) on its console,\n' +
    'then powering off; vmctl exits with N. A vm that ends without that line exits 1; one\n' +
    `still running after --timeout seconds (default ${DEFAULT_RUN_TIMEOUT_S}, 0 for none) is\n` +
    'forced off and exits 6. On SIGINT or SIGTERM, or when the reader of stdout goes away\n' +
    '(SIGPIPE), the vm is forced off and vmctl exits 128+signal.\n' +
    'With --json, stdout carries NDJSON: {"vm","line"} per console line, then\n' +
    '{"vm","id","exitStatus"}.',
  positional: START_POSITIONAL,
  options: {
    ...START_OPTIONS,
    timeout: {
      type: 'string',
      requiresArg: true,
      describe: `seconds before the vm is forced off (default ${DEFAULT_RUN_TIMEOUT_S})`,
    },
  },
  async run(args, ctx) {
    const timeoutMs = parseSeconds(args.timeout ?? DEFAULT_RUN_TIMEOUT_S);
    let settle: (o: Outcome) => void = () => undefined;
    const outcome = new Promise<Outcome>((resolve) => (settle = resolve));
    const timers: NodeJS.Timeout[] = [];
    ctx.defer(() => timers.forEach((t) => clearTimeout(t)));
    onSignals(ctx, (signal) => settle({ kind: 'signal', signal }));
    void ctx.stdoutGone.then(() => settle({ kind: 'signal', signal: 'SIGPIPE' }));
    const vm = await startVm(ctx, args, true);
    if (timeoutMs > 0) timers.push(setTimeout(() => settle({ kind: 'timeout' }), timeoutMs));
    const state: RunState = {};
    const graceTimer = () =>
      timers.push(setTimeout(() => settle({ kind: 'grace' }), RUN_EXIT_GRACE_MS));
    const streaming = streamConsole(ctx, vm, state, graceTimer).catch((err: Error) => {
      ctx.debug(`console of vm ${vm.id}: ${err.message}`);
    });
    void streaming.then(() => settle({ kind: 'ended' }));
    const result = await outcome;
    if (result.kind !== 'ended') {
      await forceStop(ctx, vm);
      await bounded(streaming, RUN_DRAIN_MS);
    }
    return verdict(ctx, vm, result, state, timeoutMs);
  },
});
