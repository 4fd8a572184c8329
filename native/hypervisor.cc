// hypervisorInfo([pids]) lists every VM the host's hypervisor runs, whoever started it, or
// only those of the given processes; hypervisorTerminate(id) ends one. The daemon uses both to find and kill VMs that an earlier
// daemon left behind.
#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "addon.h"
#include "errors.h"
#include "fd.h"

#if defined(__linux__)
// proc(5): /proc/<pid>/fd, status (VmRSS), comm, cmdline; pidfd_open(2), pidfd_send_signal(2)
#include <dirent.h>
#include <sys/syscall.h>
#elif defined(__OpenBSD__)
// vmm(4): VMM_IOC_INFO, VMM_IOC_TERM on /dev/vmm
#include <dev/vmm/vmm.h>
#include <sys/ioctl.h>

#include <cstddef>
#endif

namespace vmd {

namespace {

constexpr const char* kInfoUsage = "hypervisorInfo(pids?: number[])";
constexpr const char* kTerminateUsage = "hypervisorTerminate(id: number)";

struct VmEntry {
  int64_t id = 0;
  int64_t pid = 0;
  int64_t vcpus = 0;
  double memoryBytes = 0;
  double residentBytes = 0;
  std::string name;
};

// The optional argument of hypervisorInfo: the processes whose VMs are wanted. False when
// every VM is wanted.
bool PidFilter(const Napi::CallbackInfo& info, std::vector<int64_t>* pids) {
  Napi::Env env = info.Env();
  if (info.Length() > 1) ThrowUsage(env, kInfoUsage);
  if (info.Length() == 0 || info[0].IsUndefined()) return false;
  if (!info[0].IsArray()) ThrowUsage(env, kInfoUsage);
  Napi::Array list = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value pid = list.Get(i);
    if (!IsInt(pid, 1, INT32_MAX)) ThrowUsage(env, kInfoUsage);
    pids->push_back(ToInt(pid));
  }
  return true;
}

Napi::Array VmArray(Napi::Env env, const std::vector<VmEntry>& vms) {
  Napi::Array out = Napi::Array::New(env, vms.size());
  for (uint32_t i = 0; i < vms.size(); i++) {
    Napi::Object vm = Napi::Object::New(env);
    vm.Set("id", Napi::Number::New(env, static_cast<double>(vms[i].id)));
    vm.Set("pid", Napi::Number::New(env, static_cast<double>(vms[i].pid)));
    vm.Set("vcpus", Napi::Number::New(env, static_cast<double>(vms[i].vcpus)));
    vm.Set("memoryBytes", Napi::Number::New(env, vms[i].memoryBytes));
    vm.Set("residentBytes", Napi::Number::New(env, vms[i].residentBytes));
    vm.Set("name", Napi::String::New(env, vms[i].name));
    out.Set(i, vm);
  }
  return out;
}

#if defined(__linux__)

// A KVM VM shows up in its process as a descriptor on the anon inode "kvm-vm", each vCPU as
// one on "kvm-vcpu:N". A TCG QEMU has neither.
constexpr const char kVmLink[] = "anon_inode:kvm-vm";
constexpr const char kVcpuLink[] = "anon_inode:kvm-vcpu:";
constexpr size_t kMaxProcFile = 1 << 20;

struct DirCloser {
  DIR* dir;
  ~DirCloser() {
    if (dir != nullptr) closedir(dir);
  }
};

struct KvmFds {
  int vms = 0;
  int vcpus = 0;
};

// Counts the KVM descriptors of a process; false if it vanished or hides them from us.
bool ScanKvmFds(int proc, const std::string& pid, KvmFds* out) {
  int dfd = openat(proc, (pid + "/fd").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return false;
  DirCloser d{fdopendir(dfd)};
  if (d.dir == nullptr) {
    close(dfd);
    return false;
  }
  while (dirent* ent = readdir(d.dir)) {
    if (ent->d_name[0] == '.') continue;
    char link[64];
    ssize_t n = readlinkat(dirfd(d.dir), ent->d_name, link, sizeof link - 1);
    if (n <= 0) continue;
    link[n] = '\0';
    if (strcmp(link, kVmLink) == 0) {
      out->vms++;
    } else if (strncmp(link, kVcpuLink, sizeof kVcpuLink - 1) == 0) {
      out->vcpus++;
    }
  }
  return true;
}

bool ReadProcFile(int proc, const std::string& rel, std::string* out) {
  Fd fd(openat(proc, rel.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.Valid()) return false;
  out->clear();
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd.Get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0 || out->size() > kMaxProcFile) return true;
    out->append(buf, static_cast<size_t>(n));
  }
}

// VmRSS from /proc/<pid>/status, in bytes; -1 if the process is gone.
double ResidentBytes(int proc, const std::string& pid) {
  std::string status;
  if (!ReadProcFile(proc, pid + "/status", &status)) return -1;
  size_t at = status.find("\nVmRSS:");
  if (at == std::string::npos) return 0;
  return std::strtod(status.c_str() + at + 7, nullptr) * 1024;  // "VmRSS:   68000 kB"
}

// A QEMU size: a number, optionally fractional, and a binary suffix; no suffix means MiB
// (QEMU's default unit for -m). 0 when it does not parse.
double ParseQemuSize(const std::string& s) {
  const char* start = s.c_str();
  char* end = nullptr;
  double n = std::strtod(start, &end);
  if (end == start || n < 0) return 0;
  std::string suffix(end);
  const char* units = "BKMGTPE";
  if (suffix.empty()) return n * 1024 * 1024;
  if (suffix.size() != 1) return 0;
  const char* unit = strchr(units, toupper(static_cast<unsigned char>(suffix[0])));
  if (unit == nullptr) return 0;
  for (const char* u = units; u < unit; u++) n *= 1024;
  return n;
}

// The guest memory of "-m 256", "-m 256M", "-m size=256M,slots=2,maxmem=1G"; the last -m
// wins, as in QEMU.
double QemuMemoryBytes(const std::vector<std::string>& argv) {
  double bytes = 0;
  for (size_t i = 1; i + 1 < argv.size(); i++) {
    if (argv[i] != "-m" && argv[i] != "--m") continue;
    const std::string& value = argv[i + 1];
    size_t start = 0;
    for (bool first = true;; first = false) {
      size_t comma = value.find(',', start);
      std::string part = value.substr(start, comma == std::string::npos ? comma : comma - start);
      if (part.compare(0, 5, "size=") == 0) {
        bytes = ParseQemuSize(part.substr(5));
      } else if (first && part.find('=') == std::string::npos) {
        bytes = ParseQemuSize(part);
      }
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  return bytes;
}

double GuestMemoryBytes(int proc, const std::string& pid) {
  std::string cmdline;
  if (!ReadProcFile(proc, pid + "/cmdline", &cmdline)) return 0;
  std::vector<std::string> argv;
  for (size_t start = 0; start < cmdline.size();) {
    size_t end = cmdline.find('\0', start);
    if (end == std::string::npos) end = cmdline.size();
    argv.push_back(cmdline.substr(start, end - start));
    start = end + 1;
  }
  if (argv.empty()) return 0;
  size_t slash = argv[0].rfind('/');
  std::string base = slash == std::string::npos ? argv[0] : argv[0].substr(slash + 1);
  return base.compare(0, 4, "qemu") == 0 ? QemuMemoryBytes(argv) : 0;
}

bool IsPidName(const char* name) {
  if (*name == '\0') return false;
  for (const char* c = name; *c; c++) {
    if (*c < '0' || *c > '9') return false;
  }
  return true;
}

// Adds the VMs of one process; processes that vanish or deny access are skipped.
void AddProcessVms(int proc, const std::string& pid, std::vector<VmEntry>* vms) {
  KvmFds kvm;
  if (!ScanKvmFds(proc, pid, &kvm) || kvm.vms == 0) return;
  double resident = ResidentBytes(proc, pid);
  std::string comm;
  if (resident < 0 || !ReadProcFile(proc, pid + "/comm", &comm)) return;
  if (!comm.empty() && comm.back() == '\n') comm.pop_back();
  double memory = GuestMemoryBytes(proc, pid);
  // XXX: a process with several VMs gets one entry per VM, each with all its vCPUs: /proc
  // does not say which vCPU belongs to which VM. QEMU has exactly one.
  for (int i = 0; i < kvm.vms; i++) {
    VmEntry vm;
    vm.id = vm.pid = std::atoll(pid.c_str());
    vm.vcpus = kvm.vcpus;
    vm.memoryBytes = memory;
    vm.residentBytes = resident;
    vm.name = comm;
    vms->push_back(vm);
  }
}

Fd OpenProc(Napi::Env env) {
  Fd proc(open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!proc.Valid()) ThrowErrno(env, "open", "/proc", errno, "/proc");
  return proc;
}

Napi::Value HypervisorInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<int64_t> pids;
  bool filtered = PidFilter(info, &pids);
  Fd proc = OpenProc(env);
  std::vector<VmEntry> vms;
  // Listing the VMs of given processes reads only theirs: a scan of /proc reads the
  // descriptor table of every process on the host.
  if (filtered) {
    for (int64_t pid : pids) AddProcessVms(proc.Get(), std::to_string(pid), &vms);
    return VmArray(env, vms);
  }
  int scan = dup(proc.Get());
  if (scan < 0) ThrowErrno(env, "dup", "/proc");
  DirCloser d{fdopendir(scan)};
  if (d.dir == nullptr) {
    close(scan);
    ThrowErrno(env, "opendir", "/proc", errno, "/proc");
  }
  while (dirent* ent = readdir(d.dir)) {
    if (IsPidName(ent->d_name)) AddProcessVms(proc.Get(), ent->d_name, &vms);
  }
  return VmArray(env, vms);
}

// Kills the VM process id through a pidfd, after checking that the process the pidfd pins
// still holds a KVM VM: if the pid was reused by something else, the check fails; if the VM
// exits after the check, the pidfd refuses to signal whatever reuses the pid.
Napi::Value HypervisorTerminate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !IsInt(info[0], 1, INT32_MAX)) ThrowUsage(env, kTerminateUsage);
  std::string pid = std::to_string(ToInt(info[0]));
  Fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, static_cast<pid_t>(ToInt(info[0])), 0)));
  if (!pidfd.Valid()) ThrowErrno(env, "pidfd_open", pid);
  Fd proc = OpenProc(env);
  KvmFds kvm;
  if (!ScanKvmFds(proc.Get(), pid, &kvm) || kvm.vms == 0) {
    ThrowErrno(env, "pidfd_send_signal", pid + " (no KVM VM)", ESRCH);
  }
  if (syscall(SYS_pidfd_send_signal, pidfd.Get(), SIGKILL, nullptr, 0) < 0) {
    ThrowErrno(env, "pidfd_send_signal", pid);
  }
  return env.Undefined();
}

