#include "admin/admin_server.h"

#include <fmt/core.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <exception>

#include "net/socket.h"
#include "util/fd.h"
#include "util/log.h"
#include "util/rate_limit.h"

namespace spindle::admin {
namespace {

using Clock = std::chrono::steady_clock;

// How long a connection may take to send what it still has after its last response (the rest
// of an oversized request, say) before it is closed anyway.
constexpr std::chrono::milliseconds kDrainTimeout{1000};
constexpr int kBacklog = 128;

}  // namespace

// One admin connection: read a request head into a fixed buffer, answer it, then read the next
// one (keep-alive) or drain and close. It frees itself once nothing of it is in flight, which
// may be after the server is gone: server_ is then null.
class AdminConnection final : public loop::Deferred, public ListNode<AdminConnection> {
 public:
  AdminConnection(AdminServer& server, Fd fd)
      : server_(&server), loop_(server.loop_), fd_(std::move(fd)) {}

  void start() {
    deadline_ = Clock::now() + server_->options_.request_timeout;
    readMore();
  }

  // Closes now, whatever is in flight.
  void close() {
    if (state_ == State::kClosing) return;
    state_ = State::kClosing;
    if (server_ != nullptr) server_->open_--;
    if (pending_ > 0) {
      loop_.cancelFd(fd_.get());
    }
    maybeFree();
  }

  bool expired(Clock::time_point now) const {
    return state_ != State::kClosing && now >= deadline_;
  }
  bool draining() const { return state_ == State::kDraining; }
  // Waiting for (the rest of) a request: nothing of ours is being sent.
  bool reading() const { return state_ == State::kReading; }
  void detach() { server_ = nullptr; }

 private:
  enum class State { kReading, kWriting, kDraining, kClosing };

  void readMore() {
    loop_.recv(&recv_op_, fd_.get(), buffer_.data() + filled_, buffer_.size() - filled_);
    pending_++;
  }

  void sendMore() {
    loop_.send(&send_op_, fd_.get(), response_.data() + sent_, response_.size() - sent_,
               MSG_NOSIGNAL);
    pending_++;
  }

  void onReceived(int32_t res, uint32_t /*flags*/) {
    pending_--;
    if (state_ == State::kClosing) {
      maybeFree();
      return;
    }
    if (res == -EINTR || res == -EAGAIN) {
      readMore();
      return;
    }
    if (res <= 0) {
      // The peer closed (or reset): nothing to answer.
      close();
      return;
    }
    if (state_ == State::kDraining) {
      filled_ = 0;  // discarded
      readMore();
      return;
    }
    filled_ += static_cast<size_t>(res);
    process();
  }

  void process() {
    ParseResult parsed = parser_.parse(std::string_view(buffer_.data(), filled_));
    switch (parsed.kind) {
      case ParseResult::Kind::kNeedMore:
        // The parser fails a head that fills the buffer, so there is always room here.
        readMore();
        return;
      case ParseResult::Kind::kError: {
        uint64_t suppressed = 0;
        if (server_->bad_request_log_.allow(&suppressed)) {
          log::info("admin: refused a request with {}: {} ({} more not logged)", parsed.status,
                    parsed.reason, suppressed);
        }
        respond(errorResponse(parsed.status), /*head_only=*/false, /*keep_alive=*/false);
        return;
      }
      case ParseResult::Kind::kComplete: {
        consumed_ = parsed.consumed;
        ++requests_;
        const HttpRequest& request = parsed.request;
        const bool keep_alive = request.keep_alive && !server_->stopped_ &&
                                requests_ < server_->options_.max_requests_per_connection;
        respond(server_->dispatch(request), request.method == Method::kHead, keep_alive);
        return;
      }
    }
  }

  void respond(const HttpResponse& response, bool head_only, bool keep_alive) {
    server_->stats_.responses++;
    if (response.status >= 400) server_->stats_.errors++;
    response_ = serializeResponse(response, head_only, keep_alive);
    sent_ = 0;
    keep_alive_ = keep_alive;
    state_ = State::kWriting;
    sendMore();
  }

