/**
 * The vm.conf parser: recursive descent over the lexer's tokens, with the grammar of
 * OpenBSD's vmd parse.y plus `vcpus`, `initrd` and `cmdline` for Linux kernels.
 *
 * Errors are collected, not thrown: a bad option is reported and the parser carries on
 * with the next line, so one run shows every problem. A syntax error skips the rest of its
 * line (and any block opened on it); other errors skip nothing. (yacc's recovery in vmd
 * drops back to the top level instead, so its later messages differ.)
 *
 * Checks vmd leaves out that we make: VM names and duplicates even for `vmd -n` (vmd only
 * checks them when it registers a VM), duplicate switches, a parent defined before its
 * instance, initrd/cmdline without a kernel, and a warning for an undefined switch.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';

import { VmdError } from '../errors.js';
import { Lexer, type Token } from './lexer.js';
import {
  DEFAULT_AGENTX_PATH,
  DEFAULT_LOCAL_PREFIX,
  DEFAULT_STAGGER_DELAY_SEC,
  IFNAMSIZ,
  MAX_DISKS_PER_VM,
  MAX_NICS_PER_VM,
  MAX_VCPUS_PER_VM,
  PATH_MAX,
  RDOMAIN_MAX,
  VM_NAME_MAX,
  type AllowInstance,
  type ConfigDiagnostic,
  type InterfaceConfig,
  type OwnerSpec,
  type ParseOptions,
  type ParseResult,
  type SwitchConfig,
  type VmConfig,
  type VmdConfig,
} from './types.js';
import { UserDb } from './users.js';
import {
  isValidIfGroup,
  isValidIfName,
  normalizeMemorySize,
  parseLocalPrefix4,
  parseLocalPrefix6,
  parseMac,
  parseSize,
  validateVmName,
} from './values.js';

/** Most includes open at once below the top-level file (vmd has no limit; loops hang it). */
export const MAX_INCLUDE_DEPTH = 10;
/** An AgentX context is at most this long. */
const MAX_AGENTX_CONTEXT = 32;
/** A unix socket path must be shorter than sun_path (108 on Linux). */
const MAX_SOCKET_PATH = 108;
/** A kernel command line must be shorter than x86's COMMAND_LINE_SIZE. */
const MAX_CMDLINE = 2048;
/** Highest uid or gid; (uid_t)-1 means "none" to chown(2). */
const MAX_ID = 0xfffffffe;

/** Thrown after a syntax error is reported, to unwind to the statement being parsed. */
class SyntaxFailure extends Error {}

interface Macro {
  value: string;
  used: boolean;
  /** From -D: definitions in the file do not replace it. */
  persist: boolean;
  file: string;
  line: number;
}

/** What a vm block has said so far, for the "specified more than once" checks. */
interface VmSeen {
  kernel: boolean;
  cdrom: boolean;
  memory: boolean;
  interfaces: boolean;
  vcpus: boolean;
  initrdLine?: number;
  cmdlineLine?: number;
}

/** An interface's `switch "name"`, checked against the switches once all are known. */
interface SwitchRef {
  vm: string;
  name: string;
  file: string;
  line: number;
}

/** Separators between the options of a block: newlines, commas or newlines, or none needed. */
type BodyStyle = 'lines' | 'list' | 'free';

const errnoText: Record<string, string> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EISDIR: 'is a directory',
  ENOTDIR: 'not a directory',
  ELOOP: 'too many levels of symbolic links',
};

/** Why a file could not be read, as strerror(3) would say it. */
export function describeFsError(err: unknown): string {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : null;
  if (typeof code === 'string') return errnoText[code] ?? code.toLowerCase();
  return err instanceof Error ? err.message : String(err);
}

/** How a token reads in a syntax error. */
function describe(tok: Token): string {
  if (tok.kind === 'newline') return 'end of line';
  if (tok.kind === 'eof') return 'end of file';
  return `"${tok.text}"`;
}

const isKeyword = (tok: Token, ...words: string[]): boolean =>
  tok.kind === 'keyword' && words.includes(tok.text);
const isPunct = (tok: Token, c: string): boolean => tok.kind === 'punct' && tok.text === c;
const isString = (tok: Token): boolean => tok.kind === 'word' || tok.kind === 'string';

/** The config vmd runs with when vm.conf says nothing. */
export function defaultConfig(opts: ParseOptions = {}): VmdConfig {
  return {
    localPrefix: { inet: DEFAULT_LOCAL_PREFIX, inet6Enabled: false },
    staggeredStart: {
      parallel: opts.onlineCpus ?? availableParallelism(),
      delaySec: DEFAULT_STAGGER_DELAY_SEC,
    },
    switches: [],
    vms: [],
  };
}

