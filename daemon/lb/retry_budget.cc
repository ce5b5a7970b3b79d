#include "lb/retry_budget.h"

#include <algorithm>

namespace spindle::lb {
namespace {

constexpr int64_t kSecondNs = 1'000'000'000;

}  // namespace

void RetryBudget::advance(int64_t now_ns) {
  const int64_t second = now_ns / kSecondNs;
  // A clock reading older than the current bucket (taken before another that came first)
  // counts in the current bucket.
  if (second <= second_) return;
  previous_ = second == second_ + 1 ? current_ : Counts{};
  current_ = Counts{};
  second_ = second;
}

double RetryBudget::weight(int64_t now_ns) const {
  const int64_t into = std::clamp<int64_t>(now_ns - second_ * kSecondNs, 0, kSecondNs);
  return 1.0 - static_cast<double>(into) / static_cast<double>(kSecondNs);
}

double RetryBudget::callsLastSecond(TimePoint now) {
  const int64_t now_ns = toNanos(now);
  advance(now_ns);
  return static_cast<double>(previous_.calls) * weight(now_ns) +
         static_cast<double>(current_.calls);
}

double RetryBudget::retriesLastSecond(TimePoint now) {
  const int64_t now_ns = toNanos(now);
  advance(now_ns);
  return static_cast<double>(previous_.retries) * weight(now_ns) +
         static_cast<double>(current_.retries);
}

void RetryBudget::onCall(TimePoint now) {
  advance(toNanos(now));
  ++current_.calls;
}

bool RetryBudget::tryRetry(TimePoint now, std::optional<TimePoint> call_arrived) {
  double calls = callsLastSecond(now);
  if (call_arrived) {
    // What of the call the window no longer counts: all of it before the previous bucket,
    // the faded part in it.
    const int64_t arrived_second = toNanos(*call_arrived) / kSecondNs;
    if (arrived_second < second_ - 1) {
      calls += 1;
    } else if (arrived_second == second_ - 1) {
      calls += 1 - weight(toNanos(now));
    }
  }
  const double allowed =
      std::max(kMinRetriesPerSecond, calls * static_cast<double>(percent_) / 100);
  // The slack absorbs rounding: a retry exactly at the budget is within it.
  if (retriesLastSecond(now) + 1 > allowed + 1e-9) return false;
  ++current_.retries;
  return true;
}

}  // namespace spindle::lb
