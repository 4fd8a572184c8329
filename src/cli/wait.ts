/**
 * `vmctl wait [--for stopped|running|console:REGEX] [--timeout S] id`: blocks until the VM is in
 * that state or its console matches. Without --timeout it waits as long as it takes, as
 * vmctl does; a timeout exits 6.
 */
import type { WaitFor } from '../control/protocol.js';
import { VmdError } from '../errors.js';
import { parsePattern, parseSeconds, requireTarget } from './args.js';
import { defineCommand, jsonLine } from './command.js';

const CONSOLE_PREFIX = 'console:';

/** The --for value as the protocol's WaitFor; the pattern is checked here. */
export function parseWaitFor(text: string): WaitFor {
  if (text === 'stopped' || text === 'running') return text;
  if (text.startsWith(CONSOLE_PREFIX)) {
    const pattern = text.slice(CONSOLE_PREFIX.length);
    if (pattern === '') throw new VmdError('usage', 'invalid --for: empty console pattern');
    parsePattern(pattern, '--for');
    return { console: pattern };
  }
  throw new VmdError('usage', `invalid --for: ${text}`, {
    hint: 'expected stopped, running or console:REGEX',
  });
}

/** What `wait` prints once the wait is over. */
function waitedText(what: WaitFor, name: string, id: number): string {
  if (what === 'stopped') return `waiting for vm ${name}: terminated vm ${id}`;
  if (what === 'running') return `waiting for vm ${name}: vm ${id} is running`;
  return `waiting for vm ${name}: console matched /${what.console}/`;
}

interface WaitArgs {
  id?: string;
  for: string;
  timeout?: string;
}

export const waitCommand = defineCommand<WaitArgs>({
  usage: 'usage: vmctl wait [--for stopped | running | console:regex] [--timeout seconds] id',
  epilogue: 'Without --timeout, wait blocks for as long as it takes. A timeout exits 6.',
  positional: { name: 'id', describe: 'vm id or name' },
  options: {
    for: {
      type: 'string',
      default: 'stopped',
      requiresArg: true,
      describe: 'stopped, running, or console:REGEX (a pattern on the console output)',
    },
    timeout: { type: 'string', requiresArg: true, describe: 'give up after this many seconds' },
  },
  async run(args, ctx) {
    const target = requireTarget(args.id);
    const what = parseWaitFor(args.for);
    const timeoutMs = args.timeout === undefined ? undefined : parseSeconds(args.timeout);
    const client = await ctx.client();
    const info = await client.wait(target, what, timeoutMs);
    if (ctx.json) return { output: jsonLine(info) };
    ctx.say(waitedText(what, info.name, info.id));
    return {};
  },
});