  void onSent(int32_t res, uint32_t /*flags*/) {
    pending_--;
    if (state_ == State::kClosing) {
      maybeFree();
      return;
    }
    if (res < 0 && res != -EINTR && res != -EAGAIN) {
      close();
      return;
    }
    if (res > 0) sent_ += static_cast<size_t>(res);
    if (sent_ < response_.size()) {
      sendMore();
      return;
    }
    std::string().swap(response_);  // a /metrics body should not stay around while idle
    if (keep_alive_) {
      // A pipelined request may already be in the buffer.
      std::memmove(buffer_.data(), buffer_.data() + consumed_, filled_ - consumed_);
      filled_ -= consumed_;
      consumed_ = 0;
      parser_.reset();
      deadline_ = Clock::now() + server_->options_.request_timeout;
      state_ = State::kReading;
      process();
      return;
    }
    // Closing with unread bytes would send a reset, which can destroy the response before the
    // client reads it: half-close, then read and discard until the client closes too.
    ::shutdown(fd_.get(), SHUT_WR);
    state_ = State::kDraining;
    filled_ = 0;
    deadline_ = std::min(deadline_, Clock::now() + kDrainTimeout);
    readMore();
  }

  void maybeFree() {
    if (pending_ > 0) return;
    if (server_ != nullptr) server_->unlink(this);
    fd_.reset();
    loop_.deferDelete(std::unique_ptr<loop::Deferred>(this));
  }

  AdminServer* server_;
  loop::Loop& loop_;
  Fd fd_;
  State state_ = State::kReading;
  loop::MemberCompletion<AdminConnection, &AdminConnection::onReceived> recv_op_{*this};
  loop::MemberCompletion<AdminConnection, &AdminConnection::onSent> send_op_{*this};
  int pending_ = 0;
  Clock::time_point deadline_{};
  HttpRequestParser parser_;
  std::array<char, kMaxHeadBytes> buffer_{};
  size_t filled_ = 0;
  size_t consumed_ = 0;  // bytes of the request being answered
  size_t requests_ = 0;
  std::string response_;
  size_t sent_ = 0;
  bool keep_alive_ = false;
};

// Deadlines of all connections are checked by one periodic timeout rather than one timer per
// connection: admin traffic is light, and a deadline a fraction of a second late is fine.
class AdminServer::Sweeper final : public loop::Completion, public loop::Deferred {
 public:
  Sweeper(AdminServer& server, std::chrono::nanoseconds interval)
      : server_(&server), loop_(server.loop_) {
    ts_.tv_sec = interval.count() / 1'000'000'000;
    ts_.tv_nsec = interval.count() % 1'000'000'000;
  }

  void arm() {
    if (armed_) return;
    loop_.timeout(this, &ts_);
    armed_ = true;
  }

  void cancel() {
    if (!armed_) return;
    loop_.cancelTimeout(this);
  }

  void complete(int32_t res, uint32_t /*flags*/) override {
    armed_ = false;
    if (server_ == nullptr) {
      loop_.deferDelete(std::unique_ptr<loop::Deferred>(this));
      return;
    }
    if (res == -ETIME) server_->sweep();
  }

  bool armed() const { return armed_; }
  void detach() { server_ = nullptr; }

 private:
  AdminServer* server_;
  loop::Loop& loop_;
  __kernel_timespec ts_{};
  bool armed_ = false;
};

Result<std::unique_ptr<AdminServer>> AdminServer::create(loop::Loop& loop,
                                                         const net::SocketAddress& listen,
                                                         AdminOptions options) {
  // SO_REUSEPORT: during a rollout the new spindle binds the port beside the old one.
  auto fd = net::listenTcp(listen, /*reuse_port=*/true, kBacklog);
  if (!fd) return makeError(fmt::format("admin: {}", fd.error()));
  return serve(loop, std::move(*fd), options);
}

Result<std::unique_ptr<AdminServer>> AdminServer::serve(loop::Loop& loop, Fd listener,
                                                        AdminOptions options) {
  sockaddr_storage storage{};
  socklen_t len = sizeof(storage);
  if (::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&storage), &len) != 0) {
    return makeError(fmt::format("admin: getsockname: {}", std::strerror(errno)));
  }
  // A Unix socket has no address to report.
  const auto bound =
      storage.ss_family == AF_UNIX
          ? net::SocketAddress()
          : net::SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&storage), len);
  return serve(loop, std::move(listener), bound, options);
}

