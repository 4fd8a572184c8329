// What the benchmarks share: medians, and the QEMU a user would run by hand for the test
// guest, with the engine's own machine options.
import { spawn } from 'node:child_process';
import { once } from 'node:events';

import { GUEST_CMDLINE, INITRD, KERNEL } from '../test/helpers/vm.js';

export const READY = 'GUEST-READY';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/**
 * The engine's options for a 256 MiB TCG guest (src/engine/qemu-args.ts), with files by path
 * and the console on stdout instead of inherited descriptors.
 */
export function rawQemuArgs(extra: string[] = []): string[] {
  return [
    '-machine', 'q35', '-accel', 'tcg', '-m', '256M', '-smp', '1',
    '-nodefaults', '-no-user-config', '-display', 'none', '-msg', 'timestamp=off',
    '-device', 'pvpanic-pci', '-action', 'panic=exit-failure',
    '-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    '-kernel', KERNEL, '-initrd', INITRD, '-append', GUEST_CMDLINE,
    '-serial', 'stdio', ...extra,
  ];
}

/** Milliseconds from spawning QEMU by hand to the guest's ready line on its console. */
export async function rawBoot(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const t0 = performance.now();
  const child = spawn('qemu-system-x86_64', rawQemuArgs(), {
    stdio: ['ignore', 'pipe', 'inherit'],
    env,
  });
  let text = '';
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`qemu exited ${code} before ${READY}`)));
    child.stdout.on('data', (d: Buffer) => {
      text += d.toString();
      if (text.includes(READY)) resolve();
    });
  });
  const ms = performance.now() - t0;
  child.removeAllListeners('exit');
  child.kill('SIGKILL');
  await once(child, 'exit');
  return ms;
}
