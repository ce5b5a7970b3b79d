// A DnsResolver that answers from a table the test sets: addresses, a failure (SERVFAIL, a
// timeout), or nothing (NXDOMAIN). It answers inside query(), as c-ares also does when a
// query fails before it is sent.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "dns/dns_resolver.h"
#include "net/address.h"

namespace spindle::component {

class FakeResolver final : public dns::DnsResolver {
 public:
  // `name` answers these addresses (ports ignored): the IPv4 ones to A, the IPv6 ones to
  // AAAA; a family with none answers NOERROR without records. TTL 0: refreshed as soon as
  // the policy's refresh_min allows.
  void setAddresses(const std::string& name, std::vector<net::SocketAddress> addresses);
  // Every query for `name` fails from now on, as when the server is down.
  void setFailing(const std::string& name);
  // `name` does not exist (NXDOMAIN) from now on: the same as a name never set.
  void remove(const std::string& name) { table_.erase(name); }

  // Queries for `name` so far (A and AAAA each count).
  int queries(const std::string& name) const;

  void query(const std::string& name, dns::RecordType type, Callback callback) override;

 private:
  struct Entry {
    bool failing = false;
    std::vector<net::SocketAddress> addresses;
  };
  std::map<std::string, Entry> table_;
  std::map<std::string, int> queries_;
};

}  // namespace spindle::component
