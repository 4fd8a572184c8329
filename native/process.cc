// spawn(): start a program with exactly the descriptors it is given; watchExit(): learn how it
// ended, through the reactor, without ever waiting for any other child.
#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "addon.h"
#include "errors.h"
#include "fd.h"
#include "reactor.h"

#if defined(__linux__)
// clone(2), prctl(2) PR_SET_PDEATHSIG, close_range(2), pidfd_open(2), pidfd_send_signal(2),
// waitid(2) P_PIDFD, rt_sigaction(2), syscall(2)
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#elif defined(__OpenBSD__)
// vfork(2), closefrom(2), kqueue(2) EVFILT_PROC, waitpid(2), kill(2)
#include <grp.h>
#endif

namespace vmd {

namespace {

constexpr const char* kSpawnUsage =
    "spawn(file: string, argv: string[], env: string[], fds: number[] (parent, child pairs), "
    "opts: {cwd?: string, setsid?: boolean, deathSignal?: number, uid?: number, gid?: number, "
    "groups?: number[]})";
constexpr const char* kWatchUsage = "watchExit(pid: number, cb: (status) => void)";
constexpr const char* kKillUsage = "ProcessWatch.kill(signal?: string | number)";
#if defined(__linux__)
constexpr const char* kKillSyscall = "pidfd_send_signal";
#else
constexpr const char* kKillSyscall = "kill";
#endif

// ---------------------------------------------------------------------------------------
// Signal names, both ways.

struct SignalName {
  int number;
  const char* name;
};

const SignalName kSignals[] = {
    {SIGHUP, "SIGHUP"},       {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"},   {SIGILL, "SIGILL"},
    {SIGTRAP, "SIGTRAP"},     {SIGABRT, "SIGABRT"}, {SIGBUS, "SIGBUS"},     {SIGFPE, "SIGFPE"},
    {SIGKILL, "SIGKILL"},     {SIGUSR1, "SIGUSR1"}, {SIGSEGV, "SIGSEGV"},   {SIGUSR2, "SIGUSR2"},
    {SIGPIPE, "SIGPIPE"},     {SIGALRM, "SIGALRM"}, {SIGTERM, "SIGTERM"},   {SIGCHLD, "SIGCHLD"},
    {SIGCONT, "SIGCONT"},     {SIGSTOP, "SIGSTOP"}, {SIGTSTP, "SIGTSTP"},   {SIGTTIN, "SIGTTIN"},
    {SIGTTOU, "SIGTTOU"},     {SIGURG, "SIGURG"},   {SIGXCPU, "SIGXCPU"},   {SIGXFSZ, "SIGXFSZ"},
    {SIGVTALRM, "SIGVTALRM"}, {SIGPROF, "SIGPROF"}, {SIGWINCH, "SIGWINCH"}, {SIGIO, "SIGIO"},
    {SIGSYS, "SIGSYS"},
#if defined(SIGSTKFLT)
    {SIGSTKFLT, "SIGSTKFLT"},
#endif
#if defined(SIGPWR)
    {SIGPWR, "SIGPWR"},
#endif
#if defined(SIGEMT)
    {SIGEMT, "SIGEMT"},
#endif
#if defined(SIGINFO)
    {SIGINFO, "SIGINFO"},
#endif
};

std::string SignalToName(int sig) {
  for (const SignalName& s : kSignals) {
    if (s.number == sig) return s.name;
  }
  return "SIG" + std::to_string(sig);  // e.g. a real-time signal
}

// -1 when name is not a signal we know.
int NameToSignal(const std::string& name) {
  for (const SignalName& s : kSignals) {
    if (name == s.name) return s.number;
  }
  return -1;
}

// A signal given by name ('SIGTERM') or number; SIGTERM when undefined, -1 when invalid.
int SignalArgument(const Napi::Value& v) {
  if (v.IsUndefined()) return SIGTERM;
  if (v.IsString()) return NameToSignal(v.As<Napi::String>());
  return IsInt(v, 0, 64) ? static_cast<int>(ToInt(v)) : -1;
}

// ---------------------------------------------------------------------------------------
// spawn: everything the child needs is prepared here, in the parent, so that the child itself
// only makes system calls (it shares the parent's memory until it execs).

// Where a failed child stopped; the stage names the system call for the error.
enum Stage : int {
  kStageNone = 0,
  kStagePrctl,
  kStageSetsid,
  kStageSetgroups,
  kStageSetgid,
  kStageSetuid,
  kStageFcntl,
  kStageOpen,
  kStageDup,
  kStageClose,
  kStageChdir,
  kStageSigmask,
  kStageExecve,
};

const char* StageSyscall(int stage) {
  switch (stage) {
    case kStagePrctl: return "prctl";
    case kStageSetsid: return "setsid";
    case kStageSetgroups: return "setgroups";
    case kStageSetgid: return "setgid";
    case kStageSetuid: return "setuid";
    case kStageFcntl: return "fcntl";
    case kStageOpen: return "open";
    case kStageDup: return "dup2";
    case kStageClose: return "close_range";
    case kStageChdir: return "chdir";
    case kStageSigmask: return "sigprocmask";
    default: return "execve";
  }
}

struct SpawnPlan {
  std::string file;
  std::vector<std::string> candidates;  // the file, or file in each PATH directory
  std::vector<const char*> candidatePtrs;
  std::vector<std::string> argStore, envStore;
  std::vector<char*> argv, envp;  // null-terminated
  std::vector<int> sources, targets;
  std::vector<int> temps;  // scratch for the child, sized like sources
  std::vector<int> keep;   // sorted distinct targets >= 3
  int maxTarget = 2;
  bool mapped[3] = {false, false, false};
  std::string cwd;
  bool hasCwd = false;
  bool setsid = true;
  int deathSignal = SIGKILL;
  pid_t parent = 0;
  bool setUid = false, setGid = false, setGroups = false;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  int fdLimit = 1024;  // for the close loop where close_range is missing
  // Written by the child when it fails (shared memory under CLONE_VM).
  volatile int stage = kStageNone;
  volatile int err = 0;
};

bool IsStringArray(const Napi::Value& v) {
  if (!v.IsArray()) return false;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    if (!a.Get(i).IsString()) return false;
  }
  return true;
}

bool IsIntArray(const Napi::Value& v, int64_t lo, int64_t hi) {
  if (!v.IsArray()) return false;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    if (!IsInt(a.Get(i), lo, hi)) return false;
  }
  return true;
}

bool IsOptional(const Napi::Value& v, bool ok) {
  return v.IsUndefined() || ok;
}

// execve takes NUL-terminated strings; an embedded NUL would silently cut a string short.
bool HasNul(const std::string& s) {
  return s.find('\0') != std::string::npos;
}

bool ValidSpawnArgs(const Napi::CallbackInfo& info) {
  if (info.Length() < 4 || !info[0].IsString() || !IsStringArray(info[1]) ||
      !IsStringArray(info[2]) || !IsIntArray(info[3], 0, INT32_MAX)) {
    return false;
  }
  if (info[3].As<Napi::Array>().Length() % 2 != 0) return false;
  Napi::Value opts = info.Length() > 4 ? info[4] : info.Env().Undefined();
  if (!opts.IsUndefined() && !opts.IsObject()) return false;
  return IsOptional(Option(opts, "cwd"), Option(opts, "cwd").IsString()) &&
         IsOptional(Option(opts, "setsid"), Option(opts, "setsid").IsBoolean()) &&
         IsOptional(Option(opts, "deathSignal"), IsInt(Option(opts, "deathSignal"), 0, 64)) &&
         IsOptional(Option(opts, "uid"), IsInt(Option(opts, "uid"), 0, UINT32_MAX - 1)) &&
         IsOptional(Option(opts, "gid"), IsInt(Option(opts, "gid"), 0, UINT32_MAX - 1)) &&
         IsOptional(Option(opts, "groups"), IsIntArray(Option(opts, "groups"), 0, UINT32_MAX - 1));
}

std::vector<std::string> StringList(const Napi::Value& v) {
  Napi::Array a = v.As<Napi::Array>();
  std::vector<std::string> out;
  out.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) out.push_back(a.Get(i).As<Napi::String>());
  return out;
}

