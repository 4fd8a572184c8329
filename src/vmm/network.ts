/**
 * Tap devices for VM interfaces: opened by the addon, named vm<id>-if<n>, brought up, and
 * attached to a bridge or given the host side of a local point-to-point link.
 */
import { execFile } from 'node:child_process';
import { closeSync } from 'node:fs';

import { VmdError } from '../errors.js';
import { openTap, type Tap } from '../native.js';
import type { NicParams } from './types.js';

/** The default local prefix, as vmd's. */
export const LOCAL_PREFIX = '100.64.0.0/10';

/** Host and guest addresses of the local link of NIC index of VM id (vmd's scheme). */
export function localAddresses(
  vmId: number,
  index: number,
  prefix = LOCAL_PREFIX,
): { host: string; guest: string } {
  const [net, lenText] = prefix.split('/');
  const base = net.split('.').reduce((acc, part) => acc * 256 + Number(part), 0);
  const len = Number(lenText);
  const offset = vmId * 256 + 2 * (index + 1);
  if (offset + 1 >= 2 ** (32 - len)) {
    throw new VmdError('failure', `vm id ${vmId}: local address range exceeded`);
  }
  const ip = (n: number) => [24, 16, 8, 0].map((s) => (n >>> s) & 0xff).join('.');
  return { host: ip(base + offset), guest: ip(base + offset + 1) };
}

/** Runs ip(8); a failure names the command and ip's own last error line. */
export function ipCommand(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, (err, _stdout, stderr) => {
      if (!err) return resolve();
      const why = stderr.trim().split('\n').at(-1) ?? err.message;
      reject(new VmdError('engine', `ip ${args.join(' ')}: ${why}`));
    });
  });
}

/**
 * Opens and sets up the taps of a VM; on failure none stays open. A local interface gets its
 * host address here; dhcp.ts gives the guest its end of the link.
 */
export async function openTaps(
  vmId: number,
  nics: readonly NicParams[],
  localPrefix = LOCAL_PREFIX,
): Promise<Tap[]> {
  const taps: Tap[] = [];
  try {
    for (const [i, nic] of nics.entries()) {
      const tap = openTap(`vm${vmId}-if${i}`);
      taps.push(tap);
      await ipCommand(['link', 'set', 'dev', tap.name, 'up']);
      if (nic.switch) await ipCommand(['link', 'set', 'dev', tap.name, 'master', nic.switch]);
      if (nic.local) {
        const { host } = localAddresses(vmId, i, localPrefix);
        await ipCommand(['addr', 'add', `${host}/31`, 'dev', tap.name]);
      }
    }
  } catch (err) {
    for (const tap of taps) closeSync(tap.fd);
    throw err;
  }
  return taps;
}
