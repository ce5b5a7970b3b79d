// What the connections of one worker share: its loop and buffers, the service table and
// pickers, the upstream pools, the list of open connections and the ones to flush.
// Single-threaded: everything here runs on the worker's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "lb/endpoints.h"
#include "lb/picker.h"
#include "lb/retry_budget.h"
#include "loop/buffer_pool.h"
#include "loop/loop.h"
#include "net/address.h"
#include "proxy/connection.h"
#include "proxy/proxy_metrics.h"
#include "util/log.h"
#include "util/rate_limit.h"

namespace spindle::proxy {

class H2Connection;
class Upstream;

// A declared service as the workers see it. Service ids in the BPF map are 1 + the index.
struct ServiceEntry {
  std::string name;
  uint32_t id = 0;  // config::serviceId(name): what the BPF program records
  lb::EndpointSetPtr endpoints;
  config::Balance balance = config::Balance::kLeastRequest;
  lb::PickerOptions picker_options;
  config::Outlier outlier;
  config::Retries retries;
};
using ServiceTable = std::vector<ServiceEntry>;

class WorkerContext {
 public:
  WorkerContext(loop::Loop& loop, loop::BufferPool& buffers,
                std::shared_ptr<const ServiceTable> services, uint32_t mark, uint64_t seed,
                WorkerMetrics& metrics);
  ~WorkerContext();

  loop::Loop& loop() { return loop_; }
  loop::BufferPool& buffers() { return buffers_; }
  WorkerMetrics& metrics() { return metrics_; }
  uint32_t mark() const { return mark_; }

  // The index of a redirected connection's service, by the id the BPF program recorded.
  std::optional<size_t> serviceIndex(uint32_t service_id) const;
  // The service as of now: DNS may have replaced its endpoints since a call started.
  const ServiceEntry& serviceAt(size_t index) const { return (*services_)[index]; }
  const std::string& serviceName(size_t index) const { return serviceAt(index).name; }
  lb::Picker& picker(size_t index) { return *pickers_[index]; }
  lb::RetryBudget& retryBudget(size_t index) { return budgets_[index]; }
  // New endpoint snapshots (same services, same order). Upstream connections to endpoints
  // that left every service are drained: their calls finish, new calls go elsewhere.
  void setServices(std::shared_ptr<const ServiceTable> services);

  // Upstream HTTP/2 connections to one endpoint, shared by every call of this worker. Returns
  // one with room for another stream, opening a new one when all are full or draining.
  Upstream& upstreamFor(const lb::Endpoint& endpoint);
  void forgetUpstream(Upstream* upstream);

  void add(Connection* connection);
  // Unlinks and frees the connection after the current batch of completions.
  void remove(Connection* connection);
  void abortAll();
  bool idle() const { return connections_ == nullptr; }
  // SIGTERM: every connection, and every one accepted from now on, drains to this step.
  void drainAll(DrainStep step);
  DrainStep drainStep() const { return drain_step_; }
  // No connection the process must wait for is left.
  bool drained() const;

  void markDirty(H2Connection* connection) { dirty_.push_back(connection); }
  // Runs after each batch: sends what the batch made the sessions queue.
  void flushDirty();

  // Rate-limited: a failing endpoint must not flood the log. `what` is built only when the
  // line is written.
  template <typename Describe>
  void logUpstreamFailure(Describe&& describe, const char* why) {
    uint64_t suppressed = 0;
    if (upstream_log_.allow(&suppressed)) {
      log::warn("{}: {} ({} more upstream failures not logged)", describe(), why, suppressed);
    }
  }

 private:
  loop::Loop& loop_;
  loop::BufferPool& buffers_;
  WorkerMetrics& metrics_;
  std::shared_ptr<const ServiceTable> services_;
  std::vector<std::unique_ptr<lb::Picker>> pickers_;  // by service index
  std::vector<lb::RetryBudget> budgets_;               // by service index
  uint32_t mark_;
  uint64_t seed_;
  Connection* connections_ = nullptr;
  DrainStep drain_step_ = DrainStep::kNone;
  std::vector<H2Connection*> dirty_;
  std::vector<H2Connection*> flushing_;
  // Keyed by the endpoint's shared load, which identifies it across snapshots.
  std::unordered_map<const lb::EndpointLoad*, std::vector<Upstream*>> upstreams_;
  RateLimit upstream_log_{std::chrono::seconds(1)};
};

}  // namespace spindle::proxy
