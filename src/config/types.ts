/**
 * The parsed form of vm.conf: plain, JSON-able data, and the limits the parser enforces.
 * Defaults are filled in by the parser, so a consumer never has to know them.
 */

/** Most disks a VM may have (VM_MAX_DISKS_PER_VM). */
export const MAX_DISKS_PER_VM = 4;
/** Most network interfaces a VM may have (VM_MAX_NICS_PER_VM). */
export const MAX_NICS_PER_VM = 4;
/** Most vCPUs a VM may have (our extension; QEMU allows more, we keep it small). */
export const MAX_VCPUS_PER_VM = 64;
/** Size of a VM name buffer: names must be shorter than this (VM_NAME_MAX). */
export const VM_NAME_MAX = 64;
/** Least memory a VM may have, in bytes. */
export const MIN_MEMORY_BYTES = 1024 * 1024;
/** Most memory a VM may have, in bytes (VMM_MAX_VM_MEM_SIZE on amd64). */
export const MAX_MEMORY_BYTES = 128 * 1024 * 1024 * 1024;
/** Memory a VM gets when neither vm.conf nor vmctl says (VM_DEFAULT_MEMORY). */
export const DEFAULT_MEMORY_BYTES = 512 * 1024 * 1024;
/** Paths (kernel, disk, cdrom, initrd) must be shorter than this (PATH_MAX). */
export const PATH_MAX = 1024;
/** Highest routing domain (RT_TABLEID_MAX). */
export const RDOMAIN_MAX = 255;
/** Interface names must be shorter than this (IFNAMSIZ on Linux, IF_NAMESIZE on OpenBSD). */
export const IFNAMSIZ = 16;
/** Default local IPv4 prefix for `local interface` (VMD_DHCP_PREFIX). */
export const DEFAULT_LOCAL_PREFIX = '100.64.0.0/10';
/** Default delay between staggered start batches, in seconds. */
export const DEFAULT_STAGGER_DELAY_SEC = 30;
/** Default AgentX master socket. */
export const DEFAULT_AGENTX_PATH = '/var/agentx/master';

/** Where an object was defined: the file as opened and a 1-based line. */
export interface SourceRef {
  file: string;
  line: number;
}

/** A config error or warning; line 0 means the message is not tied to a line. */
export interface ConfigDiagnostic {
  file: string;
  line: number;
  message: string;
  severity: 'error' | 'warning';
}

/** `owner user[:group]`, `owner :group` or `owner uid`; null means "not given". */
export interface OwnerSpec {
  /** null: no user named, so only root owns it (vmd stores 0). */
  uid: number | null;
  /** null: no group named (vmd stores -1). */
  gid: number | null;
  /** The user name as written, when a name was used. */
  user?: string;
  /** The group name as written, when a name was used. */
  group?: string;
}

/** `socket owner …`: who owns the control socket. */
export interface SocketOwner {
  uid: number;
  /** null: no group named; the daemon keeps group 0. */
  gid: number | null;
}

/** `local prefix` and `local inet6`. */
export interface LocalPrefix {
  /** IPv4 prefix for local interfaces, as 'a.b.c.d/len'. */
  inet: string;
  /** Whether local interfaces also get IPv6 (`local inet6`). */
  inet6Enabled: boolean;
  /** The IPv6 prefix as 'addr/len' when one was given; otherwise the daemon picks a ULA. */
  inet6?: string;
}

/** `staggered start parallel N delay S` or its defaults. */
export interface StaggeredStart {
  /** VMs started per batch; defaults to the number of online CPUs. */
  parallel: number;
  delaySec: number;
}

/** `agentx [context "ctx"] [path "/abs"]`. */
export interface AgentxConfig {
  context?: string;
  path: string;
}

/** `switch "name" { … }`. */
export interface SwitchConfig {
  name: string;
  enabled: boolean;
  /** The bridge interface; empty only when an error was reported. */
  interface: string;
  group?: string;
  locked: boolean;
  rdomain?: number;
  up: boolean;
  source: SourceRef;
}

export type BootDevice = 'cdrom' | 'disk' | 'net';
export type DiskFormat = 'raw' | 'qcow2';

export interface DiskConfig {
  path: string;
  /** Absent: sniffed from the image when the VM starts. */
  format?: DiskFormat;
}

/** One `[local] interface [name] [opts]`. */
export interface InterfaceConfig {
  /** A fixed tap name; absent for `interface` and `interface tap` (any tap). */
  tap?: string;
  local: boolean;
  switch?: string;
  group?: string;
  /** 'xx:xx:xx:xx:xx:xx', lowercase; absent means a generated address. */
  lladdr?: string;
  locked: boolean;
  rdomain?: number;
  up: boolean;
}

/** `allow instance …`: what an instance of this VM may change. */
export interface AllowInstance {
  boot: boolean;
  memory: boolean;
  interface: boolean;
  disk: boolean;
  cdrom: boolean;
  instance: boolean;
  vcpus: boolean;
  owner?: OwnerSpec;
}

/** `vm "name" { … }` or `vm "parent" instance "name" { … }`. */
export interface VmConfig {
  name: string;
  /** The parent's name when this is an instance; the parent is defined earlier. */
  instanceOf?: string;
  enabled: boolean;
  /** Rounded down to a whole MiB. */
  memoryBytes?: number;
  vcpus?: number;
  /** `boot "path"`: a kernel or boot image. */
  kernel?: string;
  bootDevice?: BootDevice;
  initrd?: string;
  cmdline?: string;
  cdrom?: string;
  disks: DiskConfig[];
  interfaces: InterfaceConfig[];
  /** `interfaces N`: at least this many interfaces (more if `interface` lines say so). */
  minInterfaces?: number;
  owner?: OwnerSpec;
  allowInstance?: AllowInstance;
  sev: boolean;
  seves: boolean;
  source: SourceRef;
}

/** Everything vm.conf configures. */
export interface VmdConfig {
  localPrefix: LocalPrefix;
  socketOwner?: SocketOwner;
  staggeredStart: StaggeredStart;
  agentx?: AgentxConfig;
  switches: SwitchConfig[];
  vms: VmConfig[];
}

/** The outcome of a parse: the config is usable only when errors is empty. */
export interface ParseResult {
  config: VmdConfig;
  errors: ConfigDiagnostic[];
  warnings: ConfigDiagnostic[];
}

export interface ParseOptions {
  /** `vmd -D name=value`: these win over definitions in the file. */
  macros?: Record<string, string>;
  /** Where to look users up; default /etc/passwd. */
  passwdPath?: string;
  /** Where to look groups up; default /etc/group. */
  groupPath?: string;
  /** Default staggered-start parallelism; default: the number of online CPUs. */
  onlineCpus?: number;
  /** parseConfigFile only: a missing top-level file gives an empty config, not an error. */
  allowMissing?: boolean;
}
