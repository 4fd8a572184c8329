/**
 * vm.conf parser: golden files for whole configs (test/fixtures/vmconf/pass/*.conf against
 * *.json, fail/*.conf against the exact diagnostics in *.out), and unit tests for the
 * lexer, sizes, names, users and includes. UPDATE_GOLDEN=1 rewrites the goldens; read
 * every changed golden before committing it.
 */
import assert from 'node:assert/strict';
import {
  existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  formatDiagnostic,
  normalizeMemorySize,
  parseConfigFile,
  parseConfigText,
  parseMac,
  parseSize,
  UserDb,
  validateVmName,
  type ConfigDiagnostic,
  type ParseOptions,
  type ParseResult,
} from '../../src/config/index.js';
import { Lexer } from '../../src/config/lexer.js';
import { VmdError } from '../../src/errors.js';

/** test/fixtures/vmconf, above this file (in dist/ or not) or else below the working directory. */
function findFixtures(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const fixtures = join(dir, 'test/fixtures/vmconf');
    if (existsSync(join(fixtures, 'passwd'))) return fixtures;
    if (dirname(dir) === dir) return join(process.cwd(), 'test/fixtures/vmconf');
  }
}

const FIXTURES = findFixtures();
const UPDATE = process.env.UPDATE_GOLDEN === '1';
const BASE_OPTIONS: ParseOptions = {
  passwdPath: join(FIXTURES, 'passwd'),
  groupPath: join(FIXTURES, 'group'),
  onlineCpus: 4,
};

/** `# test: -D name=value …` on a line of a fixture adds -D macros. */
function fixtureOptions(text: string): ParseOptions {
  const directive = /^# test:(.*)$/m.exec(text);
  const macros: Record<string, string> = {};
  const words = directive?.[1]?.trim().split(/\s+/) ?? [];
  for (let i = 0; i + 1 < words.length; i += 2) {
    assert.equal(words[i], '-D', `bad test directive: ${directive?.[0]}`);
    const [name, value] = words[i + 1].split('=') as [string, string];
    macros[name] = value;
  }
  return { ...BASE_OPTIONS, macros };
}

function parseFixture(path: string): ParseResult {
  return parseConfigFile(path, fixtureOptions(readFileSync(path, 'utf8')));
}

/** A diagnostic line with the file relative to the fixtures directory. */
function shown(d: ConfigDiagnostic): string {
  return formatDiagnostic(d).split(`${FIXTURES}/`).join('');
}

const KEY_ORDER = ['name', 'instanceOf', 'file', 'line'];

/** Fixture paths as <fixtures>/… and keys in a fixed order, so goldens are stable. */
function normalized(value: unknown): unknown {
  if (typeof value === 'string') return value.split(FIXTURES).join('<fixtures>');
  if (Array.isArray(value)) return value.map(normalized);
  if (value === null || typeof value !== 'object') return value;
  const rank = (key: string): number => {
    const at = KEY_ORDER.indexOf(key);
    return at < 0 ? KEY_ORDER.length : at;
  };
  const keys = Object.keys(value).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const record = value as Record<string, unknown>;
  return Object.fromEntries(keys.map((k) => [k, normalized(record[k])]));
}

function checkGolden(path: string, actual: string): void {
  if (UPDATE) {
    writeFileSync(path, actual);
    return;
  }
  assert.ok(existsSync(path), `missing golden ${path} (UPDATE_GOLDEN=1 writes it)`);
  assert.equal(actual, readFileSync(path, 'utf8'));
}

function fixtureNames(dir: string): string[] {
  return readdirSync(join(FIXTURES, dir)).filter((f) => f.endsWith('.conf')).sort();
}

