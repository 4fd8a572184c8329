/**
 * Logging for the daemon and the core. Lines go to a sink (stderr under `vmd -d`, the
 * journal/syslog otherwise); never to stdout. Verbosity follows vmd: 0 logs warnings and
 * state changes, 1 adds detail, 2 adds debug lines (one per engine call).
 */

export type LogLevel = 'warn' | 'info' | 'debug';

export type LogSink = (level: LogLevel, line: string) => void;

export interface Logger {
  warn(message: string): void;
  info(message: string): void;
  debug(message: string): void;
  /** Current verbosity: 0 brief, 1 verbose, 2 debug. */
  verbosity: number;
}

/** A sink that writes `vmd: message` lines to stderr. */
export function stderrSink(prefix = 'vmd'): LogSink {
  return (_level, line) => {
    process.stderr.write(`${prefix}: ${line}\n`);
  };
}

/** A logger over a sink; debug lines are dropped below verbosity 2. */
export function createLogger(sink: LogSink, verbosity = 0): Logger {
  return {
    verbosity,
    warn(message) {
      sink('warn', message);
    },
    info(message) {
      sink('info', message);
    },
    debug(message) {
      if (this.verbosity > 1) sink('debug', message);
    },
  };
}

/** A logger that drops everything (for library users who do not want logs). */
export const silentLogger: Logger = createLogger(() => undefined);
