#include "proxy/passthrough.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "net/socket.h"
#include "proxy/worker_parts.h"
#include "util/log.h"

namespace spindle::proxy {

Passthrough::Passthrough(WorkerParts& worker, Fd downstream, net::SocketAddress downstream_peer,
                         net::SocketAddress destination, const Caller& caller,
                         std::shared_ptr<const std::string> source, std::string received)
    : worker_(worker),
      loop_(worker.loop),
      pool_(worker.buffers),
      downstream_(std::move(downstream)),
      downstream_peer_(downstream_peer),
      destination_(destination),
      caller_(caller),
      source_(std::move(source)),
      initial_(std::move(received)) {
  worker_.metrics.connectionOpened(WorkerMetrics::Protocol::kPassthrough);
}

Passthrough::~Passthrough() {
  worker_.metrics.connectionClosed(WorkerMetrics::Protocol::kPassthrough);
}

void Passthrough::start() {
  SocketFailure why = SocketFailure::kLocal;
  auto socket = worker_.sockets.open(caller_, destination_.family(), &why);
  if (!socket) {
    worker_.metrics.socketFailed(why);
    worker_.logUpstreamFailure(
        destination_, *source_,
        [&] { return downstream_peer_.toString() + " -> " + destination_.toString(); },
        socket.error().c_str());
    close("no upstream socket");
    return;
  }
  upstream_ = std::move(*socket);
  net::setNoDelay(downstream_.get());

  connect_deadline_.tv_sec = kConnectTimeoutNanos / 1'000'000'000;
  connect_deadline_.tv_nsec = kConnectTimeoutNanos % 1'000'000'000;
  const loop::Deadline deadline{&connect_timeout_, &connect_deadline_};
  loop_.connect(&connect_, upstream_.get(), destination_.asSockaddr(), destination_.length(),
                &deadline);
  pending_ops_ += 2;
}

void Passthrough::onConnectTimeout(int32_t /*res*/, uint32_t /*flags*/) {
  pending_ops_--;
  opDone();
}

void Passthrough::onConnected(int32_t res, uint32_t /*flags*/) {
  pending_ops_--;
  if (closing_) {
    opDone();
    return;
  }
  if (res < 0) {
    const char* why = res == -ECANCELED ? "connect timed out" : std::strerror(-res);
    worker_.logUpstreamFailure(
        destination_, *source_,
        [&] { return downstream_peer_.toString() + " -> " + destination_.toString(); }, why);
    close("upstream connect failed");
    return;
  }
  to_downstream_.start(upstream_.get(), downstream_.get());
  if (initial_.empty()) {
    to_upstream_.start(downstream_.get(), upstream_.get());
  } else {
    sendInitial();
  }
}

void Passthrough::sendInitial() {
  loop_.send(&initial_send_, upstream_.get(), initial_.data() + initial_sent_,
             initial_.size() - initial_sent_, MSG_NOSIGNAL);
  pending_ops_++;
}

void Passthrough::onInitialSent(int32_t res, uint32_t /*flags*/) {
  pending_ops_--;
  if (closing_) {
    opDone();
    return;
  }
  if (res < 0) {
    close("socket error");
    return;
  }
  initial_sent_ += static_cast<size_t>(res);
  if (initial_sent_ < initial_.size()) {
    sendInitial();
    return;
  }
  initial_.clear();
  to_upstream_.start(downstream_.get(), upstream_.get());
}

void Passthrough::Direction::start(int from, int to) {
  from_ = from;
  to_ = to;
  pump();
}

// Starts whatever this direction may do now: send the oldest held buffer, receive into a new
// one while fewer than kMaxHeldBuffers are held, pass EOF on once everything is sent.
void Passthrough::Direction::pump() {
  if (conn_.closing_ || done_) return;
  if (!sending_ && count_ > 0) {
    const Chunk& chunk = held_[head_];
    conn_.loop_.send(&send_op_, to_, conn_.pool_.data(chunk.buffer_id) + sent_,
                     chunk.length - sent_, MSG_NOSIGNAL);
    sending_ = true;
    conn_.pending_ops_++;
  }
  if (!receiving_ && !waiting_ && !eof_ && count_ < kMaxHeldBuffers) {
    conn_.loop_.recv(&recv_op_, from_, conn_.pool_);
    receiving_ = true;
    conn_.pending_ops_++;
  }
  if (eof_ && count_ == 0 && !sending_) {
    // Half-close: the peer finished sending; pass its FIN on, keep the other way open.
    ::shutdown(to_, SHUT_WR);
    done_ = true;
    conn_.onDirectionDone();
  }
}

void Passthrough::Direction::onReceived(int32_t res, uint32_t flags) {
  conn_.pending_ops_--;
  receiving_ = false;
  const bool has_buffer = loop::BufferPool::hasBuffer(flags);
  const uint16_t buffer_id = loop::BufferPool::bufferId(flags);
  if (conn_.closing_ || res <= 0) {
    if (has_buffer) conn_.pool_.release(buffer_id);
  }
  if (conn_.closing_) {
    conn_.opDone();
    return;
  }
  if (res > 0) {
    held_[(head_ + count_) % kMaxHeldBuffers] = Chunk{buffer_id, static_cast<uint32_t>(res)};
    ++count_;
  } else if (res == 0) {
    eof_ = true;
  } else if (res == -ENOBUFS) {
    // The worker's pool is empty: wait for a buffer to come back instead of growing.
    waiting_ = true;
    conn_.pool_.waitForBuffer(this);
    return;
  } else if (res != -EINTR && res != -EAGAIN) {
    log::debug("{} {}: {}", conn_.downstream_peer_.toString(), name_, std::strerror(-res));
    conn_.close("socket error");
    return;
  }
  pump();
}

void Passthrough::Direction::onSent(int32_t res, uint32_t /*flags*/) {
  conn_.pending_ops_--;
  sending_ = false;
  if (conn_.closing_) {
    conn_.opDone();
    return;
  }
  if (res < 0 && res != -EINTR && res != -EAGAIN) {
    log::debug("{} {}: {}", conn_.downstream_peer_.toString(), name_, std::strerror(-res));
    conn_.close("socket error");
    return;
  }
  if (res > 0) sent_ += static_cast<uint32_t>(res);
  const Chunk& chunk = held_[head_];
  if (sent_ == chunk.length) {
    const uint16_t id = chunk.buffer_id;
    head_ = (head_ + 1) % kMaxHeldBuffers;
    --count_;
    sent_ = 0;
    conn_.pool_.release(id);  // may resume another receiver waiting for a buffer
  }
  pump();
}

void Passthrough::Direction::onBufferAvailable() {
  waiting_ = false;
  pump();
}

void Passthrough::Direction::stopWaiting() {
  if (waiting_) conn_.pool_.cancelWait(this);
  waiting_ = false;
}

void Passthrough::Direction::releaseBuffers() {
  while (count_ > 0) {
    conn_.pool_.release(held_[head_].buffer_id);
    head_ = (head_ + 1) % kMaxHeldBuffers;
    --count_;
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
  to_upstream_.stopWaiting();
  to_downstream_.stopWaiting();
  // Cancel whatever is in flight; the completions arrive as -ECANCELED and count down.
  if (pending_ops_ > 0) {
    if (downstream_.valid()) loop_.cancelFd(downstream_.get());
    if (upstream_.valid()) loop_.cancelFd(upstream_.get());
  }
  opDone();
}

void Passthrough::opDone() {
  if (!closing_ || pending_ops_ > 0) return;
  // Nothing in flight references the held buffers any more: give them back.
  pending_ops_ = -1;  // guards against a second call
  to_upstream_.releaseBuffers();
  to_downstream_.releaseBuffers();
  worker_.connections.remove(this);
}

}  // namespace spindle::proxy
