// The socket side of an HTTP/2 connection, shared by downstream and upstream: receives into
// the worker's buffer pool and feeds the session, sends what the session produces with at most
// one send in flight and a bounded outbound buffer, and closes once nothing is in flight.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "h2/session.h"
#include "loop/buffer_pool.h"
#include "loop/loop.h"
#include "net/address.h"
#include "proxy/connection.h"
#include "util/event_clock.h"
#include "util/fd.h"

namespace spindle::proxy {

struct WorkerParts;

class H2Connection : public Connection, protected loop::BufferWaiter {
 public:
  // What the session may queue for the socket before the connection stops producing more.
  static constexpr size_t kOutboundLimit = 256 * 1024;
  // How long a closing connection waits for its peer to read the GOAWAY and close.
  static constexpr auto kLinger = std::chrono::seconds(1);

  // Produces and sends what the session has (after a batch of completions).
  void flush();
  // A stream's data provider has more to send (after it deferred).
  void resume(int32_t stream_id);
  // The other side took `length` bytes of what the stream received: its window reopens.
  void consume(int32_t stream_id, size_t length);
  // One window at a time (see Call): the connection's as soon as a call has the bytes in its
  // own buffer, the stream's once the other side took them.
  void consumeConnection(size_t length);
  void consumeStream(int32_t stream_id, size_t length);
  bool closing() const { return closing_; }
  void abort() override {
    linger_ok_ = false;  // the process is exiting: no time to wait for the peer
    close("shutting down");
  }

 protected:
  H2Connection(WorkerParts& worker, Fd fd, net::SocketAddress peer);
  ~H2Connection() override;

  // Starts receiving; `session_` must exist.
  void startReading();
  // Asks the worker to flush this connection after the current batch.
  void markDirty();
  // The connection has streams: it is not idle.
  void noteActivity() { last_busy_ = EventClock::now(); }
  virtual bool hasStreams() const = 0;
  // Deadlines of single streams, checked on the same tick as the connection's.
  virtual void checkStreamDeadlines(std::chrono::steady_clock::time_point /*now*/) {}

  // Operations of a subclass (a connect) that must end before the connection is freed.
  void opStarted() { ++pending_ops_; }
  void opFinished() {
    --pending_ops_;
    opDone();
  }
  // abandon_send: a send in flight is cut off too (the peer does not read it).
  void close(const char* why, bool abandon_send = false);

  // The calling Pod's label, where the connection is one Pod's (for the log); else empty.
  virtual std::string_view sourceLabel() const { return {}; }
  // The connection is closing: detach every stream (called once, before the last op ends).
  virtual void onClosing() = 0;
  // Nothing is in flight: the owner unlinks and frees the connection.
  virtual void onClosed() = 0;

  WorkerParts& worker_;
  bool connected_ = true;       // an upstream sends nothing until its connect completed
  bool upstream_side_ = false;  // for the metrics
  Fd fd_;
  net::SocketAddress peer_;
  std::unique_ptr<h2::Session> session_;

 private:
  void receive();
  void onReceived(int32_t res, uint32_t flags);
  void onSent(int32_t res, uint32_t flags);
  void onBufferAvailable() override;
  void opDone();
  // Reads and drops what the peer sent and nobody will read: closing a socket with unread
  // bytes resets it, and the reset can overtake our GOAWAY.
  void dropUnread();
  void shutdownSocket();
  // A lingering close: FIN after what we sent (the GOAWAY), then read and drop what the peer
  // still sends, until it closes or for at most kLinger. Closing with unread bytes would
  // reset the connection, and the reset can destroy the GOAWAY before the peer reads it.
  void linger();
  void lingerRead();
  void onLingerRead(int32_t res, uint32_t flags);
  void onLingerEnd(int32_t res, uint32_t flags);
  // The deadlines of the worker's limits, checked on a periodic tick while the connection is open.
  void armTick();
  void onTick(int32_t res, uint32_t flags);
  void checkDeadlines();

  loop::MemberCompletion<H2Connection, &H2Connection::onReceived> recv_op_{*this};
  loop::MemberCompletion<H2Connection, &H2Connection::onSent> send_op_{*this};
  loop::MemberCompletion<H2Connection, &H2Connection::onTick> tick_op_{*this};
  loop::MemberCompletion<H2Connection, &H2Connection::onLingerRead> linger_op_{*this};
  loop::MemberCompletion<H2Connection, &H2Connection::onLingerEnd> linger_timeout_op_{*this};
  __kernel_timespec linger_ts_{};
  std::chrono::steady_clock::time_point linger_until_{};
  std::chrono::steady_clock::time_point last_busy_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point send_progress_{};  // last byte sent, or send start
  std::string outbound_;                                   // being filled from the session
  std::string in_flight_;  // being sent: not touched until the send completes
  // Fields are ordered for size: every open connection holds them.
  uint32_t in_flight_sent_ = 0;  // at most kOutboundLimit and one session frame
  uint32_t lingered_ = 0;
  bool linger_ok_ = true;
  bool receiving_ = false;
  bool sending_ = false;
  bool waiting_for_buffer_ = false;
  bool closing_ = false;
  bool dirty_ = false;
  bool closed_notified_ = false;
  bool ticking_ = false;
  int pending_ops_ = 0;
};

}  // namespace spindle::proxy
