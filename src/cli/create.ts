/**
 * `vmctl create [-b base | -i disk] -s size disk`: makes a raw or qcow2 image with qemu-img,
 * without vmd. The image is first created empty with O_EXCL, so an existing file is never
 * overwritten, and removed again if qemu-img fails.
 */
import { execFile } from 'node:child_process';
import { closeSync, openSync, unlinkSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';

import { VmdError, hasErrno } from '../errors.js';
import { parseSizeArg } from './args.js';
import { defineCommand, jsonLine, type Context } from './command.js';
import { parseDiskArg, QCOW_MAGIC, readAt, sniffFormat, type DiskFormat } from './disk.js';
import { fileError, openRegular } from './files.js';
import { fmtScaled } from './format.js';

/** The qemu-img program (found on PATH unless VMD_QEMU_IMG names another). */
const QEMU_IMG = 'qemu-img';
const MIB = 1024 * 1024;
/** New images are private to their creator, as vmctl makes them. */
const IMAGE_MODE = 0o600;

interface CreateArgs {
  disk?: string;
  b?: string;
  i?: string;
  s?: string;
}

/** What to create, worked out from the flags before anything is touched. */
export interface CreatePlan {
  path: string;
  format: DiskFormat;
  /** Bytes; undefined with a base and no -s (the base's size is used). */
  bytes?: number;
  /** The backing file name to store (relative to the image's directory) and its format. */
  base?: { name: string; format: DiskFormat };
  input?: { path: string; format: DiskFormat };
  warnings: string[];
}

/** The format of an existing file by parse_disktype's rules, or of a new one by its name. */
function formatOfPath(path: string, explicit: DiskFormat | undefined): DiskFormat {
  if (explicit) return explicit;
  let head: Buffer | undefined;
  try {
    const fd = openSync(path, 'r');
    try {
      head = readAt(fd, QCOW_MAGIC.length, 0);
    } finally {
      closeSync(fd);
    }
  } catch {
    head = undefined;
  }
  return sniffFormat(path, head);
}

/** The base image as the new image will name it; the base must be a readable file. */
function planBase(base: string, imagePath: string): { name: string; format: DiskFormat } {
  const file = openRegular('base image', base, false);
  let format: DiskFormat;
  try {
    format = sniffFormat(file.path, readAt(file.fd, QCOW_MAGIC.length, 0));
  } finally {
    closeSync(file.fd);
  }
  // Relative to the image, so that the pair can move together.
  return { name: relative(dirname(imagePath), resolve(base)), format };
}

/**
 * Checks the flags in vmctl's order and returns what to create. Throws VmdError 'usage' with
 * vmctl's messages: conflicting -b and -i, base images need qcow2, missing size.
 */
export function planCreate(args: CreateArgs): CreatePlan {
  if (args.disk === undefined || args.disk === '') throw new VmdError('usage', 'missing disk path');
  if (args.b !== undefined && args.i !== undefined) {
    throw new VmdError('usage', 'conflicting -b and -i arguments');
  }
  const spec = parseDiskArg(args.disk);
  const path = resolve(spec.path);
  const format = formatOfPath(path, spec.format);
  if (args.b !== undefined && format !== 'qcow2') {
    throw new VmdError('usage', 'base images require qcow2 disk format');
  }
  const plan: CreatePlan = { path, format, warnings: [] };
  if (args.s !== undefined) {
    const size = parseSizeArg(args.s, 'disk');
    plan.bytes = size.bytes;
    if (size.warning) plan.warnings.push(size.warning);
  }
  if (plan.bytes === undefined && args.b === undefined && args.i === undefined) {
    throw new VmdError('usage', `could not create ${spec.path}: missing size argument`);
  }
  if (args.b !== undefined) plan.base = planBase(args.b, path);
  if (args.i !== undefined) {
    const input = parseDiskArg(args.i);
    plan.input = {
      path: resolve(input.path),
      format: formatOfPath(resolve(input.path), input.format),
    };
  }
  return plan;
}

/** The argv of `qemu-img create` for a plan without input. */
export function qemuImgCreateArgs(plan: CreatePlan): string[] {
  const argv = ['create', '-q', '-f', plan.format];
  if (plan.base) argv.push('-b', plan.base.name, '-F', plan.base.format);
  argv.push(plan.path);
  if (plan.bytes !== undefined) argv.push(String(plan.bytes));
  return argv;
}

/** Runs qemu-img; resolves with its stdout. `onOutput` sees stdout as it comes (progress). */
function qemuImg(argv: string[], onOutput?: (chunk: string) => void): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const program = process.env.VMD_QEMU_IMG ?? QEMU_IMG;
    const child = execFile(program, argv, { maxBuffer: 16 * MIB }, (err, stdout, stderr) => {
      if (!err) return resolvePromise(stdout);
      if (hasErrno(err, 'ENOENT')) {
        return reject(
          new VmdError('engine', `create imagefile operation failed: ${program} not found`, {
            hint: 'install qemu-img (Debian: qemu-utils)',
          }),
        );
      }
      const why =
        (stderr.trim().split('\n').at(-1) ?? '').replace(/^qemu-img: /, '') || err.message;
      reject(new VmdError('failure', `create imagefile operation failed: ${why}`));
    });
    if (onOutput) child.stdout?.on('data', (d: Buffer | string) => onOutput(String(d)));
  });
}