describe('vm.conf golden files', () => {
  for (const name of fixtureNames('pass')) {
    it(`pass/${name}`, () => {
      const path = join(FIXTURES, 'pass', name);
      const result = parseFixture(path);
      assert.deepEqual(result.errors.map(shown), [], 'a pass fixture must parse without errors');
      const golden = { config: result.config, warnings: result.warnings.map(shown) };
      const json = JSON.stringify(normalized(golden), null, 2);
      checkGolden(path.replace(/\.conf$/, '.json'), `${json}\n`);
    });
  }

  for (const name of fixtureNames('fail')) {
    it(`fail/${name}`, () => {
      const path = join(FIXTURES, 'fail', name);
      const result = parseFixture(path);
      assert.ok(result.errors.length > 0, 'a fail fixture must have errors');
      const lines = [...result.errors, ...result.warnings].map(shown);
      checkGolden(path.replace(/\.conf$/, '.out'), `${lines.join('\n')}\n`);
    });
  }

  it('has a .conf for every golden', () => {
    for (const [dir, ext] of [['pass', '.json'], ['fail', '.out']] as const) {
      for (const golden of readdirSync(join(FIXTURES, dir)).filter((f) => f.endsWith(ext))) {
        const conf = golden.slice(0, -ext.length) + '.conf';
        assert.ok(existsSync(join(FIXTURES, dir, conf)), `${dir}/${golden} has no ${conf}`);
      }
    }
  });
});

describe('lexer', () => {
  function lex(text: string, macros: Record<string, string> = {}): string[] {
    const errors: string[] = [];
    const lexer = new Lexer(text, {
      macro: (name) => macros[name],
      error: (line, message) => errors.push(`${line}: ${message}`),
    });
    const out: string[] = [];
    for (let tok = lexer.next(); tok.kind !== 'eof'; tok = lexer.next()) {
      out.push(tok.kind === 'newline' ? 'nl' : `${tok.kind}:${tok.text}`);
    }
    return [...out, ...errors];
  }

  it('tells numbers from strings the way parse.y does', () => {
    assert.deepEqual(lex('512M -5 - 10/8 1.5G 0x10 -x'), [
      'word:512M', 'number:-5', 'punct:-', 'number:10', 'word:/8', 'word:1.5G', 'word:0x10',
      'punct:-', 'word:x', 'nl',
    ]);
  });

  it('keeps keywords apart from quoted strings', () => {
    assert.deepEqual(lex('vm "vm" Vm'), ['keyword:vm', 'string:vm', 'word:Vm', 'nl']);
  });

  it('ends words at ( ) { } ! = # , and blanks', () => {
    assert.deepEqual(lex('a=b{c}d,e!f#g h'), [
      'word:a', 'punct:=', 'word:b', 'punct:{', 'word:c', 'punct:}', 'word:d', 'punct:,',
      'word:e', 'punct:!', 'word:f', 'nl',
    ]);
  });

  it('lexes a macro value again, without expanding $ inside it', () => {
    assert.deepEqual(lex('disk $d "/x" $d"y" $q', { d: '/var/vm', q: '"a b" $d' }), [
      'keyword:disk', 'word:/var/vm', 'string:/x', 'word:/var/vm"y"', 'string:a b', 'punct:$',
      'word:d', 'nl',
    ]);
  });

  it('reports an undefined macro and an unterminated string', () => {
    assert.deepEqual(lex('a $nope\n"open'), [
      'word:a', 'error:', 'nl', 'error:', 'nl',
      "1: macro 'nope' not defined", '2: reached end of file while parsing quoted string',
    ]);
  });

  it('counts lines through continuations and quoted newlines', () => {
    const lexer = new Lexer('a \\\nb "c\nd" e\nf', {
      macro: () => undefined,
      error: () => undefined,
    });
    const lines: string[] = [];
    for (let tok = lexer.next(); tok.kind !== 'eof'; tok = lexer.next()) {
      if (tok.kind !== 'newline') lines.push(`${tok.text}@${tok.line}`);
    }
    assert.deepEqual(lines, ['a@1', 'b@2', 'cd@2', 'e@3', 'f@4']);
  });
});

