/**
 * The vm.conf lexer, with the rules of OpenBSD's parse.y: '#' comments, '\' line
 * continuation, single- or double-quoted strings, unquoted words, numbers that end only
 * at a blank or one of `) , / } =`, and `$name` macros whose value is lexed again in place.
 */

/** Words that are keywords when unquoted; "vm" in quotes is a plain string. */
export const KEYWORDS: ReadonlySet<string> = new Set([
  'add', 'agentx', 'allow', 'boot', 'cdrom', 'cmdline', 'context', 'cpus', 'delay', 'device',
  'disable', 'disk', 'down', 'enable', 'format', 'group', 'id', 'include', 'inet6', 'initrd',
  'instance', 'interface', 'interfaces', 'lladdr', 'local', 'locked', 'memory', 'net', 'owner',
  'parallel', 'path', 'prefix', 'rdomain', 'sev', 'seves', 'size', 'socket', 'staggered',
  'start', 'switch', 'up', 'vcpus', 'vm',
]);

/**
 * word: an unquoted string that is not a keyword; string: a quoted one; punct: any other
 * single character; error: the lexer has already reported a problem here.
 */
export type TokenKind =
  | 'word' | 'string' | 'keyword' | 'number' | 'punct' | 'newline' | 'eof' | 'error';

export interface Token {
  kind: TokenKind;
  /** The text (a string's contents without quotes); '' for newline, eof and error. */
  text: string;
  /** The value of a number token. */
  value: number;
  /** The line the token starts on. */
  line: number;
}

/** What the lexer needs from the parser: macro values and somewhere to put errors. */
export interface LexerHost {
  /** The value of macro `name` (marking it used), or undefined. */
  macro(name: string): string | undefined;
  error(line: number, message: string): void;
}

/** Markers around a macro's value in the pushback stack: no '$' expansion inside. */
const EXPAND_START = 1;
const EXPAND_END = 2;
type Pushed = string | typeof EXPAND_START | typeof EXPAND_END;

