/**
 * `vmctl send id > file`: vmd pauses the VM, writes its state into one end of a socketpair
 * and ends the VM; vmctl copies the other end to stdout. Root only (vmd checks).
 */
import { VmdError } from '../errors.js';
import { requireTarget } from './args.js';
import { closeQuietly, defineCommand, jsonLine } from './command.js';
import { copyStream, Progress, socketFromFd } from './stream.js';

interface SendArgs {
  id?: string;
}

export const sendCommand = defineCommand<SendArgs>({
  usage: 'usage: vmctl send id > file',
  epilogue: 'stdout must not be a terminal. Progress is shown on stderr when it is a terminal.',
  positional: { name: 'id', describe: 'vm id or name' },
  async run(args, ctx) {
    const target = requireTarget(args.id);
    if (ctx.io.stdout.isTTY) {
      throw new VmdError('usage', 'refusing to write a vm dump to a terminal', {
        hint: 'redirect stdout to a file: vmctl send ID > FILE',
      });
    }
    const { socketpair } = await import('../native.js');
    const client = await ctx.client();
    const [mine, theirs] = socketpair();
    const sock = socketFromFd(mine);
    const progress = new Progress(
      ctx.io.stderr,
      `send ${String(target)}`,
      ctx.io.stderr.isTTY === true,
    );
    let sent: { id: number; name: string };
    try {
      // The request carries a duplicate of `theirs`; ours must go, or the copy never ends.
      const reply = client.send(target, theirs);
      closeQuietly(theirs);
      const copied = copyStream(sock, ctx.io.stdout, progress);
      copied.catch(() => undefined); // awaited below, unless the reply fails first
      sent = await reply;
      await copied;
    } finally {
      sock.destroy();
    }
    progress.finish();
    if (ctx.json) return { output: jsonLine({ ...sent, bytes: progress.total }) };
    ctx.notice(`sent vm ${sent.id} successfully`);
    return {};
  },
});
