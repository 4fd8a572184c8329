// Unix stream sockets that carry descriptors: socketpair, channel (messages plus SCM_RIGHTS,
// read with recvmsg on the reactor thread so that no passed descriptor is ever dropped),
// listenUnix / connectUnix, and peerCred.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "addon.h"
#include "errors.h"
#include "fd.h"
#include "reactor.h"

// Linux: socketpair(2), recvmsg(2) MSG_CMSG_CLOEXEC, sendmsg(2) MSG_NOSIGNAL, unix(7)
// SCM_RIGHTS and SO_PEERCRED, accept4(2).
// OpenBSD: socketpair(2), recvmsg(2), sendmsg(2), unix(4), accept4(2), getpeereid(2).

namespace vmd {

namespace {

constexpr const char* kChannelUsage =
    "channel(fd: number, opts: {framing: 'length' | 'raw', maxMessageBytes?: number, "
    "maxFds?: number (0-253)}, handlers: {message(data, fds), close(err?)})";
constexpr const char* kSendUsage =
    "Channel.send(data: Buffer, fds?: number[] (at most 253; raw framing needs data with them))";
constexpr const char* kListenUsage =
    "listenUnix(path: string, backlog: number, onConnection: (fd: number) => void)";
constexpr const char* kConnectUsage = "connectUnix(path: string)";
constexpr const char* kPeerCredUsage = "peerCred(fd: number)";
constexpr const char* kSocketpairUsage = "socketpair()";

// SCM_MAX_FD on Linux: the most descriptors one sendmsg may carry.
constexpr size_t kMaxFdsPerMessage = 253;
constexpr size_t kDefaultMaxMessageBytes = 1024 * 1024;
constexpr size_t kDefaultMaxFds = 16;
constexpr size_t kRawChunkBytes = 64 * 1024;
constexpr size_t kHeaderBytes = 4;
constexpr int kReadBudget = 64;  // reads per wake-up, so that one busy peer cannot starve others
constexpr int kMaxIov = 64;

// Sets O_NONBLOCK and FD_CLOEXEC; false with errno set.
bool MakeNonBlockingCloexec(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return false;
  int fdfl = fcntl(fd, F_GETFD);
  return fdfl >= 0 && fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) == 0;
}

// recvmsg into buf, collecting passed descriptors (close-on-exec from the start, so no exec
// elsewhere can inherit them) into fds. Returns bytes read, 0 at EOF, -1 with errno set.
ssize_t Receive(int fd, char* buf, size_t len, std::vector<Fd>& fds, bool* truncated) {
  iovec iov = {buf, len};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
  msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char* data = CMSG_DATA(c);
    for (size_t i = 0; i < count; i++) {
      int passed;
      memcpy(&passed, data + i * sizeof(int), sizeof passed);
      fds.emplace_back(passed);
    }
  }
  *truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  return n;
}

// One message (or raw chunk) for JS, or the end of the channel.
struct ChannelEvent {
  bool closed = false;
  std::unique_ptr<char[]> data;
  size_t size = 0;
  std::vector<Fd> fds;  // closed with the event unless handed to JS
  int err = 0;          // closed: 0 for EOF
  const char* syscall = "";
  std::string detail;
};

// Bytes waiting to be written; fds go with the first byte and are closed once sent.
struct OutMessage {
  std::vector<char> bytes;
  size_t offset = 0;
  std::vector<Fd> fds;
};

class ChannelCore;

struct ChannelJs {
  std::shared_ptr<ChannelCore> core;
  Napi::FunctionReference onMessage;
  Napi::FunctionReference onClose;
};

void DeliverChannel(Napi::Env env, Napi::Function, ChannelJs* js, ChannelEvent* event);

class ChannelCore : public Source, public std::enable_shared_from_this<ChannelCore> {
 public:
  using Box = Mailbox<ChannelJs, ChannelEvent, DeliverChannel>;

  ChannelCore(Fd fd, bool length, size_t maxBytes, size_t maxFds, Reactor* reactor)
      : fd_(std::move(fd)),
        fdNumber_(fd_.Get()),
        length_(length),
        maxBytes_(maxBytes),
        maxFds_(maxFds),
        reactor_(reactor) {}

  Box& mailbox() { return mailbox_; }
  bool closedByJs() const { return closedByJs_; }

