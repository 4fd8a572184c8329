// openPty(): a pseudo-terminal for a VM's serial console, the slave in raw mode so that the
// guest's bytes pass unchanged (no echo, no CR/LF translation).
#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <string>

#include "addon.h"
#include "errors.h"
#include "fd.h"

#if defined(__linux__)
// openpty(3) (libc since glibc 2.34, libutil before), cfmakeraw(3), ttyname_r(3)
#include <pty.h>
#elif defined(__OpenBSD__)
// openpty(3) in libutil, cfmakeraw(3), ttyname_r(3)
#include <util.h>
#endif

namespace vmd {

namespace {

constexpr const char* kPtyUsage = "openPty()";

bool SetFdFlag(int fd, int flag) {
  int fl = fcntl(fd, F_GETFD);
  return fl >= 0 && fcntl(fd, F_SETFD, fl | flag) == 0;
}

bool SetStatusFlag(int fd, int flag) {
  int fl = fcntl(fd, F_GETFL);
  return fl >= 0 && fcntl(fd, F_SETFL, fl | flag) == 0;
}

Napi::Value OpenPty(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() > 0) ThrowUsage(env, kPtyUsage);
  int m, s;
  // openpty(3) has no close-on-exec flag. The window until FD_CLOEXEC is set is harmless
  // here: children are only started from this (the JS) thread, and not meanwhile.
  if (openpty(&m, &s, nullptr, nullptr, nullptr) < 0) ThrowErrno(env, "openpty");
  Fd master(m), slave(s);
  if (!SetFdFlag(m, FD_CLOEXEC) || !SetFdFlag(s, FD_CLOEXEC)) {
    ThrowErrno(env, "fcntl", "FD_CLOEXEC");
  }
  if (!SetStatusFlag(m, O_NONBLOCK)) ThrowErrno(env, "fcntl", "O_NONBLOCK");
  termios tio;
  if (tcgetattr(s, &tio) < 0) ThrowErrno(env, "tcgetattr");
  cfmakeraw(&tio);
  if (tcsetattr(s, TCSANOW, &tio) < 0) ThrowErrno(env, "tcsetattr");
  char path[PATH_MAX];
  int err = ttyname_r(s, path, sizeof path);
  if (err != 0) ThrowErrno(env, "ttyname_r", "", err);
  Napi::Object out = Napi::Object::New(env);
  out.Set("master", Napi::Number::New(env, master.Release()));
  out.Set("slave", Napi::Number::New(env, slave.Release()));
  out.Set("path", Napi::String::New(env, path));
  return out;
}

}  // namespace

void InitPty(Napi::Env env, Napi::Object exports) {
  exports.Set("openPty", Napi::Function::New(env, OpenPty, "openPty"));
}

}  // namespace vmd
