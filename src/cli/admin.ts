/**
 * vmd's administrative verbs, root only (vmd checks): `load file`, `reload`,
 * `reset [all | vms | switches]` and `log brief | verbose`. Like vmctl they print nothing on
 * success; with --json they print vmd's reply.
 */
import { resolve } from 'node:path';

import { VmdError } from '../errors.js';
import { defineCommand, jsonLine, type Context, type CommandResult } from './command.js';
import { matchWord } from './verbs.js';

const RESET_WHAT = ['all', 'vms', 'switches'] as const;
const LOG_LEVELS = ['brief', 'verbose'] as const;

function done(ctx: Context, reply: object): CommandResult {
  return { output: ctx.json ? jsonLine(reply) : undefined };
}

export const loadCommand = defineCommand<{ file?: string }>({
  usage: 'usage: vmctl load file',
  epilogue: 'vmd reads the file itself, so the path is made absolute here.',
  positional: { name: 'file', describe: 'a vm.conf(5) file' },
  async run(args, ctx) {
    if (args.file === undefined || args.file === '') throw new VmdError('usage', 'missing file');
    const path = resolve(args.file);
    await (await ctx.client()).load(path);
    return done(ctx, { path });
  },
});

export const reloadCommand = defineCommand<object>({
  usage: 'usage: vmctl reload',
  async run(_args, ctx) {
    await (await ctx.client()).reload();
    return done(ctx, {});
  },
});

export const resetCommand = defineCommand<{ what?: string }>({
  usage: 'usage: vmctl reset [all | vms | switches]',
  positional: { name: 'what', describe: 'all, vms or switches' },
  async run(args, ctx) {
    const what = args.what === undefined ? 'all' : matchWord(args.what, RESET_WHAT);
    await (await ctx.client()).reset(what as (typeof RESET_WHAT)[number]);
    return done(ctx, { what });
  },
});

export const logCommand = defineCommand<{ level?: string }>({
  usage: 'usage: vmctl log brief | verbose',
  epilogue: 'Either word may be abbreviated, in any case.',
  positional: { name: 'level', describe: 'brief or verbose' },
  async run(args, ctx) {
    if (args.level === undefined) throw new VmdError('usage', 'missing brief or verbose');
    const level = matchWord(args.level, LOG_LEVELS, true) as (typeof LOG_LEVELS)[number];
    await (await ctx.client()).log(level);
    return done(ctx, { level });
  },
});