  bool Start() {
    std::lock_guard<std::mutex> lock(mu_);
    token_ = reactor_->AddFd(fd_.Get(), kReadable, shared_from_this());
    return token_ != 0;
  }

  void OnReady(unsigned ready) override {
    std::lock_guard<std::mutex> lock(mu_);
    // Read first: whatever the peer sent before it went away is delivered before the error
    // a write to it would get.
    if (open_ && (ready & (kReadable | kClosed))) ReadSome();
    if (open_ && (ready & (kWritable | kClosed))) Flush();
  }

  // JS thread. False when JS closed the channel; a channel that failed on its own drops the
  // message silently (its close handler reports why).
  bool Send(OutMessage message) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closedByJs_) return false;
    if (!open_) return true;
    pending_ += message.bytes.size();
    queue_.push_back(std::move(message));
    if (queue_.size() == 1) Flush();
    return true;
  }

  // JS thread: stop now, drop the queue, and never call a handler again.
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closedByJs_ = true;
    if (open_) Shutdown();
    mailbox_.Finish();
  }

  size_t pending() {
    std::lock_guard<std::mutex> lock(mu_);
    return pending_;
  }

  int fd() {
    std::lock_guard<std::mutex> lock(mu_);
    return open_ ? fdNumber_ : -1;
  }

 private:
  void ReadSome() {
    for (int i = 0; i < kReadBudget && open_; i++) {
      if (!(length_ ? ReadFramed() : ReadRaw())) break;
    }
  }

  // Whether received descriptors or the read itself end the channel. True to go on reading.
  bool CheckRead(ssize_t n, bool truncated, bool midMessage) {
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) Fail(errno, "recvmsg");
      return false;
    }
    if (truncated) {
      Fail(EMSGSIZE, "recvmsg", "(descriptors truncated)");
      return false;
    }
    if (n == 0) {
      // EOF: a clean close between messages, a broken one inside a message.
      Fail(midMessage ? EPROTO : 0, "recvmsg", midMessage ? "(closed inside a message)" : "");
      return false;
    }
    if (inFds_.size() > maxFds_) {
      Fail(EMSGSIZE, "recvmsg", "(" + std::to_string(inFds_.size()) + " descriptors)");
      return false;
    }
    return true;
  }

  // Length framing. Each read stops at the end of the current message: Linux hands the
  // descriptors of a later message out together with any fd-less bytes queued before it, so
  // a read that ran on into the next message could not tell whose descriptors it got. Read
  // this way, the descriptors of a read belong to the message being read, whose first byte
  // (where the sender attaches them) is in this read or an earlier one.
  bool ReadFramed() {
    bool inHeader = headerGot_ < kHeaderBytes;
    char* buf = inHeader ? header_ + headerGot_ : payload_.get() + payloadGot_;
    size_t want = inHeader ? kHeaderBytes - headerGot_ : payloadSize_ - payloadGot_;
    bool truncated = false;
    ssize_t n = Receive(fd_.Get(), buf, want, inFds_, &truncated);
    if (!CheckRead(n, truncated, headerGot_ > 0 || !inFds_.empty())) return false;
    if (inHeader) {
      headerGot_ += static_cast<size_t>(n);
      if (headerGot_ < kHeaderBytes) return true;
      if (!StartPayload()) return false;
    } else {
      payloadGot_ += static_cast<size_t>(n);
    }
    if (payloadGot_ == payloadSize_) DeliverMessage();
    return true;
  }

  bool StartPayload() {
    const unsigned char* h = reinterpret_cast<const unsigned char*>(header_);
    uint32_t size = (uint32_t{h[0]} << 24) | (uint32_t{h[1]} << 16) | (uint32_t{h[2]} << 8) | h[3];
    if (size > maxBytes_) {
      Fail(EMSGSIZE, "recvmsg", "(message of " + std::to_string(size) + " bytes)");
      return false;
    }
    payload_.reset(new (std::nothrow) char[size > 0 ? size : 1]);
    if (!payload_) {
      Fail(ENOMEM, "recvmsg");
      return false;
    }
    payloadSize_ = size;
    payloadGot_ = 0;
    return true;
  }

  void DeliverMessage() {
    std::unique_ptr<ChannelEvent> ev(new ChannelEvent());
    ev->data = std::move(payload_);
    ev->size = payloadSize_;
    ev->fds = std::move(inFds_);
    inFds_.clear();
    headerGot_ = payloadGot_ = payloadSize_ = 0;
    mailbox_.Post(std::move(ev));
  }

  // Raw framing: every chunk as it comes, with whatever descriptors came with it.
  bool ReadRaw() {
    if (!rawBuf_) rawBuf_.reset(new char[kRawChunkBytes]);
    bool truncated = false;
    ssize_t n = Receive(fd_.Get(), rawBuf_.get(), kRawChunkBytes, inFds_, &truncated);
    if (!CheckRead(n, truncated, false)) return false;
    std::unique_ptr<ChannelEvent> ev(new ChannelEvent());
    ev->size = static_cast<size_t>(n);
    ev->data.reset(new (std::nothrow) char[ev->size]);
    if (!ev->data) {
      Fail(ENOMEM, "recvmsg");
      return false;
    }
    memcpy(ev->data.get(), rawBuf_.get(), ev->size);
    ev->fds = std::move(inFds_);
    inFds_.clear();
    mailbox_.Post(std::move(ev));
    return true;
  }

  // Writes as much of the queue as the socket takes. Messages without descriptors that
  // follow the first are gathered into the same sendmsg; a message with descriptors always
  // starts its own, since they attach to the first byte of a sendmsg.
  void Flush() {
    while (open_ && !queue_.empty()) {
      iovec iov[kMaxIov];
      int count = 0;
      for (auto it = queue_.begin(); it != queue_.end() && count < kMaxIov; ++it) {
        if (count > 0 && !it->fds.empty()) break;
        iov[count].iov_base = it->bytes.data() + it->offset;
        iov[count].iov_len = it->bytes.size() - it->offset;
        count++;
      }
      ssize_t sent = SendIov(iov, count, queue_.front().offset == 0 ? queue_.front().fds : noFds_);
      if (sent < 0 && errno == EINTR) continue;
      if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        WantWrite(true);
        return;
      }
      if (sent < 0) {
        Fail(errno, "sendmsg");
        return;
      }
      queue_.front().fds.clear();  // the kernel holds its own references now
      Consume(static_cast<size_t>(sent));
    }
    if (open_) WantWrite(false);
  }

  ssize_t SendIov(iovec* iov, int count, const std::vector<Fd>& fds) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
    msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = iov;
    msg.msg_iovlen = count;
    if (!fds.empty()) {
      memset(control, 0, sizeof control);
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      for (size_t i = 0; i < fds.size(); i++) {
        int fd = fds[i].Get();
        memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof fd);
      }
    }
    return sendmsg(fd_.Get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  }

  void Consume(size_t sent) {
    pending_ -= sent;
    while (sent > 0) {
      OutMessage& m = queue_.front();
      size_t left = m.bytes.size() - m.offset;
      if (sent < left) {
        m.offset += sent;
        return;
      }
      sent -= left;
      queue_.pop_front();
    }
  }

  void WantWrite(bool on) {
    if (on == wantWrite_) return;
    if (!reactor_->SetInterest(token_, fd_.Get(), kReadable | (on ? kWritable : 0u))) {
      Fail(errno, kReactorSyscall);
      return;
    }
    wantWrite_ = on;
  }

  // Ends the channel (err 0: the peer closed) and tells JS, unless JS closed it.
  void Fail(int err, const char* syscall, const std::string& detail = "") {
    if (!open_) return;
    Shutdown();
    std::unique_ptr<ChannelEvent> ev(new ChannelEvent());
    ev->closed = true;
    ev->err = err;
    ev->syscall = syscall;
    ev->detail = detail;
    mailbox_.Finish(std::move(ev));
  }

  // Unregisters and closes everything: the socket, queued descriptors, a half-read message.
  void Shutdown() {
    open_ = false;
    reactor_->Remove(token_, fd_.Get());
    fd_.Reset();
    queue_.clear();
    pending_ = 0;
    inFds_.clear();
    payload_.reset();
    rawBuf_.reset();
  }

  std::mutex mu_;
  Fd fd_;
  const int fdNumber_;
  const bool length_;
  const size_t maxBytes_;
  const size_t maxFds_;
  Reactor* const reactor_;
  uint64_t token_ = 0;
  bool open_ = true;
  bool closedByJs_ = false;  // written and read on the JS thread only
  bool wantWrite_ = false;
  Box mailbox_;
  // Reading
  char header_[kHeaderBytes] = {};
  size_t headerGot_ = 0;
  std::unique_ptr<char[]> payload_;
  size_t payloadSize_ = 0;
  size_t payloadGot_ = 0;
  std::unique_ptr<char[]> rawBuf_;
  std::vector<Fd> inFds_;
  // Writing
  std::deque<OutMessage> queue_;
  size_t pending_ = 0;
  const std::vector<Fd> noFds_;
};

