#include "service_registry.h"

namespace spindle {

ServiceRegistry::ServiceRegistry(const std::vector<config::Service>& services)
    : services_(services) {
  auto table = std::make_shared<proxy::ServiceTable>();
  for (const config::Service& service : services) {
    std::vector<lb::Endpoint> endpoints;
    for (const net::SocketAddress& address : service.endpoints.statics) {
      auto load = std::make_shared<lb::EndpointLoad>();
      load->label = address.toString();
      endpoints.push_back(lb::Endpoint{address, std::move(load)});
    }
    // A DNS service starts empty: not ready, its connections pass through at L4 meanwhile.
    table->push_back(proxy::ServiceEntry{
        service.name, std::make_shared<const lb::EndpointSet>(service.name, std::move(endpoints)),
        service.balance, lb::pickerOptions(service), service.outlier, service.retries});
    std::vector<std::vector<net::SocketAddress>> intercepts;
    for (const config::Intercept& intercept : service.intercept) {
      intercepts.push_back(intercept.literal ? std::vector{*intercept.literal}
                                             : std::vector<net::SocketAddress>{});
    }
    intercepts_.push_back(std::move(intercepts));
  }
  table_ = std::move(table);
}

std::vector<std::pair<net::SocketAddress, uint32_t>> ServiceRegistry::redirectAddresses() const {
  std::vector<std::pair<net::SocketAddress, uint32_t>> out;
  for (size_t i = 0; i < intercepts_.size(); ++i) {
    for (const auto& addresses : intercepts_[i]) {
      for (const net::SocketAddress& address : addresses) {
        out.emplace_back(address, static_cast<uint32_t>(i + 1));
      }
    }
  }
  return out;
}

std::shared_ptr<const proxy::ServiceTable> ServiceRegistry::setEndpoints(
    size_t index, const std::vector<net::SocketAddress>& addresses) {
  const proxy::ServiceEntry& old_entry = (*table_)[index];
  std::vector<lb::Endpoint> endpoints;
  for (net::SocketAddress address : addresses) {
    address.setPort(services_[index].port);
    std::shared_ptr<lb::EndpointLoad> load;
    for (const lb::Endpoint& old : old_entry.endpoints->endpoints()) {
      if (old.address == address) load = old.load;
    }
    // A new endpoint records when it joined, for slow start.
    if (!load) {
      load = std::make_shared<lb::EndpointLoad>(lb::Clock::now());
      load->label = address.toString();
    }
    endpoints.push_back(lb::Endpoint{address, std::move(load)});
  }
  auto table = std::make_shared<proxy::ServiceTable>(*table_);
  (*table)[index].endpoints =
      std::make_shared<const lb::EndpointSet>(old_entry.name, std::move(endpoints));
  table_ = std::move(table);
  return table_;
}

void ServiceRegistry::setInterceptAddresses(size_t index, size_t intercept,
                                            const std::vector<net::SocketAddress>& addresses) {
  std::vector<net::SocketAddress> vips;
  for (net::SocketAddress address : addresses) {
    address.setPort(services_[index].intercept[intercept].port);
    vips.push_back(address);
  }
  intercepts_[index][intercept] = std::move(vips);
}

}  // namespace spindle
