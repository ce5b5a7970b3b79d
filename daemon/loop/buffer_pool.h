// A worker's pool of receive buffers, shared with the kernel as an io_uring provided-buffer
// ring. A receive with buffer selection takes a buffer only when data arrives, so an idle
// connection holds none; a buffer goes back to the ring once the send that used it completed.
//
// When the ring is empty a receive fails with -ENOBUFS; the receiver then waits in a FIFO
// and is resumed as buffers come back. So the pool bounds what a worker holds.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>

#include "loop/loop.h"
#include "util/result.h"

namespace spindle::loop {

class BufferWaiter {
 public:
  virtual void onBufferAvailable() = 0;

 protected:
  ~BufferWaiter() = default;
};

class BufferPool {
 public:
  // count: a power of two up to 32768.
  static Result<std::unique_ptr<BufferPool>> create(Loop& loop, uint16_t group, uint32_t count,
                                                    uint32_t size);
  // Destroy only after the loop: the kernel may write into the buffers until its ring is gone.
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // Prepares a receive into a buffer of this pool; the completion's flags carry its id.
  void prepareRecv(io_uring_sqe* sqe, int fd) const;
  // The buffer a completion received into; nullptr when it carries none.
  static bool hasBuffer(uint32_t cqe_flags) { return (cqe_flags & IORING_CQE_F_BUFFER) != 0; }
  static uint16_t bufferId(uint32_t cqe_flags) {
    return static_cast<uint16_t>(cqe_flags >> IORING_CQE_BUFFER_SHIFT);
  }
  char* data(uint16_t id) const { return base_ + static_cast<size_t>(id) * size_; }
  uint32_t bufferSize() const { return size_; }

  void release(uint16_t id);
  void waitForBuffer(BufferWaiter* waiter) { waiters_.push_back(waiter); }
  void cancelWait(BufferWaiter* waiter);

 private:
  BufferPool() = default;
  Loop* loop_ = nullptr;
  io_uring_buf_ring* ring_ = nullptr;
  size_t ring_bytes_ = 0;
  char* base_ = nullptr;
  size_t base_bytes_ = 0;
  uint32_t count_ = 0;
  uint32_t size_ = 0;
  uint16_t group_ = 0;
  std::deque<BufferWaiter*> waiters_;
};

}  // namespace spindle::loop
