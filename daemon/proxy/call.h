// One gRPC call (one HTTP/2 stream) through the proxy: the downstream stream from the Pod
// that called, and the upstream stream on a connection to the endpoint picked for it. It
// moves headers, body and trailers between the two sessions and sends the call to another
// endpoint when the first never processed it.
//
// Flow control, both directions alike: bytes a stream receives go into the call's own
// buffer, and the *connection* window goes back to the sender at once; the *stream* window
// goes back only once the other side has taken the bytes. So what a call holds is bounded by
// the stream window spindle advertises to that sender (1 MiB per response from an endpoint,
// 64 KiB per request from an app: h2::upstreamSettings, h2::downstreamSettings), and a
// reader that is slow, or never grants window, holds its own streams only: never the
// connection window that other calls share (with upstream.source node, other Pods' calls).
// A call whose app takes none of its response for limits.send_timeout is reset both ways.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "h2/headers.h"
#include "lb/endpoints.h"
#include "lb/picker.h"
#include "proxy/byte_queue.h"
#include "proxy/upstream_sockets.h"
#include "util/event_clock.h"

namespace spindle::proxy {

class H2Downstream;
class Upstream;
struct WorkerParts;

// Why an upstream stream ended without a complete response.
enum class UpstreamEnd {
  kClosed,          // the stream closed; see the HTTP/2 error code
  kConnectFailed,   // the connection never came up: nothing was sent
  kConnectionLost,  // the connection failed with the stream open
  kNoSocket,        // no socket could be made for the caller: not the endpoint's doing
};

class Call {
 public:
  // A request body up to this size is kept so the call can be sent again elsewhere.
  static constexpr size_t kReplayLimit = 64 * 1024;
  // A retry needs at least this much of the call's deadline left to be worth sending.
  static constexpr auto kMinTimeForRetry = std::chrono::milliseconds(10);

  Call(WorkerParts& worker, H2Downstream& downstream, int32_t stream_id, size_t service_index);
  ~Call();
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  // --- from the downstream session ---
  void onRequestHeaders(h2::HeaderBlock&& headers, bool end_stream);
  void onRequestData(const uint8_t* data, size_t length);
  void onRequestEnd();
  // The downstream stream closed (finished, or reset by the app): cancel what is upstream.
  void onDownstreamClosed(uint32_t error_code);
  size_t readResponseBody(uint8_t* buffer, size_t length, bool* end, bool* trailers_follow);
  // Response bytes wait for the app, and it has taken none for `timeout`.
  bool responseStalled(EventClock::Clock::time_point now, std::chrono::nanoseconds timeout) const {
    return response_body_.readable() > 0 && now - response_progress_ > timeout;
  }
  // Resets the call with CANCEL both ways and frees what it held (limits.send_timeout).
  void resetStalled();

  // --- from the upstream connection ---
  // The upstream stream was opened for this call.
  void onUpstreamAttached(Upstream& upstream, int32_t stream_id);
  void onResponseHeaders(h2::HeaderBlock&& headers, bool end_stream);
  void onResponseData(const uint8_t* data, size_t length);
  void onResponseTrailers(h2::HeaderBlock&& trailers);
  void onResponseEnd();
  void onUpstreamEnded(UpstreamEnd how, uint32_t error_code);
  size_t readRequestBody(uint8_t* buffer, size_t length, bool* end);
  bool requestHasBody() const { return !request_ended_ || request_body_.readable() > 0; }
  const h2::HeaderBlock& requestHeaders() const { return request_headers_; }

  int32_t downstreamStream() const { return downstream_stream_; }

 private:
  // Picks an endpoint (not one already tried) and hands the call to its upstream pool.
  void dispatch();
  void detachUpstream();
  // Answers the app with a gRPC error when the call cannot be sent anywhere.
  void failUnavailable(std::string_view why);
  void failWithStatus(std::string_view status, std::string_view why);
  // Passive health: what the endpoint of this attempt did with the call, told once.
  void reportHealth(bool failed);
  const lb::Endpoint* currentEndpoint() const;
  bool canRetry() const;
  void noteStatus(std::string_view grpc_status);

  WorkerParts& worker_;
  H2Downstream* downstream_;  // null once the downstream stream closed
  Caller caller_;             // every attempt leaves from the calling Pod
  int32_t downstream_stream_;
  size_t service_index_;
  lb::EndpointSetPtr endpoints_;  // the snapshot of the last attempt
  size_t endpoint_index_ = 0;     // 1 + index in endpoints_, 0 = none
  lb::Exclusions tried_;
  uint32_t attempts_ = 0;
  std::optional<lb::TimePoint> deadline_;  // from grpc-timeout
  lb::TimePoint attempt_started_{};
  lb::TimePoint started_{};
  int grpc_status_ = -1;         // what the app was answered, once known
  bool health_reported_ = true;  // nothing to report before the first attempt

  Upstream* upstream_ = nullptr;
  int32_t upstream_stream_ = -1;

  h2::HeaderBlock request_headers_;
  ByteQueue request_body_;       // at most the downstream stream window unread
  size_t request_read_ = 0;      // bytes read by the current attempt
  size_t request_consumed_ = 0;  // bytes whose stream window went back to the app
  bool request_ended_ = false;

  ByteQueue response_body_;  // at most the upstream stream window
  // When the app last took response bytes, or when bytes began to wait for it.
  EventClock::Clock::time_point response_progress_{};
  h2::HeaderBlock response_trailers_;
  bool response_started_ = false;
  bool response_has_trailers_ = false;
  bool response_ended_ = false;
};

}  // namespace spindle::proxy
