/**
 * `vmctl pause id` and `vmctl unpause id`: stop and resume the guest's CPUs.
 */
import { requireTarget } from './args.js';
import { defineCommand, jsonLine, type Command } from './command.js';

interface PauseArgs {
  id?: string;
}

function pauseVerb(verb: 'pause' | 'unpause'): Command {
  return defineCommand<PauseArgs>({
    usage: `usage: vmctl ${verb} id`,
    positional: { name: 'id', describe: 'vm id or name' },
    async run(args, ctx) {
      const target = requireTarget(args.id);
      const client = await ctx.client();
      const info = verb === 'pause' ? await client.pause(target) : await client.unpause(target);
      if (ctx.json) return { output: jsonLine(info) };
      ctx.notice(`${verb}d vm ${info.id} successfully`);
      return {};
    },
  });
}

export const pauseCommand = pauseVerb('pause');
export const unpauseCommand = pauseVerb('unpause');
