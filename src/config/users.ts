/**
 * User and group lookup from /etc/passwd and /etc/group, since Node has no getpwnam(3).
 * XXX: only the files are read, so users known only through NSS (LDAP, sssd) are not found.
 */
import { readFileSync } from 'node:fs';

export const DEFAULT_PASSWD_PATH = '/etc/passwd';
export const DEFAULT_GROUP_PATH = '/etc/group';

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

export interface UserDbPaths {
  passwdPath?: string;
  groupPath?: string;
}

/** The colon-separated records of a file; a file that cannot be read has none. */
function readRecords(path: string): string[][] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((line) => line !== '' && !line.startsWith('#') && !/^[+-]/.test(line))
    .map((line) => line.split(':'));
}

const isId = (field: string | undefined): boolean => field !== undefined && /^\d+$/.test(field);

/** The entries of a passwd(5) file; malformed lines are skipped. */
export function readPasswdFile(path: string = DEFAULT_PASSWD_PATH): PasswdEntry[] {
  return readRecords(path)
    .filter((f) => f.length >= 4 && f[0] !== '' && isId(f[2]) && isId(f[3]))
    .map((f) => ({
      name: f[0],
      uid: Number(f[2]),
      gid: Number(f[3]),
      home: f[5] ?? '',
      shell: f[6] ?? '',
    }));
}

/** The entries of a group(5) file; malformed lines are skipped. */
export function readGroupFile(path: string = DEFAULT_GROUP_PATH): GroupEntry[] {
  return readRecords(path)
    .filter((f) => f.length >= 3 && f[0] !== '' && isId(f[2]))
    .map((f) => ({
      name: f[0],
      gid: Number(f[2]),
      members: (f[3] ?? '').split(',').filter((m) => m !== ''),
    }));
}

/**
 * Users and groups, each file read once, when first needed (a status table of VMs without
 * groups never reads /etc/group); the first entry of a name wins.
 */
export class UserDb {
  private usersRead?: readonly PasswdEntry[];
  private groupsRead?: readonly GroupEntry[];

  constructor(private readonly paths: UserDbPaths = {}) {}

  get users(): readonly PasswdEntry[] {
    return (this.usersRead ??= readPasswdFile(this.paths.passwdPath));
  }

  get groups(): readonly GroupEntry[] {
    return (this.groupsRead ??= readGroupFile(this.paths.groupPath));
  }

  userByName(name: string): PasswdEntry | undefined {
    return this.users.find((u) => u.name === name);
  }

  userById(uid: number): PasswdEntry | undefined {
    return this.users.find((u) => u.uid === uid);
  }

  groupByName(name: string): GroupEntry | undefined {
    return this.groups.find((g) => g.name === name);
  }

  groupById(gid: number): GroupEntry | undefined {
    return this.groups.find((g) => g.gid === gid);
  }

  /** Whether the user has gid as primary group or is listed as a member of it. */
  isInGroup(userName: string, gid: number): boolean {
    if (this.userByName(userName)?.gid === gid) return true;
    return this.groups.some((g) => g.gid === gid && g.members.includes(userName));
  }
}
