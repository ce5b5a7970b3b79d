// A gRPC-ish endpoint for the proxy to call: an HTTP/2 server on 127.0.0.1 that the test
// controls. By default it answers each call, once its request has ended, with one message
// naming itself and the connection ("a#1": backend a, its first connection) and grpc-status
// 0. A test can make it hold answers, refuse streams, send GOAWAY, reset calls it processed,
// send large bodies, stop reading, close, and read back what it saw.
//
// It is polled by the harness like every peer: no thread, and nothing runs once the test is
// done with it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "h2_socket.h"
#include "harness.h"
#include "net/address.h"
#include "util/fd.h"

namespace spindle::component {

class Backend final : public Peer {
 public:
  // What the backend does with a call once its request headers arrived.
  enum class Reaction {
    kAnswer,          // answer it (now, or later when holding)
    kRefuse,          // RST_STREAM REFUSED_STREAM: not processed, safe to retry
    kGoaway,          // GOAWAY whose last-stream-id leaves the call out: not processed either
    kResetProcessed,  // read the whole request, then RST_STREAM INTERNAL_ERROR: processed
    // As a grpc-core server that begins to shut down: GOAWAY (last-stream-id 2^31-1), then
    // the call answered CANCELLED, trailers-only, never handed to a handler.
    kCancelWhileDraining,
    kAnswerCancelled,  // CANCELLED, trailers-only, no GOAWAY: the handler's own answer
  };

  // What one accepted connection saw.
  struct ConnectionLog {
    int calls = 0;        // streams the proxy opened
    int goaways = 0;      // GOAWAYs the proxy sent
    bool closed = false;  // the connection is gone
  };

  Backend(ProxyHarness& harness, std::string name);
  ~Backend();

  const net::SocketAddress& address() const { return address_; }
  const std::string& name() const { return name_; }

  void setReaction(Reaction reaction) { reaction_ = reaction; }
  // Calls that end from now on wait for releaseHeld() (or their deadline, when honoured).
  void hold(bool holding) { holding_ = holding; }
  void releaseHeld();
  // Answers with a message of `bytes` patterned bytes instead of the backend's name.
  void setReplyBytes(size_t bytes) { reply_bytes_ = bytes; }
  // As a gRPC server does: a held call whose grpc-timeout passes is answered
  // DEADLINE_EXCEEDED (grpc-status 4).
  void honourDeadlines(bool honour) { honour_deadlines_ = honour; }
  // Stops reading every connection, present and future (flow control then holds the proxy).
  void setReading(bool reading);
  // Closes every connection at once, calls in flight or not (the Pod died).
  void closeConnections();

  void poll() override;

  // --- what it saw ---
  int calls() const;  // streams opened, on every connection
  int answered() const { return answered_; }
  int held() const;
  int refused() const { return refused_; }
  const std::vector<uint32_t>& resetsReceived() const { return resets_received_; }
  const std::vector<ConnectionLog>& connections() const { return logs_; }
  // DATA bytes of responses the session has framed for sending (flow control allowing).
  size_t responseBytesSent() const { return response_bytes_sent_; }
  // The request body and headers of the last call whose request ended.
  const std::string& lastRequestBody() const { return last_request_body_; }
  std::string lastRequestHeader(std::string_view name) const;

 private:
  class Connection;
  struct Stream;
  friend class Connection;

  void accept();
  void onRequestEnd(Connection& connection, int32_t stream_id);
  void answer(Connection& connection, int32_t stream_id, Stream& stream, bool deadline_exceeded);

  ProxyHarness& harness_;
  std::string name_;
  Fd listener_;
  net::SocketAddress address_;
  std::vector<std::unique_ptr<Connection>> connections_;
  std::vector<ConnectionLog> logs_;  // by accepted connection, first one at 0
  Reaction reaction_ = Reaction::kAnswer;
  bool holding_ = false;
  bool honour_deadlines_ = false;
  bool reading_ = true;
  size_t reply_bytes_ = 0;
  int answered_ = 0;
  int refused_ = 0;
  std::vector<uint32_t> resets_received_;
  size_t response_bytes_sent_ = 0;
  std::string last_request_body_;
  Fields last_request_headers_;
};

}  // namespace spindle::component
