// The declared services as the workers balance them: an immutable snapshot that the main
// thread publishes (config, DNS, reloads) and every worker reads without a lock.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lb/endpoints.h"
#include "lb/policy.h"

namespace spindle::lb {

// A service keeps its index in the table for the life of the process: connections and calls
// in flight refer to their service by it.
struct ServiceEntry {
  std::string name;
  uint32_t id = 0;  // what the BPF program records for a redirected connection
  EndpointSetPtr endpoints;
  ServicePolicy policy;
};
using ServiceTable = std::vector<ServiceEntry>;

}  // namespace spindle::lb
