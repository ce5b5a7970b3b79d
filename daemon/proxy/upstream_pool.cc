#include "proxy/upstream_pool.h"

#include <algorithm>

#include "proxy/upstream.h"
#include "proxy/worker_parts.h"

namespace spindle::proxy {

UpstreamPool::UpstreamPool(WorkerParts& worker)
    : worker_(worker), per_caller_(worker.sockets.perCaller()) {}

UpstreamPool::Key UpstreamPool::keyFor(const lb::EndpointLoad* load, const Caller& caller) const {
  return Key{load, per_caller_ ? caller.netns_cookie : uint64_t{0}};
}

Upstream* UpstreamPool::upstreamFor(const lb::Endpoint& endpoint, const Caller& caller,
                                    std::string_view source) {
  auto& pool = upstreams_[keyFor(endpoint.load.get(), caller)];
  for (Upstream* upstream : pool) {
    if (upstream->hasRoom()) return upstream;
  }
  if (open_ >= worker_.upstream.max_connections) {
    if (pool.empty()) upstreams_.erase(keyFor(endpoint.load.get(), caller));
    return nullptr;
  }
  auto* upstream =
      new Upstream(worker_, endpoint, caller, per_caller_ ? std::string(source) : std::string());
  worker_.connections.add(upstream);
  pool.push_back(upstream);
  ++open_;
  worker_.sockets.hold(caller);
  upstream->connect();
  return upstream;
}

void UpstreamPool::forget(Upstream* upstream) {
  auto it = upstreams_.find(keyFor(upstream->loadKey(), upstream->caller()));
  if (it == upstreams_.end()) return;
  auto& pool = it->second;
  const size_t before = pool.size();
  pool.erase(std::remove(pool.begin(), pool.end(), upstream), pool.end());
  const bool removed = pool.size() != before;  // forget() may come twice for one connection
  if (pool.empty()) upstreams_.erase(it);
  if (!removed) return;
  --open_;
  worker_.sockets.release(upstream->caller());
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

void UpstreamPool::noteConnectFailed(const Upstream& upstream, lb::TimePoint now) {
  if (!per_caller_) return;
  // Bounded: entries of callers that never call again go once they are stale.
  if (unreachable_.size() > kMaxUnreachableCallers) {
    std::erase_if(unreachable_, [&](const auto& entry) {
      return std::all_of(entry.second.begin(), entry.second.end(),
                         [&](const Unreachable& u) { return u.until <= now; });
    });
  }
  auto& entries = unreachable_[upstream.caller().netns_cookie];
  const lb::TimePoint until = now + kUnreachableFor;
  for (Unreachable& entry : entries) {
    if (entry.load == upstream.loadKey()) {
      entry.until = until;
      return;
    }
  }
  if (entries.size() < lb::Exclusions::kCapacity) entries.push_back({upstream.loadKey(), until});
}

void UpstreamPool::excludeUnreachable(const lb::EndpointSet& set, const Caller& caller,
                                      lb::TimePoint now, lb::Exclusions& exclude) {
  auto it = unreachable_.find(caller.netns_cookie);
  if (it == unreachable_.end()) return;
  auto& entries = it->second;
  std::erase_if(entries, [&](const Unreachable& u) { return u.until <= now; });
  for (const Unreachable& entry : entries) {
    for (size_t i = 0; i < set.size(); ++i) {
      if (set[i].load.get() == entry.load && !exclude.contains(i)) exclude.add(i);
    }
  }
  if (entries.empty()) unreachable_.erase(it);
}

}  // namespace spindle::proxy
