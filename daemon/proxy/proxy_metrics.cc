#include "proxy/proxy_metrics.h"

#include <algorithm>
#include <array>
#include <utility>
#include <vector>

namespace spindle::proxy {
namespace {
constexpr std::string_view kProtocols[] = {"h2", "passthrough", "rejected"};
// The endpoint label of calls that never reached one: it never goes away.
constexpr std::string_view kNoEndpoint = "none";
// Seconds: gRPC calls from well under a millisecond to long streams.
const std::vector<double> kDurationBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                              0.25,   0.5,   1,      2.5,   5,    10,    60};
}  // namespace

Result<ProxyFamilies> ProxyFamilies::registerIn(metrics::Registry& registry) {
  ProxyFamilies f{};
  struct Entry {
    metrics::FamilyId* id;
    metrics::FamilySpec spec;
  };
  using metrics::Type;
  Entry entries[] = {
      {&f.downstream_connections_total,
       {"spindle_downstream_connections_total",
        "Connections redirected to spindle, by how they were served.",
        Type::kCounter,
        {"protocol"},
        {},
        8}},
      {&f.downstream_connections_active,
       {"spindle_downstream_connections_active",
        "Open connections from Pods, by protocol.",
        Type::kGauge,
        {"protocol"},
        {},
        8}},
      {&f.requests_total,
       {"spindle_requests_total",
        "gRPC calls by service, endpoint and the grpc-status the app got.",
        Type::kCounter,
        {"service", "endpoint", "grpc_status"},
        {},
        4096}},
      {&f.request_duration_seconds,
       {"spindle_request_duration_seconds",
        "Duration of gRPC calls through spindle.",
        Type::kHistogram,
        {"service"},
        kDurationBuckets,
        256}},
      {&f.retries_total,
       {"spindle_retries_total",
        "Calls sent again because the endpoint never processed them.",
        Type::kCounter,
        {"service", "reason"},
        {},
        512}},
      {&f.ejections_total,
       {"spindle_ejections_total",
        "Endpoints ejected by passive health checking.",
        Type::kCounter,
        {"service"},
        {},
        256}},
      {&f.source_requests_total,
       {"spindle_source_requests_total",
        "gRPC calls by calling Pod (its UID, or its cgroup path off Kubernetes) and service.",
        Type::kCounter,
        {"source", "service"},
        {},
        1024}},
      {&f.h2_violations_total,
       {"spindle_h2_violations_total",
        "HTTP/2 connections closed because the peer broke a rule, by side and rule.",
        Type::kCounter,
        {"side", "reason"},
        {},
        64}},
      {&f.limit_closes_total,
       {"spindle_limit_closes_total",
        "Downstream connections closed by a limit: max_connections (refused at once) or idle.",
        Type::kCounter,
        {"reason"},
        {},
        4}},
      {&f.limit_resets_total,
       {"spindle_limit_resets_total",
        "Calls reset (RST_STREAM CANCEL to the app and to the endpoint) by a limit: "
        "send_timeout (the app took none of the response for limits.send_timeout).",
        Type::kCounter,
        {"reason"},
        {},
        4}},
      {&f.socket_failures_total,
       {"spindle_upstream_socket_failures_total",
        "Connections to endpoints or original destinations that could not be made, by why: "
        "caller_namespace (the calling Pod's network namespace could not be used), local "
        "(out of fds or memory) or max_connections (upstream.max_connections per worker). "
        "Their calls fail with UNAVAILABLE; none leaves from elsewhere.",
        Type::kCounter,
        {"reason"},
        {},
        4}},
      {&f.panics_total,
       {"spindle_panics_total",
        "Picks made over every endpoint because all of them were ejected.",
        Type::kCounter,
        {"service"},
        {},
        256}},
  };
  for (Entry& entry : entries) {
    auto id = registry.add(std::move(entry.spec));
    if (!id) return Error{id.error()};
    *entry.id = *id;
  }
  return f;
}

WorkerMetrics::WorkerMetrics(const ProxyFamilies& families, metrics::Shard& shard, bool by_source)
    : families_(families), shard_(shard), by_source_(by_source) {
  for (size_t i = 0; i < 3; ++i) {
    opened_[i] = shard.counter(families.downstream_connections_total, {kProtocols[i]});
    if (i != 2) active_[i] = shard.gauge(families.downstream_connections_active, {kProtocols[i]});
  }
  // Every series exists from the start: a scrape shows 0 rather than nothing.
  for (size_t side = 0; side < 2; ++side) {
    for (size_t v = 1; v < h2::kViolationCount; ++v) {
      violations_[side][v] = shard.counter(families.h2_violations_total,
                                           {side == 0 ? "downstream" : "upstream",
                                            h2::violationName(static_cast<h2::Violation>(v))});
    }
  }
  for (SocketFailure failure : {SocketFailure::kLocal, SocketFailure::kCallerNamespace}) {
    shard.counter(families.socket_failures_total, {socketFailureName(failure)});
  }
  shard.counter(families.socket_failures_total, {"max_connections"});
  over_limit_ = shard.counter(families.limit_closes_total, {"max_connections"});
  idle_closed_ = shard.counter(families.limit_closes_total, {"idle"});
  send_timeout_resets_ = shard.counter(families.limit_resets_total, {"send_timeout"});
}

