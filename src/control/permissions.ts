/**
 * Who may do what (vmd's model): root anything; others may see status and events, and may
 * start, stop, wait for, pause, unpause and attach to VMs they started or own by user or
 * group. load, reload, reset, log, send and receive are root's.
 */
import { UserDb } from '../config/users.js';
import { VmdError } from '../errors.js';
import type { VmInfo } from '../vmm/types.js';
import type { Verb } from './protocol.js';

export interface Caller {
  uid: number;
  gid: number;
  pid: number;
}

const ROOT_ONLY: ReadonlySet<Verb> = new Set(['load', 'reload', 'reset', 'log', 'send', 'receive']);

/** Throws a permission error unless the caller may use the verb at all. */
export function checkVerb(caller: Caller, verb: Verb): void {
  if (caller.uid !== 0 && ROOT_ONLY.has(verb)) {
    throw new VmdError('permission', `${verb}: permission denied (root only)`);
  }
}

/** Groups a uid belongs to: its primary group and every group that lists its name. */
export function groupsOf(uid: number, primaryGid: number, db = new UserDb()): Set<number> {
  const groups = new Set([primaryGid]);
  const user = db.users.find((u) => u.uid === uid);
  if (user) {
    groups.add(user.gid);
    for (const g of db.groups) if (g.members.includes(user.name)) groups.add(g.gid);
  }
  return groups;
}

/**
 * Whether the caller may act on a VM: root; the user who started it (running) or owns it
 * (stopped); or a member of its owning group.
 */
export function mayControl(caller: Caller, vm: VmInfo, db?: UserDb): boolean {
  if (caller.uid === 0) return true;
  if (vm.uid === caller.uid) return true;
  if (vm.gid === null) return false;
  return groupsOf(caller.uid, caller.gid, db).has(vm.gid);
}

/** Throws a permission error naming the VM unless mayControl. */
export function checkControl(caller: Caller, vm: VmInfo, verb: Verb, db?: UserDb): void {
  if (!mayControl(caller, vm, db)) {
    throw new VmdError('permission', `${verb}: vm "${vm.name}": permission denied`);
  }
}
