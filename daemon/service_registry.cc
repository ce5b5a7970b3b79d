#include "service_registry.h"

namespace spindle {
namespace {

std::shared_ptr<lb::EndpointLoad> loadFor(const net::SocketAddress& address,
                                          const lb::EndpointSet* previous, bool joining) {
  if (previous != nullptr) {
    for (const lb::Endpoint& old : previous->endpoints()) {
      if (old.address == address) return old.load;
    }
  }
  // A new endpoint of a running service records when it joined, for slow start.
  auto load = joining ? std::make_shared<lb::EndpointLoad>(lb::Clock::now())
                      : std::make_shared<lb::EndpointLoad>();
  load->label = address.toString();
  return load;
}

}  // namespace

std::vector<lb::Endpoint> ServiceRegistry::staticEndpoints(const config::Service& service,
                                                           const lb::EndpointSet* previous) {
  std::vector<lb::Endpoint> endpoints;
  for (const net::SocketAddress& address : service.endpoints.statics) {
    endpoints.push_back(lb::Endpoint{address, loadFor(address, previous, previous != nullptr)});
  }
  return endpoints;
}

lb::ServiceEntry ServiceRegistry::entryFor(const config::Service& service,
                                           lb::EndpointSetPtr endpoints) const {
  return lb::ServiceEntry{service.name, config::serviceId(service.name), std::move(endpoints),
                          config::policyOf(service)};
}

ServiceRegistry::ServiceRegistry(const std::vector<config::Service>& services) {
  auto table = std::make_shared<lb::ServiceTable>();
  for (const config::Service& service : services) {
    // A DNS service starts empty: not ready, its connections pass through at L4 meanwhile.
    auto endpoints =
        std::make_shared<const lb::EndpointSet>(service.name, staticEndpoints(service, nullptr));
    table->push_back(entryFor(service, std::move(endpoints)));
    Slot slot{service, {}};
    for (const config::Intercept& intercept : service.intercept) {
      slot.intercepts.push_back(intercept.literal ? std::vector{*intercept.literal}
                                                  : std::vector<net::SocketAddress>{});
    }
    slots_.push_back(std::move(slot));
  }
  table_ = std::move(table);
}

std::optional<size_t> ServiceRegistry::indexOf(const std::string& name) const {
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].config && slots_[i].config->name == name) return i;
  }
  return std::nullopt;
}

std::shared_ptr<const lb::ServiceTable> ServiceRegistry::reload(
    const std::vector<config::Service>& services) {
  auto table = std::make_shared<lb::ServiceTable>(*table_);
  std::vector<bool> kept(slots_.size(), false);
  for (const config::Service& service : services) {
    // A name seen before keeps its slot, even one a reload removed in between.
    size_t index = slots_.size();
    for (size_t i = 0; i < slots_.size(); ++i) {
      if ((*table)[i].name == service.name) index = i;
    }
    if (index == slots_.size()) {
      slots_.push_back(Slot{});
      kept.push_back(false);
      table->push_back(entryFor(service, std::make_shared<const lb::EndpointSet>(
                                             service.name, std::vector<lb::Endpoint>{})));
    }
    kept[index] = true;
    Slot& slot = slots_[index];
    const lb::EndpointSetPtr& current = (*table)[index].endpoints;
    // Static endpoints follow the new list; a DNS service keeps what it has until the name
    // answers again.
    lb::EndpointSetPtr endpoints = service.endpoints.dns.empty()
                                       ? std::make_shared<const lb::EndpointSet>(
                                             service.name, staticEndpoints(service, current.get()))
                                       : current;
    (*table)[index] = entryFor(service, std::move(endpoints));
    // Intercepts: literals as written; a name keeps the addresses it had, if it had any.
    std::vector<std::vector<net::SocketAddress>> intercepts;
    for (const config::Intercept& intercept : service.intercept) {
      std::vector<net::SocketAddress> addresses;
      if (intercept.literal) {
        addresses.push_back(*intercept.literal);
      } else if (slot.config) {
        for (size_t j = 0; j < slot.config->intercept.size(); ++j) {
          if (slot.config->intercept[j].text == intercept.text) addresses = slot.intercepts[j];
        }
      }
      intercepts.push_back(std::move(addresses));
    }
    slot.config = service;
    slot.intercepts = std::move(intercepts);
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (!kept[i]) {
      slots_[i].config.reset();
      slots_[i].intercepts.clear();
    }
  }
  table_ = std::move(table);
  return table_;
}

std::vector<std::pair<net::SocketAddress, uint32_t>> ServiceRegistry::redirectAddresses() const {
  std::vector<std::pair<net::SocketAddress, uint32_t>> out;
  for (size_t i = 0; i < slots_.size(); ++i) {
    for (const auto& addresses : slots_[i].intercepts) {
      for (const net::SocketAddress& address : addresses) {
        out.emplace_back(address, config::serviceId(slots_[i].config->name));
      }
    }
  }
  return out;
}

std::shared_ptr<const lb::ServiceTable> ServiceRegistry::setEndpoints(
    size_t index, const std::vector<net::SocketAddress>& addresses) {
  const lb::ServiceEntry& old_entry = (*table_)[index];
  const uint16_t port = slots_[index].config ? slots_[index].config->port : 0;
  std::vector<lb::Endpoint> endpoints;
  for (net::SocketAddress address : addresses) {
    address.setPort(port);
    endpoints.push_back(lb::Endpoint{address, loadFor(address, old_entry.endpoints.get(), true)});
  }
  auto table = std::make_shared<lb::ServiceTable>(*table_);
  (*table)[index].endpoints =
      std::make_shared<const lb::EndpointSet>(old_entry.name, std::move(endpoints));
  table_ = std::move(table);
  return table_;
}

void ServiceRegistry::setInterceptAddresses(size_t index, size_t intercept,
                                            const std::vector<net::SocketAddress>& addresses) {
  Slot& slot = slots_[index];
  if (!slot.config || intercept >= slot.intercepts.size()) return;
  std::vector<net::SocketAddress> vips;
  for (net::SocketAddress address : addresses) {
    address.setPort(slot.config->intercept[intercept].port);
    vips.push_back(address);
  }
  slot.intercepts[intercept] = std::move(vips);
}

}  // namespace spindle
