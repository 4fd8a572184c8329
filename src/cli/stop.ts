/**
 * `vmctl stop [-fw] [-a] [--timeout S] [id]`. Stopping a VM that is not running succeeds, so
 * stop is safe to repeat. --timeout asks the guest, waits, then forces, and returns only once
 * the VM is gone. -a stops every VM the caller may stop, in parallel.
 */
import type { StopResult } from '../client.js';
import type { StopArgs } from '../control/protocol.js';
import { VmdError } from '../errors.js';
import { parseSeconds, parseTarget } from './args.js';
import { defineCommand, jsonLine } from './command.js';

/** vmctl's text for one VM's stop: `stopping vm web1: requested to shutdown vm 3`. */
export function stopMessage(r: StopResult): string {
  switch (r.result) {
    case 'not-running':
      return `vm ${r.name} is not running`;
    case 'requested':
      return `stopping vm ${r.name}: requested to shutdown vm ${r.id}`;
    case 'terminated':
      return `stopping vm ${r.name}: terminated vm ${r.id}`;
    case 'stopping':
      return `stopping vm ${r.name}: vm ${r.id} is already stopping`;
  }
}

interface StopCliArgs {
  id?: string;
  a: boolean;
  f: boolean;
  w: boolean;
  timeout?: string;
}

/** The request for the flags; an id and -a exclude each other. */
export function stopRequest(args: StopCliArgs): StopArgs {
  if (args.a && args.id !== undefined)
    throw new VmdError('usage', 'conflicting id and -a arguments');
  if (!args.a && args.id === undefined)
    throw new VmdError('usage', 'missing vm id or name (or -a)');
  const request: StopArgs = args.a ? { all: true } : { target: parseTarget(args.id!) };
  if (args.f) request.force = true;
  if (args.w) request.wait = true;
  if (args.timeout !== undefined) request.timeoutMs = parseSeconds(args.timeout);
  return request;
}

export const stopCommand = defineCommand<StopCliArgs>({
  usage: 'usage: vmctl stop [-fw] [--timeout seconds] [id | -a]',
  epilogue:
    'Stopping a vm that is not running prints "vm NAME is not running" and exits 0.\n' +
    'With --timeout the guest is asked to power off, then forced after that many seconds;\n' +
    'vmctl returns once the vm is gone.',
  positional: { name: 'id', describe: 'vm id or name' },
  options: {
    a: { type: 'boolean', default: false, describe: 'stop every vm, in parallel' },
    f: { type: 'boolean', default: false, describe: 'force: end the vm process now' },
    w: { type: 'boolean', default: false, describe: 'wait until the vm has stopped' },
    timeout: {
      type: 'string',
      requiresArg: true,
      describe: 'seconds before a graceful stop is forced',
    },
  },
  async run(args, ctx) {
    const request = stopRequest(args);
    const client = await ctx.client();
    const results = await client.stop(request);
    if (ctx.json) return { output: jsonLine(results) };
    results.forEach((r) => ctx.say(stopMessage(r)));
    return {};
  },
});
