// The io_uring event loop. One per thread: the ring is created by, and only ever used from,
// the thread that runs it (IORING_SETUP_SINGLE_ISSUER).
//
// Every submission carries a Completion*: the object that knows how to finish the operation
// (one virtual call per completion). Completions are reaped in batches; callbacks run after
// reaping, never from inside a submission. Objects are never deleted inside their own
// callback: deferDelete() frees them once the current batch is done.
#pragma once

#include <liburing.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "util/fd.h"
#include "util/result.h"

namespace spindle::loop {

class Completion {
 public:
  // res is the operation's result (>= 0, or -errno); flags are the CQE flags.
  virtual void complete(int32_t res, uint32_t flags) = 0;

 protected:
  ~Completion() = default;
};

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

class Loop {
 public:
  // Fails with a message that says plainly when io_uring is refused (sysctl, seccomp).
  static Result<std::unique_ptr<Loop>> create(unsigned entries);
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // An SQE whose completion goes to `completion`. A full queue is flushed, never an error.
  io_uring_sqe* prepare(Completion* completion);
  // An SQE whose completion is ignored (e.g. a fire-and-forget cancel).
  io_uring_sqe* prepareIgnored();

  // Submit, wait for at least one completion (or `timeout`), run the batch.
  void runOnce(std::chrono::milliseconds timeout);

  void deferDelete(std::unique_ptr<Deferred> object) { deferred_.push_back(std::move(object)); }
  // Keeps an operation whose owner went while it was in flight: its last completion gives it
  // back with disown() (it is freed after that batch), or the loop frees it when it ends.
  void adopt(std::unique_ptr<Deferred> orphan);
  void disown(Deferred* orphan);
  // Runs after every batch of completions, before deferred deletes.
  void setAfterBatch(std::function<void()> hook) { after_batch_ = std::move(hook); }

  io_uring* ring() { return &ring_; }

 private:
  Loop() = default;
  io_uring ring_{};
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
  // What the kernel's timeout points at; outlives the Timer while in flight.
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

// Opcodes spindle needs; a kernel without one is refused at start with its name.
Status probeOpcodes(Loop& loop);

}  // namespace spindle::loop
