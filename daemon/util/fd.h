// Fd: the one owner of a file descriptor. Every fd spindle opens lives in one.
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <utility>

namespace spindle {

// How many times each descriptor number was closed through an Fd. The epoll engine keeps a
// socket registered with the kernel across operations while its number's count is unchanged:
// a changed count means the number may now be another file, which must be registered anew.
// Numbers past the table are never trusted (registered again each time). 4 MiB of zero pages,
// touched only where descriptors are. So a socket the loop uses must be closed through its Fd,
// never with a bare close().
namespace fd_closes {
inline constexpr int kTracked = 1 << 20;
inline std::atomic<uint32_t> counts[kTracked];
inline void note(int fd) {
  if (fd >= 0 && fd < kTracked) counts[fd].fetch_add(1, std::memory_order_relaxed);
}
inline bool tracked(int fd) { return fd >= 0 && fd < kTracked; }
inline uint32_t of(int fd) { return tracked(fd) ? counts[fd].load(std::memory_order_relaxed) : 0; }
}  // namespace fd_closes

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) {
      fd_closes::note(fd_);
      ::close(fd_);
    }
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace spindle
