#include "loop/loop.h"

#include <fmt/core.h>

#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "util/event_clock.h"

namespace spindle::loop {
namespace {

// user_data for completions nobody waits for.
constexpr uint64_t kIgnored = 0;

std::string refusedMessage(int err) {
  if (err == EPERM || err == EACCES || err == ENOSYS) {
    return fmt::format(
        "io_uring is refused: {} (check the sysctl kernel.io_uring_disabled, and that the "
        "container's seccomp profile allows io_uring_setup, io_uring_enter and "
        "io_uring_register)",
        std::strerror(err));
  }
  return fmt::format("io_uring_setup: {}", std::strerror(err));
}

// The only operations a ring may carry. io_uring's operations are not system calls: the proxy's
// seccomp filter never sees them, so without this a ring could open files for writing or make
// sockets of any family. Each ring starts disabled and is enabled with these restrictions.
Status restrict(io_uring* ring) {
  static constexpr uint8_t kOperations[] = {
      IORING_OP_NOP,     IORING_OP_ACCEPT,         IORING_OP_CONNECT,      IORING_OP_RECV,
      IORING_OP_SEND,    IORING_OP_READ,           IORING_OP_POLL_ADD,     IORING_OP_POLL_REMOVE,
      IORING_OP_TIMEOUT, IORING_OP_TIMEOUT_REMOVE, IORING_OP_LINK_TIMEOUT, IORING_OP_ASYNC_CANCEL,
  };
  static constexpr uint8_t kRegistrations[] = {IORING_REGISTER_PROBE, IORING_REGISTER_PBUF_RING,
                                               IORING_UNREGISTER_PBUF_RING};
  std::vector<io_uring_restriction> restrictions;
  for (const uint8_t op : kOperations) {
    io_uring_restriction r{};
    r.opcode = IORING_RESTRICTION_SQE_OP;
    r.sqe_op = op;
    restrictions.push_back(r);
  }
  for (const uint8_t op : kRegistrations) {
    io_uring_restriction r{};
    r.opcode = IORING_RESTRICTION_REGISTER_OP;
    r.register_op = op;
    restrictions.push_back(r);
  }
  io_uring_restriction flags{};
  flags.opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
  flags.sqe_flags = IOSQE_IO_LINK | IOSQE_BUFFER_SELECT;
  restrictions.push_back(flags);
  // liburing 2.3 declares io_uring_register_restrictions and io_uring_enable_rings but does
  // not export them: the system call itself.
  if (::syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_RESTRICTIONS,
                restrictions.data(), restrictions.size()) < 0) {
    return makeError(fmt::format("restricting the ring's operations: {}", std::strerror(errno)));
  }
  if (::syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0) <
      0) {
    return makeError(fmt::format("enabling the ring: {}", std::strerror(errno)));
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<Loop>> Loop::create(unsigned entries) {
  std::unique_ptr<Loop> loop(new Loop());
  io_uring_params params{};
  // SINGLE_ISSUER and DEFER_TASKRUN (Linux 6.1): completions run only when this thread asks
  // for them, which batches them and avoids interrupting the thread.
  params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
  int rc = io_uring_queue_init_params(entries, &loop->ring_, &params);
  if (rc == -EINVAL) {
    params = io_uring_params{};
    params.flags = IORING_SETUP_R_DISABLED;
    rc = io_uring_queue_init_params(entries, &loop->ring_, &params);
  }
  if (rc < 0) return makeError(refusedMessage(-rc));
  if (Status s = restrict(&loop->ring_); !s) return Error{s.error()};
  return loop;
}

Loop::~Loop() { io_uring_queue_exit(&ring_); }

io_uring_sqe* Loop::prepare(Completion* completion) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (sqe == nullptr) {
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  io_uring_sqe_set_data(sqe, completion);
  return sqe;
}

io_uring_sqe* Loop::prepareIgnored() {
  io_uring_sqe* sqe = prepare(nullptr);
  io_uring_sqe_set_data64(sqe, kIgnored);
  return sqe;
}

void Loop::runOnce(std::chrono::milliseconds timeout) {
  __kernel_timespec ts{};
  ts.tv_sec = timeout.count() / 1000;
  ts.tv_nsec = (timeout.count() % 1000) * 1000000;
  io_uring_cqe* cqe = nullptr;
  int rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY) {
    // Cannot happen after start-up with a valid ring; nothing sensible can go on.
    fmt::print(stderr, "spindle: error: io_uring_submit_and_wait: {}\n", std::strerror(-rc));
    std::abort();
  }
  unsigned head = 0;
  unsigned seen = 0;
  EventClock::Scope event_time;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    if (seen++ > 0) event_time.advance();
    auto* completion = static_cast<Completion*>(io_uring_cqe_get_data(cqe));
    if (completion != nullptr) completion->complete(cqe->res, cqe->flags);
  }
  io_uring_cq_advance(&ring_, seen);
  if (after_batch_) after_batch_();
  deferred_.clear();
}

