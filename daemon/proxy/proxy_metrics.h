// The proxy's metric families, registered once by the main thread, and a worker's handles
// on them. Each worker writes its own shard; a scrape merges the shards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>

#include "h2/session.h"
#include "lb/service_table.h"
#include "metrics/registry.h"
#include "proxy/upstream_sockets.h"

namespace spindle::proxy {

struct ProxyFamilies {
  metrics::FamilyId downstream_connections_total;   // {protocol}
  metrics::FamilyId downstream_connections_active;  // {protocol}
  metrics::FamilyId requests_total;                 // {service, endpoint, grpc_status}
  metrics::FamilyId request_duration_seconds;       // {service}
  metrics::FamilyId retries_total;                  // {service, reason}
  metrics::FamilyId ejections_total;                // {service}
  metrics::FamilyId panics_total;                   // {service}
  metrics::FamilyId source_requests_total;          // {source, service}
  metrics::FamilyId h2_violations_total;            // {side, reason}
  metrics::FamilyId limit_closes_total;             // {reason}
  metrics::FamilyId limit_resets_total;             // {reason}
  metrics::FamilyId socket_failures_total;          // {reason}

  static Result<ProxyFamilies> registerIn(metrics::Registry& registry);
};

// A worker's handles. Families whose labels are known at start are resolved once; per-call
// series (service, endpoint, status) are looked up when a call ends, which allocates only the
// first time a series is seen.
class WorkerMetrics {
 public:
  // by_source: count calls per calling Pod too (metrics.by_source).
  WorkerMetrics(const ProxyFamilies& families, metrics::Shard& shard, bool by_source = false);

  enum class Protocol { kH2, kPassthrough, kRejected };
  void connectionOpened(Protocol protocol);
  void connectionClosed(Protocol protocol);
  // grpc_status: "0".."16", "other" for a status outside that range, "reset" when the stream
  // was reset without a status, "none" when it ended cleanly without one. endpoint: "none"
  // when the call never reached one. source: the calling Pod (its UID, or its cgroup path off
  // Kubernetes), counted only with by_source.
  void callEnded(std::string_view service, std::string_view endpoint, std::string_view grpc_status,
                 std::string_view source, double seconds);
  void retried(std::string_view service, std::string_view reason);
  void socketFailed(SocketFailure failure);
  void upstreamLimitReached();
  void ejected(std::string_view service);
  void panicked(std::string_view service);
  // A peer broke an HTTP/2 rule and its connection was closed.
  void violation(bool upstream, h2::Violation violation);

  // Open downstream connections of this worker (being detected, HTTP/2 or passed through),
  // for limits.max_connections.
  void detectorStarted() { ++detecting_; }
  void detectorEnded() { --detecting_; }
  size_t downstreamOpen() const { return detecting_ + open_[0] + open_[1]; }
  // A new connection closed at once: the worker is at limits.max_connections.
  void overConnectionLimit() { over_limit_.inc(); }
  // A connection closed for having no streams for limits.idle_timeout.
  void idleClosed() { idle_closed_.inc(); }
  // A call reset both ways: its app took none of the response for limits.send_timeout.
  void sendTimedOut() { send_timeout_resets_.inc(); }

  // From the worker's loop, about once a second (no call pays for it): retires the series of
  // endpoints that are no longer in their service's set in `table`, of services no longer in
  // it, and of calling Pods that `source_present` says are gone, revives those that came
  // back, and sweeps the shard (see metrics/registry.h). Told rather than guessed from
  // idleness: an endpoint or Pod that is there but has no calls keeps its series, whose sum
  // over the workers never goes down, so rate() on a dashboard reads 0 rather than a gap or a
  // counter reset.
  using SourcePresent = std::function<bool(std::string_view source)>;
  void expire(const std::shared_ptr<const lb::ServiceTable>& table,
              const SourcePresent& source_present, metrics::TimePoint now);

 private:
  const ProxyFamilies& families_;
  metrics::Shard& shard_;
  metrics::Counter opened_[3];
  metrics::Gauge active_[3];
  metrics::Counter violations_[2][h2::kViolationCount];
  metrics::Counter over_limit_;
  metrics::Counter idle_closed_;
  metrics::Counter send_timeout_resets_;
  size_t open_[2] = {0, 0};
  size_t detecting_ = 0;
  bool by_source_;
  // What expire() last reconciled the families keyed by service with: the table (held, so
  // that a new one is never mistaken for it) and each family's series created by then.
  static constexpr size_t kServiceFamilies = 5;
  std::shared_ptr<const lb::ServiceTable> reconciled_table_;
  uint64_t reconciled_created_[kServiceFamilies] = {};
};

// The text of a grpc-status code 0..16 as a label value; "other" beyond.
std::string_view grpcStatusLabel(int status);

}  // namespace spindle::proxy