#elif defined(__OpenBSD__)

// The ABI this file was written against (OpenBSD 7.6-7.8 on LP64; see the reference notes):
// if the header ever changes shape, the build stops here rather than misreading the kernel.
#if defined(__LP64__)
static_assert(sizeof(struct vm_info_result) == 160, "vm_info_result size");
static_assert(offsetof(struct vm_info_result, vir_memory_size) == 0, "vir_memory_size");
static_assert(offsetof(struct vm_info_result, vir_used_size) == 8, "vir_used_size");
static_assert(offsetof(struct vm_info_result, vir_ncpus) == 16, "vir_ncpus");
static_assert(offsetof(struct vm_info_result, vir_vcpu_state) == 24, "vir_vcpu_state");
static_assert(offsetof(struct vm_info_result, vir_creator_pid) == 88, "vir_creator_pid");
static_assert(offsetof(struct vm_info_result, vir_id) == 92, "vir_id");
static_assert(offsetof(struct vm_info_result, vir_name) == 96, "vir_name");
static_assert(sizeof(struct vm_info_params) == 24, "vm_info_params size");
static_assert(offsetof(struct vm_info_params, vip_size) == 0, "vip_size");
static_assert(offsetof(struct vm_info_params, vip_info_ct) == 8, "vip_info_ct");
static_assert(offsetof(struct vm_info_params, vip_info) == 16, "vip_info");
static_assert(sizeof(struct vm_terminate_params) == 4, "vm_terminate_params size");
static_assert(offsetof(struct vm_terminate_params, vtp_vm_id) == 0, "vtp_vm_id");
static_assert(static_cast<unsigned long>(VMM_IOC_INFO) == 0xc0185603UL, "VMM_IOC_INFO");
static_assert(static_cast<unsigned long>(VMM_IOC_TERM) == 0x80045604UL, "VMM_IOC_TERM");
#endif