void WorkerMetrics::violation(bool upstream, h2::Violation violation) {
  if (violation == h2::Violation::kNone) return;
  violations_[upstream ? 1 : 0][static_cast<size_t>(violation)].inc();
}

void WorkerMetrics::connectionOpened(Protocol protocol) {
  const auto i = static_cast<size_t>(protocol);
  opened_[i].inc();
  if (protocol != Protocol::kRejected) {
    active_[i].inc();
    ++open_[i];
  }
}

void WorkerMetrics::connectionClosed(Protocol protocol) {
  if (protocol == Protocol::kRejected) return;
  active_[static_cast<size_t>(protocol)].dec();
  --open_[static_cast<size_t>(protocol)];
}

void WorkerMetrics::callEnded(std::string_view service, std::string_view endpoint,
                              std::string_view grpc_status, std::string_view source,
                              double seconds) {
  shard_.counter(families_.requests_total, {service, endpoint, grpc_status}).inc();
  if (by_source_) shard_.counter(families_.source_requests_total, {source, service}).inc();
  shard_.histogram(families_.request_duration_seconds, {service}).observe(seconds);
}

void WorkerMetrics::expire(const std::shared_ptr<const lb::ServiceTable>& table,
                           const SourcePresent& source_present, metrics::TimePoint now) {
  // The services in the table, and their (service, endpoint) pairs: endpoints belong to a
  // service, and one that moved to another leaves the first.
  std::vector<std::string_view> services;
  for (const lb::ServiceEntry& service : *table) services.push_back(service.name);
  std::sort(services.begin(), services.end());
  const auto service_present = [&services](std::string_view service) {
    return std::binary_search(services.begin(), services.end(), service);
  };
  const bool new_table = table != reconciled_table_;
  const metrics::FamilyId keyed[kServiceFamilies] = {
      families_.requests_total, families_.request_duration_seconds, families_.retries_total,
      families_.ejections_total, families_.panics_total};
  for (size_t i = 0; i < kServiceFamilies; ++i) {
    // Only when there is something to retire: another table, or series made since.
    const metrics::FamilyId family = keyed[i];
    if (!new_table && shard_.created(family) == reconciled_created_[i]) continue;
    if (family == families_.requests_total) {
      using Pair = std::pair<std::string_view, std::string_view>;
      std::vector<Pair> present;
      for (const lb::ServiceEntry& service : *table) {
        for (const lb::Endpoint& endpoint : service.endpoints->endpoints()) {
          present.emplace_back(service.name, endpoint.load->label);
        }
      }
      std::sort(present.begin(), present.end());
      shard_.reconcile(family, now, [&](std::span<const std::string> labels) {
        return labels[1] == kNoEndpoint
                   ? service_present(labels[0])
                   : std::binary_search(present.begin(), present.end(), Pair(labels[0], labels[1]));
      });
    } else {
      // Each of these has the service as its first label.
      shard_.reconcile(family, now, [&](std::span<const std::string> labels) {
        return service_present(labels[0]);
      });
    }
    reconciled_created_[i] = shard_.created(family);
  }
  reconciled_table_ = table;
  if (by_source_) {
    shard_.reconcile(families_.source_requests_total, now,
                     [&](std::span<const std::string> labels) {
                       return source_present(labels[0]) && service_present(labels[1]);
                     });
  }
  shard_.sweep(now);
}

void WorkerMetrics::socketFailed(SocketFailure failure) {
  shard_.counter(families_.socket_failures_total, {socketFailureName(failure)}).inc();
}

void WorkerMetrics::upstreamLimitReached() {
  shard_.counter(families_.socket_failures_total, {"max_connections"}).inc();
}

void WorkerMetrics::retried(std::string_view service, std::string_view reason) {
  shard_.counter(families_.retries_total, {service, reason}).inc();
}

void WorkerMetrics::ejected(std::string_view service) {
  shard_.counter(families_.ejections_total, {service}).inc();
}

void WorkerMetrics::panicked(std::string_view service) {
  shard_.counter(families_.panics_total, {service}).inc();
}

std::string_view grpcStatusLabel(int status) {
  static constexpr std::array<std::string_view, 17> kCodes = {
      "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16"};
  if (status >= 0 && status < 17) return kCodes[static_cast<size_t>(status)];
  return "other";
}

}  // namespace spindle::proxy
