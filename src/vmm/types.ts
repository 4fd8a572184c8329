/**
 * Types of the VM table: what a caller asks for (VmParams), what the table reports (VmInfo)
 * and the state flags, which follow vmd's so the status column means the same thing.
 */
import type { VmExit } from '../engine/types.js';

/** State flags of a VM entry, with vmd's values. */
export const VM_FLAG = {
  RUNNING: 0x01,
  DISABLED: 0x02,
  SHUTDOWN: 0x04,
  RECEIVED: 0x08,
  PAUSED: 0x10,
  WAITING: 0x20,
} as const;

export type VmState = 'running' | 'paused' | 'stopping' | 'stopped' | 'waiting' | 'starting';

/** An open file handed to the core; the core owns fd from then on. */
export interface FileRef {
  fd: number;
  /** Where it came from, for display and for send streams. */
  path?: string;
}

export interface DiskParams {
  image: FileRef;
  /** qcow2 backing images, nearest first. */
  bases?: FileRef[];
  format: 'raw' | 'qcow2';
  readOnly?: boolean;
}

export interface NicParams {
  /** A Linux bridge to attach the tap to. */
  switch?: string;
  /** MAC address; default a stable locally administered one per VM id and index. */
  lladdr?: string;
  /** Host side of a point-to-point link from the local prefix. */
  local?: boolean;
}

export interface Owner {
  uid: number;
  gid: number | null;
}

/** What a VM is made of. Descriptors are owned by the core once passed to start(). */
export interface VmParams {
  name: string;
  memoryBytes?: number;
  vcpus?: number;
  kernel?: FileRef;
  initrd?: FileRef;
  cmdline?: string;
  cdrom?: FileRef;
  disks?: DiskParams[];
  nics?: NicParams[];
  bootDevice?: 'disk' | 'cdrom' | 'net';
  /** Owner from configuration; a VM started from the command line is owned by its starter. */
  owner?: Owner;
}

/** A VM's configuration without descriptors: what status shows and send streams carry. */
export interface VmConfig {
  name: string;
  memoryBytes: number;
  vcpus: number;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  cdrom?: string;
  disks: { path?: string; bases?: (string | undefined)[]; format: 'raw' | 'qcow2'; readOnly: boolean }[];
  nics: { switch?: string; lladdr: string; local: boolean }[];
  bootDevice?: 'disk' | 'cdrom' | 'net';
}

export interface VmInfo {
  id: number;
  name: string;
  state: VmState;
  pid: number | null;
  vcpus: number;
  memoryBytes: number;
  /** Resident memory of the VM process, null when not running. */
  residentBytes: number | null;
  tty: string | null;
  /** uid that started the VM (running) or owns it (configured). */
  uid: number;
  gid: number | null;
  accel: string | null;
  fromConfig: boolean;
  interfaces: { tap: string; mac: string; switch?: string }[];
  startedAt: string | null;
  config: VmConfig;
}

export type TerminateResult =
  /** A graceful stop was requested; the VM is still running. */
  | 'requested'
  /** The VM has ended (forced, or waited for). */
  | 'terminated'
  /** A stop was already in progress and the VM is still alive. */
  | 'stopping';

export interface VmExitEvent {
  vm: VmInfo;
  exit: VmExit;
}
