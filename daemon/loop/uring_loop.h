// The io_uring engine: each operation is one SQE, each completion one CQE, passed on as it is.
// The ring is created with IORING_SETUP_SINGLE_ISSUER: only the thread that runs it uses it.
#pragma once

#include <liburing.h>

#include "loop/loop.h"

namespace spindle::loop {

class UringLoop final : public Loop {
 public:
  static Result<std::unique_ptr<UringLoop>> create(unsigned entries);
  ~UringLoop() override;

  Engine engine() const override { return Engine::kIoUring; }
  void accept(Completion* op, int listener) override;
  void connect(Completion* op, int fd, const sockaddr* address, socklen_t length,
               const Deadline* deadline) override;
  void recv(Completion* op, int fd, void* buffer, size_t length, const Deadline* deadline) override;
  void recv(Completion* op, int fd, BufferPool& pool) override;
  void send(Completion* op, int fd, const void* data, size_t length, int flags) override;
  void read(Completion* op, int fd, void* buffer, size_t length) override;
  void poll(Completion* op, int fd, uint32_t events) override;
  void timeout(Completion* op, const __kernel_timespec* after) override;
  void cancel(Completion* op) override;
  void cancelFd(int fd) override;
  void cancelTimeout(Completion* op) override;
  void cancelPoll(Completion* op) override;
  void runOnce(std::chrono::milliseconds timeout) override;

  io_uring* ring() { return &ring_; }

 private:
  UringLoop() = default;
  // An SQE whose completion goes to `op` (nullptr: ignored). A full queue is flushed, never an
  // error.
  io_uring_sqe* prepare(Completion* op);
  void bound(io_uring_sqe* sqe, const Deadline* deadline);

  io_uring ring_{};
};

}  // namespace spindle::loop
