/**
 * The engine interface: how one VM process is made and spoken to. The vmm core keeps the
 * table and the rules; an engine only launches a VM from descriptors and drives it.
 */
import type { EventEmitter } from 'node:events';

import type { ExitStatus } from '../native.js';

export type Accel = 'kvm' | 'tcg';
export type AccelSetting = Accel | 'auto';

export interface DiskSpec {
  /** The image, then its backing images in order (qcow2 chains); the engine owns none. */
  fds: number[];
  format: 'raw' | 'qcow2';
  readOnly: boolean;
}

export interface NicSpec {
  /** An open tap device. */
  fd: number;
  /** Locally administered MAC, e.g. fe:e1:bb:d1:00:03. */
  mac: string;
}

/** Everything a VM process needs, as descriptors; the engine opens no path itself. */
export interface LaunchSpec {
  vmId: number;
  name: string;
  memoryBytes: number;
  vcpus: number;
  kernelFd?: number;
  initrdFd?: number;
  cmdline?: string;
  cdromFd?: number;
  disks: DiskSpec[];
  nics: NicSpec[];
  bootDevice?: 'disk' | 'cdrom' | 'net';
  /** The slave end of the console pty. */
  consoleFd: number;
  /** A migration stream to restore from, positioned after vmd-ts's header. */
  incomingFd?: number;
  /** Start with the CPUs stopped (no guest code runs until resume). */
  startPaused?: boolean;
  /** Environment markers that identify the VM's process as ours (see stale VM cleanup). */
  marker: Record<string, string>;
}

/** Why a VM process ended, as far as the engine saw it. */
export interface VmExit extends ExitStatus {
  /** QEMU's shutdown reason (e.g. guest-shutdown, guest-panic, host-signal), if any. */
  reason: string | null;
  /** The last line the VM process wrote on its error output, if any. */
  lastError: string | null;
}

/**
 * A running VM process. Events: 'exit' (VmExit, once; the process is reaped), 'reset'
 * (the guest rebooted), 'stop' / 'resume' (CPUs paused or running), 'powerdown'.
 */
export interface EngineVm extends EventEmitter {
  readonly pid: number;
  readonly accel: Accel;
  /** Makes a guest reboot end the VM instead of resetting it. */
  rebootEndsVm(): Promise<void>;
  /** Presses the ACPI power button. */
  powerButton(): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Writes the full VM state to fd (the VM is left paused, not ended). */
  saveTo(fd: number, timeoutMs: number): Promise<void>;
  /** Signals the VM process; false once it has exited. */
  kill(signal: string): boolean;
  /** Releases the monitor; the process keeps running until killed. */
  detach(): void;
}

export interface LaunchOptions {
  /** Deadline for the process to come up and answer on its monitor. */
  timeoutMs: number;
}

export interface Engine {
  readonly name: string;
  /** The accelerator VMs get, and why it was chosen. */
  readonly accel: Accel;
  readonly accelReason: string;
  launch(spec: LaunchSpec, opts: LaunchOptions): Promise<EngineVm>;
}
