// The main thread's view of the declared services: the endpoint snapshots the workers balance
// over, and the addresses the BPF program redirects. Static config fills both at start; DNS
// answers and config reloads change them, and every change is published as a new immutable
// table.
//
// A service keeps its slot (its index in the table, and so its id in the BPF map) for the life
// of the process: connections and calls in flight refer to their service by index. A reload
// that removes a service leaves its slot, with no intercepts (nothing new is redirected to it)
// and its last endpoints (what is in flight finishes); one that brings it back reuses it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "lb/service_table.h"
#include "net/address.h"

namespace spindle {

class ServiceRegistry {
 public:
  explicit ServiceRegistry(const std::vector<config::Service>& services);

  std::shared_ptr<const lb::ServiceTable> table() const { return table_; }
  // What the BPF services map must hold: literal intercepts and resolved names.
  std::vector<std::pair<net::SocketAddress, uint32_t>> redirectAddresses() const;
  // The slot of a declared service, by name.
  std::optional<size_t> indexOf(const std::string& name) const;
  // The service's config as last declared; null when a reload removed it.
  const config::Service* declared(size_t index) const {
    return slots_[index].config ? &*slots_[index].config : nullptr;
  }

  // Applies a new list of services: changed ones are updated in place, new ones get a slot,
  // removed ones stop being intercepted. Names resolved before keep their addresses until
  // DNS answers again. Returns the new table.
  std::shared_ptr<const lb::ServiceTable> reload(const std::vector<config::Service>& services);

  // DNS gave service `index` these Pod addresses (port 0): the endpoints become those
  // addresses at the service's port. An endpoint that stays keeps its load counters.
  std::shared_ptr<const lb::ServiceTable> setEndpoints(
      size_t index, const std::vector<net::SocketAddress>& addresses);
  // DNS gave intercept `intercept` (its index in the service's config) these VIPs (port 0).
  void setInterceptAddresses(size_t index, size_t intercept,
                             const std::vector<net::SocketAddress>& addresses);

 private:
  struct Slot {
    std::optional<config::Service> config;  // nullopt: removed by a reload
    // By intercept of `config`: the addresses it stands for now.
    std::vector<std::vector<net::SocketAddress>> intercepts;
  };

  static std::vector<lb::Endpoint> staticEndpoints(const config::Service& service,
                                                   const lb::EndpointSet* previous);
  lb::ServiceEntry entryFor(const config::Service& service, lb::EndpointSetPtr endpoints) const;

  std::vector<Slot> slots_;
  std::shared_ptr<const lb::ServiceTable> table_;
};

}  // namespace spindle