/** One parse of one top-level file and its includes; use once. */
export class ConfigParser {
  private readonly config: VmdConfig;
  private readonly errors: ConfigDiagnostic[] = [];
  private readonly warnings: ConfigDiagnostic[] = [];
  private readonly macros = new Map<string, Macro>();
  private readonly openFiles: string[] = [];
  private readonly switchRefs: SwitchRef[] = [];
  private userDb: UserDb | undefined;
  private file = '';
  private lexer: Lexer | undefined;
  private tok: Token = { kind: 'eof', text: '', value: 0, line: 0 };

  constructor(private readonly opts: ParseOptions = {}) {
    this.config = defaultConfig(opts);
  }

  /** Parses text as the file fileName (includes are read relative to it). */
  parse(text: string, fileName: string): ParseResult {
    for (const [name, value] of Object.entries(this.opts.macros ?? {})) {
      this.macros.set(name, { value, used: false, persist: true, file: fileName, line: 0 });
    }
    this.parseFile(text, fileName);
    this.checkSwitchRefs();
    this.warnUnusedMacros();
    return { config: this.config, errors: this.errors, warnings: this.warnings };
  }

  /**
   * XXX: vmd splices an included file into one token stream, so a block could open in one
   * file and close in another; here every file must hold whole statements.
   */
  private parseFile(text: string, path: string): void {
    const saved = { file: this.file, lexer: this.lexer, tok: this.tok };
    this.file = path;
    this.lexer = new Lexer(text, {
      macro: (name) => this.useMacro(name),
      error: (line, message) => this.error(line, message),
    });
    this.openFiles.push(resolve(path));
    this.advance();
    this.parseStatements();
    this.openFiles.pop();
    ({ file: this.file, lexer: this.lexer, tok: this.tok } = saved);
  }

  private parseStatements(): void {
    while (this.tok.kind !== 'eof') {
      if (this.tok.kind === 'newline') {
        this.advance();
        continue;
      }
      try {
        this.parseStatement();
        this.endStatement();
      } catch (err) {
        if (!(err instanceof SyntaxFailure)) throw err;
        this.skipStatement();
      }
    }
  }

  private parseStatement(): void {
    const tok = this.tok;
    if (tok.kind === 'word' || tok.kind === 'string') return this.parseMacroDefinition();
    if (tok.kind !== 'keyword') this.syntaxError(tok);
    switch (tok.text) {
      case 'include':
        return this.parseInclude();
      case 'vm':
        return this.parseVm();
      case 'switch':
        return this.parseSwitch();
      case 'local':
        return this.parseLocal();
      case 'socket':
        return this.parseSocketOwner();
      case 'agentx':
        return this.parseAgentx();
      case 'staggered':
        return this.parseStaggeredStart();
      default:
        this.syntaxError(tok);
    }
  }

  /** A statement ends at a newline or the end of the file. */
  private endStatement(): void {
    if (this.tok.kind === 'eof') return;
    if (this.tok.kind !== 'newline') this.syntaxError(this.tok);
    this.advance();
  }

  /** Skips the rest of a bad statement, including any block opened on its line. */
  private skipStatement(): void {
    let depth = 0;
    while (this.tok.kind !== 'eof' && (this.tok.kind !== 'newline' || depth > 0)) {
      if (isPunct(this.tok, '{')) depth++;
      if (isPunct(this.tok, '}')) depth = Math.max(0, depth - 1);
      this.advance();
    }
  }

  // --- macros and include -------------------------------------------------------------

  private parseMacroDefinition(): void {
    const name = this.tok;
    this.advance();
    if (!isPunct(this.tok, '=')) this.syntaxError(name);
    this.advance();
    const value = this.tok;
    // XXX: vmd takes only a string here; a bare number is accepted too.
    if (!isString(value) && value.kind !== 'number') this.syntaxError(value, 'a macro value');
    this.advance();
    if (/\s/.test(name.text)) {
      this.error(name.line, 'macro name cannot contain whitespace');
      return;
    }
    this.defineMacro(name.text, value.text, name.line);
  }

  /** Defines a macro from the file; a -D definition of the same name wins. */
  private defineMacro(name: string, value: string, line: number): void {
    if (this.macros.get(name)?.persist === true) return;
    this.macros.delete(name);
    this.macros.set(name, { value, used: false, persist: false, file: this.file, line });
  }