/** The virtual size of an image in bytes, from `qemu-img info`. */
async function virtualSize(path: string, format: DiskFormat): Promise<number> {
  const info = JSON.parse(await qemuImg(['info', '--output=json', '-f', format, path])) as {
    'virtual-size': number;
  };
  return info['virtual-size'];
}

/** -i: converts the input into the new image, grown to the requested size. */
async function convertInto(
  ctx: Context,
  plan: CreatePlan,
  input: NonNullable<CreatePlan['input']>,
) {
  const inputBytes = Math.ceil((await virtualSize(input.path, input.format)) / MIB) * MIB;
  if (plan.bytes !== undefined && plan.bytes < inputBytes) {
    throw new VmdError(
      'usage',
      `disk size must be at least the input size (${fmtScaled(inputBytes)})`,
    );
  }
  const bytes = plan.bytes ?? inputBytes;
  const tty = ctx.io.stderr.isTTY === true;
  const argv = ['convert', ...(tty ? ['-p'] : []), '-f', input.format, '-O', plan.format];
  await qemuImg([...argv, input.path, plan.path], tty ? (s) => ctx.io.stderr.write(s) : undefined);
  const converted = await virtualSize(plan.path, plan.format);
  if (bytes > converted) {
    await qemuImg(['resize', '-q', '-f', plan.format, plan.path, String(bytes)]);
  }
  return bytes;
}

/** Creates the file exclusively, so that an existing image is never overwritten. */
function claimPath(path: string): void {
  try {
    closeSync(openSync(path, 'wx', IMAGE_MODE));
  } catch (err) {
    if (hasErrno(err, 'EEXIST')) {
      throw new VmdError('failure', 'create imagefile operation failed: file exists', {
        hint: `${path} is already there; vmctl create never overwrites an image`,
      });
    }
    throw fileError('could not create', path, err);
  }
}

export const createCommand = defineCommand<CreateArgs>({
  usage: 'usage: vmctl create [-b base | -i disk] [-s size] disk',
  epilogue:
    'The format comes from a raw: or qcow2: prefix, else the .raw/.qcow2 extension, else raw.\n' +
    'Sizes are 1024-based (512M, 20G). -b makes a qcow2 image backed by base; -i converts\n' +
    'or copies an existing image. Needs qemu-img.',
  positional: { name: 'disk', describe: 'image to create' },
  options: {
    b: { type: 'string', requiresArg: true, describe: 'base image (qcow2 only)' },
    i: { type: 'string', requiresArg: true, describe: 'input image to copy or convert' },
    s: { type: 'string', requiresArg: true, describe: 'size, e.g. 20G' },
  },
  async run(args, ctx) {
    const plan = planCreate(args);
    plan.warnings.forEach((w) => ctx.notice(w));
    claimPath(plan.path);
    let bytes = plan.bytes;
    try {
      if (plan.input) bytes = await convertInto(ctx, plan, plan.input);
      else await qemuImg(qemuImgCreateArgs(plan));
    } catch (err) {
      unlinkSync(plan.path);
      throw err;
    }
    if (ctx.json) {
      bytes ??= await virtualSize(plan.path, plan.format);
      return {
        output: jsonLine({ path: plan.path, format: plan.format, bytes, base: plan.base?.name }),
      };
    }
    ctx.notice(`${plan.format} imagefile created`);
    return {};
  },
});