std::vector<char*> PointerList(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (std::string& s : strings) out.push_back(&s[0]);
  out.push_back(nullptr);
  return out;
}

// The PATH the child searches: its own environment's, else ours, else the execvp default.
std::string SearchPath(const std::vector<std::string>& env) {
  for (const std::string& entry : env) {
    if (entry.compare(0, 5, "PATH=") == 0) return entry.substr(5);
  }
  const char* path = getenv("PATH");
  return path ? path : "/bin:/usr/bin";
}

void PlanCandidates(SpawnPlan& plan) {
  if (plan.file.find('/') != std::string::npos) {
    plan.candidates.push_back(plan.file);
  } else {
    std::string path = SearchPath(plan.envStore);
    size_t start = 0;
    for (;;) {
      size_t end = path.find(':', start);
      std::string dir = path.substr(start, end == std::string::npos ? end : end - start);
      plan.candidates.push_back(dir.empty() ? plan.file : dir + "/" + plan.file);
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }
  for (const std::string& c : plan.candidates) plan.candidatePtrs.push_back(c.c_str());
}

void PlanDescriptors(SpawnPlan& plan, const Napi::Array& flat) {
  for (uint32_t i = 0; i + 1 < flat.Length(); i += 2) {
    int target = static_cast<int>(ToInt(flat.Get(i + 1)));
    plan.sources.push_back(static_cast<int>(ToInt(flat.Get(i))));
    plan.targets.push_back(target);
    plan.maxTarget = std::max(plan.maxTarget, target);
    if (target < 3) plan.mapped[target] = true;
    if (target >= 3) plan.keep.push_back(target);
  }
  std::sort(plan.keep.begin(), plan.keep.end());
  plan.keep.erase(std::unique(plan.keep.begin(), plan.keep.end()), plan.keep.end());
  plan.temps.assign(plan.sources.size(), -1);
}

bool HasDuplicateTargets(const SpawnPlan& plan) {
  std::vector<int> sorted = plan.targets;
  std::sort(sorted.begin(), sorted.end());
  return std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end();
}

void PlanCredentials(SpawnPlan& plan, const Napi::Value& opts) {
  Napi::Value uid = Option(opts, "uid"), gid = Option(opts, "gid");
  Napi::Value groups = Option(opts, "groups");
  plan.setUid = !uid.IsUndefined();
  plan.setGid = !gid.IsUndefined();
  if (plan.setUid) plan.uid = static_cast<uid_t>(ToInt(uid));
  if (plan.setGid) plan.gid = static_cast<gid_t>(ToInt(gid));
  if (!groups.IsUndefined()) {
    plan.setGroups = true;
    Napi::Array a = groups.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      plan.groups.push_back(static_cast<gid_t>(ToInt(a.Get(i))));
    }
  } else if ((plan.setUid || plan.setGid) && geteuid() == 0) {
    // Switching a root parent's child to another user without naming groups: drop root's
    // supplementary groups rather than let them leak into the unprivileged child.
    plan.setGroups = true;
  }
}

