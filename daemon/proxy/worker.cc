#include "proxy/worker.h"

#include <fmt/core.h>
#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <future>
#include <memory>

#include "net/socket.h"
#include "proxy/h2_connection.h"
#include "proxy/passthrough.h"
#include "proxy/protocol_detector.h"
#include "util/log.h"

namespace spindle::proxy {
namespace {
constexpr unsigned kRingEntries = 1024;
// Receive buffers of one worker: 256 x 64 KiB = 16 MiB at most, touched only when used.
constexpr uint32_t kBufferCount = 256;
constexpr uint32_t kBufferSize = 64 * 1024;
// How often the worker retires metric series of what is gone (see WorkerMetrics::expire).
constexpr auto kMetricsSweep = std::chrono::seconds(1);
}  // namespace

Worker::Worker(unsigned index, loop::Engine engine, std::vector<Fd> listeners,
               redirect::OriginLookup& origins, std::shared_ptr<const lb::ServiceTable> services,
               const config::Limits& limits, const config::Upstream& upstream,
               UpstreamSockets& sockets, const ProxyFamilies& families,
               std::unique_ptr<metrics::Shard> shard, std::string cgroup_mount, bool by_source)
    : index_(index),
      engine_(engine),
      listeners_(std::move(listeners)),
      origins_(origins),
      services_(std::move(services)),
      limits_(limits),
      upstream_(upstream),
      sockets_(sockets),
      shard_(std::move(shard)),
      cgroup_mount_(std::move(cgroup_mount)),
      metrics_(families, *shard_, by_source && !cgroup_mount_.empty()) {
  last_beat_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                   std::memory_order_relaxed);
}

Worker::~Worker() {
  stop();
  join();
}

Status Worker::start() {
  std::promise<Status> ready;
  auto started = ready.get_future();
  thread_ = std::thread([this, &ready] {
    // Named, so that an operator (or a test) can tell the workers apart in /proc.
    pthread_setname_np(pthread_self(), fmt::format("spindle-w{}", index_).c_str());
    auto loop = loop::Loop::create(engine_, kRingEntries);
    if (!loop) {
      ready.set_value(Error{loop.error()});
      return;
    }
    loop_ = std::move(*loop);
    auto buffers = loop::BufferPool::create(*loop_, /*group=*/0, kBufferCount, kBufferSize);
    if (!buffers) {
      ready.set_value(Error{buffers.error()});
      return;
    }
    buffers_ = std::move(*buffers);
    if (cgroup_mount_.empty()) {
      // No cgroup2 mount was found: no Pod is named (the daemon said so).
    } else if (auto names = redirect::CgroupNames::open(cgroup_mount_)) {
      cgroup_names_.emplace(std::move(names).value());
    } else {
      log::warn("worker {}: calling Pods will not be named: {}", index_, names.error());
    }
    parts_ = std::make_unique<WorkerParts>(*loop_, *buffers_, metrics_, limits_, upstream_,
                                           sockets_, std::move(services_),
                                           /*seed=*/(uint64_t{index_} << 32) ^ 0x5eed5eedu);
    loop_->setAfterBatch([this] { parts_->connections.flushDirty(); });
    waker_ = std::make_unique<loop::Waker>(*loop_, [this] { onWake(); });
    ready.set_value(Status{});
    run();
  });
  Status status = started.get();
  if (!status) join();
  return status;
}

void Worker::stop() {
  stopping_.store(true, std::memory_order_relaxed);
  if (waker_) waker_->wake();
}

void Worker::drain(DrainStep step) {
  DrainStep seen = drain_requested_.load(std::memory_order_relaxed);
  while (seen < step && !drain_requested_.compare_exchange_weak(seen, step)) {
  }
  if (waker_) waker_->wake();
}

void Worker::onWake() {
  takePublished();
  applyDrain();
}

void Worker::applyDrain() {
  const DrainStep requested = drain_requested_.load(std::memory_order_relaxed);
  if (requested <= drain_applied_) return;
  if (drain_applied_ == DrainStep::kNone) closeListeners();
  parts_->connections.drainAll(requested);
  drain_applied_ = requested;
}

void Worker::publish(std::shared_ptr<const lb::ServiceTable> services) {
  {
    std::lock_guard<std::mutex> lock(published_lock_);
    published_ = std::move(services);
  }
  if (waker_) waker_->wake();
}

