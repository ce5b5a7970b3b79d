// A worker's view of the declared services: the snapshot it balances over, and what each
// service has of its own in this worker (its picker and its retry budget), so that picks take
// no lock. Pure logic, on the worker's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lb/picker.h"
#include "lb/retry_budget.h"
#include "lb/service_table.h"

namespace spindle::proxy {

class WorkerServices {
 public:
  WorkerServices(std::shared_ptr<const lb::ServiceTable> table, uint64_t seed);

  // The index of a redirected connection's service, by the id the BPF program recorded.
  std::optional<size_t> indexOf(uint32_t service_id) const;
  // The service as of now: DNS may have replaced its endpoints since a call started.
  const lb::ServiceEntry& at(size_t index) const { return (*table_)[index]; }
  const std::string& name(size_t index) const { return at(index).name; }
  const lb::ServiceTable& table() const { return *table_; }
  const std::shared_ptr<const lb::ServiceTable>& snapshot() const { return table_; }
  lb::Picker& picker(size_t index) { return *pickers_[index]; }
  lb::RetryBudget& retryBudget(size_t index) { return budgets_[index]; }

  // A new snapshot: the same services in the same order, maybe followed by new ones. A
  // service whose policy changed gets a new picker and budget; the others keep theirs, and
  // their state.
  void update(std::shared_ptr<const lb::ServiceTable> table);

 private:
  std::shared_ptr<const lb::ServiceTable> table_;
  std::vector<std::unique_ptr<lb::Picker>> pickers_;  // by service index
  std::vector<lb::RetryBudget> budgets_;              // by service index
  uint64_t seed_;
};

}  // namespace spindle::proxy
