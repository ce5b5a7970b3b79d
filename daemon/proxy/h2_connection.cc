#include "proxy/h2_connection.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "proxy/worker_parts.h"
#include "util/log.h"
#include "util/rate_limit.h"

namespace spindle::proxy {
namespace {
using Clock = std::chrono::steady_clock;
}  // namespace

H2Connection::H2Connection(WorkerParts& worker, Fd fd, net::SocketAddress peer)
    : worker_(worker), fd_(std::move(fd)), peer_(peer) {}

H2Connection::~H2Connection() { dropUnread(); }

void H2Connection::dropUnread() {
  if (!fd_.valid()) return;
  // Bounded: a peer that keeps sending gets its reset after 1 MiB.
  static thread_local char scratch[64 * 1024];
  for (int i = 0; i < 16; ++i) {
    if (::recv(fd_.get(), scratch, sizeof(scratch), MSG_DONTWAIT) <= 0) return;
  }
}

void H2Connection::shutdownSocket() {
  dropUnread();
  ::shutdown(fd_.get(), SHUT_RDWR);
}

void H2Connection::linger() {
  if (!linger_ok_) {
    shutdownSocket();
    return;
  }
  ::shutdown(fd_.get(), SHUT_WR);
  linger_until_ = Clock::now() + kLinger;
  lingerRead();
}

void H2Connection::lingerRead() {
  const auto left =
      std::chrono::duration_cast<std::chrono::nanoseconds>(linger_until_ - Clock::now());
  // Bounded in bytes too: a peer that keeps sending gets its reset.
  if (left.count() <= 0 || lingered_ > 1024 * 1024) {
    shutdownSocket();
    return;
  }
  // What is read is dropped: every lingering connection of the worker shares the buffer.
  static thread_local char scratch[16 * 1024];
  linger_ts_.tv_sec = left.count() / 1'000'000'000;
  linger_ts_.tv_nsec = left.count() % 1'000'000'000;
  const loop::Deadline deadline{&linger_timeout_op_, &linger_ts_};
  worker_.loop.recv(&linger_op_, fd_.get(), scratch, sizeof(scratch), &deadline);
  pending_ops_ += 2;
}

void H2Connection::onLingerRead(int32_t res, uint32_t /*flags*/) {
  --pending_ops_;
  if (res > 0) {
    lingered_ += static_cast<uint32_t>(res);
    lingerRead();
  } else {
    shutdownSocket();  // the peer closed, or the time is up
  }
  opDone();
}

void H2Connection::onLingerEnd(int32_t /*res*/, uint32_t /*flags*/) {
  --pending_ops_;
  opDone();
}

void H2Connection::startReading() {
  receive();
  armTick();
}

void H2Connection::armTick() {
  worker_.loop.timeout(&tick_op_, &worker_.tick);
  ticking_ = true;
  ++pending_ops_;
}

void H2Connection::onTick(int32_t /*res*/, uint32_t /*flags*/) {
  --pending_ops_;
  ticking_ = false;
  if (closing_) {
    opDone();
    return;
  }
  checkDeadlines();
  if (!closing_) armTick();
}

void H2Connection::checkDeadlines() {
  const auto now = Clock::now();
  if (sending_ && now - send_progress_ > worker_.limits.send_timeout) {
    // The peer does not read: no GOAWAY would get through.
    session_->fail(h2::Violation::kSendTimeout);
    close("send timeout", /*abandon_send=*/true);
    return;
  }
  if (session_->headersOverdue(now, worker_.limits.header_timeout)) {
    session_->fail(h2::Violation::kHeaderTimeout);
    flush();
    close("header timeout");
    return;
  }
  checkStreamDeadlines(now);
  const auto idle_timeout =
      upstream_side_ ? worker_.upstream.idle_timeout : worker_.limits.idle_timeout;
  if (hasStreams()) {
    last_busy_ = now;
  } else if (idle_timeout.count() > 0 && now - last_busy_ > idle_timeout) {
    if (!upstream_side_) worker_.metrics.idleClosed();
    session_->goaway(NGHTTP2_NO_ERROR);
    flush();
    close("idle");
  }
}

void H2Connection::receive() {
  if (closing_ || receiving_ || waiting_for_buffer_) return;
  worker_.loop.recv(&recv_op_, fd_.get(), worker_.buffers);
  receiving_ = true;
  ++pending_ops_;
}

void H2Connection::onReceived(int32_t res, uint32_t flags) {
  --pending_ops_;
  receiving_ = false;
  const bool has_buffer = loop::BufferPool::hasBuffer(flags);
  const uint16_t id = loop::BufferPool::bufferId(flags);
  if (closing_) {
    if (has_buffer) worker_.buffers.release(id);
    opDone();
    return;
  }
  if (res > 0) {
    // The session copies what it keeps (header blocks, body chunks into the calls), so the
    // buffer goes back at once.
    Status status = session_->receive(reinterpret_cast<const uint8_t*>(worker_.buffers.data(id)),
                                      static_cast<size_t>(res));
    worker_.buffers.release(id);
    markDirty();
    if (!status) {
      log::debug("{}: HTTP/2 error: {}", peer_.toString(), status.error());
      // The session queued its GOAWAY: send it, then close.
      flush();
      close("protocol error");
      return;
    }
    receive();
    return;
  }
  if (has_buffer) worker_.buffers.release(id);
  if (res == -ENOBUFS) {
    waiting_for_buffer_ = true;
    worker_.buffers.waitForBuffer(this);
    return;
  }
  if (res == -EINTR || res == -EAGAIN) {
    receive();
    return;
  }
  close(res == 0 ? "peer closed" : std::strerror(-res));
}

void H2Connection::onBufferAvailable() {
  waiting_for_buffer_ = false;
  receive();
}

void H2Connection::markDirty() {
  if (dirty_ || closing_) return;
  dirty_ = true;
  worker_.connections.markDirty(this);
}

void H2Connection::resume(int32_t stream_id) {
  session_->resume(stream_id);
  markDirty();
}

void H2Connection::consume(int32_t stream_id, size_t length) {
  session_->consume(stream_id, length);
  markDirty();
}

void H2Connection::consumeConnection(size_t length) {
  session_->consumeConnection(length);
  markDirty();
}

void H2Connection::consumeStream(int32_t stream_id, size_t length) {
  session_->consumeStream(stream_id, length);
  markDirty();
}

void H2Connection::flush() {
  dirty_ = false;
  if (closed_notified_ || sending_ || !fd_.valid() || !connected_) return;
  if (!closing_) session_->produce(outbound_, kOutboundLimit);
  if (outbound_.empty()) {
    if (!closing_ && !session_->wantsToRead() && !session_->wantsToWrite()) {
      close("session finished");
    }
    return;
  }
  in_flight_.swap(outbound_);
  outbound_.clear();
  in_flight_sent_ = 0;
  send_progress_ = EventClock::now();
  worker_.loop.send(&send_op_, fd_.get(), in_flight_.data(), in_flight_.size(), MSG_NOSIGNAL);
  sending_ = true;
  ++pending_ops_;
}

void H2Connection::onSent(int32_t res, uint32_t /*flags*/) {
  --pending_ops_;
  sending_ = false;
  if (res < 0 && res != -EINTR && res != -EAGAIN) {
    if (closing_) {
      opDone();
      return;
    }
    close(std::strerror(-res));
    return;
  }
  if (res > 0) {
    in_flight_sent_ += static_cast<uint32_t>(res);
    send_progress_ = EventClock::now();
  }
  if (in_flight_sent_ < in_flight_.size()) {
    worker_.loop.send(&send_op_, fd_.get(), in_flight_.data() + in_flight_sent_,
                      in_flight_.size() - in_flight_sent_, MSG_NOSIGNAL);
    sending_ = true;
    ++pending_ops_;
    return;
  }
  in_flight_.clear();
  // A connection that has not begun a call (its handshake sent) keeps no buffer while idle.
  if (!session_->started()) std::string().swap(in_flight_);
  if (closing_) {
    // A final GOAWAY may still be queued: send it before the socket goes.
    if (!outbound_.empty()) {
      flush();
    } else {
      linger();
    }
    opDone();
    return;
  }
  flush();
}

void H2Connection::close(const char* why, bool abandon_send) {
  if (closing_) return;
  // What the session queued last (its GOAWAY) goes out before the socket closes, also when
  // a send was in flight and flush() could not take it.
  if (!abandon_send && session_ != nullptr && connected_ && fd_.valid()) {
    session_->produce(outbound_, kOutboundLimit);
  }
  closing_ = true;
  log::debug("{}: closing HTTP/2 connection: {}", peer_.toString(), why);
  if (session_ != nullptr && session_->violation() != h2::Violation::kNone) {
    worker_.metrics.violation(upstream_side_, session_->violation());
    static thread_local RateLimit violation_log{std::chrono::seconds(1)};  // one per worker
    uint64_t suppressed = 0;
    if (violation_log.allow(&suppressed)) {
      const std::string peer = peer_.toString();
      const std::string_view violation = h2::violationName(session_->violation());
      log::warn({.endpoint = upstream_side_ ? std::string_view(peer) : std::string_view(),
                 .source = sourceLabel(),
                 .reason = violation},
                "{} {}: closing HTTP/2 connection: {} ({} more not logged)",
                upstream_side_ ? "endpoint" : "client", peer, violation, suppressed);
    }
  }
  if (ticking_) worker_.loop.cancelTimeout(&tick_op_);
  if (waiting_for_buffer_) worker_.buffers.cancelWait(this);
  waiting_for_buffer_ = false;
  onClosing();
  // Let a send in flight finish (it may carry the GOAWAY); cancel the receive.
  if (receiving_) worker_.loop.cancel(&recv_op_);
  if (sending_ && abandon_send) worker_.loop.cancel(&send_op_);
  if (abandon_send && fd_.valid()) {
    shutdownSocket();
  } else if (!sending_ && fd_.valid()) {
    if (outbound_.empty()) {
      linger();
    } else {
      flush();  // then lingers once sent
    }
  }
  opDone();
}

void H2Connection::opDone() {
  if (!closing_ || pending_ops_ > 0 || closed_notified_) return;
  closed_notified_ = true;
  onClosed();
}

}  // namespace spindle::proxy
