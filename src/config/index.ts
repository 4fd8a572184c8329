/**
 * vm.conf: parse a file into a VmdConfig with `file:line: message` diagnostics.
 *
 *   const { config, errors, warnings } = parseConfigFile('/etc/vm.conf', { macros });
 *   for (const d of [...errors, ...warnings]) console.error(formatDiagnostic(d));
 */
import { readFileSync } from 'node:fs';

import { hasErrno } from '../errors.js';
import { ConfigParser, defaultConfig, describeFsError } from './parser.js';
import type { ParseOptions, ParseResult } from './types.js';

export * from './types.js';
export { MAX_INCLUDE_DEPTH, defaultConfig } from './parser.js';
export { KEYWORDS } from './lexer.js';
export {
  formatDiagnostic,
  isValidIfGroup,
  isValidIfName,
  normalizeMemorySize,
  parseMac,
  parseSize,
  validateVmName,
} from './values.js';
export {
  DEFAULT_GROUP_PATH,
  DEFAULT_PASSWD_PATH,
  UserDb,
  readGroupFile,
  readPasswdFile,
  type GroupEntry,
  type PasswdEntry,
  type UserDbPaths,
} from './users.js';

/**
 * Parses vm.conf text as if read from fileName: diagnostics name fileName, and includes
 * and relative paths are taken from its directory. Reads included files; opens nothing else.
 */
export function parseConfigText(text: string, fileName: string, opts: ParseOptions = {}):
  ParseResult {
  return new ConfigParser(opts).parse(text, fileName);
}

/**
 * Reads and parses a vm.conf file. A file that cannot be read is an error, except a
 * missing one when opts.allowMissing is set (vmd's default /etc/vm.conf may be absent).
 */
export function parseConfigFile(path: string, opts: ParseOptions = {}): ParseResult {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const result: ParseResult = { config: defaultConfig(opts), errors: [], warnings: [] };
    if (opts.allowMissing === true && hasErrno(err, 'ENOENT')) return result;
    const message = `failed to open file: ${describeFsError(err)}`;
    result.errors.push({ file: path, line: 0, message, severity: 'error' });
    return result;
  }
  return parseConfigText(text, path, opts);
}
