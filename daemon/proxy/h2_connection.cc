#include "proxy/h2_connection.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "proxy/worker_context.h"
#include "util/log.h"

namespace spindle::proxy {

H2Connection::H2Connection(WorkerContext& worker, net::Fd fd, net::SocketAddress peer)
    : worker_(worker), fd_(std::move(fd)), peer_(peer) {}

void H2Connection::startReading() { receive(); }

void H2Connection::receive() {
  if (closing_ || receiving_ || waiting_for_buffer_) return;
  worker_.buffers().prepareRecv(worker_.loop().prepare(&recv_op_), fd_.get());
  receiving_ = true;
  ++pending_ops_;
}

void H2Connection::onReceived(int32_t res, uint32_t flags) {
  --pending_ops_;
  receiving_ = false;
  const bool has_buffer = loop::BufferPool::hasBuffer(flags);
  const uint16_t id = loop::BufferPool::bufferId(flags);
  if (closing_) {
    if (has_buffer) worker_.buffers().release(id);
    opDone();
    return;
  }
  if (res > 0) {
    // The session copies what it keeps (header blocks, body chunks into the calls), so the
    // buffer goes back at once.
    Status status = session_->receive(
        reinterpret_cast<const uint8_t*>(worker_.buffers().data(id)), static_cast<size_t>(res));
    worker_.buffers().release(id);
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
  if (has_buffer) worker_.buffers().release(id);
  if (res == -ENOBUFS) {
    waiting_for_buffer_ = true;
    worker_.buffers().waitForBuffer(this);
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
  worker_.markDirty(this);
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
  io_uring_prep_send(worker_.loop().prepare(&send_op_), fd_.get(), in_flight_.data(),
                     in_flight_.size(), MSG_NOSIGNAL);
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
  if (res > 0) in_flight_sent_ += static_cast<size_t>(res);
  if (in_flight_sent_ < in_flight_.size()) {
    io_uring_prep_send(worker_.loop().prepare(&send_op_), fd_.get(),
                       in_flight_.data() + in_flight_sent_, in_flight_.size() - in_flight_sent_,
                       MSG_NOSIGNAL);
    sending_ = true;
    ++pending_ops_;
    return;
  }
  in_flight_.clear();
  if (closing_) {
    // A final GOAWAY may still be queued: send it before the socket goes.
    if (!outbound_.empty()) {
      flush();
    } else {
      ::shutdown(fd_.get(), SHUT_RDWR);
    }
    opDone();
    return;
  }
  flush();
}

void H2Connection::close(const char* why) {
  if (closing_) return;
  closing_ = true;
  log::debug("{}: closing HTTP/2 connection: {}", peer_.toString(), why);
  if (waiting_for_buffer_) worker_.buffers().cancelWait(this);
  waiting_for_buffer_ = false;
  onClosing();
  // Let a send in flight finish (it may carry the GOAWAY); cancel the receive.
  if (receiving_) {
    io_uring_prep_cancel(worker_.loop().prepareIgnored(), &recv_op_, 0);
  }
  if (!sending_ && fd_.valid()) ::shutdown(fd_.get(), SHUT_RDWR);
  opDone();
}

void H2Connection::opDone() {
  if (!closing_ || pending_ops_ > 0 || closed_notified_) return;
  closed_notified_ = true;
  onClosed();
}

}  // namespace spindle::proxy
