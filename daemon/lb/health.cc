#include "lb/health.h"

#include <atomic>

namespace spindle::lb {

void onSuccess(EndpointLoad& load) {
  // Most calls succeed: read first so that a healthy endpoint's cache line is not written by
  // every worker on every response.
  if (load.consecutive_failures.load(std::memory_order_relaxed) != 0) {
    load.consecutive_failures.store(0, std::memory_order_relaxed);
  }
}

bool isEjected(const EndpointLoad& load, TimePoint now) {
  return toNanos(now) < load.ejected_until_ns.load(std::memory_order_relaxed);
}

std::chrono::nanoseconds ejectionDuration(uint32_t ejections_so_far,
                                          const OutlierSettings& settings) {
  const std::chrono::nanoseconds max = settings.max_ejection;
  std::chrono::nanoseconds duration = settings.base_ejection;
  // Doubling stops at max, so it never overflows whatever the count.
  for (uint32_t i = 0; i < ejections_so_far && duration < max; ++i) duration *= 2;
  return duration < max ? duration : max;
}

size_t maxEjected(size_t endpoints, uint32_t percent) {
  if (percent == 0) return 0;
  const size_t share = endpoints * percent / 100;
  if (share == 0 && endpoints >= 2) return 1;
  return share;
}

size_t countEjected(const EndpointSet& set, TimePoint now) {
  size_t count = 0;
  for (const Endpoint& endpoint : set.endpoints()) {
    if (endpoint.load && isEjected(*endpoint.load, now)) ++count;
  }
  return count;
}

FailureOutcome onFailure(EndpointLoad& load, const EndpointSet& set, TimePoint now,
                         const OutlierSettings& settings) {
  const int64_t now_ns = toNanos(now);
  int64_t until = load.ejected_until_ns.load(std::memory_order_relaxed);
  // Calls that were in flight when the endpoint was ejected fail late; they say nothing new
  // and must not make its next run start with failures already counted.
  if (now_ns < until) return FailureOutcome::kAlreadyEjected;

  // fetch_add, not load-then-store: every failure counts even when workers race.
  const uint32_t failures = load.consecutive_failures.fetch_add(1, std::memory_order_relaxed) + 1;
  if (failures < settings.consecutive_failures) return FailureOutcome::kCounted;

  // The count stays at the threshold while the cap holds, so the first failure after room
  // frees up ejects.
  if (countEjected(set, now) >= maxEjected(set.size(), settings.max_ejected_percent)) {
    return FailureOutcome::kEjectionCapped;
  }

  uint32_t ejections = load.ejections.load(std::memory_order_relaxed);
  // The backoff forgets an endpoint's past once it has served for max_ejection since it came
  // back: a Pod that failed once last week is not ejected for a minute today.
  const std::chrono::nanoseconds max = settings.max_ejection;
  if (ejections > 0 && until != 0 && now_ns - until >= max.count()) ejections = 0;
  const int64_t new_until = now_ns + ejectionDuration(ejections, settings).count();
  // Only one racing worker ejects (and counts the ejection); the others see it done.
  if (!load.ejected_until_ns.compare_exchange_strong(until, new_until, std::memory_order_relaxed)) {
    return FailureOutcome::kAlreadyEjected;
  }
  load.ejections.store(ejections + 1, std::memory_order_relaxed);
  // It returns with a clean slate: failures are counted afresh from its return.
  load.consecutive_failures.store(0, std::memory_order_relaxed);
  return FailureOutcome::kEjected;
}

}  // namespace spindle::lb
