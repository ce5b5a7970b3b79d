// What a peer may spend on frames that cost us work and it nothing (config::Limits). The
// budgets last as long as the connection: a server's early frames (h2/early_frames.h) spend
// them first, its nghttp2 session goes on from what is left.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace spindle::h2 {

// A token bucket: `burst` tokens, refilled at a tenth of it per second. In floats (bursts
// are at most 10^6, config::Limits): a connection holds six.
class Budget {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Budget(uint32_t burst)
      : tokens_(static_cast<float>(burst)), burst_(static_cast<float>(burst)) {}

  bool take(Clock::time_point now) {
    const double seconds = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    tokens_ = static_cast<float>(std::min<double>(burst_, tokens_ + seconds * burst_ / 10));
    if (tokens_ < 1) return false;
    tokens_ -= 1;
    return true;
  }
  void giveBack(float n) { tokens_ = tokens_ + n > burst_ ? burst_ : tokens_ + n; }

 private:
  float tokens_;
  float burst_;
  Clock::time_point last_{};
};

// One budget per kind of abuse it guards against (see Violation).
struct Budgets {
  Budgets(uint32_t max_glitches, uint32_t max_control_frames)
      : glitches(max_glitches),
        settings_frames(max_control_frames),
        pings(max_control_frames),
        window_updates(max_control_frames),
        priorities(max_control_frames),
        empty_frames(max_control_frames) {}

  Budget glitches;  // stream errors the peer provoked
  Budget settings_frames;
  Budget pings;
  Budget window_updates;
  Budget priorities;
  Budget empty_frames;  // DATA frames with nothing in them and no END_STREAM
};

}  // namespace spindle::h2