void DeliverChannel(Napi::Env env, Napi::Function, ChannelJs* js, ChannelEvent* event) {
  std::unique_ptr<ChannelEvent> ev(event);  // closes undelivered descriptors
  if (env == nullptr || js == nullptr || js->core->closedByJs()) return;
  RunJs(env, [&] {
    if (ev->closed) {
      Napi::Value err = env.Undefined();
      if (ev->err != 0) err = SystemError(env, ev->err, ev->syscall, ev->detail).Value();
      js->onClose.Call({err});
      return;
    }
    Napi::Buffer<char> buf = Napi::Buffer<char>::NewOrCopy(env, ev->data.get(), ev->size,
                                                           [](Napi::Env, char* p) { delete[] p; });
    ev->data.release();  // the buffer owns it now
    Napi::Array fds = Napi::Array::New(env, ev->fds.size());
    for (uint32_t i = 0; i < ev->fds.size(); i++) fds.Set(i, ev->fds[i].Get());
    for (Fd& fd : ev->fds) fd.Release();  // JS owns them now
    js->onMessage.Call({buf, fds});
  });
}

// The JS Channel object.
class Channel : public Napi::ObjectWrap<Channel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "Channel",
        {InstanceAccessor<&Channel::FdJs>("fd"), InstanceAccessor<&Channel::PendingJs>("pending"),
         InstanceMethod<&Channel::SendJs>("send"), InstanceMethod<&Channel::CloseJs>("close"),
         InstanceMethod<&Channel::RefJs>("ref"), InstanceMethod<&Channel::UnrefJs>("unref")});
  }

  explicit Channel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Channel>(info) {
    if (info.Length() != 2 || !info[0].IsExternal()) {
      throw Napi::TypeError::New(info.Env(), "Channel cannot be constructed directly");
    }
    core_ = *info[0].As<Napi::External<std::shared_ptr<ChannelCore>>>().Data();
    length_ = info[1].As<Napi::Boolean>();
  }

 private:
  Napi::Value FdJs(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), core_->fd());
  }

  Napi::Value PendingJs(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(core_->pending()));
  }

  Napi::Value SendJs(const Napi::CallbackInfo& info);

  Napi::Value CloseJs(const Napi::CallbackInfo& info) {
    core_->Close();
    return info.Env().Undefined();
  }

  Napi::Value RefJs(const Napi::CallbackInfo& info) {
    core_->mailbox().Ref(info.Env());
    return info.Env().Undefined();
  }

  Napi::Value UnrefJs(const Napi::CallbackInfo& info) {
    core_->mailbox().Unref(info.Env());
    return info.Env().Undefined();
  }

  std::shared_ptr<ChannelCore> core_;
  bool length_ = true;
};

