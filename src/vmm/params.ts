/**
 * Checking VM parameters with vmctl's rules, before anything is opened or started.
 */
import { totalmem } from 'node:os';

import { VmdError } from '../errors.js';
import type { VmConfig, VmParams } from './types.js';

export const VM_NAME_MAX = 64;
export const VM_MAX_DISKS = 4;
export const VM_MAX_NICS = 4;
export const VM_MAX_BASES = 3;
export const VM_MAX_VCPUS = 64;
export const VM_DEFAULT_MEMORY = 512 * 1024 * 1024;
export const VM_MIN_MEMORY = 1024 * 1024;

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** The error text for a bad VM name, or undefined when the name is fine. */
export function checkVmName(name: string): string | undefined {
  if (name.length === 0) return 'vm name is empty';
  if (name.length >= VM_NAME_MAX) return `vm name too long (at most ${VM_NAME_MAX - 1} characters)`;
  if (!NAME_RE.test(name)) {
    return `invalid VM name "${name}": use letters, digits, '.', '-' and '_', not first '.', '-' or '_'`;
  }
  return undefined;
}

/** Validates params and fills in defaults; throws a usage error naming the problem. */
export function checkParams(params: VmParams, hostMemory = totalmem()): void {
  const nameError = checkVmName(params.name);
  if (nameError) throw new VmdError('usage', nameError);
  const what = `vm "${params.name}"`;
  const memory = params.memoryBytes ?? VM_DEFAULT_MEMORY;
  if (!Number.isSafeInteger(memory) || memory < VM_MIN_MEMORY) {
    throw new VmdError('usage', `${what}: memory size must be at least 1M`);
  }
  if (memory > hostMemory) {
    throw new VmdError('usage', `${what}: memory size ${memory} exceeds the host's ${hostMemory}`);
  }
  const vcpus = params.vcpus ?? 1;
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > VM_MAX_VCPUS) {
    throw new VmdError('usage', `${what}: vcpus must be 1 to ${VM_MAX_VCPUS}`);
  }
  if ((params.disks?.length ?? 0) > VM_MAX_DISKS) throw new VmdError('usage', `${what}: too many disks`);
  if ((params.nics?.length ?? 0) > VM_MAX_NICS) {
    throw new VmdError('usage', `${what}: too many network interfaces`);
  }
  for (const disk of params.disks ?? []) {
    if ((disk.bases?.length ?? 0) > VM_MAX_BASES) {
      throw new VmdError('usage', `${what}: disk has too many base images`);
    }
    if (disk.bases?.length && disk.format !== 'qcow2') {
      throw new VmdError('usage', `${what}: base images require qcow2 disk format`);
    }
  }
  for (const nic of params.nics ?? []) {
    if (nic.lladdr !== undefined && !MAC_RE.test(nic.lladdr)) {
      throw new VmdError('usage', `${what}: invalid lladdr "${nic.lladdr}"`);
    }
  }
  if (!params.kernel && !params.disks?.length && !params.cdrom) {
    throw new VmdError('usage', `${what}: no kernel or disk/cdrom specified`);
  }
  if (params.initrd && !params.kernel) throw new VmdError('usage', `${what}: initrd needs a kernel`);
}

/** A stable locally administered MAC for NIC index of VM id (vmd's fe:e1:bb prefix). */
export function defaultMac(vmId: number, index: number): string {
  const hex = (n: number) => n.toString(16).padStart(2, '0');
  return `fe:e1:bb:d${index + 1}:${hex((vmId >> 8) & 0xff)}:${hex(vmId & 0xff)}`;
}

/** The descriptor-free description of params, as status shows and send streams carry. */
export function describeParams(params: VmParams, vmId: number): VmConfig {
  return {
    name: params.name,
    memoryBytes: params.memoryBytes ?? VM_DEFAULT_MEMORY,
    vcpus: params.vcpus ?? 1,
    kernel: params.kernel?.path,
    initrd: params.initrd?.path,
    cmdline: params.cmdline,
    cdrom: params.cdrom?.path,
    disks: (params.disks ?? []).map((d) => ({
      path: d.image.path,
      bases: d.bases?.map((b) => b.path),
      format: d.format,
      readOnly: d.readOnly ?? false,
    })),
    nics: (params.nics ?? []).map((n, i) => ({
      switch: n.switch,
      lladdr: n.lladdr ?? defaultMac(vmId, i),
      local: n.local ?? false,
    })),
    bootDevice: params.bootDevice,
  };
}

/** Every descriptor params hold. */
export function paramFds(params: VmParams): number[] {
  const fds: number[] = [];
  for (const ref of [params.kernel, params.initrd, params.cdrom]) if (ref) fds.push(ref.fd);
  for (const disk of params.disks ?? []) {
    fds.push(disk.image.fd, ...(disk.bases ?? []).map((b) => b.fd));
  }
  return fds;
}
