#include "proxy/call.h"

#include <fmt/core.h>
#include <nghttp2/nghttp2.h>

#include "lb/health.h"
#include "proxy/downstream.h"
#include "proxy/grpc_timeout.h"
#include "proxy/upstream.h"
#include "proxy/worker_parts.h"
#include "util/event_clock.h"
#include "util/log.h"

namespace spindle::proxy {

Call::Call(WorkerParts& worker, H2Downstream& downstream, int32_t stream_id, size_t service_index)
    : worker_(worker),
      downstream_(&downstream),
      caller_(downstream.caller()),
      downstream_stream_(stream_id),
      service_index_(service_index) {
  request_body_.retain(kReplayLimit);
}

Call::~Call() { detachUpstream(); }

void Call::onRequestHeaders(h2::HeaderBlock&& headers, bool end_stream) {
  request_headers_ = std::move(headers);
  request_ended_ = end_stream;
  const auto now = EventClock::now();
  started_ = now;
  worker_.services.retryBudget(service_index_).onCall(now);
  if (auto timeout = parseGrpcTimeout(request_headers_.find("grpc-timeout"))) {
    deadline_ = now + std::chrono::duration_cast<lb::Clock::duration>(std::min(
                          *timeout, std::chrono::nanoseconds(std::chrono::hours(24 * 365))));
  }
  dispatch();
}

const lb::Endpoint* Call::currentEndpoint() const {
  if (endpoint_index_ == 0 || !endpoints_) return nullptr;
  return &(*endpoints_)[endpoint_index_ - 1];
}

void Call::reportHealth(bool failed) {
  if (health_reported_) return;
  health_reported_ = true;
  const lb::Endpoint* endpoint = currentEndpoint();
  if (endpoint == nullptr) return;
  if (failed) {
    const auto outcome = lb::onFailure(*endpoint->load, *endpoints_, EventClock::now(),
                                       worker_.services.at(service_index_).policy.outlier);
    if (outcome == lb::FailureOutcome::kEjected) {
      worker_.metrics.ejected(worker_.services.name(service_index_));
    }
  } else {
    lb::onSuccess(*endpoint->load);
  }
}

void Call::onRequestData(const uint8_t* data, size_t length) {
  request_body_.append(data, length);
  // In the call's buffer, within the stream's window: the connection's goes back now, so a
  // call to an endpoint that reads slowly holds none of what the app's other calls need.
  if (downstream_ != nullptr) downstream_->consumeConnection(length);
  if (upstream_ != nullptr) upstream_->resume(upstream_stream_);
}

void Call::onRequestEnd() {
  request_ended_ = true;
  if (upstream_ != nullptr) upstream_->resume(upstream_stream_);
}

bool Call::canRetry() const {
  if (response_started_ || !request_body_.replayable() || downstream_ == nullptr) return false;
  if (attempts_ >= worker_.services.at(service_index_).policy.retries.max) return false;
  const auto now = EventClock::now();
  if (deadline_ && *deadline_ - now < kMinTimeForRetry) return false;
  // Last: a retry that passes the budget is counted in it.
  return worker_.services.retryBudget(service_index_).tryRetry(now, started_);
}

void Call::dispatch() {
  if (downstream_ == nullptr) return;
  const auto now = EventClock::now();
  if (deadline_) {
    // The endpoint gets the time that is left, not the time the app gave; a call already
    // past its deadline is not sent at all. Left by the clock itself, not the event's time:
    // what the worker spent since the request arrived counts against the call too.
    auto left = formatGrpcTimeout(*deadline_ - lb::Clock::now());
    if (!left) {
      failWithStatus("4", "deadline exceeded before the call was sent");  // DEADLINE_EXCEEDED
      return;
    }
    request_headers_.set("grpc-timeout", *left);
  }
  ++attempts_;
  // Each attempt balances over the current snapshot; the endpoints tried are indices of the
  // snapshot they were tried in, so a new snapshot starts a new list.
  const lb::EndpointSetPtr& current = worker_.services.at(service_index_).endpoints;
  if (current != endpoints_) {
    endpoints_ = current;
    tried_ = lb::Exclusions();
  }
  const lb::Exclusions* exclude = &tried_;
  lb::Exclusions with_unreachable;
  if (worker_.upstreams.anyUnreachable()) {
    with_unreachable = tried_;
    worker_.upstreams.excludeUnreachable(*endpoints_, caller_, now, with_unreachable);
    exclude = &with_unreachable;
  }
  lb::Picker& picker = worker_.services.picker(service_index_);
  const uint64_t panics = picker.panics();
  auto index = picker.pick(*endpoints_, *exclude, now);
  if (picker.panics() != panics) worker_.metrics.panicked(worker_.services.name(service_index_));
  if (!index) {
    failUnavailable(tried_.size() == 0 ? "no endpoint" : "no endpoint could take the call");
    return;
  }
  endpoint_index_ = *index + 1;
  tried_.add(*index);
  attempt_started_ = now;
  health_reported_ = false;
  const std::string_view source =
      downstream_ != nullptr ? std::string_view(downstream_->source()) : std::string_view();
  Upstream* upstream = worker_.upstreams.upstreamFor((*endpoints_)[*index], caller_, source);
  if (upstream == nullptr) {
    worker_.metrics.upstreamLimitReached();
    failUnavailable("upstream.max_connections reached");
    return;
  }
  upstream->attach(*this);
}

void Call::onUpstreamAttached(Upstream& upstream, int32_t stream_id) {
  upstream_ = &upstream;
  upstream_stream_ = stream_id;
  request_read_ = 0;
}

void Call::detachUpstream() {
  if (upstream_ == nullptr) return;
  // The stream's window is not given back: the stream is done with (closed, or reset now).
  Upstream* upstream = upstream_;
  upstream_ = nullptr;
  upstream->detach(*this, upstream_stream_);
  upstream_stream_ = -1;
}

size_t Call::readRequestBody(uint8_t* buffer, size_t length, bool* end) {
  const size_t n = request_body_.read(buffer, length);
  request_read_ += n;
  // The bytes are with the upstream session now: give the app its stream window back, once
  // per byte even when a retry reads them again (the connection's went back on arrival).
  if (request_read_ > request_consumed_) {
    if (downstream_ != nullptr) {
      downstream_->consumeStream(downstream_stream_, request_read_ - request_consumed_);
    }
    request_consumed_ = request_read_;
  }
  request_body_.enforceRetainLimit();
  *end = request_ended_ && request_body_.readable() == 0;
  return n;
}

void Call::onResponseHeaders(h2::HeaderBlock&& headers, bool end_stream) {
  if (end_stream && upstream_ != nullptr && upstream_->endpointDraining() &&
      headers.find("grpc-status") == "1" && canRetry()) {
    // A gRPC server of grpc-core (C++, Python, Ruby, PHP) that begins to shut down sends
    // GOAWAY, then answers CANCELLED, trailers-only, every call it had not yet handed to a
    // handler: never processed, so sent elsewhere like a refused stream. The calls its
    // handlers had finish, or are cut when its grace ends with UNAVAILABLE, not CANCELLED.
    worker_.metrics.retried(worker_.services.name(service_index_), "endpoint_draining");
    upstream_->cancel(upstream_stream_, NGHTTP2_CANCEL);
    detachUpstream();
    request_body_.rewind();
    dispatch();
    return;
  }
  const auto now = EventClock::now();
  if (const lb::Endpoint* endpoint = currentEndpoint()) {
    // The endpoint answered the call (tries that never got an answer do not count).
    endpoint->load->total_calls.fetch_add(1, std::memory_order_relaxed);
    // Latency to the response headers: what peak_ewma balances on. Streaming calls end when
    // their peers want; their start is what says how busy the endpoint is. A trailers-only
    // answer is an error, usually a fast one: timing it would make a failing endpoint look
    // like the fastest and draw calls to it.
    if (!end_stream) {
      lb::recordLatency(*endpoint->load, static_cast<uint64_t>((now - attempt_started_).count()),
                        now, worker_.services.at(service_index_).policy.picker.decay);
    }
  }
  // A trailers-only response carries the status: UNAVAILABLE from the endpoint is a failure.
  if (end_stream) {
    reportHealth(headers.find("grpc-status") == "14");
    noteStatus(headers.find("grpc-status"));
  }
  response_started_ = true;
  request_body_.stopRetaining();
  if (end_stream) response_ended_ = true;
  if (downstream_ != nullptr) {
    downstream_->submitResponse(downstream_stream_, headers, /*has_body=*/!end_stream);
  }
}

void Call::onResponseData(const uint8_t* data, size_t length) {
  if (downstream_ == nullptr) {
    // Nobody to pass it to: drop it and give the window back at once.
    if (upstream_ != nullptr) upstream_->consume(upstream_stream_, length);
    return;
  }
  // The call holds the bytes now, within its stream's window (its own): the connection's
  // window goes back at once. An app that never takes them stalls this stream only, never
  // the connection other calls share (with upstream.source node, other Pods' calls).
  if (response_body_.readable() == 0) response_progress_ = EventClock::now();
  response_body_.append(data, length);
  upstream_->consumeConnection(length);
  downstream_->resume(downstream_stream_);
}

void Call::onResponseTrailers(h2::HeaderBlock&& trailers) {
  reportHealth(trailers.find("grpc-status") == "14");
  noteStatus(trailers.find("grpc-status"));
  response_trailers_ = std::move(trailers);
  response_has_trailers_ = true;
  response_ended_ = true;
  if (downstream_ != nullptr) downstream_->resume(downstream_stream_);
}

void Call::onResponseEnd() {
  response_ended_ = true;
  if (downstream_ != nullptr) downstream_->resume(downstream_stream_);
}

size_t Call::readResponseBody(uint8_t* buffer, size_t length, bool* end, bool* trailers_follow) {
  const size_t n = response_body_.read(buffer, length);
  if (n > 0) {
    response_progress_ = EventClock::now();
    if (upstream_ != nullptr) upstream_->consumeStream(upstream_stream_, n);
  }
  if (response_ended_ && response_body_.readable() == 0) {
    *end = true;
    if (response_has_trailers_ && downstream_ != nullptr) {
      *trailers_follow = true;
      downstream_->submitTrailers(downstream_stream_, response_trailers_);
    }
  }
  return n;
}

void Call::onUpstreamEnded(UpstreamEnd how, uint32_t error_code) {
  // The stream is closed; what it sent gave its connection window back on arrival.
  upstream_ = nullptr;
  upstream_stream_ = -1;
  if (downstream_ == nullptr || response_ended_) return;

  // Sent again only when the endpoint never processed the call: the connection never came
  // up, or the stream was refused (REFUSED_STREAM, or above a GOAWAY's last-stream-id).
  const bool unprocessed = how == UpstreamEnd::kConnectFailed ||
                           (how == UpstreamEnd::kClosed && error_code == NGHTTP2_REFUSED_STREAM);
  // Connect failures, refused streams and lost connections count against the endpoint; a
  // stream it reset for other reasons (it processed the call) does not.
  // A connect from the caller's own namespace that failed may be the caller's egress policy:
  // it is kept from that caller (UpstreamPool::noteConnectFailed), not from everyone.
  const bool callers_own_connect =
      how == UpstreamEnd::kConnectFailed && worker_.sockets.perCaller();
  if ((unprocessed && !callers_own_connect) || how == UpstreamEnd::kConnectionLost) {
    reportHealth(/*failed=*/true);
  }
  if (unprocessed && canRetry()) {
    worker_.metrics.retried(worker_.services.name(service_index_),
                            how == UpstreamEnd::kConnectFailed ? "connect_failed" : "refused");
    request_body_.rewind();
    dispatch();
    return;
  }
  if (how == UpstreamEnd::kNoSocket) {
    // Not sent from elsewhere (the node, another endpoint): that would bypass the calling
    // Pod's own network policy, and blame an endpoint that did nothing.
    failUnavailable("no socket could be made for the calling Pod");
    return;
  }
  if (!response_started_) {
    failUnavailable(how == UpstreamEnd::kClosed ? fmt::format("upstream reset the call ({})",
                                                              nghttp2_http2_strerror(error_code))
                    : how == UpstreamEnd::kConnectFailed ? "could not connect to an endpoint"
                                                         : "upstream connection lost");
    return;
  }
  if (how != UpstreamEnd::kClosed) {
    // The connection died mid-response. A direct client would see UNAVAILABLE ("socket
    // closed"), which retry policies know to handle; end the response the same way.
    response_trailers_.clear();
    response_trailers_.add("grpc-status", "14");
    grpc_status_ = 14;
    response_trailers_.add("grpc-message",
                           fmt::format("spindle: service {}: upstream connection lost",
                                       worker_.services.name(service_index_)));
    response_has_trailers_ = true;
    response_ended_ = true;
    downstream_->resume(downstream_stream_);
    return;
  }
  // The endpoint reset the stream: the app sees the reset with the endpoint's meaning.
  const uint32_t code = how == UpstreamEnd::kClosed && error_code != NGHTTP2_NO_ERROR
                            ? error_code
                            : static_cast<uint32_t>(NGHTTP2_INTERNAL_ERROR);
  downstream_->resetStream(downstream_stream_, code);
}

void Call::noteStatus(std::string_view grpc_status) {
  int status = 0;
  for (char c : grpc_status) {
    if (c < '0' || c > '9' || status > 99) return;
    status = status * 10 + (c - '0');
  }
  if (!grpc_status.empty()) grpc_status_ = status;
}

void Call::onDownstreamClosed(uint32_t error_code) {
  const lb::Endpoint* endpoint = currentEndpoint();
  worker_.metrics.callEnded(worker_.services.name(service_index_),
                            endpoint ? std::string_view(endpoint->load->label) : "none",
                            grpc_status_ >= 0 ? grpcStatusLabel(grpc_status_)
                                              : (error_code == NGHTTP2_NO_ERROR ? "none" : "reset"),
                            downstream_ != nullptr ? std::string_view(downstream_->source())
                                                   : "unknown",
                            std::chrono::duration<double>(EventClock::now() - started_).count());
  downstream_ = nullptr;
  if (upstream_ != nullptr && !response_ended_) {
    // The app cancelled (or its connection went): cancel upstream too.
    upstream_->cancel(upstream_stream_, error_code == NGHTTP2_NO_ERROR
                                            ? static_cast<uint32_t>(NGHTTP2_CANCEL)
                                            : error_code);
  }
  detachUpstream();
}

void Call::resetStalled() {
  // The app grants no window, or reads nothing: the endpoint stops producing for it, the app
  // learns the call is gone, and the buffer and upstream stream are freed now rather than
  // held for as long as the app keeps its connection.
  if (upstream_ != nullptr) upstream_->cancel(upstream_stream_, NGHTTP2_CANCEL);
  detachUpstream();
  response_body_.release();
  response_has_trailers_ = false;
  response_ended_ = false;  // nothing more is sent on the stream: its reset is
  grpc_status_ = -1;        // the app got a reset, whatever the endpoint answered
  if (downstream_ != nullptr) downstream_->resetStream(downstream_stream_, NGHTTP2_CANCEL);
}

void Call::failUnavailable(std::string_view why) { failWithStatus("14", why); }

void Call::failWithStatus(std::string_view status, std::string_view why) {
  if (downstream_ == nullptr) return;
  noteStatus(status);
  downstream_->failCall(downstream_stream_, status,
                        fmt::format("spindle: service {}: {}",
                                    worker_.services.name(service_index_), why));
}

}  // namespace spindle::proxy
