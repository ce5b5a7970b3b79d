#include "fake_resolver.h"

namespace spindle::component {

void FakeResolver::setAddresses(const std::string& name,
                                std::vector<net::SocketAddress> addresses) {
  table_[name] = Entry{false, std::move(addresses)};
}

void FakeResolver::setFailing(const std::string& name) { table_[name].failing = true; }

int FakeResolver::queries(const std::string& name) const {
  auto it = queries_.find(name);
  return it == queries_.end() ? 0 : it->second;
}

void FakeResolver::query(const std::string& name, dns::RecordType type, Callback callback) {
  ++queries_[name];
  dns::Answer answer;
  auto it = table_.find(name);
  if (it == table_.end()) {
    answer.outcome = dns::Outcome::kEmpty;
    answer.error = "NXDOMAIN";
  } else if (it->second.failing) {
    answer.outcome = dns::Outcome::kFailure;
    answer.error = "SERVFAIL";
  } else {
    const int family = type == dns::RecordType::kA ? AF_INET : AF_INET6;
    for (net::SocketAddress address : it->second.addresses) {
      if (address.family() != family) continue;
      address.setPort(0);
      answer.addresses.push_back(address);
    }
    answer.outcome = answer.addresses.empty() ? dns::Outcome::kEmpty : dns::Outcome::kRecords;
    if (answer.addresses.empty()) answer.error = "no records";
  }
  callback(std::move(answer));
}

}  // namespace spindle::component
