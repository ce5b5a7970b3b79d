// Passive health (outlier ejection): endpoints are judged by the calls they serve, with no
// probes of their own. An endpoint that fails `consecutive_failures` calls in a row is left out
// of balancing for a while, and comes back by itself when its time is up. Pure logic on the
// shared EndpointLoad; the proxy reports each call's outcome.
//
// What counts as a failure is the caller's call: a connect error or timeout, REFUSED_STREAM, a
// reset connection, or grpc-status UNAVAILABLE answered by the endpoint itself. Any other
// answer, error statuses included, is the application speaking and counts as a success.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "lb/endpoints.h"
#include "lb/policy.h"

namespace spindle::lb {

// What a failure did, for the caller's counters and logs.
enum class FailureOutcome {
  kCounted,         // one more failure in a row, still below the threshold
  kEjected,         // this failure ejected the endpoint
  kEjectionCapped,  // at the threshold, but max_ejected_percent of the set is out already
  kAlreadyEjected,  // the endpoint is ejected (a call that started before): not counted
};

// A call the endpoint answered: its failures are no longer "in a row".
void onSuccess(EndpointLoad& load);

// A failed call. `set` is the snapshot the call was balanced over; the ejected share is
// counted in it. Two workers ejecting at the same moment can each see room for one more,
// so the cap may be passed by one endpoint per racing worker, briefly; it holds again as soon
// as either ejection ends, and a lock to make it exact would sit on every failure path.
FailureOutcome onFailure(EndpointLoad& load, const EndpointSet& set, TimePoint now,
                         const OutlierSettings& settings);

bool isEjected(const EndpointLoad& load, TimePoint now);

// base_ejection * 2^ejections_so_far, at most max_ejection.
std::chrono::nanoseconds ejectionDuration(uint32_t ejections_so_far,
                                          const OutlierSettings& settings);

// How many of `endpoints` may be ejected at once: floor(endpoints * percent / 100), but at
// least one when there are two or more endpoints and percent > 0. Without that, a small set
// (2 endpoints at 10%, or 3 at 30%) could never eject a dead endpoint. A set of one is never
// ejected below 100%: with nowhere else to go, its calls would go to it anyway (panic).
size_t maxEjected(size_t endpoints, uint32_t percent);

// Endpoints of `set` ejected at `now`.
size_t countEjected(const EndpointSet& set, TimePoint now);

}  // namespace spindle::lb
