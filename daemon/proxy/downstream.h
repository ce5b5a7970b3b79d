// A connection from a Pod that speaks HTTP/2: spindle is its server. Every stream becomes a
// Call that is balanced on its own.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "h2/session.h"
#include "proxy/call.h"
#include "proxy/h2_connection.h"
#include "proxy/stream_map.h"
#include "proxy/upstream_sockets.h"

namespace spindle::proxy {

class H2Downstream final : public H2Connection, private h2::Listener {
 public:
  // `received`: the bytes already read while detecting the protocol (the client preface).
  // caller: the calling Pod as the kernel saw it; source: its label, for the metrics.
  H2Downstream(WorkerParts& worker, Fd fd, net::SocketAddress peer, size_t service_index,
               const Caller& caller, std::shared_ptr<const std::string> source);
  ~H2Downstream() override;
  Status start(const std::string& received);

  // --- for its calls ---
  const std::string& source() const { return *source_; }
  const Caller& caller() const { return caller_; }
  void submitResponse(int32_t stream_id, const h2::HeaderBlock& headers, bool has_body);
  void submitTrailers(int32_t stream_id, const h2::HeaderBlock& trailers);
  void resetStream(int32_t stream_id, uint32_t error_code);
  // Ends the call with a gRPC error as a trailers-only response.
  void failCall(int32_t stream_id, std::string_view grpc_status, const std::string& message);

  void stopGracefully(DrainStep step) override;

 private:
  std::string_view sourceLabel() const override { return *source_; }
  void onClosing() override;
  void onClosed() override;
  bool hasStreams() const override { return !calls_.empty(); }
  // limits.send_timeout per call: a call whose response waits untaken that long is reset.
  void checkStreamDeadlines(std::chrono::steady_clock::time_point now) override;

  // h2::Listener
  bool onStreamBegin(int32_t stream_id) override;
  void onHeaders(int32_t stream_id, h2::HeadersKind kind, h2::HeaderBlock&& headers,
                 bool end_stream) override;
  void onData(int32_t stream_id, const uint8_t* data, size_t length) override;
  void onEndOfData(int32_t stream_id) override;
  void onStreamClose(int32_t stream_id, uint32_t error_code) override;
  void onGoaway(int32_t /*last_stream_id*/, uint32_t /*error_code*/) override {}
  void onPingAck() override;
  void onRemoteSettings() override {}
  size_t readBody(int32_t stream_id, uint8_t* buffer, size_t length, bool* end,
                  bool* trailers_follow) override;

  Call* callOf(int32_t stream_id) const;

  // Ordered for size: every open connection holds these.
  uint32_t service_index_;
  DrainStep drain_ = DrainStep::kNone;
  std::shared_ptr<const std::string> source_;  // shared by the Pod's connections
  Caller caller_;
  StreamMap<std::unique_ptr<Call>> calls_;
};

}  // namespace spindle::proxy
