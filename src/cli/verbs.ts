/**
 * Unique-prefix matching, as vmctl does for its verbs (and for the words of `log`): an exact
 * match wins, else the one word that starts with what was typed.
 */
import { VmdError } from '../errors.js';

/** Every verb vmctl accepts; `show` is an alias of `status`. */
export const VERB_NAMES = [
  'console',
  'create',
  'events',
  'load',
  'log',
  'pause',
  'receive',
  'reload',
  'reset',
  'run',
  'send',
  'show',
  'start',
  'status',
  'stop',
  'unpause',
  'wait',
] as const;

export type VerbName = (typeof VERB_NAMES)[number];

/** Verbs that are other verbs under another name. */
export const VERB_ALIASES: Readonly<Partial<Record<VerbName, VerbName>>> = { show: 'status' };

/** The words of `words` that `typed` is a prefix of (all of them when it matches exactly). */
function candidates(typed: string, words: readonly string[], caseless: boolean): string[] {
  const norm = (s: string) => (caseless ? s.toLowerCase() : s);
  const t = norm(typed);
  const exact = words.filter((w) => norm(w) === t);
  if (exact.length > 0) return exact;
  return words.filter((w) => norm(w).startsWith(t));
}

/** "a, b or c" */
function listWords(words: readonly string[]): string {
  if (words.length <= 1) return words.join('');
  return `${words.slice(0, -1).join(', ')} or ${words.at(-1)}`;
}

/**
 * The one word of `words` that `typed` names. Throws VmdError 'usage':
 * `ambiguous argument: X` when several match, `unknown argument: X` when none does.
 */
export function matchWord(typed: string, words: readonly string[], caseless = false): string {
  const found = typed === '' ? [] : candidates(typed, words, caseless);
  if (found.length === 1) return found[0];
  if (found.length > 1) {
    throw new VmdError('usage', `ambiguous argument: ${typed}`, {
      hint: `did you mean ${listWords(found)}?`,
    });
  }
  throw new VmdError('usage', `unknown argument: ${typed}`, {
    hint: `expected one of: ${words.join(', ')}`,
  });
}

/** The verb a command-line word names, aliases resolved (`sh` → status). */
export function matchVerb(typed: string): VerbName {
  const found = matchVerbWord(typed);
  return VERB_ALIASES[found] ?? found;
}

function matchVerbWord(typed: string): VerbName {
  try {
    return matchWord(typed, VERB_NAMES) as VerbName;
  } catch (err) {
    if (err instanceof VmdError && err.message.startsWith('unknown')) {
      throw new VmdError('usage', err.message, {
        hint: 'run vmctl --help for the list of commands',
      });
    }
    throw err;
  }
}
