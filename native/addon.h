// What the addon's files share: per-environment data, the registration functions, and small
// argument checks.
#pragma once

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>

#include "reactor.h"

namespace vmd {

// Per-environment state (the main thread, or a worker that loads the addon).
struct AddonData {
  Napi::FunctionReference watchClass;
  Napi::FunctionReference channelClass;
  Napi::FunctionReference serverClass;
  std::unique_ptr<Reactor> reactor;  // started on first use
};

inline AddonData& Data(Napi::Env env) {
  return *env.GetInstanceData<AddonData>();
}

// Each adds its functions to exports (and its classes to AddonData).
void InitProcess(Napi::Env env, Napi::Object exports);
void InitChannel(Napi::Env env, Napi::Object exports);
void InitTap(Napi::Env env, Napi::Object exports);
void InitPty(Napi::Env env, Napi::Object exports);
void InitHypervisor(Napi::Env env, Napi::Object exports);

// True when v is an integer number within [lo, hi].
inline bool IsInt(const Napi::Value& v, int64_t lo, int64_t hi) {
  if (!v.IsNumber()) return false;
  double d = v.As<Napi::Number>().DoubleValue();
  return std::isfinite(d) && std::floor(d) == d && d >= static_cast<double>(lo) &&
         d <= static_cast<double>(hi);
}

// A descriptor number argument: an integer in [0, INT32_MAX].
inline bool IsFdValue(const Napi::Value& v) {
  return IsInt(v, 0, INT32_MAX);
}

inline int64_t ToInt(const Napi::Value& v) {
  return static_cast<int64_t>(v.As<Napi::Number>().DoubleValue());
}

// A property of an options object; undefined when opts is undefined or lacks it.
inline Napi::Value Option(const Napi::Value& opts, const char* name) {
  if (!opts.IsObject()) return opts.Env().Undefined();
  return opts.As<Napi::Object>().Get(name);
}

}  // namespace vmd