Timer::Timer(Loop& loop, std::function<void()> on_fire)
    : loop_(loop), on_fire_(std::move(on_fire)), op_(std::make_unique<Op>(loop, this)) {}

Timer::~Timer() {
  if (op_->in_flight == 0) return;
  op_->owner = nullptr;
  io_uring_prep_timeout_remove(loop_.prepareIgnored(),
                               reinterpret_cast<uint64_t>(static_cast<Completion*>(op_.get())), 0);
  loop_.adopt(std::move(op_));
}

void Timer::arm(std::chrono::nanoseconds after) {
  // The kernel reads the timespec when the SQE is submitted, not here: it lives in the op.
  op_->ts.tv_sec = after.count() / 1000000000;
  op_->ts.tv_nsec = after.count() % 1000000000;
  io_uring_prep_timeout(loop_.prepare(op_.get()), &op_->ts, 0, 0);
  op_->in_flight++;
}

void Timer::Op::complete(int32_t res, uint32_t /*flags*/) {
  in_flight--;
  if (owner == nullptr) {
    if (in_flight == 0) loop.disown(this);
    return;
  }
  if (res == -ETIME) owner->on_fire_();
}

void Loop::adopt(std::unique_ptr<Deferred> orphan) { orphans_.push_back(std::move(orphan)); }

void Loop::disown(Deferred* orphan) {
  for (auto& kept : orphans_) {
    if (kept.get() != orphan) continue;
    deferDelete(std::move(kept));
    kept = std::move(orphans_.back());
    orphans_.pop_back();
    return;
  }
}

Waker::Waker(Loop& loop, std::function<void()> on_wake)
    : loop_(loop), on_wake_(std::move(on_wake)), fd_(::eventfd(0, EFD_CLOEXEC)) {
  if (!fd_.valid()) {
    fmt::print(stderr, "spindle: error: eventfd: {}\n", std::strerror(errno));
    std::abort();
  }
}

void Waker::arm() {
  io_uring_prep_read(loop_.prepare(this), fd_.get(), &value_, sizeof(value_), 0);
}

void Waker::wake() {
  uint64_t one = 1;
  // An eventfd write only fails when the counter would overflow, which cannot happen here.
  [[maybe_unused]] ssize_t written = ::write(fd_.get(), &one, sizeof(one));
}

void Waker::complete(int32_t res, uint32_t /*flags*/) {
  if (res == -ECANCELED) return;
  arm();
  on_wake_();
}

Status probeOpcodes(Loop& loop) {
  struct Needed {
    int op;
    const char* name;
  };
  static constexpr Needed kNeeded[] = {
      {IORING_OP_ACCEPT, "ACCEPT"},
      {IORING_OP_CONNECT, "CONNECT"},
      {IORING_OP_RECV, "RECV"},
      {IORING_OP_SEND, "SEND"},
      {IORING_OP_READ, "READ"},
      {IORING_OP_TIMEOUT, "TIMEOUT"},
      {IORING_OP_LINK_TIMEOUT, "LINK_TIMEOUT"},
      {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
  };
  io_uring_probe* probe = io_uring_get_probe_ring(loop.ring());
  if (probe == nullptr) return makeError("io_uring: cannot probe the supported opcodes");
  std::string missing;
  for (const Needed& needed : kNeeded) {
    if (!io_uring_opcode_supported(probe, needed.op)) {
      missing += missing.empty() ? needed.name : fmt::format(", {}", needed.name);
    }
  }
  io_uring_free_probe(probe);
  if (!missing.empty()) {
    return makeError(
        fmt::format("io_uring lacks opcodes spindle needs: {} (Linux 6.1 or later)", missing));
  }
  return {};
}

}  // namespace spindle::loop