std::unique_ptr<SpawnPlan> BuildPlan(const Napi::CallbackInfo& info) {
  std::unique_ptr<SpawnPlan> plan(new SpawnPlan());
  Napi::Value opts = info.Length() > 4 ? info[4] : info.Env().Undefined();
  plan->file = info[0].As<Napi::String>();
  plan->argStore = StringList(info[1]);
  plan->envStore = StringList(info[2]);
  bool nul = HasNul(plan->file) || plan->file.empty();
  for (const std::string& s : plan->argStore) nul = nul || HasNul(s);
  for (const std::string& s : plan->envStore) nul = nul || HasNul(s);
  if (Option(opts, "cwd").IsString()) {
    plan->cwd = Option(opts, "cwd").As<Napi::String>();
    plan->hasCwd = true;
    nul = nul || HasNul(plan->cwd);
  }
  PlanDescriptors(*plan, info[3].As<Napi::Array>());
  if (nul || HasDuplicateTargets(*plan)) ThrowUsage(info.Env(), kSpawnUsage);
  plan->argv = PointerList(plan->argStore);
  plan->envp = PointerList(plan->envStore);
  PlanCandidates(*plan);
  if (Option(opts, "setsid").IsBoolean()) plan->setsid = Option(opts, "setsid").As<Napi::Boolean>();
  if (!Option(opts, "deathSignal").IsUndefined()) {
    plan->deathSignal = static_cast<int>(ToInt(Option(opts, "deathSignal")));
  }
  PlanCredentials(*plan, opts);
  plan->parent = getpid();
  long max = sysconf(_SC_OPEN_MAX);
  if (max > 0) plan->fdLimit = static_cast<int>(std::min<long>(max, 1 << 20));
  return plan;
}