// Duplicates the caller's descriptors (close-on-exec), so the caller keeps its own copies and
// ours can be closed once they are in flight.
std::vector<Fd> DupFds(Napi::Env env, const Napi::Array& list) {
  std::vector<Fd> fds;
  for (uint32_t i = 0; i < list.Length(); i++) {
    int fd = static_cast<int>(ToInt(list.Get(i)));
    Fd dup(fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!dup.Valid()) ThrowErrno(env, "fcntl", "F_DUPFD_CLOEXEC " + std::to_string(fd));
    fds.push_back(std::move(dup));
  }
  return fds;
}

Napi::Value Channel::SendJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool hasFds = info.Length() > 1 && !info[1].IsUndefined();
  if (info.Length() < 1 || !info[0].IsBuffer()) ThrowUsage(env, kSendUsage);
  if (hasFds && !info[1].IsArray()) ThrowUsage(env, kSendUsage);
  Napi::Buffer<char> data = info[0].As<Napi::Buffer<char>>();
  Napi::Array list = hasFds ? info[1].As<Napi::Array>() : Napi::Array::New(env);
  for (uint32_t i = 0; i < list.Length(); i++) {
    if (!IsFdValue(list.Get(i))) ThrowUsage(env, kSendUsage);
  }
  if (list.Length() > kMaxFdsPerMessage || (length_ && data.Length() > UINT32_MAX)) {
    ThrowUsage(env, kSendUsage);
  }
  if (!length_ && data.Length() == 0) {
    if (list.Length() > 0) ThrowUsage(env, kSendUsage);
    return env.Undefined();  // nothing to write
  }
  OutMessage message;
  message.fds = DupFds(env, list);
  size_t header = length_ ? kHeaderBytes : 0;
  message.bytes.resize(header + data.Length());
  if (length_) {
    uint32_t n = static_cast<uint32_t>(data.Length());
    unsigned char h[kHeaderBytes] = {
        static_cast<unsigned char>(n >> 24), static_cast<unsigned char>(n >> 16),
        static_cast<unsigned char>(n >> 8), static_cast<unsigned char>(n)};
    memcpy(message.bytes.data(), h, kHeaderBytes);
  }
  if (data.Length() > 0) memcpy(message.bytes.data() + header, data.Data(), data.Length());
  if (!core_->Send(std::move(message))) ThrowErrno(env, "send", "(channel closed)", EPIPE);
  return env.Undefined();
}

