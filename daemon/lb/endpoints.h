// A service's endpoints as the workers see them: an immutable snapshot, replaced whole when
// the set changes (DNS, config reload), plus per-endpoint load that all workers share.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "net/address.h"

namespace spindle::lb {

// Load of one endpoint, shared by every worker (relaxed atomics: a balancer needs a recent
// value, not a synchronised one). It outlives snapshots: an endpoint that stays in the set
// keeps its EndpointLoad, so its in-flight count carries over.
struct EndpointLoad {
  std::atomic<uint32_t> active_streams{0};
  std::atomic<uint64_t> total_calls{0};
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
