// vmctl against vmd, side by side with baselines in the same run:
//  - `vmctl status` with N running VMs against `node -e 0` (what any node CLI pays to start);
//  - start → ready through `vmctl start -w` against the same QEMU run by hand.
// Prints medians and ratios (lower is better).
//
//   npm run bench:status [-- --vms 50 --runs 15 --boots 9]
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { connect } from '../src/client.js';
import { startDaemon, VMCTL } from '../test/helpers/daemon.js';
import { GUEST_CMDLINE, INITRD, KERNEL } from '../test/helpers/vm.js';

const { values } = parseArgs({
  options: {
    vms: { type: 'string', default: '50' },
    runs: { type: 'string', default: '15' },
    boots: { type: 'string', default: '9' },
  },
});
const VMS = Number(values.vms);
const RUNS = Number(values.runs);
const BOOTS = Number(values.boots);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function timeRun(file: string, args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(file, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')}: exit ${r.status}`);
  return performance.now() - t0;
}

async function rawBoot(): Promise<number> {
  const t0 = performance.now();
  const child = spawn('qemu-system-x86_64', [
    '-machine', 'q35', '-accel', 'tcg', '-m', '256M', '-smp', '1', '-nodefaults',
    '-no-user-config', '-display', 'none', '-device', 'pvpanic-pci', '-action',
    'panic=exit-failure', '-kernel', KERNEL, '-initrd', INITRD, '-append',
    GUEST_CMDLINE, '-serial', 'stdio',
  ], { stdio: ['ignore', 'pipe', 'inherit'] });
  let text = '';
  await new Promise<void>((resolve) =>
    child.stdout.on('data', (d: Buffer) => {
      text += d.toString();
      if (text.includes('GUEST-READY')) resolve();
    }),
  );
  const ms = performance.now() - t0;
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  return ms;
}

function vmctlBoot(socket: string, i: number): number {
  const args = [VMCTL, '--socket', socket, 'start', '-w', '-m', '256M', '-b', KERNEL,
    '--initrd', INITRD, '--cmdline', GUEST_CMDLINE, `boot${i}`];
  const ms = timeRun(process.execPath, args);
  timeRun(process.execPath, [VMCTL, '--socket', socket, 'stop', '-f', `boot${i}`]);
  return ms;
}

const vmd = await startDaemon();
try {
  const rawBoots: number[] = [];
  const cliBoots: number[] = [];
  // Alternate which goes first, so that neither side always follows the other's teardown.
  for (let i = 0; i < BOOTS; i++) {
    if (i % 2 === 0) rawBoots.push(await rawBoot());
    cliBoots.push(vmctlBoot(vmd.socket, i));
    if (i % 2 === 1) rawBoots.push(await rawBoot());
  }

  const client = await connect({ socket: vmd.socket });
  for (let i = 0; i < VMS; i++) {
    const fds = [openSync(KERNEL, 'r'), openSync(INITRD, 'r')];
    await client.start({
      name: `idle${i}`, memoryBytes: 96 << 20, kernel: { fd: 0 }, initrd: { fd: 1 },
      cmdline: GUEST_CMDLINE,
    }, fds);
    fds.forEach((fd) => closeSync(fd));
  }
  await Promise.all(
    Array.from({ length: VMS }, (_, i) => client.wait(`idle${i}`, { console: 'GUEST-READY' }, 600_000)),
  );
  const node: number[] = [];
  const status: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    node.push(timeRun(process.execPath, ['-e', '0']));
    status.push(timeRun(process.execPath, [VMCTL, '--socket', vmd.socket, 'status']));
  }
  client.close();
  const f = (x: number) => `${x.toFixed(1)} ms`;
  console.log(`vmctl status with ${VMS} running VMs (${RUNS} runs each):`);
  console.log(`  node -e 0      median ${f(median(node))}`);
  console.log(`  vmctl status   median ${f(median(status))}`);
  console.log(`  ratio          ${(median(status) / median(node)).toFixed(3)}`);
  // A TCG boot here takes either about 2.0 s or about 2.3 s, whoever starts it, so the
  // fastest run of each side is shown too: it is what each costs when the host does not
  // get in the way.
  const all = (xs: number[]) => `[${xs.map((x) => x.toFixed(0)).join(' ')}]`;
  console.log(`start -> GUEST-READY (${BOOTS} runs each, TCG q35 256M):`);
  console.log(`  raw qemu       median ${f(median(rawBoots))}  min ${f(Math.min(...rawBoots))}`);
  console.log(`  vmctl start -w median ${f(median(cliBoots))}  min ${f(Math.min(...cliBoots))}`);
  console.log(`  ratio          median ${(median(cliBoots) / median(rawBoots)).toFixed(3)}` +
    `  min ${(Math.min(...cliBoots) / Math.min(...rawBoots)).toFixed(3)}`);
  console.log(`  raw ${all(rawBoots)}`);
  console.log(`  cli ${all(cliBoots)}`);
} finally {
  await vmd.stop();
}
