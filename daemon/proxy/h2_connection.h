// The socket side of an HTTP/2 connection, shared by downstream and upstream: receives into
// the worker's buffer pool and feeds the session, sends what the session produces with at most
// one send in flight and a bounded outbound buffer, and closes once nothing is in flight.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "h2/session.h"
#include "loop/buffer_pool.h"
#include "loop/loop.h"
#include "net/address.h"
#include "net/fd.h"
#include "proxy/connection.h"

namespace spindle::proxy {

class WorkerContext;

class H2Connection : public Connection, protected loop::BufferWaiter {
 public:
  // What the session may queue for the socket before the connection stops producing more.
  static constexpr size_t kOutboundLimit = 256 * 1024;

  // Produces and sends what the session has (after a batch of completions).
  void flush();
  bool closing() const { return closing_; }
  void abort() override { close("shutting down"); }

 protected:
  H2Connection(WorkerContext& worker, net::Fd fd, net::SocketAddress peer);
  ~H2Connection() override = default;

  // Starts receiving; `session_` must exist.
  void startReading();
  // Asks the worker to flush this connection after the current batch.
  void markDirty();
  // Operations of a subclass (a connect) that must end before the connection is freed.
  void opStarted() { ++pending_ops_; }
  void opFinished() {
    --pending_ops_;
    opDone();
  }
  void close(const char* why);

  // The connection is closing: detach every stream (called once, before the last op ends).
  virtual void onClosing() = 0;
  // Nothing is in flight: the owner unlinks and frees the connection.
  virtual void onClosed() = 0;

  WorkerContext& worker_;
  bool connected_ = true;  // an upstream sends nothing until its connect completed
  net::Fd fd_;
  net::SocketAddress peer_;
  std::unique_ptr<h2::Session> session_;

 private:
  void receive();
  void onReceived(int32_t res, uint32_t flags);
  void onSent(int32_t res, uint32_t flags);
  void onBufferAvailable() override;
  void opDone();

  loop::MemberCompletion<H2Connection, &H2Connection::onReceived> recv_op_{*this};
  loop::MemberCompletion<H2Connection, &H2Connection::onSent> send_op_{*this};
  std::string outbound_;  // being filled from the session
  std::string in_flight_;  // being sent: not touched until the send completes
  size_t in_flight_sent_ = 0;
  bool receiving_ = false;
  bool sending_ = false;
  bool waiting_for_buffer_ = false;
  bool closing_ = false;
  bool dirty_ = false;
  bool closed_notified_ = false;
  int pending_ops_ = 0;

  friend class WorkerContext;
};

}  // namespace spindle::proxy
