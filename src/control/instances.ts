/**
 * Instances (vmctl start -t parent, vm "parent" instance "name"): a VM made from a configured
 * one. It inherits the parent's memory, vcpus, boot files, cdrom, interfaces and owner;
 * disks are its own, since two VMs must never share a writable image, and inherited
 * interfaces get fresh MAC addresses for the same reason.
 */
import type { AllowInstance, InterfaceConfig, VmConfig as ConfVm } from '../config/types.js';
import { VmdError } from '../errors.js';
import { groupsOf, type Caller } from './permissions.js';
import type { StartArgs } from './protocol.js';

/** An instance's configuration: the parent's, overlaid with what the instance sets. */
export function mergeInstance(parent: ConfVm, inst: ConfVm): ConfVm {
  const interfaces = inst.interfaces.length > 0
    ? inst.interfaces
    : parent.interfaces.map((i) => withoutMac(i));
  return {
    ...inst,
    memoryBytes: inst.memoryBytes ?? parent.memoryBytes,
    vcpus: inst.vcpus ?? parent.vcpus,
    kernel: inst.kernel ?? parent.kernel,
    initrd: inst.initrd ?? parent.initrd,
    cmdline: inst.cmdline ?? parent.cmdline,
    cdrom: inst.cdrom ?? parent.cdrom,
    bootDevice: inst.bootDevice ?? parent.bootDevice,
    interfaces,
    minInterfaces: inst.minInterfaces ?? parent.minInterfaces,
    owner: inst.owner ?? parent.owner,
  };
}

/** An interface as an instance inherits it: the same settings, a MAC of its own. */
export function withoutMac(i: InterfaceConfig): InterfaceConfig {
  const copy = { ...i };
  delete copy.lladdr;
  return copy;
}

/** Which `allow instance` permission each start argument needs. */
const NEEDS: [keyof StartArgs, keyof Omit<AllowInstance, 'owner'>][] = [
  ['memoryBytes', 'memory'],
  ['vcpus', 'vcpus'],
  ['kernel', 'boot'],
  ['initrd', 'boot'],
  ['cmdline', 'boot'],
  ['bootDevice', 'boot'],
  ['cdrom', 'cdrom'],
  ['disks', 'disk'],
  ['nics', 'interface'],
];

/**
 * Throws unless the caller may make this instance of parent: root may; others must match
 * the parent's `allow instance owner` and may only change what it allows.
 */
export function checkInstance(caller: Caller, parent: ConfVm, a: StartArgs): void {
  if (caller.uid === 0) return;
  const what = `vm "${a.name}"`;
  const allow = parent.allowInstance;
  const owner = allow?.owner;
  const owns =
    owner !== undefined &&
    ((owner.uid !== null && owner.uid === caller.uid) ||
      (owner.gid !== null && groupsOf(caller.uid, caller.gid).has(owner.gid)));
  if (!allow || !owns) {
    throw new VmdError('permission', `${what}: instances of vm "${parent.name}" are not allowed`);
  }
  for (const [arg, flag] of NEEDS) {
    if (a[arg] !== undefined && !allow[flag]) {
      throw new VmdError('permission', `${what}: vm "${parent.name}" does not allow instances to change ${flag}`);
    }
  }
}