bool ValidChannelArgs(const Napi::CallbackInfo& info) {
  if (info.Length() < 3 || !IsFdValue(info[0]) || !info[1].IsObject() || !info[2].IsObject()) {
    return false;
  }
  Napi::Value framing = Option(info[1], "framing");
  Napi::Value maxBytes = Option(info[1], "maxMessageBytes");
  Napi::Value maxFds = Option(info[1], "maxFds");
  bool framingOk = framing.IsString() && (framing.As<Napi::String>().Utf8Value() == "length" ||
                                          framing.As<Napi::String>().Utf8Value() == "raw");
  return framingOk && (maxBytes.IsUndefined() || IsInt(maxBytes, 0, UINT32_MAX)) &&
         (maxFds.IsUndefined() || IsInt(maxFds, 0, kMaxFdsPerMessage)) &&
         Option(info[2], "message").IsFunction() && Option(info[2], "close").IsFunction();
}

Napi::Value CreateChannel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!ValidChannelArgs(info)) ThrowUsage(env, kChannelUsage);
  Fd fd(static_cast<int>(ToInt(info[0])));  // ours from here on, even if we throw
  bool length = Option(info[1], "framing").As<Napi::String>().Utf8Value() == "length";
  Napi::Value maxBytes = Option(info[1], "maxMessageBytes");
  Napi::Value maxFds = Option(info[1], "maxFds");
  int type = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd.Get(), SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
    ThrowErrno(env, "getsockopt", std::to_string(fd.Get()));
  }
  if (!MakeNonBlockingCloexec(fd.Get())) ThrowErrno(env, "fcntl", std::to_string(fd.Get()));
  auto core = std::make_shared<ChannelCore>(
      std::move(fd), length,
      maxBytes.IsUndefined() ? kDefaultMaxMessageBytes : static_cast<size_t>(ToInt(maxBytes)),
      maxFds.IsUndefined() ? kDefaultMaxFds : static_cast<size_t>(ToInt(maxFds)),
      &Reactor::Of(env));
  ChannelJs* js =
      new ChannelJs{core, Napi::Persistent(Option(info[2], "message").As<Napi::Function>()),
                    Napi::Persistent(Option(info[2], "close").As<Napi::Function>())};
  core->mailbox().Open(ChannelCore::Box::Tsfn::New(
      env, "vmd:channel", 0, 1, js, [](Napi::Env, void*, ChannelJs* ctx) { delete ctx; }));
  Napi::Object wrapper =
      Data(env).channelClass.New({Napi::External<std::shared_ptr<ChannelCore>>::New(env, &core),
                                  Napi::Boolean::New(env, length)});
  if (!core->Start()) {
    int err = errno;
    core->Close();
    ThrowErrno(env, kReactorSyscall, "", err);
  }
  return wrapper;
}

// ---------------------------------------------------------------------------------------
// listenUnix: accepted connections are handed to JS one descriptor at a time.

struct AcceptEvent {
  Fd fd;
};

class ServerCore;

struct ServerJs {
  std::shared_ptr<ServerCore> core;
};

void DeliverConnection(Napi::Env env, Napi::Function cb, ServerJs* js, AcceptEvent* event);

