#include "proxy/worker.h"

#include <fmt/core.h>

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
}  // namespace

Worker::Worker(unsigned index, std::vector<net::Fd> listeners,
               redirect::OriginalDstMap original_dsts,
               std::shared_ptr<const ServiceTable> services, uint32_t mark,
               const ProxyFamilies& families, std::unique_ptr<metrics::Shard> shard,
               std::string cgroup_mount)
    : index_(index),
      listeners_(std::move(listeners)),
      original_dsts_(original_dsts),
      services_(std::move(services)),
      mark_(mark),
      shard_(std::move(shard)),
      cgroup_mount_(std::move(cgroup_mount)),
      metrics_(families, *shard_) {
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
    auto loop = loop::Loop::create(kRingEntries);
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
    if (auto names = redirect::CgroupNames::open(cgroup_mount_)) {
      cgroup_names_.emplace(std::move(names).value());
    } else {
      log::warn("worker {}: calls will not be attributed to Pods: {}", index_, names.error());
    }
    context_ = std::make_unique<WorkerContext>(*loop_, *buffers_, services_, mark_,
                                               /*seed=*/(uint64_t{index_} << 32) ^ 0x5eed5eedu,
                                               metrics_);
    loop_->setAfterBatch([this] { context_->flushDirty(); });
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
  context_->drainAll(requested);
  drain_applied_ = requested;
}

void Worker::publish(std::shared_ptr<const ServiceTable> services) {
  {
    std::lock_guard<std::mutex> lock(published_lock_);
    published_ = std::move(services);
  }
  if (waker_) waker_->wake();
}

void Worker::takePublished() {
  std::shared_ptr<const ServiceTable> services;
  {
    std::lock_guard<std::mutex> lock(published_lock_);
    services = std::move(published_);
  }
  if (services) context_->setServices(std::move(services));
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::run() {
  waker_->arm();
  for (const net::Fd& listener : listeners_) {
    acceptors_.push_back(std::make_unique<Acceptor>(*this, listener.get()));
    acceptors_.back()->arm();
  }
  acceptors_armed_ = acceptors_.size();
  if (acceptors_armed_ == 0) accepting_.store(false, std::memory_order_release);
  // stop() may have run before the waker existed: the flag is checked every round.
  while (!stopping_.load(std::memory_order_relaxed)) {
    // While draining, look often whether the last connection has gone.
    const bool draining = drain_applied_ != DrainStep::kNone;
    loop_->runOnce(std::chrono::milliseconds(draining ? 50 : 1000));
    last_beat_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                     std::memory_order_relaxed);
    if (draining) drained_.store(context_->drained(), std::memory_order_relaxed);
  }
  shutdownConnections();
  // The ring goes first: it cancels what is still in flight, and only then are the buffers
  // those operations point to freed. Connections that did not finish closing by now are
  // left to the process exit: freeing them could race with their cancelled operations.
  loop_->setAfterBatch(nullptr);
  loop_.reset();
  waker_.reset();
  buffers_.reset();
  listeners_.clear();
}

void Worker::closeListeners() {
  // No new connections from here on. The ring holds its own reference on a listener with a
  // multishot accept armed, so closing the fd alone would not stop it: the accepts are
  // cancelled, by their completion rather than by fd, as the fds are closed before the
  // cancellations are submitted. Connections still in the accept queue move to another
  // spindle's listener of the same port, where the kernel allows it
  // (net.ipv4.tcp_migrate_req), and are reset otherwise.
  if (listeners_.empty()) return;
  for (const auto& acceptor : acceptors_) {
    loop::Completion* accept = acceptor.get();
    io_uring_prep_cancel(loop_->prepareIgnored(), accept, 0);
  }
  listeners_.clear();
}

void Worker::shutdownConnections() {
  closeListeners();
  context_->abortAll();
  // Give the cancellations a moment to complete, so that peers see an orderly close.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  while (!context_->idle() && std::chrono::steady_clock::now() < deadline) {
    loop_->runOnce(std::chrono::milliseconds(50));
  }
}

void Worker::Acceptor::arm() {
  io_uring_prep_multishot_accept(worker_.loop_->prepare(this), fd_, nullptr, nullptr,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
}

void Worker::Acceptor::complete(int32_t res, uint32_t flags) {
  if (worker_.stopping_.load(std::memory_order_relaxed)) {
    if (res >= 0) ::close(res);
    return;
  }
  if (res >= 0) {
    worker_.onAccepted(res);  // also while draining: it was redirected here before the close
  } else if (!worker_.listeners_.empty() && res != -EAGAIN && res != -EINTR &&
             res != -ECONNABORTED) {
    // EMFILE and friends: keep serving what we have; the listener's backlog holds the rest.
    log::warn("worker {}: accept: {}", worker_.index_, std::strerror(-res));
  }
  if (flags & IORING_CQE_F_MORE) return;
  if (!worker_.listeners_.empty()) {
    arm();
  } else if (--worker_.acceptors_armed_ == 0) {
    // The ring let go of the last listener: the kernel has closed it.
    worker_.accepting_.store(false, std::memory_order_release);
  }
}

void Worker::onAccepted(int fd) {
  net::Fd downstream(fd);
  auto peer = net::peerAddress(downstream.get());
  std::optional<redirect::OriginalDst> original;
  if (peer) original = original_dsts_.take(*peer);
  if (!original) {
    // Only connections that spindle's BPF program redirected are served: the proxy port is
    // never an open relay.
    metrics_.connectionOpened(WorkerMetrics::Protocol::kRejected);
    uint64_t suppressed = 0;
    if (reject_log_.allow(&suppressed)) {
      log::warn("rejected connection from {}: not redirected ({} more not logged)",
                peer ? peer->toString() : std::string("unknown peer"), suppressed);
    }
    return;
  }
  // Over the worker's connection limit the connection is closed at once, whatever it would
  // have become (HTTP/2 or passthrough): the Pod's client retries, elsewhere or later, rather
  // than the node growing without bound.
  if (metrics_.downstreamOpen() >= limits().max_connections) {
    metrics_.overConnectionLimit();
    uint64_t suppressed = 0;
    if (limit_log_.allow(&suppressed)) {
      log::warn("closing connection from {}: {} connections open, limits.max_connections "
                "({} more not logged)",
                peer->toString(), limits().max_connections, suppressed);
    }
    return;
  }
  net::setNoDelay(downstream.get());
  const auto service = context_->serviceIndex(original->service_id);
  if (service && !context_->serviceAt(*service).endpoints->empty()) {
    static const auto kUnknown = std::make_shared<const std::string>("unknown");
    auto source = cgroup_names_ ? cgroup_names_->labelOf(original->cgroup_id) : kUnknown;
    auto* detector = new ProtocolDetector(*context_, std::move(downstream), *peer,
                                          original->destination, *service, std::move(source));
    context_->add(detector);
    detector->start();
    return;
  }
  // No endpoints known for the service (DNS has not answered yet, or confirmed there are
  // none): the ClusterIP still works, so pass through to it.
  auto* passthrough =
      new Passthrough(*context_, std::move(downstream), *peer, original->destination);
  context_->add(passthrough);
  passthrough->start();
}

}  // namespace spindle::proxy
