#include "loop/buffer_pool.h"

#include <fmt/core.h>
#include <liburing.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "loop/uring_loop.h"

namespace spindle::loop {

Result<std::unique_ptr<BufferPool>> BufferPool::create(Loop& loop, uint16_t group, uint32_t count,
                                                       uint32_t size) {
  if (count == 0 || count > 32768 || (count & (count - 1)) != 0) {
    return makeError(fmt::format("buffer pool: {} is not a power of two up to 32768", count));
  }
  std::unique_ptr<BufferPool> pool(new BufferPool());
  pool->count_ = count;
  pool->size_ = size;
  pool->group_ = group;
  pool->base_bytes_ = static_cast<size_t>(count) * size;
  void* base = ::mmap(nullptr, pool->base_bytes_, PROT_READ | PROT_WRITE,
                      MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (base == MAP_FAILED) return makeError(fmt::format("buffers: {}", std::strerror(errno)));
  pool->base_ = static_cast<char*>(base);

  if (loop.engine() == Engine::kEpoll) {
    pool->free_.reserve(count);
    for (uint32_t id = count; id-- > 0;) pool->free_.push_back(static_cast<uint16_t>(id));
    return pool;
  }
  // liburing 2.3 has no io_uring_setup_buf_ring: map the ring and register it by hand.
  pool->ring_bytes_ = sizeof(io_uring_buf) * count;
  void* ring = ::mmap(nullptr, pool->ring_bytes_, PROT_READ | PROT_WRITE,
                      MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (ring == MAP_FAILED) return makeError(fmt::format("buffer ring: {}", std::strerror(errno)));
  pool->ring_ = static_cast<io_uring_buf_ring*>(ring);
  io_uring_buf_ring_init(pool->ring_);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uintptr_t>(pool->ring_);
  reg.ring_entries = count;
  reg.bgid = group;
  if (int rc = io_uring_register_buf_ring(static_cast<UringLoop&>(loop).ring(), &reg, 0); rc < 0) {
    return makeError(
        fmt::format("io_uring_register_buf_ring (Linux 5.19 or later): {}", std::strerror(-rc)));
  }
  const int mask = io_uring_buf_ring_mask(count);
  for (uint32_t id = 0; id < count; ++id) {
    io_uring_buf_ring_add(pool->ring_, pool->data(static_cast<uint16_t>(id)), size,
                          static_cast<unsigned short>(id), mask, static_cast<int>(id));
  }
  io_uring_buf_ring_advance(pool->ring_, static_cast<int>(count));
  return pool;
}

BufferPool::~BufferPool() {
  // The ring is gone by now (see the header), and with it the registration.
  if (ring_ != nullptr) ::munmap(ring_, ring_bytes_);
  if (base_ != nullptr) ::munmap(base_, base_bytes_);
}

void BufferPool::release(uint16_t id) {
  if (ring_ != nullptr) {
    io_uring_buf_ring_add(ring_, data(id), size_, id, io_uring_buf_ring_mask(count_), 0);
    io_uring_buf_ring_advance(ring_, 1);
  } else {
    free_.push_back(id);
  }
  if (!waiters_.empty()) {
    BufferWaiter* waiter = waiters_.front();
    waiters_.pop_front();
    waiter->onBufferAvailable();
  }
}

bool BufferPool::take(uint16_t* id) {
  if (free_.empty()) return false;
  *id = free_.back();
  free_.pop_back();
  return true;
}

void BufferPool::cancelWait(BufferWaiter* waiter) {
  waiters_.erase(std::remove(waiters_.begin(), waiters_.end(), waiter), waiters_.end());
}

}  // namespace spindle::loop
