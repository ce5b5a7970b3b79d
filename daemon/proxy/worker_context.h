// What the connections of one worker share: its loop and buffers, the service table and
// pickers, the upstream pools, the list of open connections and the ones to flush.
// Single-threaded: everything here runs on the worker's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "lb/endpoints.h"
#include "lb/picker.h"
#include "loop/buffer_pool.h"
#include "loop/loop.h"
#include "net/address.h"
#include "proxy/connection.h"
#include "util/rate_limit.h"

namespace spindle::proxy {

class H2Connection;
class Upstream;

// A declared service as the workers see it. Service ids in the BPF map are 1 + the index.
struct ServiceEntry {
  std::string name;
  lb::EndpointSetPtr endpoints;
  config::Balance balance = config::Balance::kLeastRequest;
};
using ServiceTable = std::vector<ServiceEntry>;

class WorkerContext {
 public:
  WorkerContext(loop::Loop& loop, loop::BufferPool& buffers,
                std::shared_ptr<const ServiceTable> services, uint32_t mark, uint64_t seed);
  ~WorkerContext();

  loop::Loop& loop() { return loop_; }
  loop::BufferPool& buffers() { return buffers_; }
  uint32_t mark() const { return mark_; }

  // The service of a redirected connection, by the id the BPF program recorded.
  const ServiceEntry* service(uint32_t service_id) const;
  lb::Picker& picker(const ServiceEntry& service);

  // Upstream HTTP/2 connections to one endpoint, shared by every call of this worker. Returns
  // one with room for another stream, opening a new one when all are full or draining.
  Upstream& upstreamFor(const lb::Endpoint& endpoint);
  void forgetUpstream(Upstream* upstream);

  void add(Connection* connection);
  // Unlinks and frees the connection after the current batch of completions.
  void remove(Connection* connection);
  void abortAll();
  bool idle() const { return connections_ == nullptr; }

  void markDirty(H2Connection* connection) { dirty_.push_back(connection); }
  // Runs after each batch: sends what the batch made the sessions queue.
  void flushDirty();

  void logUpstreamFailure(const net::SocketAddress& from, const net::SocketAddress& to,
                          const char* why);

 private:
  loop::Loop& loop_;
  loop::BufferPool& buffers_;
  std::shared_ptr<const ServiceTable> services_;
  std::vector<std::unique_ptr<lb::Picker>> pickers_;  // by service index
  uint32_t mark_;
  Connection* connections_ = nullptr;
  std::vector<H2Connection*> dirty_;
  std::vector<H2Connection*> flushing_;
  // Keyed by the endpoint's shared load, which identifies it across snapshots.
  std::unordered_map<const lb::EndpointLoad*, std::vector<Upstream*>> upstreams_;
  RateLimit upstream_log_{std::chrono::seconds(1)};
};

}  // namespace spindle::proxy