Result<std::unique_ptr<AdminServer>> AdminServer::serve(loop::Loop& loop, Fd listener,
                                                        net::SocketAddress address,
                                                        AdminOptions options) {
  if (options.max_connections == 0 || options.request_timeout.count() <= 0 ||
      options.max_requests_per_connection == 0) {
    return makeError("admin: max_connections, request_timeout and max_requests must be > 0");
  }
  std::unique_ptr<AdminServer> server(new AdminServer(loop, address, options));
  AdminServer* self = server.get();
  server->acceptor_ = new net::Acceptor(loop, std::move(listener), "admin",
                                        [self](Fd fd) { self->onAccepted(std::move(fd)); });
  const auto interval = std::clamp<std::chrono::nanoseconds>(
      options.request_timeout / 10, std::chrono::milliseconds(10), std::chrono::milliseconds(250));
  server->sweeper_ = new Sweeper(*server, interval);
  return server;
}

AdminServer::AdminServer(loop::Loop& loop, net::SocketAddress address, AdminOptions options)
    : loop_(loop), address_(address), options_(options) {}

AdminServer::~AdminServer() {
  stop();
  // What still waits for a completion frees itself when it comes (or never, if the loop goes
  // first, which is fine: the ring drops every operation with it).
  connections_.forEach([](AdminConnection& conn) { conn.detach(); });
  net::Acceptor::release(acceptor_);
  if (sweeper_->armed()) {
    sweeper_->detach();
  } else {
    delete sweeper_;
  }
}

void AdminServer::handle(std::string path, Handler handler) {
  handlers_[std::move(path)] = std::move(handler);
}

void AdminServer::start() {
  if (!stopped_) acceptor_->start();
}

void AdminServer::stop() {
  if (stopped_) return;
  stopped_ = true;
  acceptor_->close();
  sweeper_->cancel();
  connections_.forEach([](AdminConnection& conn) { conn.close(); });
}

bool AdminServer::idle() const {
  return connections_.empty() && acceptor_->idle() && !sweeper_->armed();
}

void AdminServer::onAccepted(Fd accepted) {
  if (open_ >= options_.max_connections) {
    // Full: make room by closing the oldest connection still waiting for a request, so that
    // idle connections cannot lock a health probe out until their deadline passes. Only when
    // every connection is busy answering is the new one refused.
    AdminConnection* oldest = nullptr;
    connections_.forEach([&](AdminConnection& conn) {
      if (conn.reading()) oldest = &conn;  // new connections go to the front
    });
    uint64_t suppressed = 0;
    if (oldest == nullptr) {
      stats_.refused++;
      if (refused_log_.allow(&suppressed)) {
        log::warn("admin: {} connections open and busy, closing a new one ({} more not logged)",
                  open_, suppressed);
      }
      return;
    }
    stats_.evicted++;
    if (refused_log_.allow(&suppressed)) {
      log::warn("admin: {} connections open, closing the oldest idle one ({} more not logged)",
                open_, suppressed);
    }
    oldest->close();
  }
  stats_.accepted++;
  auto* conn = new AdminConnection(*this, std::move(accepted));
  connections_.pushFront(conn);
  open_++;
  conn->start();
  armSweeper();
}

void AdminServer::unlink(AdminConnection* conn) { connections_.remove(conn); }

void AdminServer::armSweeper() {
  if (!stopped_) sweeper_->arm();
}

void AdminServer::sweep() {
  if (stopped_) return;
  const auto now = Clock::now();
  connections_.forEach([&](AdminConnection& conn) {
    if (!conn.expired(now)) return;
    if (!conn.draining()) stats_.timed_out++;
    conn.close();
  });
  if (open_ > 0) armSweeper();
}

HttpResponse AdminServer::dispatch(const HttpRequest& request) {
  auto it = handlers_.find(request.path);
  if (it == handlers_.end()) return errorResponse(404);
  try {
    return it->second(request);
  } catch (const std::exception& e) {
    // Handlers should not throw; if one does, the client gets a 500 and the loop goes on.
    log::error("admin: handler for {} failed: {}", request.path, e.what());
    return errorResponse(500);
  }
}

}  // namespace spindle::admin