// execve on each candidate with exec, like execvp: EACCES on one directory is remembered,
// ENOENT and ENOTDIR move on, anything else stops. Returns the errno to report; only
// async-signal-safe work, since it runs in the child between fork and exec.
template <typename Exec>
int TryCandidates(SpawnPlan* p, Exec exec) {
  int err = ENOENT;
  bool denied = false;
  for (const char* path : p->candidatePtrs) {
    exec(path, p->argv.data(), p->envp.data());
    err = errno;
    if (err == EACCES) {
      denied = true;
    } else if (err != ENOENT && err != ENOTDIR) {
      break;
    }
  }
  if (denied && (err == ENOENT || err == ENOTDIR)) err = EACCES;
  return err;
}

#if defined(__linux__)

// The child of clone(CLONE_VM|CLONE_VFORK). It runs on its own stack but in the parent's
// memory, while the parent thread waits: no malloc, no locks, no libc state, only raw system
// calls through syscall(2). (glibc's setuid & co. would broadcast to the parent's threads,
// and its sigaction refuses glibc's internal signals.)

constexpr size_t kKernelSigsetBytes = 8;  // the kernel's sigset_t (64 signals)

[[noreturn]] void ChildFail(SpawnPlan* plan, int stage, int err) {
  plan->err = err;
  plan->stage = stage;
  syscall(SYS_exit_group, 127);
  __builtin_unreachable();
}

// Default dispositions for every signal: ignored ones (Node ignores SIGPIPE and SIGXFSZ) would
// survive exec, and caught ones must never run here, on the parent's memory.
void ChildResetSignals() {
  unsigned char dfl[64] = {};  // a kernel struct sigaction of zeros: SIG_DFL, no flags
  for (int sig = 1; sig <= 64; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    syscall(SYS_rt_sigaction, sig, dfl, nullptr, kKernelSigsetBytes);
  }
}

void ChildSetCredentials(SpawnPlan* p) {
  const gid_t* groups = p->groups.empty() ? nullptr : p->groups.data();
  if (p->setGroups && syscall(SYS_setgroups, p->groups.size(), groups) < 0) {
    ChildFail(p, kStageSetgroups, errno);
  }
  if (p->setGid && syscall(SYS_setgid, p->gid) < 0) ChildFail(p, kStageSetgid, errno);
  if (p->setUid && syscall(SYS_setuid, p->uid) < 0) ChildFail(p, kStageSetuid, errno);
}

// Closes [lo, hi]; close_range(2) where the kernel has it (5.9), else one by one.
void ChildCloseRange(SpawnPlan* p, unsigned lo, unsigned hi) {
  if (lo > hi) return;
  if (syscall(SYS_close_range, lo, hi, 0) == 0) return;
  if (errno != ENOSYS) ChildFail(p, kStageClose, errno);
  unsigned last = std::min<unsigned>(hi, static_cast<unsigned>(p->fdLimit));
  for (unsigned fd = lo; fd <= last; fd++) syscall(SYS_close, fd);
}

