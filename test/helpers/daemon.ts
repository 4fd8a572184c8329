// Helpers for end-to-end tests: a real vmd (bin/vmd.js -d) on a private socket, and vmctl
// runs as root or as real unprivileged users.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ROOT, waitUntil } from './vm.js';

export const VMD = join(ROOT, 'bin', 'vmd.js');
export const VMCTL = join(ROOT, 'bin', 'vmctl.cjs');

export interface RunningDaemon {
  socket: string;
  dir: string;
  proc: ChildProcess;
  /** Everything vmd logged so far. */
  log(): string;
  /** SIGTERM, then the exit status. */
  stop(): Promise<number | null>;
}

/** Starts vmd in the foreground on a fresh socket with the given vm.conf text. */
export async function startDaemon(conf = '', extra: string[] = []): Promise<RunningDaemon> {
  const dir = mkdtempSync(join(tmpdir(), 'vmd-e2e-'));
  chmodSync(dir, 0o755);
  const socket = join(dir, 'vmd.sock');
  const confPath = join(dir, 'vm.conf');
  writeFileSync(confPath, conf);
  const proc = spawn(
    process.execPath,
    [VMD, '-d', '-vv', '--socket', socket, '--state-dir', join(dir, 'run'), '--accel', 'tcg',
      '-f', confPath, ...extra],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let text = '';
  proc.stderr.on('data', (d: Buffer) => {
    text += d.toString();
    if (process.env.VMD_TEST_LOG) process.stderr.write(d);
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  await waitUntil(`vmd listening on ${socket}\n${text}`, () => {
    if (proc.exitCode !== null) throw new Error(`vmd exited ${proc.exitCode}: ${text}`);
    return existsSync(socket);
  });
  return {
    socket,
    dir,
    proc,
    log: () => text,
    stop: async () => {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      return exited;
    },
  };
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; input goes to its stdin. */
export function run(
  file: string,
  args: string[],
  opts: { uid?: number; gid?: number; input?: string | Buffer; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      uid: opts.uid,
      gid: opts.gid,
      env: { ...process.env, NO_COLOR: '1', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(opts.input);
  });
}

/**
 * Runs vmctl against a daemon, as another user when uid is given (through setpriv, which,
 * unlike child_process, keeps the user's supplementary groups).
 */
export function vmctl(
  d: { socket: string },
  args: string[],
  opts: { uid?: number; gid?: number; input?: string | Buffer } = {},
): Promise<RunResult> {
  const argv = [process.execPath, VMCTL, '--socket', d.socket, ...args];
  if (opts.uid === undefined) return run(argv[0], argv.slice(1), opts);
  const as = [`--reuid=${opts.uid}`, `--regid=${opts.gid ?? opts.uid}`, '--init-groups'];
  return run('setpriv', [...as, ...argv], { input: opts.input });
}
