// Helpers for tests that boot the project's test guest (scripts/build-guest.sh).
import { chmodSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { createQemuEngine } from '../../src/engine/qemu.js';
import { createLogger, type Logger } from '../../src/log.js';
import type { VmParams } from '../../src/vmm/types.js';
import { Vmm } from '../../src/vmm/vmm.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const GUEST_DIR = process.env.VMD_TEST_GUEST ?? join(ROOT, 'guest');
export const KERNEL = join(GUEST_DIR, 'vmlinuz');
export const INITRD = join(GUEST_DIR, 'initrd.img');
/**
 * The test guest's kernel command line. no_timer_check: under TCG on a loaded machine the
 * kernel's IO-APIC timer check can miss its window and panic ("IO-APIC + timer doesn't
 * work"); VMs skip that check.
 */
export const GUEST_CMDLINE = 'console=ttyS0 quiet no_timer_check';

/** The unprivileged user VM processes run as in tests. */
export const NOBODY = { uid: 65534, gid: 65534 };

if (!existsSync(KERNEL) || !existsSync(INITRD)) {
  throw new Error(`test guest missing in ${GUEST_DIR}: run sh scripts/build-guest.sh`);
}

/** Lines of a test's log, for assertions and for a failing test's output. */
export function testLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log = createLogger((level, line) => {
    lines.push(`${level}: ${line}`);
    if (process.env.VMD_TEST_LOG) process.stderr.write(`${level}: ${line}\n`);
  }, 2);
  return Object.assign(log, { lines });
}

/** A core on the QEMU engine (TCG, as a stock kernel cannot boot on this kind of host). */
export function makeVmm(instance = `test-${process.pid}`): Vmm & { log: ReturnType<typeof testLogger> } {
  const log = testLogger();
  const workDir = mkdtempSync(join(tmpdir(), 'vmd-test-empty-'));
  chmodSync(workDir, 0o755);
  const engine = createQemuEngine({ accel: 'tcg', user: NOBODY, workDir, log });
  return Object.assign(new Vmm({ engine, log, instance }), { log });
}

/** Parameters of the test guest; extra goes on the kernel command line. */
export function guestParams(name: string, extra = '', more: Partial<VmParams> = {}): VmParams {
  return {
    name,
    memoryBytes: 256 * 1024 * 1024,
    kernel: more.kernel ?? { fd: openSync(KERNEL, 'r'), path: KERNEL },
    initrd: { fd: openSync(INITRD, 'r'), path: INITRD },
    cmdline: `${GUEST_CMDLINE} ${extra}`.trim(),
    ...more,
  };
}

/** Descriptors of this process. */
export function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Open descriptors with what they point to, to show what leaked. */
export function fdTargets(): string[] {
  return readdirSync('/proc/self/fd').map((fd) => {
    try {
      return `${fd} -> ${readlinkSync(`/proc/self/fd/${fd}`)}`;
    } catch {
      return `${fd} -> ?`;
    }
  });
}

/** Pids of this process's children, zombies included. */
export function childPids(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid) out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}

/** Interfaces named like VM taps. */
export function vmTaps(): string[] {
  return readdirSync('/sys/class/net').filter((n) => /^vm\d+-if\d+$/.test(n));
}

/** Polls until check() is truthy; fails after timeoutMs. */
export async function waitUntil<T>(
  what: string,
  check: () => T | Promise<T>,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Deadline for a TCG boot of the test guest to its ready marker (boots take ~2 s alone). */
export const BOOT_TIMEOUT_MS = 60_000;
