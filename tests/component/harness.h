// A worker's proxy without the worker: a real io_uring loop, buffer pool, WorkerParts and the
// real connection classes, on the test's own thread. Instead of the BPF redirect, dialProxy()
// hands a loopback connection to a ProtocolDetector the way Worker::onAccepted does.
//
// Everything runs on one thread: runUntil() turns the proxy's loop and polls every test peer
// (clients, backends) in turn, so a test reads their state without locks, and a test that
// waits for something that never comes fails at its deadline instead of hanging.
#pragma once

#include <chrono>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "lb/service_table.h"
#include "loop/buffer_pool.h"
#include "loop/loop.h"
#include "metrics/registry.h"
#include "net/address.h"
#include "proxy/proxy_metrics.h"
#include "proxy/worker_parts.h"
#include "service_registry.h"
#include "util/fd.h"

namespace spindle::component {

using namespace std::chrono_literals;

// Something the harness polls between turns of the proxy's loop: non-blocking I/O only.
class Peer {
 public:
  virtual void poll() = 0;

 protected:
  ~Peer() = default;
};

// Timeouts short enough for tests, each still several of the connections' deadline ticks
// (a quarter of the shortest, at least 50 ms; see WorkerParts).
config::Limits testLimits();

// The one service the harness balances: "echo" over `endpoints`, round robin so that a test
// knows that two calls in a row go to two endpoints.
config::Service echoService(const std::vector<net::SocketAddress>& endpoints);

class ProxyHarness {
 public:
  explicit ProxyHarness(const config::Service& service, const config::Limits& limits = testLimits(),
                        const config::Upstream& upstream = {});
  // Shuts down (see shutdown()) if the test did not.
  ~ProxyHarness();
  ProxyHarness(const ProxyHarness&) = delete;
  ProxyHarness& operator=(const ProxyHarness&) = delete;

  loop::Loop& loop() { return *loop_; }
  proxy::WorkerParts& parts() { return *parts_; }
  ServiceRegistry& registry() { return registry_; }
  const proxy::ProxyFamilies& families() const { return families_; }

  void addPeer(Peer* peer);
  void removePeer(Peer* peer);

  // Turns the loop and polls the peers until `done` holds (true) or `timeout` passes (false).
  bool runUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout = 2s);

  // A connection from a "Pod" to the proxy: a loopback socket whose accepted end is handed
  // to a ProtocolDetector for the service, as a redirected connection is. The client's end.
  Fd dialProxy();
  // Where a connection the detector passes through goes (the original destination).
  void setOriginalDestination(const net::SocketAddress& destination) { destination_ = destination; }

  // New endpoint snapshots, as the main thread publishes them to a worker.
  void publish(std::shared_ptr<const lb::ServiceTable> table);
  // The service as a config reload would change it (endpoints, balance, retries), published.
  void setService(const config::Service& service) { publish(registry_.reload({service})); }
  // The service's endpoints as the worker balances over them now.
  const lb::EndpointSet& endpoints() { return *parts_->services.at(0).endpoints; }

  // A counter of the worker's shard, by its label values in order; 0 when never counted.
  uint64_t counter(metrics::FamilyId family, std::initializer_list<std::string_view> labels) const;
  // spindle_requests_total of the service for one endpoint label and grpc-status.
  uint64_t requests(const std::string& endpoint, std::string_view grpc_status) const;
  uint64_t retries(std::string_view reason) const;

  // Closes every connection (as a stopping worker does) and waits until they are all gone.
  void shutdown();

 private:
  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<loop::BufferPool> buffers_;
  metrics::Registry metrics_registry_;
  proxy::ProxyFamilies families_;
  std::unique_ptr<metrics::Shard> shard_;
  std::unique_ptr<proxy::WorkerMetrics> metrics_;
  ServiceRegistry registry_;
  // Mark 0: no SO_MARK, which needs CAP_NET_ADMIN; nothing redirects our upstream connects.
  proxy::NodeSockets sockets_{/*mark=*/0};
  std::unique_ptr<proxy::WorkerParts> parts_;
  Fd listener_;
  net::SocketAddress listen_address_;
  net::SocketAddress destination_;
  std::vector<Peer*> peers_;
  bool shut_down_ = false;
};

// A loopback listener on a port the kernel picks; its address in *address.
Fd listenLoopback(net::SocketAddress* address);

}  // namespace spindle::component
