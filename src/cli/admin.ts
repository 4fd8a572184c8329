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
  name: 'load',
  command: 'load [file]',
  usage: 'usage: vmctl load file',
  describe: 'load vms and switches from another configuration file',
  epilogue: 'vmd reads the file itself, so the path is made absolute here.',
  builder: (y) => y.positional('file', { type: 'string', describe: 'a vm.conf(5) file' }),
  async run(args, ctx) {
    if (args.file === undefined || args.file === '') throw new VmdError('usage', 'missing file');
    const path = resolve(args.file);
    await (await ctx.client()).load(path);
    return done(ctx, { path });
  },
});

export const reloadCommand = defineCommand<object>({
  name: 'reload',
  command: 'reload',
  usage: 'usage: vmctl reload',
  describe: 're-read the configuration without touching running vms',
  builder: (y) => y,
  async run(_args, ctx) {
    await (await ctx.client()).reload();
    return done(ctx, {});
  },
});

export const resetCommand = defineCommand<{ what?: string }>({
  name: 'reset',
  command: 'reset [what]',
  usage: 'usage: vmctl reset [all | vms | switches]',
  describe: 'stop and forget vms, remove switches, or both (default all)',
  builder: (y) => y.positional('what', { type: 'string', describe: 'all, vms or switches' }),
  async run(args, ctx) {
    const what = args.what === undefined ? 'all' : matchWord(args.what, RESET_WHAT);
    await (await ctx.client()).reset(what as (typeof RESET_WHAT)[number]);
    return done(ctx, { what });
  },
});

export const logCommand = defineCommand<{ level?: string }>({
  name: 'log',
  command: 'log [level]',
  usage: 'usage: vmctl log brief | verbose',
  describe: "set vmd's logging: brief or verbose",
  epilogue: 'Either word may be abbreviated, in any case.',
  builder: (y) => y.positional('level', { type: 'string', describe: 'brief or verbose' }),
  async run(args, ctx) {
    if (args.level === undefined) throw new VmdError('usage', 'missing brief or verbose');
    const level = matchWord(args.level, LOG_LEVELS, true) as (typeof LOG_LEVELS)[number];
    await (await ctx.client()).log(level);
    return done(ctx, { level });
  },
});