class ServerCore : public Source, public std::enable_shared_from_this<ServerCore> {
 public:
  using Box = Mailbox<ServerJs, AcceptEvent, DeliverConnection>;

  ServerCore(Fd fd, Reactor* reactor)
      : fd_(std::move(fd)), fdNumber_(fd_.Get()), reactor_(reactor) {
    // Kept in reserve for EMFILE: closing it frees a slot to accept and drop the connection,
    // instead of spinning on a listening socket that stays readable.
    spare_.Reset(open("/dev/null", O_RDONLY | O_CLOEXEC));
  }

  Box& mailbox() { return mailbox_; }
  bool closed() const { return closed_; }

  bool Start() {
    std::lock_guard<std::mutex> lock(mu_);
    token_ = reactor_->AddFd(fd_.Get(), kReadable, shared_from_this());
    return token_ != 0;
  }

  void OnReady(unsigned) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (int i = 0; i < kReadBudget && fd_.Valid(); i++) {
      Fd conn(accept4(fd_.Get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (conn.Valid()) {
        std::unique_ptr<AcceptEvent> ev(new AcceptEvent{std::move(conn)});
        mailbox_.Post(std::move(ev));
      } else if (errno == EMFILE || errno == ENFILE) {
        DropOne();
      } else if (errno != EINTR && errno != ECONNABORTED) {
        return;  // EAGAIN: all taken
      }
    }
  }

  // JS thread.
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    if (fd_.Valid()) reactor_->Remove(token_, fd_.Get());
    fd_.Reset();
    spare_.Reset();
    mailbox_.Finish();
  }

  int fd() {
    std::lock_guard<std::mutex> lock(mu_);
    return fd_.Valid() ? fdNumber_ : -1;
  }

 private:
  void DropOne() {
    if (!spare_.Valid()) return;
    spare_.Reset();
    Fd dropped(accept4(fd_.Get(), nullptr, nullptr, SOCK_CLOEXEC));
    spare_.Reset(open("/dev/null", O_RDONLY | O_CLOEXEC));
  }

  std::mutex mu_;
  Fd fd_;
  const int fdNumber_;
  Fd spare_;
  Reactor* const reactor_;
  uint64_t token_ = 0;
  bool closed_ = false;  // JS thread only
  Box mailbox_;
};

void DeliverConnection(Napi::Env env, Napi::Function cb, ServerJs* js, AcceptEvent* event) {
  std::unique_ptr<AcceptEvent> ev(event);  // closes the connection unless JS takes it
  if (env == nullptr || js == nullptr || js->core->closed()) return;
  RunJs(env, [&] {
    Napi::Number fd = Napi::Number::New(env, ev->fd.Get());
    ev->fd.Release();  // JS owns it now
    cb.Call({fd});
  });
}

class Server : public Napi::ObjectWrap<Server> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "UnixServer",
        {InstanceAccessor<&Server::FdJs>("fd"), InstanceMethod<&Server::CloseJs>("close"),
         InstanceMethod<&Server::RefJs>("ref"), InstanceMethod<&Server::UnrefJs>("unref")});
  }

  explicit Server(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Server>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      throw Napi::TypeError::New(info.Env(), "UnixServer cannot be constructed directly");
    }
    core_ = *info[0].As<Napi::External<std::shared_ptr<ServerCore>>>().Data();
  }

 private:
  Napi::Value FdJs(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), core_->fd());
  }

  Napi::Value CloseJs(const Napi::CallbackInfo& info) {
    core_->Close();
    return info.Env().Undefined();
  }

  Napi::Value RefJs(const Napi::CallbackInfo& info) {
    core_->mailbox().Ref(info.Env());
    return info.Env().Undefined();
  }

  Napi::Value UnrefJs(const Napi::CallbackInfo& info) {
    core_->mailbox().Unref(info.Env());
    return info.Env().Undefined();
  }

  std::shared_ptr<ServerCore> core_;
};

// A sockaddr_un for path; false (ENAMETOOLONG) when it does not fit.
bool UnixAddress(const std::string& path, sockaddr_un* addr) {
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (path.size() >= sizeof addr->sun_path) {
    errno = ENAMETOOLONG;
    return false;
  }
  memcpy(addr->sun_path, path.c_str(), path.size() + 1);
  return true;
}

