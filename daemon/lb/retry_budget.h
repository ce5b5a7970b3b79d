// Retry budget: transparent retries may add at most a share of the calls, so that a failing
// service is not hit with up to `retries.max` times its traffic just when it can least take it.
// One per worker and service, used on that worker's thread only: no atomics. Pure logic, the
// clock passed in.
#pragma once

#include <optional>

#include <cstdint>

#include "lb/endpoints.h"

namespace spindle::lb {

class RetryBudget {
 public:
  // Retries in the last second may reach this many whatever the traffic, so that a quiet
  // service still retries the odd refused call.
  static constexpr double kMinRetriesPerSecond = 10;

  explicit RetryBudget(uint32_t budget_percent) : percent_(budget_percent) {}

  // A call arrived (once per call, not per attempt).
  void onCall(TimePoint now);
  // Whether a retry may go out now; when it may, it is counted. Allowed while the retries in
  // the last second, this one included, stay within max(10, budget_percent% of the calls in
  // the last second). `call_arrived`: when the call being retried arrived; it counts in full
  // for its own retry, even when the window has begun to fade it out (a call just before a
  // bucket edge, its retry just after: with 100% it must still be allowed).
  bool tryRetry(TimePoint now, std::optional<TimePoint> call_arrived = std::nullopt);

  // The sliding-window counts at `now` (for tests and metrics).
  double callsLastSecond(TimePoint now);
  double retriesLastSecond(TimePoint now);

 private:
  // The last second is two one-second buckets: the current one, and the previous one weighted
  // by how much of it still lies within a second of now. Exact for a steady rate, and a
  // burst fades out over a second instead of vanishing at a bucket edge.
  struct Counts {
    uint64_t calls = 0;
    uint64_t retries = 0;
  };
  void advance(int64_t now_ns);
  double weight(int64_t now_ns) const;

  uint32_t percent_;
  int64_t second_ = 0;  // the current bucket: nanoseconds / 1e9
  Counts current_;
  Counts previous_;
};

}  // namespace spindle::lb
