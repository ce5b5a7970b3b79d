#include "proxy/worker_services.h"

namespace spindle::proxy {

WorkerServices::WorkerServices(std::shared_ptr<const lb::ServiceTable> table, uint64_t seed)
    : table_(std::make_shared<const lb::ServiceTable>()), seed_(seed) {
  update(std::move(table));
}

std::optional<size_t> WorkerServices::indexOf(uint32_t service_id) const {
  // Once per connection, over a handful of services: a scan beats keeping an index in sync.
  for (size_t i = 0; i < table_->size(); ++i) {
    if ((*table_)[i].id == service_id) return i;
  }
  return std::nullopt;
}

void WorkerServices::update(std::shared_ptr<const lb::ServiceTable> table) {
  for (size_t i = 0; i < table->size(); ++i) {
    const lb::ServicePolicy& policy = (*table)[i].policy;
    const bool added = i >= table_->size();
    if (!added && (*table_)[i].policy == policy) continue;
    auto picker = lb::makePicker(policy.balance, seed_ + i, policy.picker);
    if (added) {
      pickers_.push_back(std::move(picker));
      budgets_.emplace_back(policy.retries.budget_percent);
    } else {
      pickers_[i] = std::move(picker);
      budgets_[i] = lb::RetryBudget(policy.retries.budget_percent);
    }
  }
  table_ = std::move(table);
}

}  // namespace spindle::proxy
