/**
 * Finding and killing VMs that an earlier instance of the daemon left behind. Every VM
 * process carries marker variables in its environment; KVM VMs are also listed by the
 * hypervisor, TCG ones only by the marker, so both are looked at.
 */
import { readdirSync, readFileSync } from 'node:fs';

import { hasErrno } from '../errors.js';
import type { Logger } from '../log.js';
import { hypervisorInfo, hypervisorTerminate } from '../native.js';

/** The environment variable naming the daemon instance a VM process belongs to. */
export const INSTANCE_VAR = 'VMD_TS_INSTANCE';
/** The environment variable naming the VM. */
export const VM_VAR = 'VMD_TS_VM';

/** How long leftovers may take to disappear after SIGKILL (init reaps them). */
const STALE_GONE_TIMEOUT_MS = 10_000;
const STALE_POLL_MS = 20;

function markerOf(pid: number): { instance?: string; vm?: string } | null {
  let environ: string;
  try {
    environ = readFileSync(`/proc/${pid}/environ`, 'latin1');
  } catch {
    return null;
  }
  const out: { instance?: string; vm?: string } = {};
  for (const entry of environ.split('\0')) {
    if (entry.startsWith(`${INSTANCE_VAR}=`)) out.instance = entry.slice(INSTANCE_VAR.length + 1);
    if (entry.startsWith(`${VM_VAR}=`)) out.vm = entry.slice(VM_VAR.length + 1);
  }
  return out;
}

/** Pids of live processes marked with this instance, excluding the given ones. */
export function findStale(instance: string, exclude: ReadonlySet<number> = new Set()): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid || exclude.has(pid)) continue;
    if (markerOf(pid)?.instance === instance && !isZombie(pid)) pids.push(pid);
  }
  return pids;
}

function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/** Kills every VM process an earlier instance left; resolves once they are all gone. */
export async function killStale(instance: string, log: Logger): Promise<number> {
  const pids = findStale(instance);
  if (pids.length === 0) return 0;
  const kvm = new Set(hypervisorInfo().map((vm) => vm.pid));
  for (const pid of pids) {
    const vm = markerOf(pid)?.vm ?? '?';
    log.info(`vm ${vm}: killing process ${pid} left by an earlier vmd`);
    try {
      if (kvm.has(pid)) hypervisorTerminate(pid);
      // XXX: a plain kill by pid; the window between reading the marker and this is tiny,
      // but a pidfd would close it.
      else process.kill(pid, 'SIGKILL');
    } catch (err) {
      if (!hasErrno(err, 'ESRCH')) throw err;
    }
  }
  const deadline = Date.now() + STALE_GONE_TIMEOUT_MS;
  while (findStale(instance).length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, STALE_POLL_MS));
  }
  return pids.length;
}
