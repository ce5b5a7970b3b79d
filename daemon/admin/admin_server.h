// The admin HTTP/1.1 listener on the main thread's loop: /metrics, /ready, /healthz and the
// like. Handlers are read-only and run on the loop's thread, so they may read main-thread
// state directly; they must be quick, since the loop waits for them.
//
// Protection of the node: at most max_connections at once (beyond that, new connections are
// closed at once); a request must arrive and its response leave within request_timeout, or the
// connection is closed; heads are limited as admin/http.h says; keep-alive and pipelining work,
// one request at a time, up to max_requests_per_connection. After an error response the
// connection is closed (after draining what the client still sends, so that it reads the
// answer rather than a reset).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "admin/http.h"
#include "loop/loop.h"
#include "net/acceptor.h"
#include "net/address.h"
#include "util/fd.h"
#include "util/intrusive_list.h"
#include "util/rate_limit.h"
#include "util/result.h"

namespace spindle::admin {

struct AdminOptions {
  size_t max_connections = 64;
  std::chrono::milliseconds request_timeout{5000};
  size_t max_requests_per_connection = 1000;
};

struct AdminStats {
  uint64_t accepted = 0;
  uint64_t refused = 0;    // closed at once: max_connections were open and busy
  uint64_t evicted = 0;    // idle connections closed to make room for a new one
  uint64_t timed_out = 0;  // closed at the deadline
  uint64_t responses = 0;
  uint64_t errors = 0;  // 4xx and 5xx responses, 404 included
};

using Handler = std::function<HttpResponse(const HttpRequest&)>;

class AdminConnection;

class AdminServer {
 public:
  // Binds and listens (port 0 picks a free one: see address()); start() begins accepting.
  static Result<std::unique_ptr<AdminServer>> create(loop::Loop& loop,
                                                     const net::SocketAddress& listen,
                                                     AdminOptions options = {});
  // Serves on a listener bound elsewhere (the privileged part binds the proxy's).
  static Result<std::unique_ptr<AdminServer>> serve(loop::Loop& loop, Fd listener,
                                                    AdminOptions options = {});
  // Safe at any time: what is still in flight finishes on the loop and frees itself (or is
  // dropped with the loop).
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // An exact path match ("/metrics"); the query string is not part of it. A HEAD request runs
  // the GET handler and sends no body. Unknown paths get a 404.
  void handle(std::string path, Handler handler);

  void start();
  // Stops accepting and closes every connection, whatever it is doing.
  void stop();
  // Nothing of the server is in flight on the loop any more.
  bool idle() const;

  const net::SocketAddress& address() const { return address_; }
  size_t openConnections() const { return open_; }
  const AdminStats& stats() const { return stats_; }

 private:
  friend class AdminConnection;
  class Sweeper;

  AdminServer(loop::Loop& loop, net::SocketAddress address, AdminOptions options);
  static Result<std::unique_ptr<AdminServer>> serve(loop::Loop& loop, Fd listener,
                                                    net::SocketAddress address,
                                                    AdminOptions options);
  void onAccepted(Fd fd);
  void sweep();
  void armSweeper();
  // A closed connection is freed: it leaves the list.
  void unlink(AdminConnection* connection);
  HttpResponse dispatch(const HttpRequest& request);

  loop::Loop& loop_;
  net::SocketAddress address_;
  AdminOptions options_;
  std::map<std::string, Handler, std::less<>> handlers_;
  // Owned by themselves once in flight: each may outlive the server by one completion.
  net::Acceptor* acceptor_ = nullptr;
  Sweeper* sweeper_ = nullptr;
  // Every connection not yet freed, closing ones included.
  IntrusiveList<AdminConnection> connections_;
  size_t open_ = 0;  // connections in the list that are not closing
  bool stopped_ = false;
  AdminStats stats_;
  RateLimit bad_request_log_{std::chrono::seconds(10)};
  RateLimit refused_log_{std::chrono::seconds(10)};
};

}  // namespace spindle::admin
