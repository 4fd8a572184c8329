// openTap(name): a tap device the caller owns through its descriptor; the device goes away
// when the last copy of that descriptor is closed.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "addon.h"
#include "errors.h"
#include "fd.h"

#if defined(__linux__)
// tuntap: Documentation/networking/tuntap.rst (TUNSETIFF), netdevice(7)
#include <linux/if_tun.h>
#include <net/if.h>
#elif defined(__OpenBSD__)
// tap(4): /dev/tapN, one open per device (EBUSY while open)
#include <net/if.h>
#endif

namespace vmd {

namespace {

constexpr const char* kTapUsage =
    "openTap(name: string ('' for any, may hold %d on Linux; tapN or '' on OpenBSD, "
    "shorter than 16 bytes))";

Napi::Object TapResult(Napi::Env env, Fd& fd, const std::string& name) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd.Release()));
  out.Set("name", Napi::String::New(env, name));
  return out;
}

#if defined(__linux__)

Napi::Object OpenTapNamed(Napi::Env env, const std::string& name) {
  Fd fd(open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!fd.Valid()) ThrowErrno(env, "open", "/dev/net/tun", errno, "/dev/net/tun");
  ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  memcpy(ifr.ifr_name, name.c_str(), name.size());  // the kernel picks a name for ''
  if (ioctl(fd.Get(), TUNSETIFF, &ifr) < 0) {
    ThrowErrno(env, "ioctl", "TUNSETIFF " + (name.empty() ? std::string("''") : name));
  }
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  return TapResult(env, fd, ifr.ifr_name);
}

#elif defined(__OpenBSD__)

bool IsTapUnit(const std::string& name) {
  if (name.size() < 4 || name.compare(0, 3, "tap") != 0) return false;
  return name.find_first_not_of("0123456789", 3) == std::string::npos;
}

constexpr int kMaxTap = 256;  // vmd tries /dev/tap0 to /dev/tap255

// Like vmd's opentap(): the first /dev/tapN that is not busy. EBUSY means taken, try the
// next; ENOENT means there are no more device nodes; anything else is unexpected and stops.
Napi::Object OpenTapNamed(Napi::Env env, const std::string& name) {
  int flags = O_RDWR | O_NONBLOCK | O_CLOEXEC;
  if (IsTapUnit(name)) {
    std::string path = "/dev/" + name;
    Fd fd(open(path.c_str(), flags));
    if (!fd.Valid()) ThrowErrno(env, "open", path, errno, path);
    return TapResult(env, fd, name);
  }
  std::string path;
  int err = ENOENT;
  for (int unit = 0; unit < kMaxTap; unit++) {
    path = "/dev/tap" + std::to_string(unit);
    Fd fd(open(path.c_str(), flags));
    if (fd.Valid()) return TapResult(env, fd, "tap" + std::to_string(unit));
    err = errno;
    if (err != EBUSY) break;
  }
  ThrowErrno(env, "open", path, err, path);
}

#endif

Napi::Value OpenTap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) ThrowUsage(env, kTapUsage);
  std::string name = info[0].As<Napi::String>();
  if (name.size() >= IFNAMSIZ || name.find('\0') != std::string::npos) ThrowUsage(env, kTapUsage);
  return OpenTapNamed(env, name);
}

}  // namespace

void InitTap(Napi::Env env, Napi::Object exports) {
  exports.Set("openTap", Napi::Function::New(env, OpenTap, "openTap"));
}

}  // namespace vmd