  private useMacro(name: string): string | undefined {
    const macro = this.macros.get(name);
    if (macro !== undefined) macro.used = true;
    return macro?.value;
  }

  private warnUnusedMacros(): void {
    for (const [name, macro] of this.macros) {
      if (macro.used) continue;
      this.warnings.push({
        file: macro.file,
        line: macro.line,
        message: `macro '${name}' not used`,
        severity: 'warning',
      });
    }
  }

  private parseInclude(): void {
    const line = this.tok.line;
    this.advance();
    const name = this.expectString('a file name');
    if (this.tok.kind !== 'newline' && this.tok.kind !== 'eof') this.syntaxError(this.tok);
    const path = isAbsolute(name) ? name : join(dirname(this.file), name);
    const problem = this.includeProblem(path);
    if (problem !== undefined) {
      this.error(line, `failed to include file "${name}": ${problem}`);
      return;
    }
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      this.error(line, `failed to include file "${name}": ${describeFsError(err)}`);
      return;
    }
    this.parseFile(text, path);
  }

  private includeProblem(path: string): string | undefined {
    if (this.openFiles.includes(resolve(path))) return 'recursive include';
    if (this.openFiles.length > MAX_INCLUDE_DEPTH) {
      return `too many nested includes (limit is ${MAX_INCLUDE_DEPTH})`;
    }
    return undefined;
  }

  // --- global options -----------------------------------------------------------------

  private parseLocal(): void {
    this.advance();
    if (isKeyword(this.tok, 'inet6')) {
      this.advance();
      this.config.localPrefix.inet6Enabled = true;
      if (!isKeyword(this.tok, 'prefix')) return;
      this.advance();
      const line = this.tok.line;
      const text = this.expectSingleString('an IPv6 prefix');
      const prefix = parseLocalPrefix6(text);
      if (typeof prefix === 'string') this.config.localPrefix.inet6 = prefix;
      else this.error(line, `invalid local inet6 prefix "${text}": ${prefix.error}`);
      return;
    }
    if (!isKeyword(this.tok, 'prefix')) this.syntaxError(this.tok, 'prefix or inet6');
    this.advance();
    const line = this.tok.line;
    const text = this.expectSingleString('an IPv4 prefix');
    const prefix = parseLocalPrefix4(text);
    if (typeof prefix === 'string') this.config.localPrefix.inet = prefix;
    else this.error(line, `invalid local prefix "${text}": ${prefix.error}`);
  }

  private parseSocketOwner(): void {
    this.advance();
    this.expectKeyword('owner');
    const owner = this.parseOwner();
    if (owner !== undefined) this.config.socketOwner = { uid: owner.uid ?? 0, gid: owner.gid };
  }

  private parseAgentx(): void {
    this.advance();
    const agentx = this.config.agentx ?? { path: DEFAULT_AGENTX_PATH };
    while (isKeyword(this.tok, 'context', 'path')) {
      const option = this.tok.text;
      const line = this.tok.line;
      this.advance();
      const value = this.expectSingleString(option === 'context' ? 'a context' : 'a path');
      const problem = option === 'context' ? agentxContextProblem(value) : agentxPathProblem(value);
      if (problem !== undefined) this.error(line, problem);
      else if (option === 'context') agentx.context = value;
      else agentx.path = value;
    }
    this.config.agentx = agentx;
  }

  private parseStaggeredStart(): void {
    this.advance();
    this.expectKeyword('start');
    this.expectKeyword('parallel');
    const parallel = this.expectNumber('a number of VMs');
    this.expectKeyword('delay');
    const delay = this.expectNumber('a delay in seconds');
    if (parallel.value < 1) {
      this.error(parallel.line, `invalid staggered start parallelism: ${parallel.text}`);
    } else if (delay.value < 0) {
      this.error(delay.line, `invalid staggered start delay: ${delay.text}`);
    } else {
      this.config.staggeredStart = { parallel: parallel.value, delaySec: delay.value };
    }
  }

  // --- owners -------------------------------------------------------------------------

  /** `uid`, `user`, `user:group` or `:group`; undefined after reporting an unknown name. */
  private parseOwner(): OwnerSpec | undefined {
    const tok = this.tok;
    if (tok.kind === 'number') {
      this.advance();
      if (tok.value >= 0 && tok.value <= MAX_ID) return { uid: tok.value, gid: null };
      this.error(tok.line, `invalid uid: ${tok.text}`);
      return undefined;
    }
    if (!isString(tok)) this.syntaxError(tok, 'a user or group');
    this.advance();
    return this.lookUpOwner(tok.text, tok.line);
  }

  private lookUpOwner(text: string, line: number): OwnerSpec | undefined {
    const colon = text.indexOf(':');
    const user = colon < 0 ? text : text.slice(0, colon);
    const group = colon < 0 ? '' : text.slice(colon + 1);
    const owner: OwnerSpec = { uid: null, gid: null };
    const { passwdPath, groupPath } = this.opts;
    this.userDb ??= new UserDb({ passwdPath, groupPath });
    if (user !== '') {
      const entry = this.userDb.userByName(user);
      if (entry === undefined) return void this.error(line, `unknown user "${user}"`);
      owner.uid = entry.uid;
      owner.user = user;
    }
    if (group !== '') {
      const entry = this.userDb.groupByName(group);
      if (entry === undefined) return void this.error(line, `unknown group "${group}"`);
      owner.gid = entry.gid;
      owner.group = group;
    }
    return owner;
  }

  // --- switch { } ---------------------------------------------------------------------

  private parseSwitch(): void {
    const line = this.tok.line;
    this.advance();
    const name = this.expectString('a switch name');
    this.expectPunct('{');
    const sw: SwitchConfig = {
      name, enabled: true, interface: '', locked: false, up: true,
      source: { file: this.file, line },
    };
    const valid = this.checkSwitchName(name, line);
    this.parseBody('lines', line, () => this.parseSwitchOption(sw));
    if (sw.interface === '') this.error(line, `switch "${name}" is missing interface name`);
    if (valid) this.config.switches.push(sw);
  }

  private checkSwitchName(name: string, line: number): boolean {
    let problem: string | undefined;
    if (name === '') problem = 'invalid switch name';
    else if (name.length >= VM_NAME_MAX) problem = `switch name too long: ${name}`;
    else if (this.config.switches.some((s) => s.name === name)) {
      problem = `switch "${name}" already defined`;
    }
    if (problem !== undefined) this.error(line, problem);
    return problem === undefined;
  }

  private parseSwitchOption(sw: SwitchConfig): void {
    const tok = this.tok;
    if (isKeyword(tok, 'enable', 'disable')) {
      sw.enabled = tok.text === 'enable';
      return this.advance();
    }
    if (isKeyword(tok, 'up', 'down')) {
      sw.up = tok.text === 'up';
      return this.advance();
    }
    if (isKeyword(tok, 'interface')) {
      this.advance();
      sw.interface = this.expectString('an interface name');
      // XXX: vmd wants an existing bridge or veb; a Linux bridge is made when missing, so
      // only the name is checked here.
      if (sw.interface.length >= IFNAMSIZ) {
        this.error(tok.line, `switch interface too long: ${sw.interface}`);
      } else if (!isValidIfName(sw.interface)) {
        this.error(tok.line, `invalid switch interface: ${sw.interface}`);
      }
      return;
    }
    if (isKeyword(tok, 'locked')) {
      this.advance();
      this.expectKeyword('lladdr');
      sw.locked = true;
      return;
    }
    if (isKeyword(tok, 'group')) {
      const group = this.parseGroup();
      if (group !== undefined) sw.group = group;
      return;
    }
    if (isKeyword(tok, 'rdomain')) {
      const rdomain = this.parseRdomain();
      if (rdomain !== undefined) sw.rdomain = rdomain;
      return;
    }
    this.syntaxError(tok);
  }

  private parseGroup(): string | undefined {
    const line = this.tok.line;
    this.advance();
    const group = this.expectString('a group name');
    if (isValidIfGroup(group)) return group;
    this.error(line, `invalid group name: ${group}`);
    return undefined;
  }

  private parseRdomain(): number | undefined {
    this.advance();
    const tok = this.expectNumber('a routing domain');
    if (tok.value >= 0 && tok.value <= RDOMAIN_MAX) return tok.value;
    this.error(tok.line, `invalid rdomain: ${tok.text}`);
    return undefined;
  }

  // --- vm { } -------------------------------------------------------------------------

  private parseVm(): void {
    const line = this.tok.line;
    this.advance();
    let name = this.expectString('a VM name');
    let parent: string | undefined;
    if (isKeyword(this.tok, 'instance')) {
      this.advance();
      parent = name;
      name = this.expectString('an instance name');
    }
    this.expectPunct('{');
    const vm: VmConfig = {
      name, enabled: true, disks: [], interfaces: [], sev: false, seves: false,
      source: { file: this.file, line },
    };
    if (parent !== undefined) vm.instanceOf = parent;
    const valid = this.checkVmName(vm, line);
    const seen: VmSeen = {
      kernel: false, cdrom: false, memory: false, interfaces: false, vcpus: false,
    };
    this.parseBody('lines', line, () => this.parseVmOption(vm, seen));
    this.checkKernelNeeded(vm, seen);
    if (valid) this.config.vms.push(vm);
  }

  /**
   * Whether the VM may be added: a valid, new name and, for an instance, a known parent.
   * XXX: an instance is not merged with its parent here, and disks, MACs and taps it shares
   * with the parent (EBUSY in vmd) are not checked: vmm does both when it creates it.
   */
  private checkVmName(vm: VmConfig, line: number): boolean {
    let problem = validateVmName(vm.name);
    if (problem === undefined && this.findVm(vm.name) !== undefined) {
      problem = `vm "${vm.name}" already defined`;
    }
    if (problem === undefined && vm.instanceOf !== undefined) {
      if (this.findVm(vm.instanceOf) === undefined) {
        problem = `vm "${vm.name}": parent vm "${vm.instanceOf}" not defined`;
      }
    }
    if (problem !== undefined) this.error(line, problem);
    return problem === undefined;
  }

  private findVm(name: string): VmConfig | undefined {
    return this.config.vms.find((v) => v.name === name);
  }

  /** initrd and cmdline go with a kernel, the VM's own or one inherited from a parent. */
  private checkKernelNeeded(vm: VmConfig, seen: VmSeen): void {
    let from: VmConfig | undefined = vm;
    while (from !== undefined && from.kernel === undefined) {
      from = from.instanceOf === undefined ? undefined : this.findVm(from.instanceOf);
    }
    if (from !== undefined) return;
    const uses: [string, number | undefined][] = [
      ['initrd', seen.initrdLine],
      ['cmdline', seen.cmdlineLine],
    ];
    for (const [what, line] of uses) {
      if (line !== undefined) {
        this.error(line, `vm "${vm.name}": ${what} requires a kernel (boot "path")`);
      }
    }
  }

  private parseVmOption(vm: VmConfig, seen: VmSeen): void {
    const tok = this.tok;
    if (tok.kind !== 'keyword') this.syntaxError(tok);
    switch (tok.text) {
      case 'enable':
      case 'disable':
        vm.enabled = tok.text === 'enable';
        return this.advance();
      case 'sev':
        vm.sev = true;
        return this.advance();
      case 'seves':
        vm.sev = vm.seves = true;
        return this.advance();
      case 'disk':
        return this.parseDisk(vm);
      case 'local':
        this.advance();
        if (!isKeyword(this.tok, 'interface')) this.syntaxError(this.tok, 'interface');
        return this.parseInterface(vm, true);
      case 'interface':
        return this.parseInterface(vm, false);
      case 'interfaces':
        return this.parseInterfaceCount(vm, seen);
      case 'boot':
        return this.parseBoot(vm, seen);
      case 'cdrom':
        return this.parseCdrom(vm, seen);
      case 'memory':
        return this.parseMemory(vm, seen);
      case 'vcpus':
      case 'cpus':
        return this.parseVcpus(vm, seen);
      case 'initrd':
        return this.parseInitrd(vm, seen);
      case 'cmdline':
        return this.parseCmdline(vm, seen);
      case 'owner': {
        this.advance();
        const owner = this.parseOwner();
        if (owner !== undefined) vm.owner = owner;
        return;
      }
      case 'allow':
        return this.parseAllowInstance(vm);
      default:
        this.syntaxError(tok);
    }
  }

  /**
   * A path from the config: relative ones are taken from the directory of the file that
   * names them. XXX: vmd realpath(3)s boot and disk paths and fails when they are missing;
   * we resolve lexically, never touch the file, and leave that check to VM start.
   */
  private configPath(text: string): string {
    return isAbsolute(text) ? text : resolve(dirname(this.file), text);
  }

  private parseDisk(vm: VmConfig): void {
    const line = this.tok.line;
    this.advance();
    const path = this.configPath(this.expectString('a disk path'));
    let format: 'raw' | 'qcow2' | undefined;
    if (isKeyword(this.tok, 'format')) {
      const formatLine = this.tok.line;
      this.advance();
      const text = this.expectString('a disk format');
      const lower = text.toLowerCase();
      if (lower === 'raw' || lower === 'qcow2') format = lower;
      else return this.error(formatLine, `unrecognized disk format ${text}`);
    }
    if (vm.disks.length >= MAX_DISKS_PER_VM) return this.error(line, 'too many disks');
    if (path.length >= PATH_MAX) return this.error(line, 'disk path too long');
    vm.disks.push(format === undefined ? { path } : { path, format });
  }

  private parseInterface(vm: VmConfig, local: boolean): void {
    const line = this.tok.line;
    this.advance();
    const iface: InterfaceConfig = { local, locked: false, up: true };
    if (isString(this.tok)) this.setTapName(iface, this.tok);
    if (isPunct(this.tok, '{')) {
      const open = this.tok.line;
      this.advance();
      this.parseBody('free', open, () => this.parseInterfaceOption(vm, iface));
    } else {
      while (isKeyword(this.tok, 'switch', 'group', 'locked', 'lladdr', 'rdomain', 'up', 'down')) {
        this.parseInterfaceOption(vm, iface);
        if (isPunct(this.tok, ',')) this.advance();
      }
    }
    if (vm.interfaces.length >= MAX_NICS_PER_VM) {
      return this.error(line, `too many interfaces: ${vm.interfaces.length + 1}`);
    }
    vm.interfaces.push(iface);
  }

  /**
   * `interface tap` means any tap; other names must be usable as a Linux interface name.
   * XXX: vmd wants an existing tapN; on Linux a tap of any free name can be made.
   */
  private setTapName(iface: InterfaceConfig, tok: Token): void {
    this.advance();
    if (tok.text === 'tap') return;
    if (tok.text.length >= IFNAMSIZ) {
      this.error(tok.line, `interface name too long: ${tok.text}`);
    } else if (!isValidIfName(tok.text)) {
      this.error(tok.line, `invalid interface: ${tok.text}`);
    } else {
      iface.tap = tok.text;
    }
  }

  private parseInterfaceOption(vm: VmConfig, iface: InterfaceConfig): void {
    const tok = this.tok;
    if (isKeyword(tok, 'up', 'down')) {
      iface.up = tok.text === 'up';
      return this.advance();
    }
    if (isKeyword(tok, 'switch')) {
      this.advance();
      const name = this.expectString('a switch name');
      if (name.length >= VM_NAME_MAX) return this.error(tok.line, `switch name too long: ${name}`);
      iface.switch = name;
      this.switchRefs.push({ vm: vm.name, name, file: this.file, line: tok.line });
      return;
    }
    if (isKeyword(tok, 'locked')) {
      this.advance();
      if (!isKeyword(this.tok, 'lladdr')) this.syntaxError(this.tok, 'lladdr');
      iface.locked = true;
      return this.parseLladdr(iface);
    }
    if (isKeyword(tok, 'lladdr')) return this.parseLladdr(iface);
    if (isKeyword(tok, 'group')) {
      const group = this.parseGroup();
      if (group !== undefined) iface.group = group;
      return;
    }
    if (isKeyword(tok, 'rdomain')) {
      const rdomain = this.parseRdomain();
      if (rdomain !== undefined) iface.rdomain = rdomain;
      return;
    }
    this.syntaxError(tok);
  }

  /** `lladdr [mac]`: without an address, the daemon makes one up. */
  private parseLladdr(iface: InterfaceConfig): void {
    this.advance();
    if (!isString(this.tok)) return;
    const tok = this.tok;
    this.advance();
    const mac = parseMac(tok.text);
    if (mac === undefined) return this.error(tok.line, `invalid address: ${tok.text}`);
    iface.lladdr = mac;
  }

  private parseInterfaceCount(vm: VmConfig, seen: VmSeen): void {
    this.advance();
    const count = this.expectNumber('a number of interfaces');
    if (seen.interfaces) return this.error(count.line, 'interfaces specified more than once');
    seen.interfaces = true;
    if (count.value < 0) {
      this.error(count.line, `invalid number of interfaces: ${count.text}`);
    } else if (count.value > MAX_NICS_PER_VM) {
      this.error(count.line, `too many interfaces: ${count.text}`);
    } else {
      vm.minInterfaces = count.value;
    }
  }

  private parseBoot(vm: VmConfig, seen: VmSeen): void {
    const line = this.tok.line;
    this.advance();
    if (isKeyword(this.tok, 'device')) {
      this.advance();
      const tok = this.tok;
      if (!isKeyword(tok, 'cdrom', 'disk', 'net')) this.syntaxError(tok, 'cdrom, disk or net');
      vm.bootDevice = tok.text as 'cdrom' | 'disk' | 'net';
      return this.advance();
    }
    const path = this.configPath(this.expectString('a kernel path'));
    if (seen.kernel) return this.error(line, 'kernel specified more than once');
    seen.kernel = true;
    if (path.length >= PATH_MAX) return this.error(line, 'kernel name too long');
    vm.kernel = path;
  }

  private parseCdrom(vm: VmConfig, seen: VmSeen): void {
    const line = this.tok.line;
    this.advance();
    // XXX: vmd keeps a relative cdrom path as written (then opens it from /); we resolve it.
    const path = this.configPath(this.expectString('a cdrom path'));
    if (seen.cdrom) return this.error(line, 'cdrom specified more than once');
    seen.cdrom = true;
    if (path.length >= PATH_MAX) return this.error(line, 'cdrom name too long');
    vm.cdrom = path;
  }

  private parseInitrd(vm: VmConfig, seen: VmSeen): void {
    const line = this.tok.line;
    this.advance();
    const path = this.configPath(this.expectString('an initrd path'));
    if (seen.initrdLine !== undefined) return this.error(line, 'initrd specified more than once');
    seen.initrdLine = line;
    if (path.length >= PATH_MAX) return this.error(line, 'initrd name too long');
    vm.initrd = path;
  }

  private parseCmdline(vm: VmConfig, seen: VmSeen): void {
    const line = this.tok.line;
    this.advance();
    const cmdline = this.expectString('a kernel command line');
    if (seen.cmdlineLine !== undefined) return this.error(line, 'cmdline specified more than once');
    seen.cmdlineLine = line;
    if (cmdline.length >= MAX_CMDLINE) {
      return this.error(line, `cmdline too long (limit is ${MAX_CMDLINE - 1} characters)`);
    }
    vm.cmdline = cmdline;
  }

  /** `memory N` (bytes) or `memory "size"` (with a unit); 1M to 128G, rounded down to MiB. */
  private parseMemory(vm: VmConfig, seen: VmSeen): void {
    const line = this.tok.line;
    this.advance();
    const tok = this.tok;
    if (tok.kind !== 'number' && !isString(tok)) this.syntaxError(tok, 'a memory size');
    this.advance();
    if (seen.memory) return this.error(line, 'memory specified more than once');
    seen.memory = true;
    const bytes = tok.kind === 'number' ? tok.value : attempt(() => parseSize(tok.text));
    if (bytes instanceof VmdError) return this.error(line, `invalid memory size: ${tok.text}`);
    const rounded = attempt(() => normalizeMemorySize(bytes));
    if (rounded instanceof VmdError) return this.error(line, rounded.message);
    vm.memoryBytes = rounded;
  }

  private parseVcpus(vm: VmConfig, seen: VmSeen): void {
    this.advance();
    const count = this.expectNumber('a number of vcpus');
    if (seen.vcpus) return this.error(count.line, 'vcpus specified more than once');
    seen.vcpus = true;
    if (count.value < 1 || count.value > MAX_VCPUS_PER_VM) {
      const range = `must be 1..${MAX_VCPUS_PER_VM}`;
      return this.error(count.line, `invalid number of vcpus: ${count.text} (${range})`);
    }
    vm.vcpus = count.value;
  }

  /** `allow instance flag` or `allow instance { flag, … }`; repeated lines add up. */
  private parseAllowInstance(vm: VmConfig): void {
    const line = this.tok.line;
    this.advance();
    this.expectKeyword('instance');
    const allow: AllowInstance = vm.allowInstance ?? {
      boot: false, memory: false, interface: false, disk: false, cdrom: false, instance: false,
      vcpus: false,
    };
    vm.allowInstance = allow;
    if (!isPunct(this.tok, '{')) return this.parseInstanceFlag(allow);
    this.advance();
    this.parseBody('list', line, () => this.parseInstanceFlag(allow));
  }

  private parseInstanceFlag(allow: AllowInstance): void {
    const tok = this.tok;
    if (isKeyword(tok, 'boot', 'memory', 'interface', 'disk', 'cdrom', 'instance', 'vcpus')) {
      allow[tok.text as Exclude<keyof AllowInstance, 'owner'>] = true;
      return this.advance();
    }
    if (isKeyword(tok, 'cpus')) {
      allow.vcpus = true;
      return this.advance();
    }
    if (!isKeyword(tok, 'owner')) this.syntaxError(tok);
    this.advance();
    const owner = this.parseOwner();
    if (owner !== undefined) allow.owner = owner;
  }

  // --- blocks -------------------------------------------------------------------------

  /**
   * The options of a block whose '{' was just read, up to and including its '}'. A syntax
   * error in an option skips to the end of its line and the block goes on.
   * XXX: parse.y needs at least one option in a block and takes no trailing comma in
   * `allow instance { }`; both are accepted here.
   */
  private parseBody(style: BodyStyle, openLine: number, parseOption: () => void): void {
    for (;;) {
      while (this.tok.kind === 'newline' || (style !== 'lines' && isPunct(this.tok, ','))) {
        this.advance();
      }
      if (isPunct(this.tok, '}')) return this.advance();
      if (this.tok.kind === 'eof') return this.error(openLine, "syntax error: missing '}'");
      try {
        parseOption();
        this.endOption(style);
      } catch (err) {
        if (!(err instanceof SyntaxFailure)) throw err;
        this.skipOption();
      }
    }
  }

  private endOption(style: BodyStyle): void {
    const tok = this.tok;
    if (style === 'free' || tok.kind === 'newline' || isPunct(tok, '}')) return;
    if (style === 'list' && isPunct(tok, ',')) return;
    this.syntaxError(tok);
  }

  /** Skips the rest of a bad option: to the end of its line or the '}' of its block. */
  private skipOption(): void {
    let depth = 0;
    for (;;) {
      const tok = this.tok;
      if (tok.kind === 'eof' || (tok.kind === 'newline' && depth === 0)) return;
      if (isPunct(tok, '}')) {
        if (depth === 0) return;
        depth--;
      }
      if (isPunct(tok, '{')) depth++;
      this.advance();
    }
  }

  // --- tokens -------------------------------------------------------------------------

  private advance(): void {
    this.tok = this.lexer!.next();
  }

  /** A string, with adjacent strings joined ("a" "b" is "ab"). */
  private expectString(what: string): string {
    let text = this.expectSingleString(what);
    while (isString(this.tok)) {
      text += this.tok.text;
      this.advance();
    }
    return text;
  }

  /** One string token, where vmd does not join adjacent strings. */
  private expectSingleString(what: string): string {
    const tok = this.tok;
    if (!isString(tok)) this.syntaxError(tok, what);
    this.advance();
    return tok.text;
  }

  private expectNumber(what: string): Token {
    const tok = this.tok;
    if (tok.kind !== 'number') this.syntaxError(tok, what);
    this.advance();
    return tok;
  }

  private expectKeyword(word: string): void {
    if (!isKeyword(this.tok, word)) this.syntaxError(this.tok, word);
    this.advance();
  }

  private expectPunct(c: string): void {
    if (!isPunct(this.tok, c)) this.syntaxError(this.tok, `'${c}'`);
    this.advance();
  }

  /** Reports a syntax error at tok (unless the lexer already did) and unwinds. */
  private syntaxError(tok: Token, expected?: string): never {
    if (tok.kind !== 'error') {
      const detail = expected === undefined
        ? `unexpected ${describe(tok)}`
        : `expected ${expected}, got ${describe(tok)}`;
      this.error(tok.line, `syntax error: ${detail}`);
    }
    throw new SyntaxFailure();
  }

  private error(line: number, message: string): void {
    this.errors.push({ file: this.file, line, message, severity: 'error' });
  }

  // --- checks once everything is read -------------------------------------------------

  private checkSwitchRefs(): void {
    for (const ref of this.switchRefs) {
      if (this.config.switches.some((s) => s.name === ref.name)) continue;
      this.warnings.push({
        file: ref.file,
        line: ref.line,
        message: `vm "${ref.vm}": switch "${ref.name}" not defined`,
        severity: 'warning',
      });
    }
  }
}

/** The value fn returns, or the VmdError it throws. */
function attempt<T>(fn: () => T): T | VmdError {
  try {
    return fn();
  } catch (err) {
    if (err instanceof VmdError) return err;
    throw err;
  }
}

function agentxContextProblem(context: string): string | undefined {
  return context.length > MAX_AGENTX_CONTEXT ? 'agentx context too large' : undefined;
}

function agentxPathProblem(path: string): string | undefined {
  if (path.length >= MAX_SOCKET_PATH) return 'agentx path too large';
  if (!path.startsWith('/')) return 'agentx path is not absolute';
  return undefined;
}