constexpr int kInfoAttempts = 4;

Fd OpenVmm(Napi::Env env) {
  Fd fd(open("/dev/vmm", O_RDWR | O_CLOEXEC));
  if (!fd.Valid()) ThrowErrno(env, "open", "/dev/vmm", errno, "/dev/vmm");
  return fd;
}

// VMM_IOC_INFO's two calls, as vmd makes them: the first with no room (vip_size 0) returns
// the room needed, and must not claim entries; the second fills the buffer. A VM created in
// between makes the second call ask for more room again (count 0), so then we start over;
// one that went away leaves fewer entries than room, so the count is bounded by vip_info_ct.
std::vector<vm_info_result> QueryVms(Napi::Env env, int fd) {
  for (int attempt = 0; attempt < kInfoAttempts; attempt++) {
    vm_info_params vip;
    memset(&vip, 0, sizeof vip);
    if (ioctl(fd, VMM_IOC_INFO, &vip) < 0) ThrowErrno(env, "ioctl", "VMM_IOC_INFO");
    if (vip.vip_info_ct != 0) ThrowErrno(env, "ioctl", "VMM_IOC_INFO", EIO);
    size_t room = vip.vip_size / sizeof(vm_info_result);
    std::vector<vm_info_result> vms(room);
    if (room == 0) return vms;
    vip.vip_size = room * sizeof(vm_info_result);
    vip.vip_info = vms.data();
    if (ioctl(fd, VMM_IOC_INFO, &vip) < 0) ThrowErrno(env, "ioctl", "VMM_IOC_INFO");
    size_t count = vip.vip_size / sizeof(vm_info_result);
    if (vip.vip_info_ct == 0 && count > room) continue;
    if (count > vip.vip_info_ct) count = vip.vip_info_ct;
    vms.resize(count < room ? count : room);
    return vms;
  }
  ThrowErrno(env, "ioctl", "VMM_IOC_INFO", EAGAIN);
}

