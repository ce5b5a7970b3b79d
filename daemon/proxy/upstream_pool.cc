#include "proxy/upstream_pool.h"

#include <algorithm>

#include "proxy/upstream.h"
#include "proxy/worker_parts.h"

namespace spindle::proxy {

Upstream& UpstreamPool::upstreamFor(const lb::Endpoint& endpoint) {
  auto& pool = upstreams_[endpoint.load.get()];
  for (Upstream* upstream : pool) {
    if (upstream->hasRoom()) return *upstream;
  }
  auto* upstream = new Upstream(worker_, endpoint);
  worker_.connections.add(upstream);
  pool.push_back(upstream);
  upstream->connect();
  return *upstream;
}

void UpstreamPool::forget(Upstream* upstream) {
  auto it = upstreams_.find(upstream->loadKey());
  if (it == upstreams_.end()) return;
  auto& pool = it->second;
  pool.erase(std::remove(pool.begin(), pool.end(), upstream), pool.end());
  if (pool.empty()) upstreams_.erase(it);
}

void UpstreamPool::keepOnly(const lb::ServiceTable& services) {
  std::vector<const lb::EndpointLoad*> gone;
  for (const auto& [load, pool] : upstreams_) {
    bool present = false;
    for (const lb::ServiceEntry& service : services) {
      for (const lb::Endpoint& endpoint : service.endpoints->endpoints()) {
        present = present || endpoint.load.get() == load;
      }
    }
    if (!present) gone.push_back(load);
  }
  for (const lb::EndpointLoad* load : gone) {
    auto pool = std::move(upstreams_[load]);
    upstreams_.erase(load);
    for (Upstream* upstream : pool) upstream->drain();
  }
}

}  // namespace spindle::proxy