// Puts every source at its target. Sources are first copied above the highest target, so that
// no dup2 can overwrite a source another mapping still needs (18->19 with 19->18).
void ChildPlaceDescriptors(SpawnPlan* p) {
  long above = p->maxTarget + 1;
  for (size_t i = 0; i < p->sources.size(); i++) {
    long fd = syscall(SYS_fcntl, p->sources[i], F_DUPFD_CLOEXEC, above);
    if (fd < 0) ChildFail(p, kStageFcntl, errno);
    p->temps[i] = static_cast<int>(fd);
  }
  long null = -1;
  if (!p->mapped[0] || !p->mapped[1] || !p->mapped[2]) {
    long fd = syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR | O_CLOEXEC);
    if (fd < 0) ChildFail(p, kStageOpen, errno);
    null = syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, above);  // off any target number
    if (null < 0) ChildFail(p, kStageFcntl, errno);
    syscall(SYS_close, fd);
  }
  for (size_t i = 0; i < p->sources.size(); i++) {
    // dup3 clears FD_CLOEXEC on the target, which is what lets it survive exec.
    if (syscall(SYS_dup3, p->temps[i], p->targets[i], 0) < 0) ChildFail(p, kStageDup, errno);
  }
  for (int fd = 0; fd < 3; fd++) {
    if (!p->mapped[fd] && syscall(SYS_dup3, null, fd, 0) < 0) ChildFail(p, kStageDup, errno);
  }
  unsigned lo = 3;
  for (int target : p->keep) {
    ChildCloseRange(p, lo, static_cast<unsigned>(target) - 1);
    lo = static_cast<unsigned>(target) + 1;
  }
  ChildCloseRange(p, lo, ~0U);
}

[[noreturn]] void ChildExec(SpawnPlan* p) {
  int err = TryCandidates(p, [](const char* path, char* const* argv, char* const* envp) {
    syscall(SYS_execve, path, argv, envp);
  });
  ChildFail(p, kStageExecve, err);
}

int ChildMain(void* arg) {
  SpawnPlan* p = static_cast<SpawnPlan*>(arg);
  ChildResetSignals();
  if (p->setsid && syscall(SYS_setsid) < 0) ChildFail(p, kStageSetsid, errno);
  ChildSetCredentials(p);
  // After the credentials: the kernel clears the parent-death signal when they change.
  if (p->deathSignal != 0) {
    if (syscall(SYS_prctl, PR_SET_PDEATHSIG, p->deathSignal, 0, 0, 0) < 0) {
      ChildFail(p, kStagePrctl, errno);
    }
    // The parent may have died before prctl took effect; then no signal will ever come.
    if (syscall(SYS_getppid) != p->parent) syscall(SYS_exit_group, 127);
  }
  ChildPlaceDescriptors(p);
  if (p->hasCwd && syscall(SYS_chdir, p->cwd.c_str()) < 0) ChildFail(p, kStageChdir, errno);
  unsigned char empty[kKernelSigsetBytes] = {};
  if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, empty, nullptr, kKernelSigsetBytes) < 0) {
    ChildFail(p, kStageSigmask, errno);
  }
  ChildExec(p);
}

constexpr size_t kChildStackBytes = 64 * 1024;

// Starts the child; the parent thread sleeps until it has exec'd or died (CLONE_VFORK), and
// nothing is copied (CLONE_VM), so the cost does not grow with the parent's size. All signals
// stay blocked meanwhile, so that no handler of ours runs in the child before it resets them.
pid_t LaunchChild(SpawnPlan* plan, int* err) {
  void* stack = mmap(nullptr, kChildStackBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    *err = errno;
    return -1;
  }
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  char* top = static_cast<char*>(stack) + kChildStackBytes;
  pid_t pid = clone(ChildMain, top, CLONE_VM | CLONE_VFORK | SIGCHLD, plan);
  *err = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  munmap(stack, kChildStackBytes);
  return pid;
}

#elif defined(__OpenBSD__)

// The child of vfork(2): it borrows the parent's memory until exec, so it only makes system
// calls through libc's thin wrappers and reports a failure into the plan. OpenBSD has no
// parent-death signal; the daemon's kqueue watch stands in for it.

[[noreturn]] void ChildFail(SpawnPlan* plan, int stage, int err) {
  plan->err = err;
  plan->stage = stage;
  _exit(127);
}

void ChildResetSignals() {
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);  // SIGTHR refuses
  }
}

void ChildSetCredentials(SpawnPlan* p) {
  if (p->setGroups && setgroups(static_cast<int>(p->groups.size()), p->groups.data()) < 0) {
    ChildFail(p, kStageSetgroups, errno);
  }
  if (p->setGid && setgid(p->gid) < 0) ChildFail(p, kStageSetgid, errno);
  if (p->setUid && setuid(p->uid) < 0) ChildFail(p, kStageSetuid, errno);
}

