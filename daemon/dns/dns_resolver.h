// The role of a DNS resolver, as Discovery uses it: ask for one record type of a name, get an
// Answer back on the loop's thread. CaresResolver (dns/resolver.h) asks real servers; tests
// answer from a table.
#pragma once

#include <functional>
#include <string>

#include "dns/policy.h"

namespace spindle::dns {

enum class RecordType { kA, kAAAA };

class DnsResolver {
 public:
  using Callback = std::function<void(Answer)>;

  virtual ~DnsResolver() = default;
  // Asks for one record type of `name`; `callback` runs once with the answer, on the loop's
  // thread, unless the resolver is destroyed first.
  virtual void query(const std::string& name, RecordType type, Callback callback) = 0;
};

}  // namespace spindle::dns
