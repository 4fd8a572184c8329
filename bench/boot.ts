// Boot and pause/unpause through the vmm core against the same QEMU run by hand, side by
// side in one run. Prints medians and ratios (core / raw); lower is better, 1.0 is parity.
//
//   npm run bench:boot [-- --runs N]
import { spawn as spawnChild } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { guestParams, makeVmm } from '../test/helpers/vm.js';
import { median, rawBoot, rawQemuArgs, READY } from './common.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '7' } } });
const RUNS = Number(values.runs);

async function coreBoot(vmm: ReturnType<typeof makeVmm>, i: number): Promise<number> {
  const t0 = performance.now();
  const info = await vmm.start(guestParams(`bench${i}`), { uid: 0 });
  await vmm.console(info.id).waitFor(new RegExp(READY), 120_000);
  const ms = performance.now() - t0;
  await vmm.terminate(info.id, { force: true });
  return ms;
}

/** stop + cont over a raw QMP socket of a hand-run QEMU. */
async function rawPauseCycles(n: number): Promise<number[]> {
  const sock = join(mkdtempSync(join(tmpdir(), 'bench-')), 'qmp.sock');
  const child = spawnChild(
    'qemu-system-x86_64',
    rawQemuArgs(['-qmp', `unix:${sock},server=on,wait=on`]).map((a) => (a === 'stdio' ? 'null' : a)),
    { stdio: 'ignore' },
  );
  const { socket, next } = await qmpConnect(sock);
  const send = async (cmd: string) => {
    socket.write(JSON.stringify({ execute: cmd }) + '\n');
    for (;;) if ('return' in (await next())) return;
  };
  await send('qmp_capabilities');
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await send('stop');
    await send('cont');
    out.push(performance.now() - t0);
  }
  socket.destroy();
  child.kill('SIGKILL');
  await once(child, 'exit');
  return out;
}

async function qmpConnect(path: string) {
  for (let i = 0; ; i++) {
    try {
      const socket = connect(path);
      await once(socket, 'connect');
      const lines: Record<string, unknown>[] = [];
      let buf = '';
      let wake: (() => void) | null = null;
      socket.on('data', (d: Buffer) => {
        buf += d.toString();
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          lines.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
          buf = buf.slice(nl + 1);
        }
        wake?.();
      });
      const next = async (): Promise<Record<string, unknown>> => {
        while (lines.length === 0) await new Promise<void>((r) => (wake = r));
        return lines.shift()!;
      };
      return { socket, next };
    } catch (err) {
      if (i > 200) throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

async function corePauseCycles(vmm: ReturnType<typeof makeVmm>, n: number): Promise<number[]> {
  const info = await vmm.start(guestParams('benchpause'), { uid: 0, paused: true });
  await vmm.unpause(info.id);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await vmm.pause(info.id);
    await vmm.unpause(info.id);
    out.push(performance.now() - t0);
  }
  await vmm.terminate(info.id, { force: true });
  return out;
}

const vmm = makeVmm(`bench-${process.pid}`);
const raw: number[] = [];
const core: number[] = [];
// Alternate so that drifting machine load hits both sides alike.
for (let i = 0; i < RUNS; i++) {
  raw.push(await rawBoot());
  core.push(await coreBoot(vmm, i));
}
const rawPause = await rawPauseCycles(50);
const corePause = await corePauseCycles(vmm, 50);
const fmt = (ms: number) => `${ms.toFixed(1)} ms`;
console.log(`boot to ${READY} (${RUNS} runs each, TCG q35 256M):`);
console.log(`  raw qemu   median ${fmt(median(raw))}   [${raw.map((x) => x.toFixed(0)).join(' ')}]`);
console.log(`  vmm core   median ${fmt(median(core))}   [${core.map((x) => x.toFixed(0)).join(' ')}]`);
console.log(`  ratio      ${(median(core) / median(raw)).toFixed(3)}`);
console.log('pause+unpause (50 cycles each):');
console.log(`  raw qmp    median ${fmt(median(rawPause))}`);
console.log(`  vmm core   median ${fmt(median(corePause))}`);
console.log(`  ratio      ${(median(corePause) / median(rawPause)).toFixed(3)}`);
await vmm.shutdown(5_000);
