// The reactor: one thread per Node environment that waits on every descriptor the addon
// watches (pidfds, channel sockets, listening sockets) and hands what happened to JS through
// thread-safe functions.
//
// Why a thread and not libuv: uv_poll_t would put these descriptors on Node's own loop, but
// uv.h is not part of node-api-headers, so cmake-js's Node-API build (which has no node
// headers) could not include it, and the addon would be tied to libuv's ABI instead of
// Node-API's. One thread for all objects keeps the cost flat: hundreds of VMs mean hundreds of
// registrations, not hundreds of threads.
#pragma once

#include <napi.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "fd.h"

namespace vmd {

// The system call behind AddFd/SetInterest, for error messages.
#if defined(__linux__)
constexpr const char* kReactorSyscall = "epoll_ctl";
#else
constexpr const char* kReactorSyscall = "kevent";
#endif

// What a source is told when it is ready; kClosed stands for a hangup or an error condition.
enum Ready : unsigned { kReadable = 1u, kWritable = 2u, kClosed = 4u };

// Something the reactor watches. OnReady runs on the reactor thread; the source locks its own
// state, since JS may act on it at the same time.
class Source {
 public:
  virtual ~Source() = default;
  virtual void OnReady(unsigned ready) = 0;
};

class Reactor {
 public:
  // The environment's reactor, started on first use; throws if it cannot be started.
  static Reactor& Of(Napi::Env env);

  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;
  ~Reactor();

  // Watches fd for the interest (kReadable|kWritable); returns a token, or 0 with errno set.
  // Tokens are never reused, so a stale event for a closed and reused fd number is ignored.
  uint64_t AddFd(int fd, unsigned interest, std::shared_ptr<Source> source);
  // Changes what fd is watched for; false with errno set on failure.
  bool SetInterest(uint64_t token, int fd, unsigned interest);
  // Stops watching; call it before closing fd. Safe from any thread, idempotent.
  void Remove(uint64_t token, int fd);
#if defined(__OpenBSD__)
  // Watches a child for its exit (kqueue EVFILT_PROC); 0 with errno set on failure.
  uint64_t AddProcess(pid_t pid, std::shared_ptr<Source> source);
#endif

  // Ends the thread and drops every source; used by the environment's cleanup hook.
  void Stop();

 private:
  Reactor() = default;
  bool Start();
  bool StartThread();
  void Run();
  bool Wake();
  void Dispatch(uint64_t token, unsigned ready);
  uint64_t Register(std::shared_ptr<Source> source);
  void Unregister(uint64_t token);

  Fd queue_;      // epoll or kqueue descriptor
  Fd wakeRead_;   // Linux: an eventfd, written to as well; OpenBSD: a pipe's read end
  Fd wakeWrite_;  // OpenBSD: the pipe's write end
  std::mutex mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Source>> sources_;
  uint64_t nextToken_ = 1;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
};

// Carries events from the reactor thread to JS for one object, through one thread-safe
// function (so that each object can be ref'd and unref'd on its own). After Finish() nothing
// is posted again: the function may be gone by then.
template <typename Context, typename Event,
          void (*CallJs)(Napi::Env, Napi::Function, Context*, Event*)>
class Mailbox {
 public:
  using Tsfn = Napi::TypedThreadSafeFunction<Context, Event, CallJs>;

  void Open(Tsfn tsfn) {
    std::lock_guard<std::mutex> lock(mu_);
    tsfn_ = tsfn;
    live_ = true;
  }

  // Queues ev for JS. False when the mailbox is finished; ev is then destroyed here, which
  // closes any descriptor it carries.
  bool Post(std::unique_ptr<Event> ev) {
    std::lock_guard<std::mutex> lock(mu_);
    return PostLocked(std::move(ev));
  }

  // Posts the last event (if any) and releases the function, so the loop may end.
  void Finish(std::unique_ptr<Event> last = nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    if (last) PostLocked(std::move(last));
    if (live_) tsfn_.Release();
    live_ = false;
  }

  // Both only on the JS thread.
  void Ref(Napi::Env env) {
    std::lock_guard<std::mutex> lock(mu_);
    if (live_) tsfn_.Ref(env);
  }
  void Unref(Napi::Env env) {
    std::lock_guard<std::mutex> lock(mu_);
    if (live_) tsfn_.Unref(env);
  }

 private:
  bool PostLocked(std::unique_ptr<Event> ev) {
    if (!live_) return false;
    napi_status status = tsfn_.NonBlockingCall(ev.get());
    if (status == napi_ok) {
      ev.release();
      return true;
    }
    // napi_closing: the environment is being torn down, and the failed call has already
    // dropped our reference to the function.
    if (status == napi_closing) live_ = false;
    return false;
  }

  std::mutex mu_;
  Tsfn tsfn_;
  bool live_ = false;
};

// Runs the JS side of a delivery. Nothing may escape it: Node-API would rethrow a C++
// exception it cannot turn into a JS one (as when the environment is shutting down) and end
// the process. A JS callback's exception becomes an uncaught exception, as it would from any
// other event, instead of the warning Node-API emits for modules older than version 10.
template <typename Body>
void RunJs(Napi::Env env, Body body) {
  try {
    body();
  } catch (const Napi::Error& err) {
    if (!err.IsEmpty()) napi_fatal_exception(env, err.Value());
  } catch (const std::exception&) {
    // e.g. bad_alloc while building the arguments: the event is dropped
  }
}

}  // namespace vmd
