// The time of the I/O completion being handled. A worker's loop reads the clock once per
// completion; the call path (deadlines, latencies, budgets, timeouts) reads this instead of
// the clock, which it would otherwise read several times per call for the same instant:
// every frame of one read arrived together. Outside a loop (tests, tools, start-up) it is
// the clock itself.
#pragma once

#include <chrono>

namespace spindle {

class EventClock {
 public:
  using Clock = std::chrono::steady_clock;

  static Clock::time_point now() {
    return current_ != Clock::time_point{} ? current_ : Clock::now();
  }

  // Set while the loop handles one completion; the clock again when it goes.
  class Scope {
   public:
    Scope() { current_ = Clock::now(); }
    ~Scope() { current_ = Clock::time_point{}; }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    // The next completion of the same batch.
    void advance() { current_ = Clock::now(); }
  };

 private:
  static inline thread_local Clock::time_point current_{};
};

}  // namespace spindle
