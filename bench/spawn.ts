// The addon's spawn against child_process.spawn from a parent with 1 GiB resident: a fork
// copies the parent's page tables, a vfork-style spawn does not. Prints medians and the
// ratio (addon / child_process; lower is better).
//
//   npm run bench:spawn [-- --runs 50 --resident-mib 1024]
import { spawn as spawnChild } from 'node:child_process';
import { once } from 'node:events';
import { parseArgs } from 'node:util';

import { spawn, watchExit } from '../src/native.js';

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '50' }, 'resident-mib': { type: 'string', default: '1024' } },
});
const RUNS = Number(values.runs);
const MIB = Number(values['resident-mib']);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Time until the call returns with a pid (the parent's cost), then reap. */
async function addonSpawn(): Promise<number> {
  const t0 = performance.now();
  const pid = spawn('/bin/true', ['true'], {}, []);
  const ms = performance.now() - t0;
  await new Promise((resolve) => watchExit(pid, resolve));
  return ms;
}

async function nodeSpawn(): Promise<number> {
  const t0 = performance.now();
  const child = spawnChild('/bin/true', [], { stdio: 'ignore' });
  const ms = performance.now() - t0;
  await once(child, 'exit');
  return ms;
}

// Resident memory: touch every page so that a fork has real page tables to copy.
const ballast = Buffer.alloc(MIB * 1024 * 1024, 1);
const addon: number[] = [];
const node: number[] = [];
for (let i = 0; i < RUNS; i++) {
  addon.push(await addonSpawn());
  node.push(await nodeSpawn());
}
console.log(`spawn of /bin/true with ${MIB} MiB resident (${RUNS} runs each):`);
console.log(`  child_process.spawn  median ${median(node).toFixed(2)} ms`);
console.log(`  addon spawn          median ${median(addon).toFixed(2)} ms`);
console.log(`  ratio                ${(median(addon) / median(node)).toFixed(3)}`);
void ballast.length;
