#include "proxy/upstream.h"

#include <cerrno>
#include <cstring>

#include "net/socket.h"
#include "proxy/call.h"
#include "proxy/worker_parts.h"
#include "util/log.h"

namespace spindle::proxy {

Upstream::Upstream(WorkerParts& worker, const lb::Endpoint& endpoint, const Caller& caller,
                   std::string source)
    : H2Connection(worker, Fd(), endpoint.address),
      endpoint_(endpoint),
      caller_(caller),
      source_(std::move(source)) {
  connected_ = false;
  upstream_side_ = true;
}

void Upstream::connect() {
  // Without a socket for the calling Pod, the call fails: another endpoint would need the same.
  auto session = h2::Session::create(h2::Role::kClient,
                                     withLimits(h2::upstreamSettings(), worker_.limits), *this);
  SocketFailure why = SocketFailure::kLocal;
  auto socket = session ? worker_.sockets.open(caller_, endpoint_.address.family(), &why)
                        : Result<Fd>(makeError(session.error()));
  if (!socket) {
    worker_.metrics.socketFailed(why);
    worker_.logUpstreamFailure(
        endpoint_.address, source_, [&] { return "endpoint " + endpoint_.address.toString(); },
        socket.error().c_str());
    worker_.upstreams.forget(this);
    endAll(/*connect_failed=*/true);
    close("no socket");
    return;
  }
  session_ = std::move(*session);
  fd_ = std::move(*socket);
  connect_deadline_.tv_sec = kConnectTimeoutNanos / 1'000'000'000;
  connect_deadline_.tv_nsec = kConnectTimeoutNanos % 1'000'000'000;
  const loop::Deadline deadline{&connect_timeout_op_, &connect_deadline_};
  worker_.loop.connect(&connect_op_, fd_.get(), endpoint_.address.asSockaddr(),
                       endpoint_.address.length(), &deadline);
  opStarted();
  opStarted();
}

void Upstream::onConnectDone(int32_t res, uint32_t /*flags*/) {
  onConnected(res);
  opFinished();
}

void Upstream::onConnectTimeout(int32_t /*res*/, uint32_t /*flags*/) { opFinished(); }

void Upstream::onConnected(int32_t res) {
  if (closing()) return;
  if (res < 0) {
    worker_.logUpstreamFailure(
        endpoint_.address, source_, [&] { return "endpoint " + endpoint_.address.toString(); },
        res == -ECANCELED ? "connect timed out" : std::strerror(-res));
    // Nothing was sent: every call here can go to another endpoint (not this one).
    worker_.upstreams.noteConnectFailed(*this, EventClock::now());
    worker_.upstreams.forget(this);
    endAll(/*connect_failed=*/true);
    close("connect failed");
    return;
  }
  connected_ = true;
  endpoint_.load->upstream_connections.fetch_add(1, std::memory_order_relaxed);
  startReading();
  markDirty();
}

void Upstream::drain() {
  if (draining_) return;
  draining_ = true;
  // Tell the endpoint no more streams come from here; the connection closes when the
  // session has nothing left to do.
  session_->goaway(NGHTTP2_NO_ERROR);
  markDirty();
}

bool Upstream::hasRoom() const {
  if (closing() || draining_) return false;
  return streams_.size() < session_->remoteMaxConcurrentStreams();
}

void Upstream::attach(Call& call) {
  // A connection that got no socket or session (connect()) is closed already.
  if (closing()) {
    call.onUpstreamEnded(UpstreamEnd::kNoSocket, NGHTTP2_INTERNAL_ERROR);
    return;
  }
  const int32_t stream_id = session_->submitRequest(call.requestHeaders(), call.requestHasBody());
  if (stream_id < 0) {
    call.onUpstreamEnded(UpstreamEnd::kConnectFailed, NGHTTP2_REFUSED_STREAM);
    return;
  }
  streams_.insert(stream_id, &call);
  noteActivity();
  endpoint_.load->active_streams.fetch_add(1, std::memory_order_relaxed);
  call.onUpstreamAttached(*this, stream_id);
  markDirty();
}

void Upstream::detach(Call& call, int32_t stream_id) {
  Call* current = streams_.take(stream_id);
  if (current != &call) {
    if (current != nullptr) streams_.insert(stream_id, current);  // another call's: keep it
    return;
  }
  endpoint_.load->active_streams.fetch_sub(1, std::memory_order_relaxed);
  // A draining connection closes once its last stream is gone.
  if (draining_ && streams_.empty()) markDirty();
}

void Upstream::cancel(int32_t stream_id, uint32_t error_code) {
  session_->resetStream(stream_id, error_code);
  markDirty();
}

Call* Upstream::callOf(int32_t stream_id) const {
  Call* const* call = streams_.find(stream_id);
  return call == nullptr ? nullptr : *call;
}

bool Upstream::onStreamBegin(int32_t /*stream_id*/) { return true; }

void Upstream::onHeaders(int32_t stream_id, h2::HeadersKind kind, h2::HeaderBlock&& headers,
                         bool end_stream) {
  Call* call = callOf(stream_id);
  if (call == nullptr) return;
  if (kind == h2::HeadersKind::kResponse) {
    call->onResponseHeaders(std::move(headers), end_stream);
  } else {
    call->onResponseTrailers(std::move(headers));
  }
}

void Upstream::onData(int32_t stream_id, const uint8_t* data, size_t length) {
  Call* call = callOf(stream_id);
  if (call == nullptr) {
    session_->consume(stream_id, length);  // nobody to take it: give the window back
    return;
  }
  call->onResponseData(data, length);
}

void Upstream::onEndOfData(int32_t stream_id) {
  if (Call* call = callOf(stream_id)) call->onResponseEnd();
}

void Upstream::onStreamClose(int32_t stream_id, uint32_t error_code) {
  Call* call = callOf(stream_id);
  if (call == nullptr) return;
  detach(*call, stream_id);
  call->onUpstreamEnded(UpstreamEnd::kClosed, error_code);
}

void Upstream::onGoaway(int32_t /*last_stream_id*/, uint32_t /*error_code*/) {
  // No new calls here. nghttp2 closes the streams above last-stream-id as REFUSED_STREAM,
  // and their calls go elsewhere; the others finish.
  draining_ = true;
  endpoint_goaway_ = true;
  worker_.upstreams.forget(this);
  if (streams_.empty()) markDirty();
}

size_t Upstream::readBody(int32_t stream_id, uint8_t* buffer, size_t length, bool* end,
                          bool* /*trailers_follow*/) {
  Call* call = callOf(stream_id);
  if (call == nullptr) {
    *end = true;
    return 0;
  }
  return call->readRequestBody(buffer, length, end);
}

void Upstream::endAll(bool connect_failed) {
  // Calls detach as they are told; take the list first.
  StreamMap<Call*> streams;
  streams.swap(streams_);
  streams.forEach([&](int32_t, Call* call) {
    endpoint_.load->active_streams.fetch_sub(1, std::memory_order_relaxed);
    call->onUpstreamEnded(connect_failed ? UpstreamEnd::kConnectFailed
                                         : UpstreamEnd::kConnectionLost,
                          NGHTTP2_INTERNAL_ERROR);
  });
}

void Upstream::onClosing() {
  if (connected_) endpoint_.load->upstream_connections.fetch_sub(1, std::memory_order_relaxed);
  worker_.upstreams.forget(this);
  endAll(/*connect_failed=*/!connected_);
}

void Upstream::onClosed() { worker_.connections.remove(this); }

}  // namespace spindle::proxy
