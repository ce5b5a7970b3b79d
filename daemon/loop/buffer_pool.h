// A worker's pool of receive buffers. A pooled receive takes a buffer only when data arrives,
// so an idle connection holds none; a buffer goes back to the pool once the send that used it
// completed. With io_uring the pool is a provided-buffer ring shared with the kernel; with
// epoll the engine takes a buffer from the free list when the socket is readable.
//
// When the pool is empty a receive fails with -ENOBUFS; the receiver then waits in a FIFO
// and is resumed as buffers come back. So the pool bounds what a worker holds.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "loop/loop.h"
#include "util/result.h"

struct io_uring_buf_ring;

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

  // The buffer a completion received into, if it carries one.
  static bool hasBuffer(uint32_t flags) { return (flags & kFlagBuffer) != 0; }
  static uint16_t bufferId(uint32_t flags) {
    return static_cast<uint16_t>(flags >> kBufferIdShift);
  }
  char* data(uint16_t id) const { return base_ + static_cast<size_t>(id) * size_; }
  uint32_t bufferSize() const { return size_; }
  uint16_t group() const { return group_; }

  void release(uint16_t id);
  void waitForBuffer(BufferWaiter* waiter) { waiters_.push_back(waiter); }
  void cancelWait(BufferWaiter* waiter);

  // For the epoll engine: a free buffer for a receive (false when none is), and one given back
  // unfilled, which wakes no waiter (it was free before).
  bool take(uint16_t* id);
  void putBack(uint16_t id) { free_.push_back(id); }

 private:
  BufferPool() = default;
  io_uring_buf_ring* ring_ = nullptr;  // io_uring only
  size_t ring_bytes_ = 0;
  std::vector<uint16_t> free_;  // epoll only
  char* base_ = nullptr;
  size_t base_bytes_ = 0;
  uint32_t count_ = 0;
  uint32_t size_ = 0;
  uint16_t group_ = 0;
  std::deque<BufferWaiter*> waiters_;
};

}  // namespace spindle::loop
