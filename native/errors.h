// Errors shaped like Node's own system errors, so that callers can test err.code the same way
// for fs, net and this addon: code ('ENOENT'), errno (positive, as in os.constants.errno),
// syscall, an optional path, and a message "<syscall> [detail]: <strerror>".
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace vmd {

struct ErrnoEntry {
  int number;
  const char* name;
};

#define VMD_ERRNO(name) \
  ErrnoEntry {          \
    name, #name         \
  }

// The errno values worth naming; EAGAIN, EDEADLK and EOPNOTSUPP stand for their aliases.
constexpr ErrnoEntry kErrnoNames[] = {
    VMD_ERRNO(EPERM),           VMD_ERRNO(ENOENT),        VMD_ERRNO(ESRCH),
    VMD_ERRNO(EINTR),           VMD_ERRNO(EIO),           VMD_ERRNO(ENXIO),
    VMD_ERRNO(E2BIG),           VMD_ERRNO(ENOEXEC),       VMD_ERRNO(EBADF),
    VMD_ERRNO(ECHILD),          VMD_ERRNO(EAGAIN),        VMD_ERRNO(ENOMEM),
    VMD_ERRNO(EACCES),          VMD_ERRNO(EFAULT),        VMD_ERRNO(EBUSY),
    VMD_ERRNO(EEXIST),          VMD_ERRNO(EXDEV),         VMD_ERRNO(ENODEV),
    VMD_ERRNO(ENOTDIR),         VMD_ERRNO(EISDIR),        VMD_ERRNO(EINVAL),
    VMD_ERRNO(ENFILE),          VMD_ERRNO(EMFILE),        VMD_ERRNO(ENOTTY),
    VMD_ERRNO(ETXTBSY),         VMD_ERRNO(EFBIG),         VMD_ERRNO(ENOSPC),
    VMD_ERRNO(ESPIPE),          VMD_ERRNO(EROFS),         VMD_ERRNO(EMLINK),
    VMD_ERRNO(EPIPE),           VMD_ERRNO(EDOM),          VMD_ERRNO(ERANGE),
    VMD_ERRNO(EDEADLK),         VMD_ERRNO(ENAMETOOLONG),  VMD_ERRNO(ENOLCK),
    VMD_ERRNO(ENOSYS),          VMD_ERRNO(ENOTEMPTY),     VMD_ERRNO(ELOOP),
    VMD_ERRNO(ENOMSG),          VMD_ERRNO(EPROTO),        VMD_ERRNO(EOVERFLOW),
    VMD_ERRNO(EILSEQ),          VMD_ERRNO(ENOTSOCK),      VMD_ERRNO(EDESTADDRREQ),
    VMD_ERRNO(EMSGSIZE),        VMD_ERRNO(EPROTOTYPE),    VMD_ERRNO(ENOPROTOOPT),
    VMD_ERRNO(EPROTONOSUPPORT), VMD_ERRNO(EOPNOTSUPP),    VMD_ERRNO(EAFNOSUPPORT),
    VMD_ERRNO(EADDRINUSE),      VMD_ERRNO(EADDRNOTAVAIL), VMD_ERRNO(ENETDOWN),
    VMD_ERRNO(ENETUNREACH),     VMD_ERRNO(ECONNABORTED),  VMD_ERRNO(ECONNRESET),
    VMD_ERRNO(ENOBUFS),         VMD_ERRNO(EISCONN),       VMD_ERRNO(ENOTCONN),
    VMD_ERRNO(ETIMEDOUT),       VMD_ERRNO(ECONNREFUSED),  VMD_ERRNO(EHOSTUNREACH),
    VMD_ERRNO(EALREADY),        VMD_ERRNO(EINPROGRESS),   VMD_ERRNO(ETOOMANYREFS),
    VMD_ERRNO(ECANCELED),       VMD_ERRNO(ESHUTDOWN),
#if defined(EOWNERDEAD)
    VMD_ERRNO(EOWNERDEAD),
#endif
#if defined(EDQUOT)
    VMD_ERRNO(EDQUOT),
#endif
};

#undef VMD_ERRNO

// The symbolic name of an errno value ("ENOENT"), or "E<number>" for one we do not know.
inline std::string ErrnoName(int err) {
  for (const ErrnoEntry& e : kErrnoNames) {
    if (e.number == err) return e.name;
  }
  return "E" + std::to_string(err);
}

// A Node-style system error. detail (e.g. a path or an ioctl name) goes between the syscall
// and the reason; path, when given, also becomes err.path.
inline Napi::Error SystemError(Napi::Env env, int err, const std::string& syscall,
                               const std::string& detail = "", const std::string& path = "") {
  std::string message = syscall;
  if (!detail.empty()) message += " " + detail;
  message += ": ";
  message += std::strerror(err);
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, ErrnoName(err)));
  error.Set("errno", Napi::Number::New(env, err));
  error.Set("syscall", Napi::String::New(env, syscall));
  if (!path.empty()) error.Set("path", Napi::String::New(env, path));
  return error;
}

// Throws SystemError for the current errno (or for err); never returns.
[[noreturn]] inline void ThrowErrno(Napi::Env env, const std::string& syscall,
                                    const std::string& detail = "", int err = errno,
                                    const std::string& path = "") {
  throw SystemError(env, err, syscall, detail, path);
}

// Every exported function checks its arguments first and throws one usage message.
[[noreturn]] inline void ThrowUsage(Napi::Env env, const char* usage) {
  throw Napi::TypeError::New(env, std::string("usage: ") + usage);
}

}  // namespace vmd
