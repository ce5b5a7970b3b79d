// One HTTP/2 connection from a worker to an endpoint, carrying many calls. Opened on demand,
// with a connect timeout; calls that arrive while it connects are queued in the session. A
// GOAWAY from the endpoint stops new calls here; streams above its last-stream-id come back
// to their calls as refused, which send them elsewhere.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "h2/session.h"
#include "lb/endpoints.h"
#include "proxy/h2_connection.h"
#include "proxy/stream_map.h"
#include "proxy/upstream_sockets.h"

namespace spindle::proxy {

class Call;

class Upstream final : public H2Connection, private h2::Listener {
 public:
  static constexpr int64_t kConnectTimeoutNanos = 1'000'000'000;

  // caller: the Pod whose calls it carries (with upstream.source: pod, it connects from there);
  // source: its label when the connection is that Pod's alone, else empty (for the log).
  Upstream(WorkerParts& worker, const lb::Endpoint& endpoint, const Caller& caller,
           std::string source);

  void connect();
  // Takes a call: submits its request (sent once connected).
  void attach(Call& call);
  // The call is done with this connection (its stream closed, or the call went away).
  void detach(Call& call, int32_t stream_id);
  // Resets the call's stream (the app cancelled).
  void cancel(int32_t stream_id, uint32_t error_code);

  // The endpoint left the service: no new calls; close once the last call finished.
  void drain();
  // Room for another call: not draining, and under the peer's stream limit.
  bool hasRoom() const;
  // The endpoint sent GOAWAY: it is shutting down.
  bool endpointDraining() const { return endpoint_goaway_; }
  const lb::EndpointLoad* loadKey() const { return endpoint_.load.get(); }
  const Caller& caller() const { return caller_; }

 private:
  std::string_view sourceLabel() const override { return source_; }
  void onConnectDone(int32_t res, uint32_t flags);
  void onConnected(int32_t res);
  // The connect's linked timeout: its completion only settles the count of pending ops.
  void onConnectTimeout(int32_t res, uint32_t flags);
  void endAll(bool connect_failed);
  // Its calls belong to downstream connections, which the drain waits for.
  bool holdsDrain() const override { return false; }
  void onClosing() override;
  void onClosed() override;
  bool hasStreams() const override { return !streams_.empty(); }

  // h2::Listener
  bool onStreamBegin(int32_t stream_id) override;
  void onHeaders(int32_t stream_id, h2::HeadersKind kind, h2::HeaderBlock&& headers,
                 bool end_stream) override;
  void onData(int32_t stream_id, const uint8_t* data, size_t length) override;
  void onEndOfData(int32_t stream_id) override;
  void onStreamClose(int32_t stream_id, uint32_t error_code) override;
  void onGoaway(int32_t last_stream_id, uint32_t error_code) override;
  void onRemoteSettings() override {}
  size_t readBody(int32_t stream_id, uint8_t* buffer, size_t length, bool* end,
                  bool* trailers_follow) override;

  Call* callOf(int32_t stream_id) const;

  lb::Endpoint endpoint_;
  Caller caller_;
  std::string source_;
  loop::MemberCompletion<Upstream, &Upstream::onConnectDone> connect_op_{*this};
  loop::MemberCompletion<Upstream, &Upstream::onConnectTimeout> connect_timeout_op_{*this};
  __kernel_timespec connect_deadline_{};
  bool draining_ = false;
  bool endpoint_goaway_ = false;
  // Requests are submitted to the session at once, also while connecting: the session holds
  // them until the socket is up.
  StreamMap<Call*> streams_;
};

}  // namespace spindle::proxy
