// A worker: one thread, one io_uring, its own SO_REUSEPORT listeners and connections.
// Nothing here is shared with other workers except the kernel maps and the endpoints' load.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "lb/service_table.h"
#include "loop/buffer_pool.h"
#include "loop/loop.h"
#include "net/acceptor.h"
#include "proxy/connection.h"
#include "proxy/proxy_metrics.h"
#include "proxy/upstream_sockets.h"
#include "proxy/worker_parts.h"
#include "redirect/cgroup_names.h"
#include "redirect/redirector.h"
#include "util/fd.h"
#include "util/rate_limit.h"

namespace spindle::proxy {

class Worker {
 public:
  // origins and sockets: the worker's channel to the privileged part, used by its thread only.
  Worker(unsigned index, loop::Engine engine, std::vector<Fd> listeners,
         redirect::OriginLookup& origins, std::shared_ptr<const lb::ServiceTable> services,
         const config::Limits& limits, const config::Upstream& upstream, UpstreamSockets& sockets,
         const ProxyFamilies& families, std::unique_ptr<metrics::Shard> shard,
         std::string cgroup_mount,  // Pods are named from there (the log's source); "": not
         bool by_source);           // metrics.by_source: calls counted by Pod too
  ~Worker();

  // Starts the thread and creates its ring there; fails when the ring cannot be had.
  Status start();
  // Thread-safe: ask the worker to close everything and exit.
  void stop();
  // Thread-safe: stop accepting and take the connections to this step of their drain.
  void drain(DrainStep step);
  // Thread-safe: after drain(), no connection the process must wait for is left.
  bool drained() const { return drained_.load(std::memory_order_relaxed); }
  // Thread-safe: a listener may still accept (false once drain() closed them all).
  bool accepting() const { return accepting_.load(std::memory_order_acquire); }
  // Thread-safe: wakes the worker, whose loop then goes round (and lastBeat() moves on).
  void ping() {
    if (waker_) waker_->wake();
  }
  // Thread-safe: new endpoint snapshots, taken by the worker at its next wake-up.
  void publish(std::shared_ptr<const lb::ServiceTable> services);
  void join();

  // Written by the worker only; a scrape reads it from the main thread (see metrics/).
  const metrics::Shard& shard() const { return *shard_; }
  // Thread-safe: how long the series of endpoints that left and Pods that are gone are still
  // scraped (metrics.series_grace).
  void setSeriesGrace(std::chrono::nanoseconds grace) { shard_->setSeriesGrace(grace); }
  // When the worker's loop last went round: a stuck worker shows in /healthz.
  std::chrono::steady_clock::time_point lastBeat() const {
    return std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(last_beat_.load(std::memory_order_relaxed)));
  }

 private:
  void run();
  void onWake();
  void takePublished();
  void applyDrain();
  void onAccepted(Fd downstream, uint16_t proxy_port);
  // The calling Pod's label (the metrics' and the log's `source`), from its cgroup.
  std::shared_ptr<const std::string> sourceOf(uint64_t cgroup_id);
  void onListenerClosed();
  void closeListeners();
  void shutdownConnections();
  // Once a second or so: the series of what is gone retire, and Pods' presence is checked.
  void sweepMetrics(std::chrono::steady_clock::time_point now);

  unsigned index_;
  const loop::Engine engine_;
  std::vector<Fd> listeners_;
  redirect::OriginLookup& origins_;
  std::shared_ptr<const lb::ServiceTable> services_;
  config::Limits limits_;
  config::Upstream upstream_;
  UpstreamSockets& sockets_;
  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<loop::Waker> waker_;
  std::unique_ptr<loop::BufferPool> buffers_;
  std::unique_ptr<metrics::Shard> shard_;
  std::string cgroup_mount_;
  std::optional<redirect::CgroupNames> cgroup_names_;  // none: sources are "unknown"
  WorkerMetrics metrics_;
  std::unique_ptr<WorkerParts> parts_;
  std::atomic<int64_t> last_beat_{0};
  std::vector<net::Acceptor*> acceptors_;  // released when the loop ends
  std::atomic<bool> stopping_{false};
  std::atomic<DrainStep> drain_requested_{DrainStep::kNone};
  DrainStep drain_applied_ = DrainStep::kNone;  // worker thread only
  std::atomic<bool> drained_{false};
  std::atomic<bool> accepting_{true};
  size_t listeners_open_ = 0;                              // worker thread only
  std::chrono::steady_clock::time_point metrics_swept_{};  // worker thread only
  std::mutex published_lock_;  // main thread -> worker; never taken on the data path
  std::shared_ptr<const lb::ServiceTable> published_;
  std::thread thread_;
  // A flood of rejected connects must not flood the log.
  RateLimit reject_log_{std::chrono::seconds(1)};
  RateLimit limit_log_{std::chrono::seconds(1)};
};

}  // namespace spindle::proxy
