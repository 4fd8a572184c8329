// The reactor thread: epoll on Linux, kqueue on OpenBSD. See reactor.h for why it exists.
#include "reactor.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "addon.h"
#include "errors.h"

#if defined(__linux__)
// epoll_create1(2), epoll_ctl(2), epoll_wait(2), eventfd(2)
#include <sys/epoll.h>
#include <sys/eventfd.h>
#elif defined(__OpenBSD__)
// kqueue(2), kevent(2), pipe2(2)
#include <sys/event.h>
#include <sys/time.h>
#endif

namespace vmd {

namespace {

// The token of the wake-up descriptor; real sources start at 1.
constexpr uint64_t kWakeToken = 0;
constexpr int kBatch = 64;

}  // namespace

Reactor& Reactor::Of(Napi::Env env) {
  AddonData& data = Data(env);
  if (!data.reactor) {
    std::unique_ptr<Reactor> reactor(new Reactor());
    if (!reactor->Start()) ThrowErrno(env, "reactor", "(cannot start the event thread)");
    data.reactor = std::move(reactor);
  }
  return *data.reactor;
}

Reactor::~Reactor() {
  Stop();
}

uint64_t Reactor::Register(std::shared_ptr<Source> source) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t token = nextToken_++;
  sources_.emplace(token, std::move(source));
  return token;
}

void Reactor::Unregister(uint64_t token) {
  std::shared_ptr<Source> doomed;  // destroyed after the lock is dropped
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sources_.find(token);
  if (it == sources_.end()) return;
  doomed = std::move(it->second);
  sources_.erase(it);
}

// Looks the token up under the lock, but runs the source outside it: a source may remove
// itself (or another) while it runs. The shared_ptr keeps it alive until it returns.
void Reactor::Dispatch(uint64_t token, unsigned ready) {
  std::shared_ptr<Source> source;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sources_.find(token);
    if (it == sources_.end()) return;
    source = it->second;
  }
  source->OnReady(ready);
}

void Reactor::Stop() {
  if (thread_.joinable()) {
    stopping_ = true;
    Wake();
    thread_.join();
  }
  std::unordered_map<uint64_t, std::shared_ptr<Source>> doomed;
  std::lock_guard<std::mutex> lock(mu_);
  doomed.swap(sources_);
}

// Starts the event thread with every signal blocked; the thread inherits the mask, so
// signals stay with Node's own threads.
bool Reactor::StartThread() {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  try {
    thread_ = std::thread([this] { Run(); });
  } catch (const std::system_error& err) {
    errno = err.code().value();
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return thread_.joinable();
}

#if defined(__linux__)

bool Reactor::Start() {
  queue_.Reset(epoll_create1(EPOLL_CLOEXEC));
  if (!queue_.Valid()) return false;
  wakeRead_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wakeRead_.Valid()) return false;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeToken;
  if (epoll_ctl(queue_.Get(), EPOLL_CTL_ADD, wakeRead_.Get(), &ev) != 0) return false;
  return StartThread();
}

bool Reactor::Wake() {
  uint64_t one = 1;
  return write(wakeRead_.Get(), &one, sizeof one) == sizeof one;
}

static uint32_t EpollEvents(unsigned interest) {
  uint32_t events = 0;
  if (interest & kReadable) events |= EPOLLIN;
  if (interest & kWritable) events |= EPOLLOUT;
  return events;
}

