// The main thread's view of the declared services: the endpoint snapshots the workers balance
// over, and the addresses the BPF program redirects. Static config fills both at start; DNS
// answers change them, and every change is published as a new immutable snapshot.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "config/config.h"
#include "net/address.h"
#include "proxy/worker_context.h"

namespace spindle {

class ServiceRegistry {
 public:
  using PublishTable = std::function<void(std::shared_ptr<const proxy::ServiceTable>)>;
  using PublishAddresses =
      std::function<void(const std::vector<std::pair<net::SocketAddress, uint32_t>>&)>;

  explicit ServiceRegistry(const std::vector<config::Service>& services);

  std::shared_ptr<const proxy::ServiceTable> table() const { return table_; }
  // What the BPF services map must hold: literal intercepts and resolved names.
  std::vector<std::pair<net::SocketAddress, uint32_t>> redirectAddresses() const;

  // DNS gave service `index` these Pod addresses (port 0): the endpoints become those
  // addresses at the service's port. An endpoint that stays keeps its load counters.
  std::shared_ptr<const proxy::ServiceTable> setEndpoints(
      size_t index, const std::vector<net::SocketAddress>& addresses);
  // DNS gave intercept `intercept` of service `index` these VIPs (port 0).
  void setInterceptAddresses(size_t index, size_t intercept,
                             const std::vector<net::SocketAddress>& addresses);

 private:
  const std::vector<config::Service>& services_;
  std::shared_ptr<const proxy::ServiceTable> table_;
  // By service, by intercept: the addresses that intercept stands for now.
  std::vector<std::vector<std::vector<net::SocketAddress>>> intercepts_;
};

}  // namespace spindle
