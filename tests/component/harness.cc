#include "harness.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "net/socket.h"
#include "proxy/protocol_detector.h"

namespace spindle::component {
namespace {

// Sized for a test, not a node: a few connections, bodies of a few MiB.
constexpr unsigned kRingEntries = 256;

// The engine the suite runs on: io_uring, or epoll with SPINDLE_TEST_IO_ENGINE=epoll (make test
// runs the suite once on each).
loop::Engine testEngine() {
  const char* engine = std::getenv("SPINDLE_TEST_IO_ENGINE");
  return engine != nullptr && std::string_view(engine) == "epoll" ? loop::Engine::kEpoll
                                                                  : loop::Engine::kIoUring;
}
constexpr uint32_t kBufferCount = 64;
constexpr uint32_t kBufferSize = 64 * 1024;
// How long one turn of the loop waits for a completion before the peers are polled again.
constexpr auto kTurn = std::chrono::milliseconds(1);

template <typename T>
T orAbort(Result<T> result, const char* what) {
  if (!result) {
    fmt::print(stderr, "component test set-up: {}: {}\n", what, result.error());
    std::abort();
  }
  return std::move(result).value();
}

}  // namespace

config::Limits testLimits() {
  config::Limits limits;
  limits.header_timeout = std::chrono::milliseconds(300);
  limits.idle_timeout = std::chrono::milliseconds(300);
  limits.send_timeout = std::chrono::milliseconds(2000);
  return limits;
}

config::Service echoService(const std::vector<net::SocketAddress>& endpoints) {
  config::Service service;
  service.name = "echo";
  service.endpoints.statics = endpoints;
  service.balance = config::Balance::kRoundRobin;
  return service;
}

Fd listenLoopback(net::SocketAddress* address) {
  Fd fd = orAbort(net::listenTcp(orAbort(net::SocketAddress::parseIp("127.0.0.1", 0), "address"),
                                 /*reuse_port=*/false, /*backlog=*/64),
                  "listen on 127.0.0.1");
  sockaddr_storage storage{};
  socklen_t length = sizeof(storage);
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&storage), &length);
  *address = net::SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&storage), length);
  return fd;
}

ProxyHarness::ProxyHarness(const config::Service& service, const config::Limits& limits,
                           const config::Upstream& upstream)
    : loop_(orAbort(loop::Loop::create(testEngine(), kRingEntries), "loop")),
      buffers_(orAbort(loop::BufferPool::create(*loop_, /*group=*/0, kBufferCount, kBufferSize),
                       "buffer pool")),
      families_(orAbort(proxy::ProxyFamilies::registerIn(metrics_registry_), "metrics")),
      shard_(metrics_registry_.makeShard()),
      metrics_(std::make_unique<proxy::WorkerMetrics>(families_, *shard_)),
      registry_({service}) {
  parts_ = std::make_unique<proxy::WorkerParts>(*loop_, *buffers_, *metrics_, limits, upstream,
                                                sockets_, registry_.table(), /*seed=*/42);
  loop_->setAfterBatch([this] { parts_->connections.flushDirty(); });
  listener_ = listenLoopback(&listen_address_);
  // Nothing listens on port 1 of loopback: a passthrough the test did not ask for fails.
  destination_ = orAbort(net::SocketAddress::parse("127.0.0.1:1"), "address");
}

ProxyHarness::~ProxyHarness() {
  shutdown();
  // The ring goes before the buffers the kernel may still write into (see BufferPool).
  loop_->setAfterBatch(nullptr);
  parts_.reset();
  loop_.reset();
  buffers_.reset();
}

void ProxyHarness::addPeer(Peer* peer) { peers_.push_back(peer); }

void ProxyHarness::removePeer(Peer* peer) {
  peers_.erase(std::remove(peers_.begin(), peers_.end(), peer), peers_.end());
}

bool ProxyHarness::runUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    loop_->runOnce(kTurn);
    // A peer may go away while polled (a client closed by its own poll): take a copy.
    const std::vector<Peer*> peers = peers_;
    for (Peer* peer : peers) peer->poll();
  }
  return true;
}

Fd ProxyHarness::dialProxy() {
  Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (::connect(client.get(), listen_address_.asSockaddr(), listen_address_.length()) != 0) {
    ADD_FAILURE() << "connect to the proxy's listener: " << std::strerror(errno);
    return Fd();
  }
  pollfd ready{listener_.get(), POLLIN, 0};
  ::poll(&ready, 1, /*timeout ms=*/1000);
  Fd accepted(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (!accepted.valid()) {
    ADD_FAILURE() << "accept: " << std::strerror(errno);
    return Fd();
  }
  // From here as Worker::onAccepted does for a connection the BPF program redirected.
  auto peer = net::peerAddress(accepted.get());
  EXPECT_TRUE(peer.ok());
  net::setNoDelay(accepted.get());
  static const auto kSource = std::make_shared<const std::string>("test-pod");
  auto* detector = new proxy::ProtocolDetector(*parts_, std::move(accepted), *peer, destination_,
                                               /*service_index=*/0, proxy::Caller{}, kSource);
  parts_->connections.add(detector);
  detector->start();
  ::fcntl(client.get(), F_SETFL, ::fcntl(client.get(), F_GETFL) | O_NONBLOCK);
  net::setNoDelay(client.get());
  return client;
}

void ProxyHarness::publish(std::shared_ptr<const lb::ServiceTable> table) {
  parts_->setServices(std::move(table));
}

uint64_t ProxyHarness::counter(metrics::FamilyId family,
                               std::initializer_list<std::string_view> labels) const {
  const std::vector<std::string_view> wanted(labels);
  uint64_t value = 0;
  shard_->forEachSeries(family, [&](const metrics::SeriesView& series) {
    if (std::equal(series.label_values.begin(), series.label_values.end(), wanted.begin(),
                   wanted.end())) {
      value = series.cells[0].load(std::memory_order_relaxed);
    }
  });
  return value;
}

uint64_t ProxyHarness::requests(const std::string& endpoint, std::string_view grpc_status) const {
  return counter(families_.requests_total, {"echo", endpoint, grpc_status});
}

uint64_t ProxyHarness::retries(std::string_view reason) const {
  return counter(families_.retries_total, {"echo", reason});
}

void ProxyHarness::shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  parts_->connections.abortAll();
  // A connection that never finishes closing is a bug of its own (it would leak in a worker).
  EXPECT_TRUE(runUntil([this] { return parts_->connections.empty(); }, 2s))
      << "connections still open after abortAll()";
  peers_.clear();
}

}  // namespace spindle::component