uint64_t Reactor::AddFd(int fd, unsigned interest, std::shared_ptr<Source> source) {
  if (stopping_) {
    errno = ESHUTDOWN;
    return 0;
  }
  uint64_t token = Register(std::move(source));
  epoll_event ev{};
  ev.events = EpollEvents(interest);
  ev.data.u64 = token;
  if (epoll_ctl(queue_.Get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    int err = errno;
    Unregister(token);
    errno = err;
    return 0;
  }
  return token;
}

bool Reactor::SetInterest(uint64_t token, int fd, unsigned interest) {
  epoll_event ev{};
  ev.events = EpollEvents(interest);
  ev.data.u64 = token;
  return epoll_ctl(queue_.Get(), EPOLL_CTL_MOD, fd, &ev) == 0;
}

void Reactor::Remove(uint64_t token, int fd) {
  // Explicitly, because closing fd would not end the registration while a copy of the
  // descriptor lives on (in a child, for instance).
  if (fd >= 0) epoll_ctl(queue_.Get(), EPOLL_CTL_DEL, fd, nullptr);
  Unregister(token);
}

void Reactor::Run() {
  std::vector<epoll_event> events(kBatch);
  while (!stopping_) {
    int n = epoll_wait(queue_.Get(), events.data(), kBatch, -1);
    if (n < 0) continue;  // EINTR
    for (int i = 0; i < n && !stopping_; i++) {
      uint64_t token = events[i].data.u64;
      if (token == kWakeToken) {
        uint64_t count;
        while (read(wakeRead_.Get(), &count, sizeof count) > 0) {
        }
        continue;
      }
      uint32_t e = events[i].events;
      unsigned ready = 0;
      if (e & EPOLLIN) ready |= kReadable;
      if (e & EPOLLOUT) ready |= kWritable;
      if (e & (EPOLLHUP | EPOLLERR)) ready |= kClosed;
      Dispatch(token, ready);
    }
  }
}

#elif defined(__OpenBSD__)

bool Reactor::Start() {
  queue_.Reset(kqueue());
  if (!queue_.Valid()) return false;
  // kqueue descriptors are not inherited by fork(2) children anyway; CLOEXEC for exec.
  fcntl(queue_.Get(), F_SETFD, FD_CLOEXEC);
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) != 0) return false;
  wakeRead_.Reset(pipefd[0]);
  wakeWrite_.Reset(pipefd[1]);
  struct kevent ev;
  EV_SET(&ev, wakeRead_.Get(), EVFILT_READ, EV_ADD, 0, 0, reinterpret_cast<void*>(kWakeToken));
  if (kevent(queue_.Get(), &ev, 1, nullptr, 0, nullptr) != 0) return false;
  return StartThread();
}

bool Reactor::Wake() {
  char byte = 0;
  return write(wakeWrite_.Get(), &byte, 1) == 1;
}

static void* TokenData(uint64_t token) {
  return reinterpret_cast<void*>(static_cast<uintptr_t>(token));
}

// Adds or deletes one filter. With no room for events, kevent(2) reports a failed change as
// its own return value; deleting a filter that was never added (ENOENT) is not a failure.
static bool ChangeFilter(int kq, int fd, short filter, bool on, uint64_t token) {
  struct kevent ev;
  EV_SET(&ev, fd, filter, on ? EV_ADD : EV_DELETE, 0, 0, TokenData(token));
  if (kevent(kq, &ev, 1, nullptr, 0, nullptr) == 0) return true;
  return !on && errno == ENOENT;
}

bool Reactor::SetInterest(uint64_t token, int fd, unsigned interest) {
  return ChangeFilter(queue_.Get(), fd, EVFILT_READ, (interest & kReadable) != 0, token) &&
         ChangeFilter(queue_.Get(), fd, EVFILT_WRITE, (interest & kWritable) != 0, token);
}

uint64_t Reactor::AddFd(int fd, unsigned interest, std::shared_ptr<Source> source) {
  if (stopping_) {
    errno = ESHUTDOWN;
    return 0;
  }
  uint64_t token = Register(std::move(source));
  if (!SetInterest(token, fd, interest)) {
    int err = errno;
    Remove(token, fd);
    errno = err;
    return 0;
  }
  return token;
}

uint64_t Reactor::AddProcess(pid_t pid, std::shared_ptr<Source> source) {
  if (stopping_) {
    errno = ESHUTDOWN;
    return 0;
  }
  uint64_t token = Register(std::move(source));
  struct kevent ev;
  EV_SET(&ev, pid, EVFILT_PROC, EV_ADD | EV_ONESHOT, NOTE_EXIT, 0, TokenData(token));
  if (kevent(queue_.Get(), &ev, 1, nullptr, 0, nullptr) != 0) {
    int err = errno;
    Unregister(token);
    errno = err;
    return 0;
  }
  return token;
}

void Reactor::Remove(uint64_t token, int fd) {
  if (fd >= 0) SetInterest(token, fd, 0);
  Unregister(token);
}

void Reactor::Run() {
  std::vector<struct kevent> events(kBatch);
  while (!stopping_) {
    int n = kevent(queue_.Get(), nullptr, 0, events.data(), kBatch, nullptr);
    if (n < 0) continue;  // EINTR
    for (int i = 0; i < n && !stopping_; i++) {
      uint64_t token = reinterpret_cast<uintptr_t>(events[i].udata);
      if (token == kWakeToken) {
        char buf[64];
        while (read(wakeRead_.Get(), buf, sizeof buf) > 0) {
        }
        continue;
      }
      unsigned ready = 0;
      if (events[i].filter == EVFILT_READ || events[i].filter == EVFILT_PROC) ready |= kReadable;
      if (events[i].filter == EVFILT_WRITE) ready |= kWritable;
      if (events[i].flags & (EV_EOF | EV_ERROR)) ready |= kClosed;
      Dispatch(token, ready);
    }
  }
}

#endif

}  // namespace vmd
