// The worker's HTTP/2 connections to endpoints: one with room for another stream is reused, a
// new one opened when all are full or draining. With upstream.source: node they are shared by
// every call of the worker; with pod, each calling Pod has its own (they leave from its
// network namespace), while the balancing state stays per endpoint, shared by all.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <unordered_map>
#include <vector>

#include "lb/endpoints.h"
#include "lb/picker.h"
#include "lb/service_table.h"
#include "proxy/upstream_sockets.h"

namespace spindle::proxy {

class Upstream;
struct WorkerParts;

class UpstreamPool {
 public:
  // How long a caller's calls avoid an endpoint it could not connect to.
  static constexpr auto kUnreachableFor = std::chrono::seconds(1);
  static constexpr size_t kMaxUnreachableCallers = 1024;

  // `worker`'s sockets must exist already: whether they are per caller is read once here.
  explicit UpstreamPool(WorkerParts& worker);
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  // One with room for another stream, or a new one; null when a new one is needed and the
  // worker has upstream.max_connections open.
  // source: the caller's label, which a connection of its own keeps for the log.
  Upstream* upstreamFor(const lb::Endpoint& endpoint, const Caller& caller,
                        std::string_view source);
  // The connection closes: no new call may be given to it.
  void forget(Upstream* upstream);
  // Connections to endpoints that are in no service of `services` any more are drained:
  // their calls finish, new calls go elsewhere.
  void keepOnly(const lb::ServiceTable& services);

  // With connections per caller, a connect from the caller's own namespace that failed says
  // more about the caller (its egress policy) than about the endpoint: for a while that
  // caller's calls avoid the endpoint, while other callers and the endpoint's shared health
  // are left alone (one Pod's policy must not eject a backend for every Pod).
  void noteConnectFailed(const Upstream& upstream, lb::TimePoint now);
  bool anyUnreachable() const { return !unreachable_.empty(); }
  // Adds to `exclude` the endpoints of `set` that `caller` could not connect to lately.
  void excludeUnreachable(const lb::EndpointSet& set, const Caller& caller, lb::TimePoint now,
                          lb::Exclusions& exclude);

 private:
  // The endpoint's shared load identifies it across snapshots; netns_cookie is the calling
  // Pod's namespace, 0 when connections are shared by every caller.
  struct Key {
    const lb::EndpointLoad* load;
    uint64_t netns_cookie;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& key) const {
      return std::hash<const void*>()(key.load) ^ std::hash<uint64_t>()(key.netns_cookie);
    }
  };
  Key keyFor(const lb::EndpointLoad* load, const Caller& caller) const;

  WorkerParts& worker_;
  const bool per_caller_;  // worker_.sockets.perCaller(), off the per-call path
  // Each connection here holds its caller in worker_.sockets, so that the caller's namespace
  // is let go with its last connection.
  std::unordered_map<Key, std::vector<Upstream*>, KeyHash> upstreams_;
  size_t open_ = 0;  // connections in upstreams_
  struct Unreachable {
    const lb::EndpointLoad* load;
    lb::TimePoint until;
  };
  // By caller's namespace cookie; empty in the common case, so calls pay nothing for it.
  std::unordered_map<uint64_t, std::vector<Unreachable>> unreachable_;
};

}  // namespace spindle::proxy
