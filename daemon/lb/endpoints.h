// A service's endpoints as the workers see them: an immutable snapshot, replaced whole when
// the set changes (DNS, config reload), plus per-endpoint load that all workers share.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "net/address.h"

namespace spindle::lb {

// Every time in lb is a steady-clock time passed in by the caller (tests pass a fake one).
// Atomics hold it as nanoseconds since the clock's epoch.
using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

inline int64_t toNanos(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// Load and health of one endpoint, shared by every worker (relaxed atomics: a balancer needs
// a recent value, not a synchronised one). It outlives snapshots: an endpoint that stays in
// the set keeps its EndpointLoad, so its in-flight count, latency and ejection carry over.
//
// Lock-free throughout. Where a field is updated by a load-then-store (the latency average),
// two workers racing may lose one's sample: that only makes an estimate a little less
// precise, never wrong in kind, and a lock on every response would cost more than it buys.
// Counters that must be exact use atomic read-modify-writes (see lb/health.cc).
struct EndpointLoad {
  EndpointLoad() = default;
  // An endpoint that joins a running service (a DNS change) starts its slow start at `joined`.
  explicit EndpointLoad(TimePoint joined) : joined_ns(toNanos(joined)) {}

  std::atomic<uint32_t> active_streams{0};
  std::atomic<uint64_t> total_calls{0};  // calls the endpoint answered (for status pages)

  // Peak EWMA of call latency in ns (lb::recordLatency); 0 = no sample yet.
  std::atomic<uint64_t> latency_ewma_ns{0};
  std::atomic<int64_t> latency_updated_ns{0};  // when the last sample was taken

  // Passive health (lb/health.h).
  std::atomic<uint32_t> consecutive_failures{0};
  // Ejected while now < ejected_until_ns. Kept after it passes: it is when the endpoint
  // came back, which decides whether its ejection backoff starts over.
  std::atomic<int64_t> ejected_until_ns{0};
  std::atomic<uint32_t> ejections{0};  // ejections so far, for the exponential backoff

  // When the endpoint joined, for slow start; 0 = there from the start, never slowed (at
  // start-up every endpoint is equally new, so there is nothing to ramp up against).
  std::atomic<int64_t> joined_ns{0};

  // Open upstream connections to the endpoint, all workers together (for the metrics).
  std::atomic<uint32_t> upstream_connections{0};
  // "ip:port", the endpoint's metric label. Set before the snapshot is published, read-only
  // after: workers read it without synchronisation.
  std::string label;
};

struct Endpoint {
  net::SocketAddress address;
  std::shared_ptr<EndpointLoad> load;
};

class EndpointSet {
 public:
  EndpointSet(std::string service, std::vector<Endpoint> endpoints)
      : service_(std::move(service)), endpoints_(std::move(endpoints)) {}

  const std::string& service() const { return service_; }
  const std::vector<Endpoint>& endpoints() const { return endpoints_; }
  size_t size() const { return endpoints_.size(); }
  bool empty() const { return endpoints_.empty(); }
  const Endpoint& operator[](size_t i) const { return endpoints_[i]; }

 private:
  std::string service_;
  std::vector<Endpoint> endpoints_;
};

using EndpointSetPtr = std::shared_ptr<const EndpointSet>;

}  // namespace spindle::lb
