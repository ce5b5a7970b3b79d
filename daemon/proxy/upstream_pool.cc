#include "proxy/upstream_pool.h"

#include <algorithm>

#include "proxy/upstream.h"
#include "proxy/worker_parts.h"

namespace spindle::proxy {

UpstreamPool::Key UpstreamPool::keyFor(const lb::EndpointLoad* load, const Caller& caller) const {
  return Key{load, worker_.sockets.perCaller() ? caller.netns_cookie : uint64_t{0}};
}

Upstream& UpstreamPool::upstreamFor(const lb::Endpoint& endpoint, const Caller& caller) {
  auto& pool = upstreams_[keyFor(endpoint.load.get(), caller)];
  for (Upstream* upstream : pool) {
    if (upstream->hasRoom()) return *upstream;
  }
  auto* upstream = new Upstream(worker_, endpoint, caller);
  worker_.connections.add(upstream);
  pool.push_back(upstream);
  worker_.sockets.hold(caller);
  upstream->connect();
  return *upstream;
}

void UpstreamPool::forget(Upstream* upstream) {
  auto it = upstreams_.find(keyFor(upstream->loadKey(), upstream->caller()));
  if (it == upstreams_.end()) return;
  auto& pool = it->second;
  const size_t before = pool.size();
  pool.erase(std::remove(pool.begin(), pool.end(), upstream), pool.end());
  const bool removed = pool.size() != before;  // forget() may come twice for one connection
  if (pool.empty()) upstreams_.erase(it);
  if (removed) worker_.sockets.release(upstream->caller());
}

void UpstreamPool::keepOnly(const lb::ServiceTable& services) {
  std::vector<Key> gone;
  for (const auto& [key, pool] : upstreams_) {
    bool present = false;
    for (const lb::ServiceEntry& service : services) {
      for (const lb::Endpoint& endpoint : service.endpoints->endpoints()) {
        present = present || endpoint.load.get() == key.load;
      }
    }
    if (!present) gone.push_back(key);
  }
  // Drained, they take no new call (no room); each leaves the pool when it closes, and the
  // last of a caller's lets its namespace go.
  for (const Key& key : gone) {
    for (Upstream* upstream : upstreams_[key]) upstream->drain();
  }
}

}  // namespace spindle::proxy
