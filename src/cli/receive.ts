/**
 * `vmctl receive [name] < file`: vmctl copies stdin into one end of a socketpair; vmd reads
 * the stream's header, refuses a damaged or foreign one, and starts the VM from it.
 * Root only (vmd checks).
 */
import { VmdError } from '../errors.js';
import type { VmInfo } from '../vmm/types.js';
import { parseNewVmName } from './args.js';
import { closeQuietly, defineCommand, jsonLine } from './command.js';
import { copyStream, Progress, socketFromFd } from './stream.js';

interface ReceiveArgs {
  name?: string;
}

export const receiveCommand = defineCommand<ReceiveArgs>({
  usage: 'usage: vmctl receive [name] < file',
  epilogue:
    'Without a name the vm keeps the name it had when sent. stdin must not be a terminal.\n' +
    'Progress is shown on stderr when it is a terminal.',
  positional: { name: 'name', describe: 'name for the new vm' },
  async run(args, ctx) {
    const name = args.name === undefined ? undefined : parseNewVmName(args.name);
    if (ctx.io.stdin.isTTY) {
      throw new VmdError('usage', 'refusing to read a vm dump from a terminal', {
        hint: 'redirect stdin from a file: vmctl receive NAME < FILE',
      });
    }
    const { socketpair } = await import('../native.js');
    const client = await ctx.client();
    const [mine, theirs] = socketpair();
    const sock = socketFromFd(mine);
    const progress = new Progress(ctx.io.stderr, 'receive', ctx.io.stderr.isTTY === true);
    let info: VmInfo;
    try {
      const reply = client.receive(theirs, name);
      closeQuietly(theirs);
      // vmd may refuse the stream before reading it all; a write error then means nothing.
      sock.on('error', () => undefined);
      const copied = copyStream(ctx.io.stdin, sock, progress).then(
        () => sock.end(),
        () => sock.end(),
      );
      info = await reply;
      await copied;
    } finally {
      ctx.io.stdin.unpipe(sock);
      ctx.io.stdin.pause();
      sock.destroy();
    }
    progress.finish();
    if (ctx.json) return { output: jsonLine(info) };
    ctx.notice(`received vm ${info.id} successfully, tty ${info.tty ?? '-'}`);
    return {};
  },
});