void ChildPlaceDescriptors(SpawnPlan* p) {
  int above = p->maxTarget + 1;
  for (size_t i = 0; i < p->sources.size(); i++) {
    p->temps[i] = fcntl(p->sources[i], F_DUPFD_CLOEXEC, above);
    if (p->temps[i] < 0) ChildFail(p, kStageFcntl, errno);
  }
  int null = -1;
  if (!p->mapped[0] || !p->mapped[1] || !p->mapped[2]) {
    int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd < 0) ChildFail(p, kStageOpen, errno);
    null = fcntl(fd, F_DUPFD_CLOEXEC, above);
    if (null < 0) ChildFail(p, kStageFcntl, errno);
    close(fd);
  }
  for (size_t i = 0; i < p->sources.size(); i++) {
    if (dup2(p->temps[i], p->targets[i]) < 0) ChildFail(p, kStageDup, errno);
  }
  for (int fd = 0; fd < 3; fd++) {
    if (!p->mapped[fd] && dup2(null, fd) < 0) ChildFail(p, kStageDup, errno);
  }
  for (int fd = 3; fd <= p->maxTarget; fd++) {
    if (!std::binary_search(p->keep.begin(), p->keep.end(), fd)) close(fd);
  }
  closefrom(above);  // the copies above the targets; EBADF just means there were none
}

[[noreturn]] void ChildExec(SpawnPlan* p) {
  int err = TryCandidates(p, [](const char* path, char* const* argv, char* const* envp) {
    execve(path, argv, envp);
  });
  ChildFail(p, kStageExecve, err);
}

[[noreturn]] void ChildMain(SpawnPlan* p) {
  ChildResetSignals();
  if (p->setsid && setsid() < 0) ChildFail(p, kStageSetsid, errno);
  ChildSetCredentials(p);
  ChildPlaceDescriptors(p);
  if (p->hasCwd && chdir(p->cwd.c_str()) < 0) ChildFail(p, kStageChdir, errno);
  sigset_t empty;
  sigemptyset(&empty);
  if (sigprocmask(SIG_SETMASK, &empty, nullptr) < 0) ChildFail(p, kStageSigmask, errno);
  ChildExec(p);
}

pid_t LaunchChild(SpawnPlan* plan, int* err) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = vfork();
  if (pid == 0) ChildMain(plan);  // never returns, so vfork's frame stays valid
  *err = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return pid;
}

#endif

// Reaps a child that failed before exec: it has already exited (the vfork wait is over), so
// this does not block, and it waits for that pid only.
void ReapFailedChild(pid_t pid) {
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

Napi::Value Spawn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ValidSpawnArgs(info)) ThrowUsage(env, kSpawnUsage);
  std::unique_ptr<SpawnPlan> plan = BuildPlan(info);
  int err = 0;
  pid_t pid = LaunchChild(plan.get(), &err);
#if defined(__linux__)
  if (pid < 0) ThrowErrno(env, "clone", "", err);
#else
  if (pid < 0) ThrowErrno(env, "vfork", "", err);
#endif
  if (plan->stage != kStageNone) {
    ReapFailedChild(pid);
    const char* syscall = StageSyscall(plan->stage);
    bool named = plan->stage == kStageExecve || plan->stage == kStageChdir;
    std::string path = plan->stage == kStageChdir ? plan->cwd : plan->file;
    ThrowErrno(env, syscall, named ? path : "", plan->err, named ? path : "");
  }
  return Napi::Number::New(env, pid);
}

// ---------------------------------------------------------------------------------------
// watchExit

struct ExitEvent {
  int code = -1;   // -1: not a normal exit
  int signal = 0;  // 0: not killed by a signal
};

class WatchCore;

// What the JS side of a watch holds; lives as long as the thread-safe function.
struct WatchJs {
  std::shared_ptr<WatchCore> core;
};

void DeliverExit(Napi::Env env, Napi::Function cb, WatchJs* js, ExitEvent* event);

class WatchCore : public Source, public std::enable_shared_from_this<WatchCore> {
 public:
  WatchCore(pid_t pid, Reactor* reactor) : pid_(pid), reactor_(reactor) {}

  pid_t pid() const { return pid_; }
  Mailbox<WatchJs, ExitEvent, DeliverExit>& mailbox() { return mailbox_; }

