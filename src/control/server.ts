/**
 * The control socket: accepts clients, reads their credentials from the socket, checks every
 * message against the protocol's schema and hands it to the daemon's handler. A bad message
 * gets an error reply and the connection stays usable; an oversized one closes it. Either
 * way the daemon runs on.
 */
import { chmodSync, chownSync, closeSync, existsSync, lstatSync, unlinkSync } from 'node:fs';

import { toVmdError, VmdError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  channel,
  closeAll,
  connectUnix,
  listenUnix,
  peerCred,
  type Channel,
  type UnixServer,
} from '../native.js';
import type { Caller } from './permissions.js';
import {
  encode,
  MAX_MESSAGE_BYTES,
  MAX_MESSAGE_FDS,
  parseRequest,
  type Reply,
  type Request,
} from './protocol.js';

/** One client connection as a handler sees it. */
export interface Session {
  readonly caller: Caller;
  /** Sends a progress message for the request; false once the client is gone. */
  stream(id: number, data: unknown, fds?: readonly number[]): boolean;
  /** Runs fn when the client goes away. */
  onClose(fn: () => void): void;
  readonly closed: boolean;
}

/** A verb handler: returns the result, or throws. It owns fds, even when it throws. */
export type Handler = (
  session: Session,
  req: Request,
  fds: number[],
) => Promise<{ result: unknown; fds?: number[] }>;

export interface ServerOptions {
  path: string;
  /** Socket mode and group; the owner is the daemon's user. */
  mode?: number;
  gid?: number | null;
  log: Logger;
  handle: Handler;
}

/** Listens on the control socket; close() stops accepting and drops every client. */
export class ControlServer {
  private readonly server: UnixServer;
  private readonly sessions = new Set<ClientSession>();

  constructor(private readonly opts: ServerOptions) {
    removeStaleSocket(opts.path);
    this.server = listenUnix(opts.path, (fd) => this.accept(fd));
    chmodSync(opts.path, opts.mode ?? 0o660);
    if (opts.gid !== undefined && opts.gid !== null) chownSync(opts.path, 0, opts.gid);
  }

  close(): void {
    this.server.close();
    for (const s of this.sessions) s.end();
    try {
      unlinkSync(this.opts.path);
    } catch {
      // already gone
    }
  }

  private accept(fd: number): void {
    let caller: Caller;
    try {
      caller = peerCred(fd);
    } catch (err) {
      closeSync(fd);
      this.opts.log.warn(`control: cannot read peer credentials: ${(err as Error).message}`);
      return;
    }
    const session = new ClientSession(fd, caller, this.opts, () => this.sessions.delete(session));
    this.sessions.add(session);
  }
}

class ClientSession implements Session {
  private readonly chan: Channel;
  private readonly closers: (() => void)[] = [];
  closed = false;

  constructor(
    fd: number,
    readonly caller: Caller,
    private readonly opts: ServerOptions,
    private readonly forget: () => void,
  ) {
    this.chan = channel(
      fd,
      { framing: 'length', maxMessageBytes: MAX_MESSAGE_BYTES, maxFds: MAX_MESSAGE_FDS },
      {
        message: (data, fds) => void this.receive(data, fds),
        close: (err) => {
          if (err) this.opts.log.info(`control: client uid ${caller.uid}: ${err.message}`);
          this.finish();
        },
      },
    );
  }

  stream(id: number, data: unknown, fds: readonly number[] = []): boolean {
    if (this.closed) return false;
    this.chan.send(encode({ id, stream: data }), fds);
    return true;
  }

  onClose(fn: () => void): void {
    if (this.closed) fn();
    else this.closers.push(fn);
  }

  end(): void {
    if (this.closed) return;
    this.chan.close();
    this.finish();
  }

  private async receive(data: Buffer, fds: number[]): Promise<void> {
    let req: Request;
    try {
      req = parseRequest(data, fds.length);
    } catch (err) {
      closeAll(fds);
      this.reply({ id: requestId(data), ok: false, error: toVmdError(err).toJSON() });
      return;
    }
    this.opts.log.debug(`control: uid ${this.caller.uid}: ${req.verb} ${JSON.stringify(req.args)}`);
    try {
      const { result, fds: out } = await this.opts.handle(this, req, fds);
      this.reply({ id: req.id, ok: true, result }, out);
      closeAll(out ?? []);
    } catch (err) {
      const e = toVmdError(err);
      if (e.code === 'internal') this.opts.log.warn(`control: ${req.verb}: ${e.stack ?? e.message}`);
      this.reply({ id: req.id, ok: false, error: e.toJSON() });
    }
  }

  private reply(reply: Reply, fds: readonly number[] = []): void {
    if (!this.closed) this.chan.send(encode(reply), fds);
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.forget();
    for (const fn of this.closers.splice(0)) fn();
  }
}

/** The id of a request that failed to parse, when it has one, so the client can match it. */
function requestId(data: Buffer): number {
  try {
    const id = (JSON.parse(data.toString('utf8')) as { id?: unknown }).id;
    return Number.isSafeInteger(id) ? (id as number) : 0;
  } catch {
    return 0;
  }
}

/** A socket file left by a daemon that died is removed; anything else there is an error. */
function removeStaleSocket(path: string): void {
  if (!existsSync(path)) return;
  if (!lstatSync(path).isSocket()) {
    throw new VmdError('failure', `${path}: exists and is not a socket`);
  }
  let fd: number;
  try {
    fd = connectUnix(path);
  } catch {
    unlinkSync(path);
    return;
  }
  closeSync(fd);
  throw new VmdError('state', `${path}: another vmd is listening`);
}

