/**
 * `vmctl console [--follow | --log] id`. vmd keeps every console from boot; it hands vmctl one
 * end of a socket that relays it. Attached to a terminal, vmctl works like cu: raw mode, and
 * `~.` at the start of a line detaches. Without a terminal it relays stdin and stdout until
 * either side ends, so scripts can drive the console.
 */
import type { Socket } from 'node:net';

import type { Target } from '../control/protocol.js';
import { VmdError } from '../errors.js';
import type { VmInfo } from '../vmm/types.js';
import { requireTarget } from './args.js';
import { defineCommand, jsonLine, type CommandResult, type Context } from './command.js';
import { copyStream, ignoreEpipe, LineSplitter, peerDone, socketFromFd } from './stream.js';

const TILDE = 0x7e;
const DOT = 0x2e;
const CR = 0x0d;
const LF = 0x0a;

/**
 * Finds cu's `~.` escape in typed input: a `~` right after a line break (or at the very
 * start) is held; `.` then detaches, `~` sends one `~`, anything else sends both.
 */
export class EscapeFilter {
  private atLineStart = true;
  private heldTilde = false;

  /** The bytes to send to the guest, and whether the escape to detach was typed. */
  feed(chunk: Buffer): { data: Buffer; detach: boolean } {
    const out: number[] = [];
    for (const b of chunk) {
      if (this.heldTilde) {
        this.heldTilde = false;
        if (b === DOT) return { data: Buffer.from(out), detach: true };
        if (b !== TILDE) out.push(TILDE);
      } else if (this.atLineStart && b === TILDE) {
        this.heldTilde = true;
        continue;
      }
      out.push(b);
      this.atLineStart = b === CR || b === LF;
    }
    return { data: Buffer.from(out), detach: false };
  }
}

/** cu's way: raw terminal, escape detection, `[EOT]` when done. */
async function interactive(ctx: Context, vm: VmInfo, sock: Socket): Promise<CommandResult> {
  const { stdin, stdout, stderr } = ctx.io;
  const filter = new EscapeFilter();
  ctx.notice(`connected to vm ${vm.name} (id ${vm.id}); type ~. to detach`);
  stdin.setRawMode?.(true);
  ctx.defer(() => stdin.setRawMode?.(false));
  const onInput = (chunk: Buffer) => {
    const { data, detach } = filter.feed(chunk);
    if (data.length > 0) sock.write(data);
    if (detach) sock.destroy();
  };
  stdin.on('data', onInput);
  stdin.resume();
  sock.on('data', (data: Buffer) => stdout.write(data));
  await Promise.race([peerDone(sock), ctx.stdoutGone]);
  sock.destroy();
  stdin.removeListener('data', onInput);
  stdin.pause();
  stderr.write('\r\n[EOT]\r\n');
  return { exitCode: 0 };
}

/** No terminal: stdin to the guest, the guest to stdout, until the socket closes. */
async function relay(ctx: Context, sock: Socket): Promise<CommandResult> {
  const { stdin, stdout } = ctx.io;
  stdin.pipe(sock, { end: false });
  const copied = copyStream(sock, stdout).catch(() => undefined);
  await Promise.race([peerDone(sock).then(() => copied), ctx.stdoutGone, linger(stdin, sock)]);
  sock.destroy();
  stdin.unpipe(sock);
  stdin.pause();
  return { exitCode: 0 };
}

/** After input ends, how long the guest's output may pause before vmctl stops relaying. */
export const CONSOLE_LINGER_MS = 1_000;
/** The most vmctl relays output after input ended. */
export const CONSOLE_LINGER_MAX_MS = 30_000;

/**
 * Resolves once input has ended and the guest has then been quiet for CONSOLE_LINGER_MS (at
 * most CONSOLE_LINGER_MAX_MS), so `echo cmd | vmctl console vm` shows the answer.
 */