  // Starts watching; false with errno set on failure (the caller throws).
  bool Start();
  void OnReady(unsigned ready) override;
  // 1 sent, 0 the process is gone, -1 error (errno).
  int Kill(int sig);

 private:
  void Reap();

  const pid_t pid_;
  Reactor* const reactor_;
  std::mutex mu_;
  Fd pidfd_;  // Linux: the process, pinned; kill() can never hit a reused pid
  uint64_t token_ = 0;
  bool exited_ = false;
  Mailbox<WatchJs, ExitEvent, DeliverExit> mailbox_;
};

ExitEvent* StatusEvent(int how, int status) {
  ExitEvent* ev = new ExitEvent();
  (how == CLD_EXITED ? ev->code : ev->signal) = status;
  return ev;
}

#if defined(__linux__)

bool WatchCore::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, pid_, 0)));
  if (!pidfd_.Valid()) return false;
  // Only our own children can be waited for; find out now rather than at exit. WNOWAIT leaves
  // the status in place for the real wait.
  siginfo_t si;
  memset(&si, 0, sizeof si);
  if (waitid(static_cast<idtype_t>(P_PIDFD), pidfd_.Get(), &si, WEXITED | WNOHANG | WNOWAIT) == 0) {
    token_ = reactor_->AddFd(pidfd_.Get(), kReadable, shared_from_this());
    if (token_ != 0) return true;
  }
  pidfd_.Reset();  // now, not when the thread-safe function is finalized (errno survives)
  return false;
}

// The pidfd is readable once the process has exited: then waitid on that pidfd alone, never
// on "any child", so Node's child_process children keep their statuses.
void WatchCore::Reap() {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  int r;
  do {
    r = waitid(static_cast<idtype_t>(P_PIDFD), pidfd_.Get(), &si, WEXITED | WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0 && si.si_pid == 0) return;  // not yet
  // XXX: r < 0 (ECHILD) means someone else reaped it; the status is lost, report nulls.
  std::unique_ptr<ExitEvent> ev(r == 0 ? StatusEvent(si.si_code, si.si_status) : new ExitEvent());
  exited_ = true;
  reactor_->Remove(token_, pidfd_.Get());
  pidfd_.Reset();
  mailbox_.Finish(std::move(ev));
}

int WatchCore::Kill(int sig) {
  std::lock_guard<std::mutex> lock(mu_);
  if (exited_) return 0;
  // A zombie still takes signals; a readable pidfd says it has exited already.
  pollfd pfd = {pidfd_.Get(), POLLIN, 0};
  if (poll(&pfd, 1, 0) == 1) return 0;
  if (syscall(SYS_pidfd_send_signal, pidfd_.Get(), sig, nullptr, 0) == 0) return 1;
  return errno == ESRCH ? 0 : -1;
}

#elif defined(__OpenBSD__)

bool WatchCore::Start() {
  // Ours alone: waitpid with WNOHANG on a pid that is not our child fails with ECHILD.
  int status;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  std::lock_guard<std::mutex> lock(mu_);
  if (r == pid_) {
    // Already gone (reaped just now): report it as soon as JS can take it.
    exited_ = true;
    std::unique_ptr<ExitEvent> ev(WIFEXITED(status) ? StatusEvent(CLD_EXITED, WEXITSTATUS(status))
                                                    : StatusEvent(CLD_KILLED, WTERMSIG(status)));
    mailbox_.Finish(std::move(ev));
    return true;
  }
  if (r < 0) return false;
  token_ = reactor_->AddProcess(pid_, shared_from_this());
  if (token_ != 0) return true;
  if (errno != ESRCH) return false;
  Reap();  // exited between waitpid and kevent: a zombie now
  return true;
}

void WatchCore::Reap() {
  int status;
  pid_t r;
  do {
    r = waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return;
  std::unique_ptr<ExitEvent> ev;
  if (r < 0) {
    ev.reset(new ExitEvent());
  } else if (WIFEXITED(status)) {
    ev.reset(StatusEvent(CLD_EXITED, WEXITSTATUS(status)));
  } else {
    ev.reset(StatusEvent(CLD_KILLED, WTERMSIG(status)));
  }
  exited_ = true;
  reactor_->Remove(token_, -1);
  mailbox_.Finish(std::move(ev));
}

int WatchCore::Kill(int sig) {
  std::lock_guard<std::mutex> lock(mu_);
  // Until we reap it, the pid stays ours (a zombie at worst), so kill(2) cannot hit another
  // process.
  if (exited_) return 0;
  if (kill(pid_, sig) == 0) return 1;
  return errno == ESRCH ? 0 : -1;
}

#endif

void WatchCore::OnReady(unsigned) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!exited_) Reap();
}

