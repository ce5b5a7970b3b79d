#include "loop/uring_loop.h"

#include <fmt/core.h>

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "loop/buffer_pool.h"
#include "util/event_clock.h"
#include "util/fd.h"

namespace spindle::loop {
namespace {

static_assert(kFlagBuffer == IORING_CQE_F_BUFFER && kFlagMore == IORING_CQE_F_MORE &&
                  kBufferIdShift == IORING_CQE_BUFFER_SHIFT,
              "the loop's completion flags are io_uring's");

std::string refusedMessage(int err) {
  if (err == EPERM || err == EACCES || err == ENOSYS) {
    return fmt::format("io_uring_setup: {} (seccomp or kernel.io_uring_disabled)",
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
    return makeError(
        fmt::format("restricting a ring's operations (Linux 5.10): {}", std::strerror(errno)));
  }
  if (::syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0) <
      0) {
    return makeError(fmt::format("enabling a ring (Linux 5.10): {}", std::strerror(errno)));
  }
  return {};
}

Status initRing(io_uring* ring, unsigned entries) {
  io_uring_params params{};
  // SINGLE_ISSUER and DEFER_TASKRUN (Linux 6.1): completions run only when this thread asks
  // for them, which batches them and avoids interrupting the thread. Optional.
  params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
  int rc = io_uring_queue_init_params(entries, ring, &params);
  if (rc == -EINVAL) {
    params = io_uring_params{};
    params.flags = IORING_SETUP_R_DISABLED;
    rc = io_uring_queue_init_params(entries, ring, &params);
  }
  if (rc == -EINVAL) return makeError("io_uring_setup: no IORING_SETUP_R_DISABLED (Linux 5.10)");
  if (rc < 0) return makeError(refusedMessage(-rc));
  if (Status s = restrict(ring); !s) {
    io_uring_queue_exit(ring);
    return s;
  }
  return {};
}

// Submits one SQE and returns its result.
int32_t submitOne(io_uring* ring, io_uring_sqe* sqe) {
  io_uring_sqe_set_data64(sqe, 1);
  io_uring_cqe* cqe = nullptr;
  if (int rc = io_uring_submit_and_wait(ring, 1); rc < 0) return rc;
  if (int rc = io_uring_wait_cqe(ring, &cqe); rc < 0) return rc;
  const int32_t res = cqe->res;
  io_uring_cqe_seen(ring, cqe);
  return res;
}

// What the ring lacks of spindle's operations: the opcodes, and the features that came after
// them (a flag the kernel answers with -EINVAL until it has it).
Status probeRing(io_uring* ring) {
  struct Needed {
    int op;
    const char* name;
    const char* since;
  };
  static constexpr Needed kNeeded[] = {
      {IORING_OP_ACCEPT, "ACCEPT", "5.5"},
      {IORING_OP_CONNECT, "CONNECT", "5.5"},
      {IORING_OP_RECV, "RECV", "5.6"},
      {IORING_OP_SEND, "SEND", "5.6"},
      {IORING_OP_READ, "READ", "5.6"},
      {IORING_OP_POLL_ADD, "POLL_ADD", "5.1"},
      {IORING_OP_TIMEOUT, "TIMEOUT", "5.4"},
      {IORING_OP_LINK_TIMEOUT, "LINK_TIMEOUT", "5.5"},
      {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL", "5.5"},
  };
  io_uring_probe* probe = io_uring_get_probe_ring(ring);
  if (probe == nullptr) return makeError("io_uring: cannot probe the operations (Linux 5.6)");
  std::string missing;
  for (const Needed& needed : kNeeded) {
    if (!io_uring_opcode_supported(probe, needed.op)) {
      if (!missing.empty()) missing += ", ";
      missing += fmt::format("{} (Linux {})", needed.name, needed.since);
    }
  }
  io_uring_free_probe(probe);
  if (!missing.empty()) return makeError(fmt::format("io_uring lacks {}", missing));

  // A multishot accept of something that is not a socket: -ENOTSOCK where the kernel has
  // multishot accept, -EINVAL (the flag) where it has not.
  Fd not_a_socket(::eventfd(0, EFD_CLOEXEC));
  if (!not_a_socket.valid()) return makeError(fmt::format("eventfd: {}", std::strerror(errno)));
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  io_uring_prep_multishot_accept(sqe, not_a_socket.get(), nullptr, nullptr, 0);
  if (submitOne(ring, sqe) == -EINVAL) return makeError("no multishot accept (Linux 5.19)");
  // Cancelling by fd, with nothing to cancel: -ENOENT, or -EINVAL before Linux 5.19.
  sqe = io_uring_get_sqe(ring);
  io_uring_prep_cancel_fd(sqe, not_a_socket.get(), IORING_ASYNC_CANCEL_ALL);
  if (submitOne(ring, sqe) == -EINVAL) return makeError("no cancel by fd (Linux 5.19)");

  // A provided-buffer ring of one buffer.
  const size_t bytes = sizeof(io_uring_buf);
  void* memory = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (memory == MAP_FAILED) return makeError(fmt::format("mmap: {}", std::strerror(errno)));
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uintptr_t>(memory);
  reg.ring_entries = 1;
  reg.bgid = 0;
  const int rc = io_uring_register_buf_ring(ring, &reg, 0);
  if (rc == 0) io_uring_unregister_buf_ring(ring, 0);
  ::munmap(memory, bytes);
  if (rc < 0) {
    return makeError(fmt::format("no provided-buffer rings (Linux 5.19): {}", std::strerror(-rc)));
  }
  return {};
}

}  // namespace

Status probeIoUring() {
  io_uring ring{};
  if (Status s = initRing(&ring, 8); !s) return s;
  Status status = probeRing(&ring);
  io_uring_queue_exit(&ring);
  return status;
}

Result<std::unique_ptr<UringLoop>> UringLoop::create(unsigned entries) {
  std::unique_ptr<UringLoop> loop(new UringLoop());
  if (Status s = initRing(&loop->ring_, entries); !s) {
    loop->ring_.ring_fd = -1;
    return Error{s.error()};
  }
  return loop;
}

UringLoop::~UringLoop() {
  if (ring_.ring_fd >= 0) io_uring_queue_exit(&ring_);
}

io_uring_sqe* UringLoop::prepare(Completion* op) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (sqe == nullptr) {
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  io_uring_sqe_set_data(sqe, op);
  return sqe;
}

void UringLoop::bound(io_uring_sqe* sqe, const Deadline* deadline) {
  if (deadline == nullptr) return;
  sqe->flags |= IOSQE_IO_LINK;
  io_uring_prep_link_timeout(prepare(deadline->op), const_cast<__kernel_timespec*>(deadline->after),
                             0);
}

void UringLoop::accept(Completion* op, int listener) {
  io_uring_prep_multishot_accept(prepare(op), listener, nullptr, nullptr,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
}

void UringLoop::connect(Completion* op, int fd, const sockaddr* address, socklen_t length,
                        const Deadline* deadline) {
  io_uring_sqe* sqe = prepare(op);
  io_uring_prep_connect(sqe, fd, address, length);
  bound(sqe, deadline);
}

void UringLoop::recv(Completion* op, int fd, void* buffer, size_t length,
                     const Deadline* deadline) {
  io_uring_sqe* sqe = prepare(op);
  io_uring_prep_recv(sqe, fd, buffer, length, 0);
  bound(sqe, deadline);
}

void UringLoop::recv(Completion* op, int fd, BufferPool& pool) {
  io_uring_sqe* sqe = prepare(op);
  io_uring_prep_recv(sqe, fd, nullptr, pool.bufferSize(), 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = pool.group();
}

void UringLoop::send(Completion* op, int fd, const void* data, size_t length, int flags) {
  io_uring_prep_send(prepare(op), fd, data, length, flags);
}

void UringLoop::read(Completion* op, int fd, void* buffer, size_t length) {
  io_uring_prep_read(prepare(op), fd, buffer, static_cast<unsigned>(length), 0);
}

void UringLoop::poll(Completion* op, int fd, uint32_t events) {
  io_uring_prep_poll_add(prepare(op), fd, events);
}

void UringLoop::timeout(Completion* op, const __kernel_timespec* after) {
  // The kernel reads the timespec when the SQE is submitted, not here.
  io_uring_prep_timeout(prepare(op), const_cast<__kernel_timespec*>(after), 0, 0);
}

void UringLoop::cancel(Completion* op) { io_uring_prep_cancel(prepare(nullptr), op, 0); }

void UringLoop::cancelFd(int fd) {
  io_uring_prep_cancel_fd(prepare(nullptr), fd, IORING_ASYNC_CANCEL_ALL);
}

void UringLoop::cancelTimeout(Completion* op) {
  io_uring_prep_timeout_remove(prepare(nullptr), reinterpret_cast<uint64_t>(op), 0);
}

void UringLoop::cancelPoll(Completion* op) {
  io_uring_prep_poll_remove(prepare(nullptr), reinterpret_cast<uint64_t>(op));
}

void UringLoop::runOnce(std::chrono::milliseconds timeout) {
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
  endBatch();
}

}  // namespace spindle::loop
