// The worker's HTTP/2 connections to endpoints, shared by every call of the worker: one with
// room for another stream is reused, a new one opened when all are full or draining.
#pragma once

#include <unordered_map>
#include <vector>

#include "lb/endpoints.h"
#include "lb/service_table.h"

namespace spindle::proxy {

class Upstream;
struct WorkerParts;

class UpstreamPool {
 public:
  explicit UpstreamPool(WorkerParts& worker) : worker_(worker) {}
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  Upstream& upstreamFor(const lb::Endpoint& endpoint);
  // The connection closes: no new call may be given to it.
  void forget(Upstream* upstream);
  // Connections to endpoints that are in no service of `services` any more are drained:
  // their calls finish, new calls go elsewhere.
  void keepOnly(const lb::ServiceTable& services);

 private:
  WorkerParts& worker_;
  // Keyed by the endpoint's shared load, which identifies it across snapshots.
  std::unordered_map<const lb::EndpointLoad*, std::vector<Upstream*>> upstreams_;
};

}  // namespace spindle::proxy
