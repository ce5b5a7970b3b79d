#include "proxy/downstream.h"

#include "proxy/worker_parts.h"
#include "util/log.h"

namespace spindle::proxy {

H2Downstream::H2Downstream(WorkerParts& worker, Fd fd, net::SocketAddress peer,
                           size_t service_index, const Caller& caller,
                           std::shared_ptr<const std::string> source)
    : H2Connection(worker, std::move(fd), peer),
      service_index_(static_cast<uint32_t>(service_index)),
      source_(std::move(source)),
      caller_(caller) {
  worker_.metrics.connectionOpened(WorkerMetrics::Protocol::kH2);
}

H2Downstream::~H2Downstream() { worker_.metrics.connectionClosed(WorkerMetrics::Protocol::kH2); }

Status H2Downstream::start(const std::string& received) {
  auto session = h2::Session::create(h2::Role::kServer,
                                     withLimits(h2::downstreamSettings(), worker_.limits), *this);
  if (!session) {
    log::warn({.source = *source_}, "client {}: {}", peer_.toString(), session.error());
    return makeError(session.error());
  }
  session_ = std::move(*session);
  markDirty();  // our SETTINGS go out at once
  Status status =
      session_->receive(reinterpret_cast<const uint8_t*>(received.data()), received.size());
  if (!status) return status;
  startReading();
  // Accepted just before the listeners closed: it drains like the others.
  if (worker_.connections.drainStep() != DrainStep::kNone)
    stopGracefully(worker_.connections.drainStep());
  return {};
}

void H2Downstream::stopGracefully(DrainStep step) {
  if (step == DrainStep::kStopAccepting || closing() || step <= drain_) return;
  if (step == DrainStep::kGoaway) {
    // The client learns it should open its next connection elsewhere, and may still start
    // calls it already sent our way; they are refused only by the final GOAWAY.
    session_->shutdownNotice();
  } else if (step == DrainStep::kFinalGoaway) {
    session_->goaway(NGHTTP2_NO_ERROR);
  }
  drain_ = step;
  markDirty();
}

void H2Downstream::onPingAck() {
  if (drain_ == DrainStep::kGoaway) stopGracefully(DrainStep::kFinalGoaway);
}

Call* H2Downstream::callOf(int32_t stream_id) const {
  const std::unique_ptr<Call>* call = calls_.find(stream_id);
  return call == nullptr ? nullptr : call->get();
}

bool H2Downstream::onStreamBegin(int32_t stream_id) {
  noteActivity();
  calls_.insert(stream_id, std::make_unique<Call>(worker_, *this, stream_id, service_index_));
  return true;
}

void H2Downstream::onHeaders(int32_t stream_id, h2::HeadersKind kind, h2::HeaderBlock&& headers,
                             bool end_stream) {
  Call* call = callOf(stream_id);
  if (call == nullptr) return;
  if (kind == h2::HeadersKind::kRequest) {
    call->onRequestHeaders(std::move(headers), end_stream);
  } else {
    // Request trailers: gRPC has none; HTTP/2 allows them. The body ends here.
    call->onRequestEnd();
  }
}

void H2Downstream::onData(int32_t stream_id, const uint8_t* data, size_t length) {
  Call* call = callOf(stream_id);
  if (call == nullptr) {
    session_->consume(stream_id, length);
    return;
  }
  call->onRequestData(data, length);
}

void H2Downstream::onEndOfData(int32_t stream_id) {
  if (Call* call = callOf(stream_id)) call->onRequestEnd();
}

void H2Downstream::onStreamClose(int32_t stream_id, uint32_t error_code) {
  std::unique_ptr<Call> call = calls_.take(stream_id);
  if (call != nullptr) call->onDownstreamClosed(error_code);
}

size_t H2Downstream::readBody(int32_t stream_id, uint8_t* buffer, size_t length, bool* end,
                              bool* trailers_follow) {
  Call* call = callOf(stream_id);
  if (call == nullptr) {
    *end = true;
    return 0;
  }
  return call->readResponseBody(buffer, length, end, trailers_follow);
}

void H2Downstream::submitResponse(int32_t stream_id, const h2::HeaderBlock& headers,
                                  bool has_body) {
  if (session_->submitResponse(stream_id, headers, has_body) != 0) {
    session_->resetStream(stream_id, NGHTTP2_INTERNAL_ERROR);
  }
  markDirty();
}

void H2Downstream::submitTrailers(int32_t stream_id, const h2::HeaderBlock& trailers) {
  session_->submitTrailers(stream_id, trailers);
  markDirty();
}

void H2Downstream::resetStream(int32_t stream_id, uint32_t error_code) {
  session_->resetStream(stream_id, error_code);
  markDirty();
}

void H2Downstream::failCall(int32_t stream_id, std::string_view grpc_status,
                            const std::string& message) {
  // A trailers-only response: what a gRPC server sends for an error before any message.
  h2::HeaderBlock headers;
  headers.add(":status", "200");
  headers.add("content-type", "application/grpc");
  headers.add("grpc-status", grpc_status);
  headers.add("grpc-message", message);
  submitResponse(stream_id, headers, /*has_body=*/false);
}

void H2Downstream::onClosing() {
  // Every call still here is cut off: cancel its upstream stream.
  StreamMap<std::unique_ptr<Call>> calls;
  calls.swap(calls_);
  calls.forEach(
      [](int32_t, std::unique_ptr<Call>& call) { call->onDownstreamClosed(NGHTTP2_CANCEL); });
}

void H2Downstream::checkStreamDeadlines(std::chrono::steady_clock::time_point now) {
  // An app that keeps its connection busy (or its socket read) but grants one stream no
  // window would hold that call, its buffer and its upstream stream for as long as it likes;
  // the connection's own send timeout never sees it, as nothing is being sent.
  calls_.forEach([&](int32_t, std::unique_ptr<Call>& call) {
    if (call->responseStalled(now, worker_.limits.send_timeout)) {
      worker_.metrics.sendTimedOut();
      call->resetStalled();
    }
  });
}

void H2Downstream::onClosed() { worker_.connections.remove(this); }

}  // namespace spindle::proxy
