/**
 * vmd-ts as a library: the VM table and its engine, for programs that embed the core.
 */
export { VmdError, ERROR_CODES, exitCodeOf, type ErrorCode } from './errors.js';
export { createLogger, stderrSink, silentLogger, type Logger, type LogLevel } from './log.js';
export { createQemuEngine, type QemuEngineOptions } from './engine/qemu.js';
export { chooseAccel } from './engine/accel.js';
export type { Accel, AccelSetting, Engine, EngineVm, VmExit } from './engine/types.js';
export { Vmm, type VmmOptions, type StartOptions, type TerminateOptions, type VmEvent } from './vmm/vmm.js';
export type * from './vmm/types.js';
export { connect, Client, socketPath, type ConnectOptions, type StopResult } from './client.js';
export type * from './control/protocol.js';
