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

bool RetryBudget::tryRetry(TimePoint now) {
  const double allowed =
      std::max(kMinRetriesPerSecond, callsLastSecond(now) * static_cast<double>(percent_) / 100);
  if (retriesLastSecond(now) + 1 > allowed) return false;
  ++current_.retries;
  return true;
}

}  // namespace spindle::lb
