/**
 * vmctl's arguments as data. Each verb declares its positional word and options (ArgSpec);
 * yargs gets them as declared for help text and for every argv out of the ordinary, and the
 * plain argv of a script (`vmctl status --json`, `vmctl stop -w web`) is read here without
 * loading yargs at all, which costs more than the rest of such a run. What is read here is
 * exactly what yargs makes of the same words; anything this reader does not know for
 * certain (help, `--name=value`, `--no-name`, bundled flags other than -vv, `--`, values
 * that start with a dash, a second positional, unknown options) goes to yargs.
 */
import type { Argv } from 'yargs';

import type { ArgSpec, OptionSpec } from './command.js';

/** The options every verb takes, before or after the command word. */
export const GLOBAL_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  socket: {
    type: 'string',
    requiresArg: true,
    describe: 'control socket (default $VMD_SOCKET, else /run/vmd.sock)',
  },
  json: { type: 'boolean', describe: 'JSON on stdout; errors as a JSON object on stderr' },
  v: { type: 'count', describe: 'more verbose output' },
};

/** Declares options to yargs. */
export function yargsOptions(y: Argv, options: Readonly<Record<string, OptionSpec>> = {}): Argv {
  let out = y;
  for (const [name, spec] of Object.entries(options)) out = out.option(name, { ...spec });
  return out;
}

/** Declares a verb's positional word and options to yargs. */
export function yargsSpec(y: Argv, spec: ArgSpec): Argv {
  const p = spec.positional;
  const withWord = p ? y.positional(p.name, { type: 'string', describe: p.describe }) : y;
  return yargsOptions(withWord, spec.options);
}

/** The option a word names exactly (`-r`, `--json`), if it is one of options. */
function optionOf(
  word: string,
  options: Readonly<Record<string, OptionSpec>>,
): [string, OptionSpec] | undefined {
  let name: string;
  if (/^-[A-Za-z]$/.test(word)) name = word.slice(1);
  else if (/^--[A-Za-z][A-Za-z-]*[A-Za-z]$/.test(word)) name = word.slice(2);
  else return undefined;
  // A one-letter option is written -x, a longer one --name; yargs takes either way for
  // both, but other spellings are rare enough to leave to it.
  if ((name.length === 1) !== (word.length === 2)) return undefined;
  const spec = Object.hasOwn(options, name) ? options[name] : undefined;
  return spec ? [name, spec] : undefined;
}

/**
 * argv (without the command word) read as yargs would read it with the global options and
 * spec's: the arguments object the verb gets, or undefined when yargs must read it.
 */
export function quickParse(
  argv: readonly string[],
  spec: ArgSpec,
): Record<string, unknown> | undefined {
  const options = { ...GLOBAL_OPTIONS, ...spec.options };
  const args: Record<string, unknown> = {};
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i];
    if (!word.startsWith('-')) {
      if (!spec.positional || args[spec.positional.name] !== undefined) return undefined;
      args[spec.positional.name] = word;
      continue;
    }
    // A count option, once (-v) or repeated in one word (-vv).
    const counted = /^-([A-Za-z])\1*$/.exec(word)?.[1];
    if (counted !== undefined && options[counted]?.type === 'count') {
      args[counted] = ((args[counted] as number | undefined) ?? 0) + word.length - 1;
      continue;
    }
    const found = optionOf(word, options);
    if (!found) return undefined;
    const [name, opt] = found;
    if (opt.type === 'boolean') {
      // yargs takes a following true or false as the flag's value; and a repeated flag
      // (already set: defaults come after the loop) is not worth mimicking.
      const next = argv[i + 1];
      if (next === 'true' || next === 'false' || args[name] !== undefined) return undefined;
      args[name] = true;
    } else {
      const value = argv[i + 1];
      if (value === undefined || value.startsWith('-')) return undefined;
      i++;
      // A repeated string option is every value in order, as yargs gives it.
      const prev = args[name];
      if (prev === undefined) args[name] = value;
      else args[name] = Array.isArray(prev) ? [...(prev as string[]), value] : [prev, value];
    }
  }
  for (const [name, opt] of Object.entries(options)) {
    if (args[name] !== undefined) continue;
    if (opt.default !== undefined) args[name] = opt.default;
    else if (opt.type === 'count') args[name] = 0;
  }
  return args;
}
