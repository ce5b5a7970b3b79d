#include "proxy/passthrough.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "net/socket.h"
#include "util/log.h"

namespace spindle::proxy {

Passthrough::Passthrough(loop::Loop& loop, PassthroughOwner& owner, net::Fd downstream,
                         net::SocketAddress downstream_peer, net::SocketAddress destination,
                         uint32_t mark)
    : loop_(loop),
      owner_(owner),
      downstream_(std::move(downstream)),
      downstream_peer_(downstream_peer),
      destination_(destination),
      mark_(mark) {}

void Passthrough::start() {
  auto socket = net::connectingSocket(destination_.family(), mark_);
  if (!socket) {
    log::warn("{} -> {}: {}", downstream_peer_.toString(), destination_.toString(),
              socket.error());
    close("no upstream socket");
    return;
  }
  upstream_ = std::move(*socket);
  net::setNoDelay(downstream_.get());

  io_uring_sqe* sqe = loop_.prepare(&connect_);
  io_uring_prep_connect(sqe, upstream_.get(), destination_.asSockaddr(), destination_.length());
  sqe->flags |= IOSQE_IO_LINK;
  connect_deadline_.tv_sec = kConnectTimeoutNanos / 1'000'000'000;
  connect_deadline_.tv_nsec = kConnectTimeoutNanos % 1'000'000'000;
  io_uring_prep_link_timeout(loop_.prepare(&connect_timeout_), &connect_deadline_, 0);
  pending_ops_ += 2;
}

void Passthrough::Connect::complete(int32_t res, uint32_t /*flags*/) {
  conn_.pending_ops_--;
  conn_.onConnected(res);
}

void Passthrough::ConnectTimeout::complete(int32_t /*res*/, uint32_t /*flags*/) {
  conn_.pending_ops_--;
  conn_.opDone();
}

void Passthrough::onConnected(int32_t res) {
  if (closing_) {
    opDone();
    return;
  }
  if (res < 0) {
    const char* why = res == -ECANCELED ? "connect timed out" : std::strerror(-res);
    log::warn("{} -> {}: {}", downstream_peer_.toString(), destination_.toString(), why);
    close("upstream connect failed");
    return;
  }
  to_upstream_.setFds(downstream_.get(), upstream_.get());
  to_downstream_.setFds(upstream_.get(), downstream_.get());
  to_upstream_.receive();
  to_downstream_.receive();
}

void Passthrough::Direction::receive() {
  if (!buffer_) buffer_ = std::make_unique<char[]>(kBufferSize);
  io_uring_prep_recv(conn_.loop_.prepare(this), from_, buffer_.get(), kBufferSize, 0);
  state_ = State::kReceiving;
  conn_.pending_ops_++;
}

void Passthrough::Direction::send() {
  io_uring_prep_send(conn_.loop_.prepare(this), to_, buffer_.get() + sent_, length_ - sent_,
                     MSG_NOSIGNAL);
  state_ = State::kSending;
  conn_.pending_ops_++;
}

void Passthrough::Direction::complete(int32_t res, uint32_t /*flags*/) {
  conn_.pending_ops_--;
  if (conn_.closing_) {
    conn_.opDone();
    return;
  }
  if (res == -EINTR || res == -EAGAIN) {
    state_ == State::kReceiving ? receive() : send();
    return;
  }
  if (res < 0) {
    log::debug("{} {}: {}", conn_.downstream_peer_.toString(), name_, std::strerror(-res));
    conn_.close("socket error");
    return;
  }
  if (state_ == State::kReceiving) {
    if (res == 0) {
      // Half-close: the peer finished sending; pass its FIN on, keep the other way open.
      ::shutdown(to_, SHUT_WR);
      state_ = State::kDone;
      buffer_.reset();
      conn_.onDirectionDone();
      return;
    }
    length_ = static_cast<uint32_t>(res);
    sent_ = 0;
    send();
    return;
  }
  sent_ += static_cast<uint32_t>(res);
  if (sent_ < length_) {
    send();
  } else {
    receive();
  }
}

void Passthrough::onDirectionDone() {
  if (to_upstream_.done() && to_downstream_.done()) close("both sides finished");
}

void Passthrough::abort() { close("shutting down"); }

void Passthrough::close(const char* why) {
  if (closing_) return;
  closing_ = true;
  log::debug("{} -> {}: closing: {}", downstream_peer_.toString(), destination_.toString(), why);
  // Cancel whatever is in flight; the completions arrive as -ECANCELED and count down.
  if (pending_ops_ > 0) {
    if (downstream_.valid()) {
      io_uring_prep_cancel_fd(loop_.prepareIgnored(), downstream_.get(), IORING_ASYNC_CANCEL_ALL);
    }
    if (upstream_.valid()) {
      io_uring_prep_cancel_fd(loop_.prepareIgnored(), upstream_.get(), IORING_ASYNC_CANCEL_ALL);
    }
  }
  opDone();
}

void Passthrough::opDone() {
  if (!closing_ || pending_ops_ > 0) return;
  // Guard against a second call from a completion in the same batch.
  pending_ops_ = -1;
  owner_.onClosed(this);
}

}  // namespace spindle::proxy