function linger(stdin: NodeJS.ReadableStream, sock: Socket): Promise<void> {
  return new Promise((resolve) => {
    stdin.once('end', () => {
      let quiet = setTimeout(resolve, CONSOLE_LINGER_MS);
      const cap = setTimeout(resolve, CONSOLE_LINGER_MAX_MS);
      sock.on('data', () => {
        clearTimeout(quiet);
        quiet = setTimeout(resolve, CONSOLE_LINGER_MS);
      });
      sock.once('close', () => {
        clearTimeout(quiet);
        clearTimeout(cap);
      });
    });
  });
}

/** Attaches to a VM's console (also used by `start -c`). */
export async function attachConsole(ctx: Context, target: Target): Promise<CommandResult> {
  const client = await ctx.client();
  const { vm, fd } = await client.console(target, 'attach');
  const sock = socketFromFd(fd);
  if (ctx.io.stdin.isTTY && ctx.io.stdin.setRawMode) return interactive(ctx, vm, sock);
  return relay(ctx, sock);
}

/** Everything that arrives on sock until it ends, written to stdout, or as NDJSON lines. */
async function streamOut(ctx: Context, vm: VmInfo, sock: Socket): Promise<void> {
  if (!ctx.json) return copyStream(sock, ctx.io.stdout);
  const lines = new LineSplitter();
  const emit = (line: string) => ctx.io.stdout.write(jsonLine({ vm: vm.name, line }));
  sock.on('data', (chunk: Buffer) => lines.push(chunk).forEach(emit));
  await new Promise<void>((resolve, reject) => {
    sock.once('end', resolve);
    sock.once('error', reject);
  });
  lines.end().forEach(emit);
}

/** The kept console output (--log). */
async function printLog(ctx: Context, target: Target): Promise<CommandResult> {
  const client = await ctx.client();
  const { vm, fd } = await client.console(target, 'log');
  const sock = socketFromFd(fd);
  const chunks: Buffer[] = [];
  sock.on('data', (chunk: Buffer) => chunks.push(chunk));
  await new Promise<void>((resolve, reject) => {
    sock.once('end', resolve);
    sock.once('error', reject);
  });
  sock.destroy();
  const log = Buffer.concat(chunks);
  if (ctx.json) return { output: jsonLine({ vm: vm.name, id: vm.id, log: log.toString('utf8') }) };
  ctx.io.stdout.write(log);
  return { exitCode: 0 };
}

/** Console output from boot, then live until the VM ends (--follow). */
export async function followConsole(ctx: Context, target: Target): Promise<CommandResult> {
  const client = await ctx.client();
  const { vm, fd } = await client.console(target, 'follow');
  const sock = socketFromFd(fd);
  try {
    await Promise.race([streamOut(ctx, vm, sock).catch(ignoreEpipe), ctx.stdoutGone]);
  } finally {
    sock.destroy();
  }
  return { exitCode: 0 };
}

interface ConsoleArgs {
  id?: string;
  follow: boolean;
  log: boolean;
}

export const consoleCommand = defineCommand<ConsoleArgs>({
  usage: 'usage: vmctl console [--follow | --log] id',
  epilogue:
    'On a terminal the console is interactive; type ~. at the start of a line to detach\n' +
    '(~~ sends a ~). Without a terminal, stdin goes to the guest and its output to stdout;\n' +
    `after stdin ends, output is relayed until the guest is quiet for ${CONSOLE_LINGER_MS / 1000}s.\n` +
    'With --json, --follow prints NDJSON lines {"vm":NAME,"line":TEXT}.',
  positional: { name: 'id', describe: 'vm id or name' },
  options: {
    follow: {
      type: 'boolean',
      default: false,
      describe: 'print the output from boot until the vm ends',
    },
    log: { type: 'boolean', default: false, describe: 'print the kept output and exit' },
  },
  async run(args, ctx) {
    const target = requireTarget(args.id);
    if (args.follow && args.log) {
      throw new VmdError('usage', '--follow and --log cannot be used together');
    }
    if (args.log) return printLog(ctx, target);
    if (args.follow) return followConsole(ctx, target);
    if (ctx.json) {
      throw new VmdError('usage', 'an interactive console has no --json form', {
        hint: 'use --follow or --log with --json',
      });
    }
    return attachConsole(ctx, target);
  },
});
