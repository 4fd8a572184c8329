/**
 * `vmctl events`: one line per VM event (start, stopping, pause, unpause, reboot, exit) as it
 * happens, until vmd goes away, the reader of stdout does, or vmctl is interrupted. --json
 * gives NDJSON, each line the event as vmd sends it: {type, vm, exit?}, vm as in status.
 */
import { defineCommand, jsonLine } from './command.js';
import { formatEvent } from './format.js';

export const eventsCommand = defineCommand<object>({
  usage: 'usage: vmctl events [--json]',
  epilogue: 'Lines read: TIME TYPE vm NAME id ID STATE [exit N | signal SIG] [(reason)].',
  async run(_args, ctx) {
    const client = await ctx.client();
    const out = ctx.io.stdout;
    const stream = client.events((event) => {
      out.write(ctx.json ? jsonLine(event) : formatEvent(event, new Date()) + '\n');
    });
    await Promise.race([stream, ctx.stdoutGone]);
    return {};
  },
});
