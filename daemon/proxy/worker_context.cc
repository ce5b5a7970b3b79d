#include "proxy/worker_context.h"

#include <algorithm>

#include "proxy/h2_connection.h"
#include "proxy/upstream.h"
#include "util/log.h"

namespace spindle::proxy {

WorkerContext::WorkerContext(loop::Loop& loop, loop::BufferPool& buffers,
                             std::shared_ptr<const ServiceTable> services, uint32_t mark,
                             uint64_t seed, WorkerMetrics& metrics)
    : loop_(loop),
      buffers_(buffers),
      metrics_(metrics),
      services_(std::move(services)),
      mark_(mark),
      seed_(seed) {
  for (size_t i = 0; i < services_->size(); ++i) {
    const ServiceEntry& service = (*services_)[i];
    pickers_.push_back(lb::makePicker(service.balance, seed + i, service.picker_options));
    budgets_.emplace_back(service.retries.budget_percent);
  }
}

WorkerContext::~WorkerContext() = default;

std::optional<size_t> WorkerContext::serviceIndex(uint32_t service_id) const {
  // Once per connection, over a handful of services: a scan beats keeping an index in sync.
  for (size_t i = 0; i < services_->size(); ++i) {
    if ((*services_)[i].id == service_id) return i;
  }
  return std::nullopt;
}

void WorkerContext::setServices(std::shared_ptr<const ServiceTable> services) {
  // A reload may add services (the table only grows) or change how one is balanced: such a
  // service gets a new picker and budget; the others keep theirs, and their state.
  for (size_t i = 0; i < services->size(); ++i) {
    const ServiceEntry& service = (*services)[i];
    const bool added = i >= services_->size();
    if (!added) {
      const ServiceEntry& old = (*services_)[i];
      if (old.balance == service.balance &&
          old.picker_options.decay == service.picker_options.decay &&
          old.picker_options.slow_start == service.picker_options.slow_start &&
          old.retries.budget_percent == service.retries.budget_percent) {
        continue;
      }
    }
    auto picker = lb::makePicker(service.balance, seed_ + i, service.picker_options);
    if (added) {
      pickers_.push_back(std::move(picker));
      budgets_.emplace_back(service.retries.budget_percent);
    } else {
      pickers_[i] = std::move(picker);
      budgets_[i] = lb::RetryBudget(service.retries.budget_percent);
    }
  }
  services_ = std::move(services);
  std::vector<const lb::EndpointLoad*> gone;
  for (const auto& [load, pool] : upstreams_) {
    bool present = false;
    for (const ServiceEntry& service : *services_) {
      for (const lb::Endpoint& endpoint : service.endpoints->endpoints()) {
        present = present || endpoint.load.get() == load;
      }
    }
    if (!present) gone.push_back(load);
  }
  for (const lb::EndpointLoad* load : gone) {
    auto pool = std::move(upstreams_[load]);
    upstreams_.erase(load);
    for (Upstream* upstream : pool) upstream->drain();
  }
}

Upstream& WorkerContext::upstreamFor(const lb::Endpoint& endpoint) {
  auto& pool = upstreams_[endpoint.load.get()];
  for (Upstream* upstream : pool) {
    if (upstream->hasRoom()) return *upstream;
  }
  auto* upstream = new Upstream(*this, endpoint);
  add(upstream);
  pool.push_back(upstream);
  upstream->connect();
  return *upstream;
}

void WorkerContext::forgetUpstream(Upstream* upstream) {
  auto it = upstreams_.find(upstream->loadKey());
  if (it == upstreams_.end()) return;
  auto& pool = it->second;
  pool.erase(std::remove(pool.begin(), pool.end(), upstream), pool.end());
  if (pool.empty()) upstreams_.erase(it);
}

void WorkerContext::add(Connection* connection) {
  connection->next = connections_;
  if (connections_ != nullptr) connections_->prev = connection;
  connections_ = connection;
}

void WorkerContext::remove(Connection* connection) {
  if (connection->prev != nullptr) connection->prev->next = connection->next;
  if (connection->next != nullptr) connection->next->prev = connection->prev;
  if (connections_ == connection) connections_ = connection->next;
  connection->prev = connection->next = nullptr;
  // It may still be in the dirty list of this batch: it is freed after the flush.
  loop_.deferDelete(std::unique_ptr<loop::Deferred>(connection));
}

void WorkerContext::abortAll() {
  // abort() may remove the connection (and others) from the list: walk a copy.
  std::vector<Connection*> all;
  for (Connection* c = connections_; c != nullptr; c = c->next) all.push_back(c);
  for (Connection* c : all) c->abort();
}

void WorkerContext::drainAll(DrainStep step) {
  drain_step_ = step;
  std::vector<Connection*> all;
  for (Connection* c = connections_; c != nullptr; c = c->next) all.push_back(c);
  for (Connection* c : all) c->stopGracefully(step);
}

bool WorkerContext::drained() const {
  for (Connection* c = connections_; c != nullptr; c = c->next) {
    if (c->holdsDrain()) return false;
  }
  return true;
}

void WorkerContext::flushDirty() {
  // Flushing one connection can dirty another (window given back to its peer): repeat until
  // nothing is left.
  while (!dirty_.empty()) {
    flushing_.swap(dirty_);
    for (H2Connection* connection : flushing_) connection->flush();
    flushing_.clear();
  }
}


}  // namespace spindle::proxy
