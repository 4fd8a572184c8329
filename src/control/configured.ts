/**
 * Opening what vm.conf names for a configured VM. These are the only paths the daemon opens
 * itself: an administrator chose them, never an unprivileged caller.
 */
import { closeSync, openSync, readSync } from 'node:fs';

import type { VmConfig as ConfVm } from '../config/types.js';
import { hasErrno, VmdError, type ErrnoError } from '../errors.js';
import type { DiskParams, FileRef, NicParams, VmParams } from '../vmm/types.js';

const QCOW2_MAGIC = Buffer.from([0x51, 0x46, 0x49, 0xfb]);

/** raw or qcow2, from the image's first bytes (vmctl's rule when no format is given). */
export function sniffFormat(fd: number): 'raw' | 'qcow2' {
  const head = Buffer.alloc(4);
  const n = readSync(fd, head, 0, 4, 0);
  return n === 4 && head.equals(QCOW2_MAGIC) ? 'qcow2' : 'raw';
}

/** An open error as a VmdError naming the VM and the file. */
export function openError(vm: string, what: string, path: string, err: unknown): VmdError {
  const e = err as ErrnoError;
  const code = hasErrno(err, 'ENOENT') ? 'notfound' : hasErrno(err, 'EACCES') ? 'permission' : 'failure';
  const why = e.code ? e.message.replace(/^E\w+: /, '').split(',')[0] : String(err);
  return new VmdError(code, `vm "${vm}": ${what} ${path}: ${why}`);
}

/**
 * The parameters of a configured VM with its files open. `bridges` maps switch names to
 * bridge interfaces. On failure nothing stays open.
 */
export function openConfigured(
  vm: ConfVm,
  bridges: ReadonlyMap<string, string>,
  overrides: { kernel?: FileRef } = {},
): VmParams {
  const opened: number[] = [];
  const open = (what: string, path: string, flags: string): FileRef => {
    try {
      const fd = openSync(path, flags);
      opened.push(fd);
      return { fd, path };
    } catch (err) {
      throw openError(vm.name, what, path, err);
    }
  };
  try {
    const disks: DiskParams[] = vm.disks.map((d) => {
      const image = open('disk', d.path, 'r+');
      return { image, format: d.format ?? sniffFormat(image.fd) };
    });
    return {
      name: vm.name,
      memoryBytes: vm.memoryBytes,
      vcpus: vm.vcpus,
      kernel: overrides.kernel ?? (vm.kernel ? open('kernel', vm.kernel, 'r') : undefined),
      initrd: vm.initrd ? open('initrd', vm.initrd, 'r') : undefined,
      cmdline: vm.cmdline,
      cdrom: vm.cdrom ? open('cdrom', vm.cdrom, 'r') : undefined,
      disks,
      nics: configuredNics(vm, bridges),
      bootDevice: vm.bootDevice,
      owner: { uid: vm.owner?.uid ?? 0, gid: vm.owner?.gid ?? null },
    };
  } catch (err) {
    for (const fd of opened) closeSync(fd);
    throw err;
  }
}

function configuredNics(vm: ConfVm, bridges: ReadonlyMap<string, string>): NicParams[] {
  const nics: NicParams[] = vm.interfaces.map((i) => {
    let bridge: string | undefined;
    if (i.switch !== undefined) {
      bridge = bridges.get(i.switch);
      if (!bridge) throw new VmdError('notfound', `vm "${vm.name}": switch "${i.switch}" not found`);
    }
    return { switch: bridge, lladdr: i.lladdr, local: i.local };
  });
  while (nics.length < (vm.minInterfaces ?? 0)) nics.push({});
  return nics;
}