void Worker::takePublished() {
  std::shared_ptr<const lb::ServiceTable> services;
  {
    std::lock_guard<std::mutex> lock(published_lock_);
    services = std::move(published_);
  }
  if (services) parts_->setServices(std::move(services));
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::run() {
  waker_->arm();
  for (Fd& listener : listeners_) {
    const uint16_t port = net::localPort(listener.get());
    acceptors_.push_back(new net::Acceptor(
        *loop_, std::move(listener), fmt::format("worker {}", index_),
        [this, port](Fd fd) { onAccepted(std::move(fd), port); }, [this] { onListenerClosed(); }));
    acceptors_.back()->start();
  }
  listeners_.clear();
  listeners_open_ = acceptors_.size();
  if (listeners_open_ == 0) accepting_.store(false, std::memory_order_release);
  // stop() may have run before the waker existed: the flag is checked every round.
  while (!stopping_.load(std::memory_order_relaxed)) {
    // While draining, look often whether the last connection has gone.
    const bool draining = drain_applied_ != DrainStep::kNone;
    loop_->runOnce(std::chrono::milliseconds(draining ? 50 : 1000));
    const auto now = std::chrono::steady_clock::now();
    last_beat_.store(now.time_since_epoch().count(), std::memory_order_relaxed);
    if (now - metrics_swept_ >= kMetricsSweep) sweepMetrics(now);
    if (draining) {
      drained_.store(parts_->connections.drained(), std::memory_order_relaxed);
    }
  }
  shutdownConnections();
  // The ring goes first: it cancels what is still in flight, and only then are the buffers
  // those operations point to freed. Connections that did not finish closing by now are
  // left to the process exit: freeing them could race with their cancelled operations.
  loop_->setAfterBatch(nullptr);
  loop_.reset();
  waker_.reset();
  buffers_.reset();
}

void Worker::sweepMetrics(std::chrono::steady_clock::time_point now) {
  metrics_swept_ = now;
  if (cgroup_names_) cgroup_names_->refresh();
  metrics_.expire(
      parts_->services.snapshot(),
      [this](std::string_view source) { return !cgroup_names_ || cgroup_names_->present(source); },
      now);
}

void Worker::closeListeners() {
  // No new connections from here on. Connections still in the accept queue move to another
  // spindle's listener of the same port, where the kernel allows it
  // (net.ipv4.tcp_migrate_req), and are reset otherwise.
  for (net::Acceptor* acceptor : acceptors_) acceptor->close();
}

void Worker::onListenerClosed() {
  // The ring let go of the last listener: the kernel has closed it.
  if (--listeners_open_ == 0) accepting_.store(false, std::memory_order_release);
}

void Worker::shutdownConnections() {
  closeListeners();
  parts_->connections.abortAll();
  // Give the cancellations a moment to complete, so that peers see an orderly close.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  auto settled = [&] {
    return parts_->connections.empty() &&
           std::all_of(acceptors_.begin(), acceptors_.end(),
                       [](const net::Acceptor* acceptor) { return acceptor->idle(); });
  };
  while (!settled() && std::chrono::steady_clock::now() < deadline) {
    loop_->runOnce(std::chrono::milliseconds(50));
  }
  for (net::Acceptor* acceptor : acceptors_) net::Acceptor::release(acceptor);
  acceptors_.clear();
}

std::shared_ptr<const std::string> Worker::sourceOf(uint64_t cgroup_id) {
  static const auto kUnknown = std::make_shared<const std::string>("unknown");
  return cgroup_names_ ? cgroup_names_->labelOf(cgroup_id) : kUnknown;
}

void Worker::onAccepted(Fd downstream, uint16_t proxy_port) {
  // Also while draining: it was redirected here before the listeners closed.
  if (stopping_.load(std::memory_order_relaxed)) return;
  auto peer = net::peerAddress(downstream.get());  // fails once the client reset it
  std::optional<redirect::OriginalDst> original;
  if (peer) {
    original = origins_.take(*peer, proxy_port, net::savedSynSequence(downstream.get()));
  }
  if (!original) {
    // Only connections that spindle's BPF program redirected are served: the proxy port is
    // never an open relay.
    metrics_.connectionOpened(WorkerMetrics::Protocol::kRejected);
    uint64_t suppressed = 0;
    if (reject_log_.allow(&suppressed)) {
      log::warn({.reason = "not redirected"},
                "rejected connection from {}: not redirected ({} more not logged)",
                peer ? peer->toString() : std::string("unknown peer"), suppressed);
    }
    return;
  }
  // Over the worker's connection limit the connection is closed at once, whatever it would
  // have become (HTTP/2 or passthrough): the Pod's client retries, elsewhere or later, rather
  // than the node growing without bound.
  if (metrics_.downstreamOpen() >= limits_.max_connections) {
    metrics_.overConnectionLimit();
    uint64_t suppressed = 0;
    if (limit_log_.allow(&suppressed)) {
      const auto source = sourceOf(original->cgroup_id);
      log::warn({.source = *source, .reason = "limits.max_connections"},
                "closing connection from {}: {} connections open, limits.max_connections "
                "({} more not logged)",
                peer->toString(), limits_.max_connections, suppressed);
    }
    return;
  }
  net::setNoDelay(downstream.get());
  const Caller caller{original->netns_cookie, original->pid};
  auto source = sourceOf(original->cgroup_id);
  const auto service = parts_->services.indexOf(original->service_id);
  if (service && !parts_->services.at(*service).endpoints->empty()) {
    auto* detector =
        new ProtocolDetector(*parts_, std::move(downstream), *peer, original->destination, *service,
                             caller, std::move(source));
    parts_->connections.add(detector);
    detector->start();
    return;
  }
  // No endpoints known for the service (DNS has not answered yet, or confirmed there are
  // none): the ClusterIP still works, so pass through to it.
  auto* passthrough = new Passthrough(*parts_, std::move(downstream), *peer, original->destination,
                                      caller, std::move(source));
  parts_->connections.add(passthrough);
  passthrough->start();
}

}  // namespace spindle::proxy
