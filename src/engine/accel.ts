/**
 * Choosing between KVM and TCG. KVM working is not the same as KVM running a guest: a host
 * whose /dev/kvm is PVM (a paravirtual KVM) starts VMs but never boots a stock kernel, so
 * `auto` looks at what backs /dev/kvm, not only whether it opens.
 */
import { accessSync, constants, existsSync } from 'node:fs';

import { VmdError } from '../errors.js';
import type { Accel, AccelSetting } from './types.js';

export interface AccelProbe {
  kvmDevice: string;
  /** Present when /dev/kvm is backed by PVM (kvm_pvm module). */
  pvmModule: string;
}

export const DEFAULT_PROBE: AccelProbe = {
  kvmDevice: '/dev/kvm',
  pvmModule: '/sys/module/kvm_pvm',
};

export interface AccelChoice {
  accel: Accel;
  reason: string;
}

/** Resolves an accel setting; explicit kvm fails at once when /dev/kvm cannot be opened. */
export function chooseAccel(setting: AccelSetting, probe = DEFAULT_PROBE): AccelChoice {
  if (setting === 'tcg') return { accel: 'tcg', reason: 'accel tcg requested' };
  const problem = kvmProblem(probe);
  if (setting === 'kvm') {
    if (problem && !problem.usable) throw new VmdError('engine', `accel kvm: ${problem.text}`);
    return { accel: 'kvm', reason: 'accel kvm requested' };
  }
  if (problem) return { accel: 'tcg', reason: `using tcg: ${problem.text}` };
  return { accel: 'kvm', reason: `using kvm: ${probe.kvmDevice} can run guests` };
}

function kvmProblem(probe: AccelProbe): { text: string; usable: boolean } | null {
  if (!existsSync(probe.kvmDevice)) return { text: `${probe.kvmDevice} missing`, usable: false };
  try {
    accessSync(probe.kvmDevice, constants.R_OK | constants.W_OK);
  } catch {
    return { text: `${probe.kvmDevice} not accessible`, usable: false };
  }
  if (existsSync(probe.pvmModule)) {
    return {
      text: `${probe.kvmDevice} is PVM (paravirtual KVM), which cannot run stock guest kernels`,
      usable: true,
    };
  }
  return null;
}