void DeliverExit(Napi::Env env, Napi::Function cb, WatchJs* js, ExitEvent* event) {
  std::unique_ptr<ExitEvent> ev(event);
  if (env == nullptr || js == nullptr) return;  // torn down with the environment
  RunJs(env, [&] {
    Napi::Object status = Napi::Object::New(env);
    status.Set("pid", Napi::Number::New(env, js->core->pid()));
    status.Set("code", ev->code >= 0 ? Napi::Number::New(env, ev->code) : env.Null());
    status.Set("signal",
               ev->signal > 0 ? Napi::String::New(env, SignalToName(ev->signal)) : env.Null());
    cb.Call({status});
  });
}

// The JS ProcessWatch object.
class Watch : public Napi::ObjectWrap<Watch> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "ProcessWatch",
        {InstanceAccessor<&Watch::Pid>("pid"), InstanceMethod<&Watch::KillJs>("kill"),
         InstanceMethod<&Watch::RefJs>("ref"), InstanceMethod<&Watch::UnrefJs>("unref")});
  }

  explicit Watch(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Watch>(info) {
    // Only the addon constructs these, passing the core through an External.
    if (info.Length() != 1 || !info[0].IsExternal()) {
      throw Napi::TypeError::New(info.Env(), "ProcessWatch cannot be constructed directly");
    }
    core_ = *info[0].As<Napi::External<std::shared_ptr<WatchCore>>>().Data();
  }

 private:
  Napi::Value Pid(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), core_->pid());
  }

  Napi::Value KillJs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int sig = SignalArgument(info.Length() > 0 ? info[0] : env.Undefined());
    if (sig < 0) ThrowUsage(env, kKillUsage);
    int r = core_->Kill(sig);
    if (r < 0) ThrowErrno(env, kKillSyscall, std::to_string(core_->pid()));
    return Napi::Boolean::New(env, r == 1);
  }

  Napi::Value RefJs(const Napi::CallbackInfo& info) {
    core_->mailbox().Ref(info.Env());
    return info.Env().Undefined();
  }

  Napi::Value UnrefJs(const Napi::CallbackInfo& info) {
    core_->mailbox().Unref(info.Env());
    return info.Env().Undefined();
  }

  std::shared_ptr<WatchCore> core_;
};

Napi::Value WatchExit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !IsInt(info[0], 1, INT32_MAX) || !info[1].IsFunction()) {
    ThrowUsage(env, kWatchUsage);
  }
  pid_t pid = static_cast<pid_t>(ToInt(info[0]));
  auto core = std::make_shared<WatchCore>(pid, &Reactor::Of(env));
  WatchJs* js = new WatchJs{core};
  auto tsfn = Mailbox<WatchJs, ExitEvent, DeliverExit>::Tsfn::New(
      env, info[1].As<Napi::Function>(), "vmd:watchExit", 0, 1, js,
      [](Napi::Env, void*, WatchJs* ctx) { delete ctx; });
  core->mailbox().Open(tsfn);
  if (!core->Start()) {
    int err = errno;
    core->mailbox().Finish();
#if defined(__linux__)
    const char* syscall = err == ECHILD ? "waitid" : "pidfd_open";
#else
    const char* syscall = "waitpid";
#endif
    ThrowErrno(env, syscall, std::to_string(pid), err);
  }
  return Data(env).watchClass.New({Napi::External<std::shared_ptr<WatchCore>>::New(env, &core)});
}

}  // namespace

void InitProcess(Napi::Env env, Napi::Object exports) {
  Data(env).watchClass = Napi::Persistent(Watch::Define(env));
  exports.Set("spawn", Napi::Function::New(env, Spawn, "spawn"));
  exports.Set("watchExit", Napi::Function::New(env, WatchExit, "watchExit"));
}

}  // namespace vmd