const isDigit = (c: string | null): c is string => c !== null && c >= '0' && c <= '9';
const isAlnum = (c: string | null): c is string => c !== null && /^[A-Za-z0-9]$/.test(c);
const isSpace = (c: string | null): boolean => c !== null && ' \t\n\v\f\r'.includes(c);
/** C's ispunct in the C locale: printable ASCII that is neither alnum nor space. */
const isPunct = (c: string | null): boolean => c !== null && /^[!-/:-@[-`{-~]$/.test(c);

const endsNumber = (c: string | null): boolean => c === null || isSpace(c) || '),/}='.includes(c);
const inWord = (c: string | null): boolean =>
  isAlnum(c) || (isPunct(c) && !'(){}!=#,'.includes(c!));
const startsWord = (c: string | null): boolean => isAlnum(c) || c === ':' || c === '_' || c === '/';

/** Largest and smallest long long, for strtonum on number tokens. */
const LLONG_MAX = 2n ** 63n - 1n;
const LLONG_MIN = -(2n ** 63n);

/**
 * XXX: vmd refuses a token longer than its 8 KiB buffer ("string too long") and a NUL in a
 * quoted string; neither limit exists here.
 */
export class Lexer {
  private readonly text: string;
  private pos = 0;
  private readonly pushed: Pushed[] = [];
  private expanding = false;
  private eofSeen = false;
  private line = 1;

  /** text: a whole file; CRLF line ends are taken as LF. */
  constructor(text: string, private readonly host: LexerHost) {
    this.text = text.replace(/\r\n/g, '\n');
  }

  /** The next token; after eof, eof again. */
  next(): Token {
    for (;;) {
      let c = this.getc();
      while (c === ' ' || c === '\t') c = this.getc();
      const line = this.line;
      if (c === '#') {
        while (c !== '\n' && c !== null) c = this.getc();
      }
      if (c === '$' && !this.expanding) {
        const expanded = this.expandMacro(line);
        if (expanded !== undefined) return expanded;
        continue;
      }
      return this.scan(c, line);
    }
  }

  private scan(c: string | null, line: number): Token {
    if (c === '"' || c === "'") return this.quoted(c, line);
    if (c === '-' || isDigit(c)) {
      const token = this.number(c, line);
      if (token !== undefined) return token;
      c = this.getc();
      if (c === '-') return this.token('punct', c, line);
    }
    if (startsWord(c)) return this.word(c!, line);
    if (c === '\n') {
      this.line++;
      return this.token('newline', '', line);
    }
    if (c === null) return this.token('eof', '', line);
    return this.token('punct', c, line);
  }

  /** After '$': reads the name and pushes its value back; a token only on error or eof. */
  private expandMacro(line: number): Token | undefined {
    let name = '';
    for (;;) {
      const c = this.getc();
      if (c === null) return this.token('eof', '', line);
      if (isAlnum(c) || c === '_') {
        name += c;
        continue;
      }
      this.ungetc(c);
      break;
    }
    const value = this.host.macro(name);
    if (value === undefined) {
      this.host.error(line, `macro '${name}' not defined`);
      return this.token('error', '', line);
    }
    this.pushed.push(EXPAND_END, ...[...value].reverse(), EXPAND_START);
    return undefined;
  }

  /** A quoted string; '\' escapes the quote and blanks, '\' newline continues the line. */
  private quoted(quote: string, line: number): Token {
    let text = '';
    for (;;) {
      let c = this.getcQuoted(line);
      if (c === null) return this.token('error', '', line);
      if (c === '\n') {
        this.line++;
        continue;
      }
      if (c === '\\') {
        const next = this.getcQuoted(line);
        if (next === null) return this.token('error', '', line);
        if (next === quote || next === ' ' || next === '\t') {
          c = next;
        } else if (next === '\n') {
          this.line++;
          continue;
        } else {
          this.ungetc(next);
        }
      } else if (c === quote) {
        return this.token('string', text, line);
      }
      text += c;
    }
  }

  /**
   * Digits after an optional '-'. A number when it ends where a number may end; otherwise
   * the characters go back (all but the first, which the caller reads again) and undefined.
   */
  private number(first: string, line: number): Token | undefined {
    let text = first;
    let c = this.getc();
    while (isDigit(c)) {
      text += c;
      c = this.getc();
    }
    this.ungetc(c);
    if (text !== '-' && endsNumber(c)) return this.numberToken(text, line);
    for (let i = text.length - 1; i >= 0; i--) this.ungetc(text[i]);
    return undefined;
  }

  private numberToken(text: string, line: number): Token {
    const value = BigInt(text);
    if (value > LLONG_MAX || value < LLONG_MIN) {
      const why = value > LLONG_MAX ? 'too large' : 'too small';
      this.host.error(line, `"${text}" invalid number: ${why}`);
      return this.token('error', '', line);
    }
    return { kind: 'number', text, value: Number(value), line };
  }

  private word(first: string, line: number): Token {
    let text = first;
    let c = this.getc();
    while (inWord(c)) {
      text += c;
      c = this.getc();
    }
    this.ungetc(c);
    return this.token(KEYWORDS.has(text) ? 'keyword' : 'word', text, line);
  }

  private token(kind: TokenKind, text: string, line: number): Token {
    return { kind, text, value: 0, line };
  }

  /** The next raw character: pushed-back ones first, then the text; null at the end. */
  private rawc(): string | null {
    for (;;) {
      const pushed = this.pushed.pop();
      if (pushed === EXPAND_START) {
        this.expanding = true;
      } else if (pushed === EXPAND_END) {
        this.expanding = false;
      } else if (pushed !== undefined) {
        return pushed;
      } else {
        return this.pos < this.text.length ? this.text[this.pos++] : null;
      }
    }
  }

  /**
   * The next character outside quotes: '\' newline joins lines, '\' x is x, a run of blanks
   * is one ' ', and the end of the text reads as one last newline before null.
   */
  private getc(): string | null {
    let c = this.rawc();
    while (c === '\\') {
      const next = this.rawc();
      if (next !== '\n') {
        c = next;
        break;
      }
      this.line++;
      c = this.rawc();
    }
    if (c === ' ' || c === '\t') {
      let next = this.rawc();
      while (next === ' ' || next === '\t') next = this.rawc();
      this.ungetc(next);
      return ' ';
    }
    if (c === null && !this.eofSeen) {
      this.eofSeen = true;
      return '\n';
    }
    return c;
  }

  /** The next character inside quotes; reports a string left open at the end of the text. */
  private getcQuoted(line: number): string | null {
    const c = this.rawc();
    if (c === null) this.host.error(line, 'reached end of file while parsing quoted string');
    return c;
  }

  private ungetc(c: string | null): void {
    if (c !== null) this.pushed.push(c);
  }
}
