// The event loop. One per thread: it is created by, and only ever used from, the thread that
// runs it. Two engines implement it: io_uring (uring_loop.h) where the kernel and the seccomp
// profile allow every operation spindle uses, and epoll (epoll_loop.h) everywhere else. Nothing
// above the loop knows which one runs.
//
// Every operation carries a Completion*: the object that knows how to finish it (one virtual
// call per completion). Completions are delivered in batches; callbacks run after the batch is
// gathered, never from inside the call that started an operation. Objects are never deleted
// inside their own callback: deferDelete() frees them once the current batch is done.
#pragma once

#include <linux/time_types.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "loop/engine.h"
#include "util/fd.h"
#include "util/result.h"

namespace spindle::loop {

class BufferPool;

class Completion {
 public:
  // res is the operation's result (>= 0, or -errno); flags are the completion flags below.
  virtual void complete(int32_t res, uint32_t flags) = 0;

  // The epoll engine's record of this completion's operation in flight (0: none); only the
  // loop touches it.
  uint32_t epoll_op = 0;

 protected:
  ~Completion() = default;
};

// Completion flags, the same for both engines (io_uring's CQE flags, which the io_uring engine
// passes on unchanged).
inline constexpr uint32_t kFlagBuffer = 1u << 0;  // a pooled receive's buffer id is in the flags
inline constexpr uint32_t kFlagMore = 1u << 1;    // a multishot accept stays armed
inline constexpr unsigned kBufferIdShift = 16;

// A completion that hands its result to a member function of its owner: one per kind of
// operation the owner keeps in flight.
template <typename Owner, void (Owner::*Handler)(int32_t res, uint32_t flags)>
class MemberCompletion final : public Completion {
 public:
  explicit MemberCompletion(Owner& owner) : owner_(owner) {}
  void complete(int32_t res, uint32_t flags) override { (owner_.*Handler)(res, flags); }

 private:
  Owner& owner_;
};

// Something whose destruction waits for the end of the batch that decided it.
class Deferred {
 public:
  virtual ~Deferred() = default;
};

// A bound on the operation it is given to: if the operation is not done `after` it started, it
// ends with -ECANCELED and `op` completes with -ETIME; otherwise `op` completes with -ECANCELED
// once the operation is done. The timespec must outlive the operation.
struct Deadline {
  Completion* op;
  const __kernel_timespec* after;
};

class Loop {
 public:
  // Fails with a message that says plainly why the engine cannot run (io_uring refused by the
  // sysctl or seccomp, say).
  static Result<std::unique_ptr<Loop>> create(Engine engine, unsigned entries);
  virtual ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  virtual Engine engine() const = 0;

  // The operations. Each completes once on its completion, with the system call's result, except
  // accept: once per connection while kFlagMore is set. Buffers and addresses must stay valid
  // until the completion. Sockets get MSG_NOSIGNAL semantics only where the caller asks.
  virtual void accept(Completion* op, int listener) = 0;  // SOCK_NONBLOCK | SOCK_CLOEXEC
  virtual void connect(Completion* op, int fd, const sockaddr* address, socklen_t length,
                       const Deadline* deadline = nullptr) = 0;
  virtual void recv(Completion* op, int fd, void* buffer, size_t length,
                    const Deadline* deadline = nullptr) = 0;
  // Receives into a buffer of `pool`, taken only when data arrives (-ENOBUFS when none is free).
  virtual void recv(Completion* op, int fd, BufferPool& pool) = 0;
  virtual void send(Completion* op, int fd, const void* data, size_t length, int flags) = 0;
  // A read of an eventfd, a signalfd or an inotify descriptor.
  virtual void read(Completion* op, int fd, void* buffer, size_t length) = 0;
  // One-shot: completes with the poll events that became ready.
  virtual void poll(Completion* op, int fd, uint32_t events) = 0;
  // Completes with -ETIME after `after`; the timespec must outlive it.
  virtual void timeout(Completion* op, const __kernel_timespec* after) = 0;

  // Each ends what it names with -ECANCELED, if it is still in flight, and completes nothing
  // of its own.
  virtual void cancel(Completion* op) = 0;
  virtual void cancelFd(int fd) = 0;  // every operation on fd
  virtual void cancelTimeout(Completion* op) = 0;
  virtual void cancelPoll(Completion* op) = 0;

  // Submits what was started, waits for at least one completion (or `timeout`), runs the batch.
  virtual void runOnce(std::chrono::milliseconds timeout) = 0;

  void deferDelete(std::unique_ptr<Deferred> object) { deferred_.push_back(std::move(object)); }
  // Keeps an operation whose owner went while it was in flight: its last completion gives it
  // back with disown() (it is freed after that batch), or the loop frees it when it ends.
  void adopt(std::unique_ptr<Deferred> orphan);
  void disown(Deferred* orphan);
  // Runs after every batch of completions, before deferred deletes.
  void setAfterBatch(std::function<void()> hook) { after_batch_ = std::move(hook); }

 protected:
  Loop() = default;
  void endBatch();

 private:
  std::vector<std::unique_ptr<Deferred>> deferred_;
  std::vector<std::unique_ptr<Deferred>> orphans_;
  std::function<void()> after_batch_;
};

// A re-armable one-shot timer on the loop. It may be destroyed while armed (a resolver made
// anew on a reload): the timeout is cancelled, and its completion, which comes later, finds
// the operation it points to still there, with no owner to call.
class Timer {
 public:
  Timer(Loop& loop, std::function<void()> on_fire);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void arm(std::chrono::nanoseconds after);
  bool armed() const { return op_->in_flight > 0; }

 private:
  // What the loop's timeout points at; outlives the Timer while in flight.
  struct Op final : Completion, Deferred {
    Op(Loop& l, Timer* timer) : loop(l), owner(timer) {}
    void complete(int32_t res, uint32_t flags) override;
    Loop& loop;
    Timer* owner;
    __kernel_timespec ts{};
    int in_flight = 0;
  };

  Loop& loop_;
  std::function<void()> on_fire_;
  std::unique_ptr<Op> op_;
};

// Wakes a loop from another thread (an eventfd read kept armed on the loop).
class Waker final : public Completion {
 public:
  Waker(Loop& loop, std::function<void()> on_wake);
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;

  void arm();   // on the loop's thread
  void wake();  // from any thread
  void complete(int32_t res, uint32_t flags) override;

 private:
  Loop& loop_;
  std::function<void()> on_wake_;
  Fd fd_;
  uint64_t value_ = 0;
};

}  // namespace spindle::loop
