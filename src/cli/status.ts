/**
 * `vmctl status [-r] [id]` (alias `show`): vmctl's table, or the VmInfo array with --json.
 * Unlike vmctl, an empty table exits 0: no VMs is an answer, not a failure.
 */
import { UserDb } from '../config/users.js';
import { defineCommand, isTerminal, jsonLine } from './command.js';
import { parseTarget } from './args.js';
import { paintFor, statusTable } from './format.js';

interface StatusArgs {
  r: boolean;
  id?: string;
}

export const statusCommand = defineCommand<StatusArgs>({
  usage: 'usage: vmctl status [-r] [id]',
  epilogue: 'Exits 0 even when there is no vm to show (vmctl exits 1).',
  positional: { name: 'id', describe: 'only the vm with this id or name' },
  options: { r: { type: 'boolean', default: false, describe: 'only running vms' } },
  async run(args, ctx) {
    const target = args.id === undefined ? undefined : parseTarget(args.id);
    const client = await ctx.client();
    const vms = await client.status(target, args.r || undefined);
    if (ctx.json) return { output: jsonLine(vms) };
    const paint = await paintFor(ctx.io.env, isTerminal(ctx.io, 'stdout'));
    return { output: statusTable(vms, new UserDb(), paint) };
  },
});
