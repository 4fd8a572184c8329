/**
 * The QEMU command line for a LaunchSpec: pure, so it can be unit tested. Every file reaches
 * QEMU as an inherited descriptor; the argv names them by number (fdsets, fd=N, or
 * /proc/self/fd/N for the kernel and initrd, which QEMU reads with a plain open).
 */
import type { FdMapping } from '../native.js';
import type { Accel, DiskSpec, LaunchSpec } from './types.js';

/** Descriptor numbers fixed in every VM process. */
export const CHILD_FD = { stderr: 2, qmp: 3, console: 4, firstFree: 5 } as const;

export interface QemuArgsContext {
  accel: Accel;
  machine: string;
  sandbox: boolean;
  /** Parent fds of the monitor and error pipe ends that the child inherits. */
  qmpFd: number;
  stderrFd: number;
}

export interface QemuCommand {
  argv: string[];
  fds: FdMapping[];
}

class FdPlan {
  readonly fds: FdMapping[] = [];
  private next: number = CHILD_FD.firstFree;
  private nextSet = 2;

  /** Maps a parent fd into the child at the next free number. */
  add(parentFd: number): number {
    const child = this.next++;
    this.fds.push([parentFd, child]);
    return child;
  }

  /** Maps a parent fd and puts it in a new fdset; returns the /dev/fdset path. */
  addToSet(argv: string[], parentFd: number): string {
    const child = this.add(parentFd);
    const set = this.nextSet++;
    argv.push('-add-fd', `fd=${child},set=${set}`);
    return `/dev/fdset/${set}`;
  }
}

/** Builds the argv (without argv[0]) and the descriptor map for a VM. */
export function buildQemuCommand(spec: LaunchSpec, ctx: QemuArgsContext): QemuCommand {
  const plan = new FdPlan();
  plan.fds.push([ctx.stderrFd, CHILD_FD.stderr], [ctx.qmpFd, CHILD_FD.qmp]);
  plan.fds.push([spec.consoleFd, CHILD_FD.console]);
  const argv = baseArgs(spec, ctx);
  argv.push('-chardev', `socket,id=qmp,fd=${CHILD_FD.qmp}`, '-mon', 'chardev=qmp,mode=control');
  argv.push('-add-fd', `fd=${CHILD_FD.console},set=1`);
  argv.push('-chardev', 'serial,id=con0,path=/dev/fdset/1', '-serial', 'chardev:con0');
  bootArgs(argv, plan, spec);
  spec.disks.forEach((disk, i) => diskArgs(argv, plan, disk, i));
  if (spec.cdromFd !== undefined) cdromArgs(argv, plan, spec.cdromFd);
  spec.nics.forEach((nic, i) => {
    const fd = plan.add(nic.fd);
    argv.push('-netdev', `tap,id=net${i},fd=${fd}`);
    argv.push('-device', `virtio-net-pci,netdev=net${i},mac=${nic.mac}`);
  });
  if (spec.incomingFd !== undefined) argv.push('-incoming', `fd:${plan.add(spec.incomingFd)}`);
  if (spec.startPaused) argv.push('-S');
  return { argv, fds: plan.fds };
}

function baseArgs(spec: LaunchSpec, ctx: QemuArgsContext): string[] {
  const argv = [
    '-name', `${spec.name},process=vmd/${spec.name}`,
    '-machine', ctx.machine,
    '-accel', ctx.accel,
    '-m', `${Math.floor(spec.memoryBytes / (1024 * 1024))}M`,
    '-smp', String(spec.vcpus),
    '-nodefaults', '-no-user-config', '-display', 'none', '-msg', 'timestamp=off',
    // A guest panic ends the VM with status 1 instead of leaving it spinning.
    '-device', 'pvpanic-pci', '-action', 'panic=exit-failure',
  ];
  // PVM and other KVMs hide features the default CPU model asks for; host avoids warnings.
  if (ctx.accel === 'kvm') argv.push('-cpu', 'host');
  if (ctx.sandbox) {
    argv.push('-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
  }
  return argv;
}

function bootArgs(argv: string[], plan: FdPlan, spec: LaunchSpec): void {
  if (spec.kernelFd !== undefined) {
    // QEMU reads -kernel and -initrd with a plain open, not through fdsets.
    argv.push('-kernel', `/proc/self/fd/${plan.add(spec.kernelFd)}`);
    if (spec.initrdFd !== undefined) {
      argv.push('-initrd', `/proc/self/fd/${plan.add(spec.initrdFd)}`);
    }
    if (spec.cmdline !== undefined) argv.push('-append', spec.cmdline);
  }
  const order = { disk: 'c', cdrom: 'd', net: 'n' } as const;
  if (spec.bootDevice) argv.push('-boot', `once=${order[spec.bootDevice]}`);
}

function diskArgs(argv: string[], plan: FdPlan, disk: DiskSpec, index: number): void {
  const nodes = disk.fds.map((fd, layer) => {
    const node = layer === 0 ? `hd${index}` : `hd${index}-b${layer}`;
    const path = plan.addToSet(argv, fd);
    // Backing images are never written; the top image is, unless the disk is read-only.
    const ro = layer > 0 || disk.readOnly ? ',read-only=on' : '';
    argv.push('-blockdev', `driver=file,node-name=${node}-f,filename=${path}${ro}`);
    return { node, ro };
  });
  // A node can only name a backing node defined before it: deepest base first.
  for (let layer = nodes.length - 1; layer >= 0; layer--) {
    const { node, ro } = nodes[layer];
    const format = layer === 0 ? disk.format : 'qcow2';
    let opts = `driver=${format},node-name=${node},file=${node}-f${ro}`;
    if (format === 'qcow2' && layer + 1 < nodes.length) opts += `,backing=${nodes[layer + 1].node}`;
    argv.push('-blockdev', opts);
  }
  argv.push('-device', `virtio-blk-pci,drive=hd${index}`);
}

function cdromArgs(argv: string[], plan: FdPlan, fd: number): void {
  const path = plan.addToSet(argv, fd);
  argv.push('-blockdev', `driver=file,node-name=cd0-f,filename=${path},read-only=on`);
  argv.push('-blockdev', 'driver=raw,node-name=cd0,file=cd0-f,read-only=on');
  argv.push('-device', 'ide-cd,drive=cd0');
}
