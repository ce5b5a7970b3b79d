// At most one event per interval; counts what it suppressed. For log lines that a flood of
// connections could otherwise repeat without bound. Not thread-safe: one per worker.
#pragma once

#include <chrono>
#include <cstdint>

namespace spindle {

class RateLimit {
 public:
  explicit RateLimit(std::chrono::steady_clock::duration interval) : interval_(interval) {}

  // True when the event may be reported now; *suppressed is how many were not since the last.
  bool allow(uint64_t* suppressed) {
    const auto now = std::chrono::steady_clock::now();
    if (reported_once_ && now - last_ < interval_) {
      ++suppressed_;
      return false;
    }
    reported_once_ = true;
    last_ = now;
    *suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }

 private:
  std::chrono::steady_clock::duration interval_;
  std::chrono::steady_clock::time_point last_{};
  uint64_t suppressed_ = 0;
  bool reported_once_ = false;
};

}  // namespace spindle