describe('parseSize', () => {
  const M = 1024 * 1024;
  const G = 1024 * M;
  const good: [string, number][] = [
    ['512M', 512 * M], ['512m', 512 * M], ['1.5G', 1.5 * G], ['2048k', 2048 * 1024],
    ['1073741824', G], ['0', 0], ['1B', 1], ['1.5B', 1], ['1.5', 1], [' 5M', 5 * M],
    ['5M ', 5 * M], ['5M!', 5 * M], ['+5K', 5120], ['-1K', -1024], ['-0.5K', -512],
    ['0.5K', 512], ['.5K', 512], ['7E', 7 * 2 ** 60], ['1.75E', 2 ** 60],
    ['1.99999999999999999K', 2047],
  ];
  for (const [text, bytes] of good) {
    it(`"${text}" is ${bytes}`, () => assert.equal(parseSize(text), bytes));
  }

  const bad: [string, string][] = [
    ['1GB', 'invalid size: 1GB'], ['5X', 'invalid size: 5X'], ['', 'invalid size: '],
    ['K', 'invalid size: K'], ['.', 'invalid size: .'], ['--5', 'invalid size: --5'],
    ['+-5', 'invalid size: +-5'], ['1..5', 'invalid size: 1..5'], ['5 ', 'invalid size: 5 '],
    ['5 M', 'invalid size: 5 M'], ['8E', 'size out of range: 8E'],
    ['1.9999999999999999999K', 'size out of range: 1.9999999999999999999K'],
    ['99999999999999999999999', 'size out of range: 99999999999999999999999'],
    ['9223372036854775808', 'size out of range: 9223372036854775808'],
  ];
  for (const [text, message] of bad) {
    it(`"${text}" is refused`, () => {
      assert.throws(() => parseSize(text), (err: unknown) => {
        assert.ok(err instanceof VmdError);
        assert.equal(err.code, 'usage');
        assert.equal(err.message, message);
        return true;
      });
    });
  }
});

describe('normalizeMemorySize', () => {
  const M = 1024 * 1024;
  it('rounds down to a whole MiB', () => {
    assert.equal(normalizeMemorySize(M), M);
    assert.equal(normalizeMemorySize(2 * M - 1), M);
    assert.equal(normalizeMemorySize(128 * 1024 * M), 128 * 1024 * M);
  });

  it('refuses less than 1M and more than 128G', () => {
    assert.throws(() => normalizeMemorySize(M - 1), /^VmdError: memory size must be at least 1MB$/);
    assert.throws(() => normalizeMemorySize(512), /must be at least 1MB/);
    assert.throws(() => normalizeMemorySize(128 * 1024 * M + 1),
      /^VmdError: memory size too large \(limit is 128G\)$/);
  });
});

describe('validateVmName', () => {
  it('accepts letters, digits, dot, dash and underscore after an alphanumeric', () => {
    for (const name of ['a', '1', 'web-1.example_2', 'A'.repeat(63)]) {
      assert.equal(validateVmName(name), undefined, name);
    }
  });

  it('refuses other names', () => {
    for (const name of ['', '.a', '-a', '_a', 'a b', 'a/b', 'café', 'a:b']) {
      assert.equal(validateVmName(name), 'invalid VM name', name);
    }
    assert.equal(validateVmName('a'.repeat(64)), 'vm name too long');
  });
});

describe('values', () => {
  it('parses MAC addresses as ether_aton does', () => {
    assert.equal(parseMac('fe:e1:ba:d0:0:1'), 'fe:e1:ba:d0:00:01');
    assert.equal(parseMac('00:11:22:33:44:55'), '00:11:22:33:44:55');
    assert.equal(parseMac('00:11:22:33:44'), undefined);
    assert.equal(parseMac('00-11-22-33-44-55'), undefined);
    assert.equal(parseMac('000:11:22:33:44:55'), undefined);
  });

  it('formats diagnostics as file:line: message', () => {
    const d: ConfigDiagnostic = {
      file: 'vm.conf', line: 3, message: 'too many disks', severity: 'error',
    };
    assert.equal(formatDiagnostic(d), 'vm.conf:3: too many disks');
    assert.equal(formatDiagnostic({ ...d, line: 0 }), 'vm.conf: too many disks');
    assert.equal(formatDiagnostic({ ...d, severity: 'warning' }),
      'vm.conf:3: warning: too many disks');
  });
});