bool IsPath(const Napi::Value& v) {
  if (!v.IsString()) return false;
  std::string s = v.As<Napi::String>();
  return !s.empty() && s.find('\0') == std::string::npos;
}

Napi::Value ListenUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !IsPath(info[0]) || !IsInt(info[1], 0, 65535) || !info[2].IsFunction()) {
    ThrowUsage(env, kListenUsage);
  }
  std::string path = info[0].As<Napi::String>();
  sockaddr_un addr;
  if (!UnixAddress(path, &addr)) ThrowErrno(env, "bind", path, errno, path);
  Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.Valid()) ThrowErrno(env, "socket");
  if (bind(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
    ThrowErrno(env, "bind", path, errno, path);
  }
  if (listen(fd.Get(), static_cast<int>(ToInt(info[1]))) < 0) {
    ThrowErrno(env, "listen", path, errno, path);
  }
  auto core = std::make_shared<ServerCore>(std::move(fd), &Reactor::Of(env));
  ServerJs* js = new ServerJs{core};
  core->mailbox().Open(
      ServerCore::Box::Tsfn::New(env, info[2].As<Napi::Function>(), "vmd:listenUnix", 0, 1, js,
                                 [](Napi::Env, void*, ServerJs* ctx) { delete ctx; }));
  Napi::Object wrapper =
      Data(env).serverClass.New({Napi::External<std::shared_ptr<ServerCore>>::New(env, &core)});
  if (!core->Start()) {
    int err = errno;
    core->Close();
    ThrowErrno(env, kReactorSyscall, path, err);
  }
  return wrapper;
}

Napi::Value ConnectUnix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !IsPath(info[0])) ThrowUsage(env, kConnectUsage);
  std::string path = info[0].As<Napi::String>();
  sockaddr_un addr;
  if (!UnixAddress(path, &addr)) ThrowErrno(env, "connect", path, errno, path);
  Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.Valid()) ThrowErrno(env, "socket");
  // Blocking, so that a full backlog waits instead of failing with EAGAIN.
  if (connect(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
    ThrowErrno(env, "connect", path, errno, path);
  }
  if (!MakeNonBlockingCloexec(fd.Get())) ThrowErrno(env, "fcntl", path);
  return Napi::Number::New(env, fd.Release());
}

Napi::Value Socketpair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() > 0) ThrowUsage(env, kSocketpairUsage);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
    ThrowErrno(env, "socketpair");
  }
  Napi::Array pair = Napi::Array::New(env, 2);
  pair.Set(0u, Napi::Number::New(env, sv[0]));
  pair.Set(1u, Napi::Number::New(env, sv[1]));
  return pair;
}

Napi::Value PeerCred(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !IsFdValue(info[0])) ThrowUsage(env, kPeerCredUsage);
  int fd = static_cast<int>(ToInt(info[0]));
  Napi::Object out = Napi::Object::New(env);
#if defined(__linux__)
  ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
    ThrowErrno(env, "getsockopt", "SO_PEERCRED");
  }
  out.Set("uid", Napi::Number::New(env, cred.uid));
  out.Set("gid", Napi::Number::New(env, cred.gid));
  out.Set("pid", Napi::Number::New(env, cred.pid));
#elif defined(__OpenBSD__)
  uid_t uid;
  gid_t gid;
  if (getpeereid(fd, &uid, &gid) < 0) ThrowErrno(env, "getpeereid");
  out.Set("uid", Napi::Number::New(env, uid));
  out.Set("gid", Napi::Number::New(env, gid));
  out.Set("pid", Napi::Number::New(env, -1));  // getpeereid(2) does not say
#endif
  return out;
}

}  // namespace

void InitChannel(Napi::Env env, Napi::Object exports) {
  Data(env).channelClass = Napi::Persistent(Channel::Define(env));
  Data(env).serverClass = Napi::Persistent(Server::Define(env));
  exports.Set("socketpair", Napi::Function::New(env, Socketpair, "socketpair"));
  exports.Set("channel", Napi::Function::New(env, CreateChannel, "channel"));
  exports.Set("listenUnix", Napi::Function::New(env, ListenUnix, "listenUnix"));
  exports.Set("connectUnix", Napi::Function::New(env, ConnectUnix, "connectUnix"));
  exports.Set("peerCred", Napi::Function::New(env, PeerCred, "peerCred"));
}

}  // namespace vmd
