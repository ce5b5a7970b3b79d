#include "proxy/worker_context.h"

#include <algorithm>

#include "proxy/h2_connection.h"
#include "proxy/upstream.h"
#include "util/log.h"

namespace spindle::proxy {

WorkerContext::WorkerContext(loop::Loop& loop, loop::BufferPool& buffers,
                             std::shared_ptr<const ServiceTable> services, uint32_t mark,
                             uint64_t seed)
    : loop_(loop), buffers_(buffers), services_(std::move(services)), mark_(mark) {
  for (size_t i = 0; i < services_->size(); ++i) {
    pickers_.push_back(lb::makePicker((*services_)[i].balance, seed + i));
  }
}

WorkerContext::~WorkerContext() = default;

const ServiceEntry* WorkerContext::service(uint32_t service_id) const {
  if (service_id == 0 || service_id > services_->size()) return nullptr;
  return &(*services_)[service_id - 1];
}

lb::Picker& WorkerContext::picker(const ServiceEntry& service) {
  return *pickers_[static_cast<size_t>(&service - services_->data())];
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

void WorkerContext::flushDirty() {
  // Flushing one connection can dirty another (window given back to its peer): repeat until
  // nothing is left.
  while (!dirty_.empty()) {
    flushing_.swap(dirty_);
    for (H2Connection* connection : flushing_) connection->flush();
    flushing_.clear();
  }
}

void WorkerContext::logUpstreamFailure(const net::SocketAddress& from,
                                       const net::SocketAddress& to, const char* why) {
  uint64_t suppressed = 0;
  if (upstream_log_.allow(&suppressed)) {
    log::warn("{} -> {}: {} ({} more upstream failures not logged)", from.toString(),
              to.toString(), why, suppressed);
  }
}

}  // namespace spindle::proxy
