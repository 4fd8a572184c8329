// vmctl against vmd, side by side with baselines in the same run:
//  - `vmctl status` with N running VMs against `node -e 0` (what any node CLI pays to start);
//  - start → ready through `vmctl start -w` against the same QEMU run by hand.
// Prints medians and ratios (lower is better).
//
// Children run without NODE_EXTRA_CA_CERTS: node 20 reads and parses that bundle of
// certificates at every start, which on a machine that sets it costs more than starting node
// itself and says nothing about vmctl. Where it is set, status is measured with it as well.
//
//   npm run bench:status [-- --vms 50 --runs 31 --boots 11]
import { spawnSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { connect } from '../src/client.js';
import { startDaemon, VMCTL } from '../test/helpers/daemon.js';
import { GUEST_CMDLINE, INITRD, KERNEL } from '../test/helpers/vm.js';
import { median, rawBoot, READY } from './common.js';

const { values } = parseArgs({
  options: {
    vms: { type: 'string', default: '50' },
    runs: { type: 'string', default: '31' },
    boots: { type: 'string', default: '11' },
  },
});
const VMS = Number(values.vms);
const RUNS = Number(values.runs);
const BOOTS = Number(values.boots);

const CLEAN_ENV: NodeJS.ProcessEnv = { ...process.env };
delete CLEAN_ENV.NODE_EXTRA_CA_CERTS;

function timeRun(file: string, args: string[], env = CLEAN_ENV): number {
  const t0 = performance.now();
  const r = spawnSync(file, args, { stdio: ['ignore', 'ignore', 'inherit'], env });
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')}: exit ${r.status}`);
  return performance.now() - t0;
}

function vmctlBoot(socket: string, i: number): number {
  const args = [VMCTL, '--socket', socket, 'start', '-w', '-m', '256M', '-b', KERNEL,
    '--initrd', INITRD, '--cmdline', GUEST_CMDLINE, `boot${i}`];
  const ms = timeRun(process.execPath, [...args.slice(0, 3), '--json', ...args.slice(3)]);
  timeRun(process.execPath, [VMCTL, '--socket', socket, 'stop', '-f', `boot${i}`]);
  return ms;
}

/** Alternating runs of `node -e 0` and `vmctl status`, in env. */
function statusRuns(socket: string, env: NodeJS.ProcessEnv): { node: number[]; status: number[] } {
  const node: number[] = [];
  const status: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    node.push(timeRun(process.execPath, ['-e', '0'], env));
    status.push(timeRun(process.execPath, [VMCTL, '--socket', socket, 'status'], env));
  }
  return { node, status };
}

async function startIdleVms(socket: string): Promise<void> {
  const client = await connect({ socket });
  try {
    for (let i = 0; i < VMS; i++) {
      const fds = [openSync(KERNEL, 'r'), openSync(INITRD, 'r')];
      await client.start({
        name: `idle${i}`, memoryBytes: 96 << 20, kernel: { fd: 0 }, initrd: { fd: 1 },
        cmdline: GUEST_CMDLINE,
      }, fds);
      fds.forEach((fd) => closeSync(fd));
    }
    await Promise.all(
      Array.from({ length: VMS }, (_, i) => client.wait(`idle${i}`, { console: READY }, 600_000)),
    );
  } finally {
    client.close();
  }
}

const f = (x: number) => `${x.toFixed(1)} ms`;
const all = (xs: number[]) => `[${xs.map((x) => x.toFixed(0)).join(' ')}]`;

const vmd = await startDaemon();
try {
  // One boot of each first, untimed: the first QEMU of a run reads its files from disk.
  await rawBoot(CLEAN_ENV);
  vmctlBoot(vmd.socket, BOOTS);
  // Alternate which goes first, so that neither side always follows the other's teardown.
  const rawBoots: number[] = [];
  const cliBoots: number[] = [];
  for (let i = 0; i < BOOTS; i++) {
    if (i % 2 === 0) rawBoots.push(await rawBoot(CLEAN_ENV));
    cliBoots.push(vmctlBoot(vmd.socket, i));
    if (i % 2 === 1) rawBoots.push(await rawBoot(CLEAN_ENV));
  }
  // A TCG boot here varies by a few hundred ms from one run to the next, whoever starts it;
  // the ratio within each adjacent pair cancels the slower drift of the host.
  const pairs = cliBoots.map((cli, i) => cli / rawBoots[i]);
  console.log(`start -> ${READY} (${BOOTS} runs each, TCG q35 256M):`);
  console.log(`  raw qemu        median ${f(median(rawBoots))}  ${all(rawBoots)}`);
  console.log(`  vmctl start -w  median ${f(median(cliBoots))}  ${all(cliBoots)}`);
  console.log(`  ratio           of medians ${(median(cliBoots) / median(rawBoots)).toFixed(3)}` +
    `  median of pairs ${median(pairs).toFixed(3)}`);

  await startIdleVms(vmd.socket);
  const envs: [string, NodeJS.ProcessEnv][] = [['', CLEAN_ENV]];
  if (process.env.NODE_EXTRA_CA_CERTS) envs.push([' (NODE_EXTRA_CA_CERTS set)', process.env]);
  for (const [what, env] of envs) {
    const { node, status } = statusRuns(vmd.socket, env);
    console.log(`vmctl status with ${VMS} running VMs${what} (${RUNS} runs each):`);
    console.log(`  node -e 0       median ${f(median(node))}`);
    console.log(`  vmctl status    median ${f(median(status))}`);
    console.log(`  ratio           ${(median(status) / median(node)).toFixed(3)}`);
  }
} finally {
  await vmd.stop();
}