Napi::Value HypervisorInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<int64_t> pids;
  bool filtered = PidFilter(info, &pids);
  Fd fd = OpenVmm(env);
  std::vector<VmEntry> vms;
  for (const vm_info_result& vir : QueryVms(env, fd.Get())) {
    if (filtered && std::find(pids.begin(), pids.end(), vir.vir_creator_pid) == pids.end()) {
      continue;
    }
    VmEntry vm;
    vm.id = vir.vir_id;
    vm.pid = vir.vir_creator_pid;
    vm.vcpus = static_cast<int64_t>(vir.vir_ncpus);
    vm.memoryBytes = static_cast<double>(vir.vir_memory_size);
    vm.residentBytes = static_cast<double>(vir.vir_used_size);
    vm.name.assign(vir.vir_name, strnlen(vir.vir_name, sizeof vir.vir_name));
    vms.push_back(vm);
  }
  return VmArray(env, vms);
}

Napi::Value HypervisorTerminate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !IsInt(info[0], 1, UINT32_MAX)) ThrowUsage(env, kTerminateUsage);
  Fd fd = OpenVmm(env);
  vm_terminate_params vtp;
  memset(&vtp, 0, sizeof vtp);
  vtp.vtp_vm_id = static_cast<uint32_t>(ToInt(info[0]));
  if (ioctl(fd.Get(), VMM_IOC_TERM, &vtp) < 0) ThrowErrno(env, "ioctl", "VMM_IOC_TERM");
  return env.Undefined();
}

#endif

}  // namespace

void InitHypervisor(Napi::Env env, Napi::Object exports) {
  exports.Set("hypervisorInfo", Napi::Function::New(env, HypervisorInfo, "hypervisorInfo"));
  exports.Set("hypervisorTerminate",
              Napi::Function::New(env, HypervisorTerminate, "hypervisorTerminate"));
}

}  // namespace vmd