describe('UserDb', () => {
  const db = new UserDb({ passwdPath: BASE_OPTIONS.passwdPath, groupPath: BASE_OPTIONS.groupPath });

  it('looks users and groups up by name and id', () => {
    assert.equal(db.userByName('alice')?.uid, 1000);
    assert.equal(db.userById(1001)?.name, 'bob');
    assert.equal(db.groupByName('vmusers')?.gid, 2000);
    assert.equal(db.groupById(10)?.name, 'wheel');
    assert.equal(db.userByName('nobody-here'), undefined);
  });

  it('skips comments and malformed lines', () => {
    assert.equal(db.userByName('broken'), undefined);
    assert.ok(db.users.every((u) => !u.name.startsWith('#')));
  });

  it('knows primary and supplementary groups', () => {
    assert.ok(db.isInGroup('alice', 1000));
    assert.ok(db.isInGroup('alice', 10));
    assert.ok(db.isInGroup('bob', 2000));
    assert.ok(!db.isInGroup('bob', 10));
  });

  it('has no entries when the files are missing', () => {
    const empty = new UserDb({ passwdPath: '/nonexistent/passwd', groupPath: '/nonexistent/grp' });
    assert.equal(empty.users.length, 0);
    assert.equal(empty.groups.length, 0);
  });
});

describe('parseConfigFile and parseConfigText', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'vmconf-'));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('reports a missing file, unless allowMissing', () => {
    const path = join(tmp, 'absent.conf');
    const result = parseConfigFile(path, BASE_OPTIONS);
    assert.deepEqual(result.errors.map(formatDiagnostic),
      [`${path}: failed to open file: no such file or directory`]);
    const allowed = parseConfigFile(path, { ...BASE_OPTIONS, allowMissing: true });
    assert.deepEqual(allowed.errors, []);
    assert.deepEqual(allowed.config.vms, []);
  });

  it('limits include nesting to 10', () => {
    const chain = (n: number): string => {
      for (let i = 0; i < n; i++) {
        writeFileSync(join(tmp, `f${i}.conf`), `include "f${i + 1}.conf"\n`);
      }
      writeFileSync(join(tmp, `f${n}.conf`), `vm "deep${n}" { memory 1G }\n`);
      return join(tmp, 'f0.conf');
    };
    const ok = parseConfigFile(chain(10), BASE_OPTIONS);
    assert.deepEqual(ok.errors, []);
    assert.equal(ok.config.vms[0]?.name, 'deep10');
    const deep = parseConfigFile(chain(11), BASE_OPTIONS);
    assert.deepEqual(deep.errors.map(formatDiagnostic), [
      `${join(tmp, 'f10.conf')}:1: failed to include file "f11.conf": ` +
        'too many nested includes (limit is 10)',
    ]);
  });

  it('takes relative paths and includes from the directory of fileName', () => {
    writeFileSync(join(tmp, 'sw.conf'), 'switch "s" { interface br0 }\n');
    const result = parseConfigText('include "sw.conf"\nvm "a" { disk "a.img" }\n',
      join(tmp, 'main.conf'), BASE_OPTIONS);
    assert.deepEqual(result.errors, []);
    assert.equal(result.config.switches[0]?.source.file, join(tmp, 'sw.conf'));
    assert.equal(result.config.vms[0]?.disks[0]?.path, join(tmp, 'a.img'));
  });

  it('lets -D macros win over the file', () => {
    const text = 'mem = "1G"\nvm "a" { memory $mem }\n';
    const result = parseConfigText(text, 'vm.conf', { ...BASE_OPTIONS, macros: { mem: '2G' } });
    assert.equal(result.config.vms[0]?.memoryBytes, 2 * 1024 ** 3);
    assert.deepEqual(result.warnings, []);
  });

  it('reads CRLF files', () => {
    const result = parseConfigText('vm "a" {\r\n  memory 1G\r\n}\r\n', 'vm.conf', BASE_OPTIONS);
    assert.deepEqual(result.errors, []);
    assert.equal(result.config.vms[0]?.memoryBytes, 1024 ** 3);
  });

  it('fills in the defaults', () => {
    const result = parseConfigText('', 'vm.conf', { onlineCpus: 8 });
    assert.deepEqual(result.config, {
      localPrefix: { inet: '100.64.0.0/10', inet6Enabled: false },
      staggeredStart: { parallel: 8, delaySec: 30 },
      switches: [],
      vms: [],
    });
  });

  it('returns plain data', () => {
    const path = join(FIXTURES, 'pass', 'full.conf');
    const { config } = parseFixture(path);
    assert.deepEqual(JSON.parse(JSON.stringify(config)), config);
  });
});
