#include "net/acceptor.h"

#include <cerrno>
#include <cstring>

#include "util/log.h"

namespace spindle::net {
namespace {

// Out of fds or memory: accepting again at once would spin the loop on the same error, and
// the backlog holds the connections meanwhile.
constexpr auto kRetryAfter = std::chrono::milliseconds(100);

bool isResourceError(int err) {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

}  // namespace

Acceptor::Acceptor(loop::Loop& loop, Fd listener, std::string name, OnAccepted on_accepted,
                   OnClosed on_closed)
    : loop_(loop),
      listener_(std::move(listener)),
      name_(std::move(name)),
      on_accepted_(std::move(on_accepted)),
      on_closed_(std::move(on_closed)) {
  retry_after_.tv_nsec = std::chrono::nanoseconds(kRetryAfter).count();
}

void Acceptor::start() {
  if (closing_ || accept_armed_ || retry_armed_) return;
  arm();
}

void Acceptor::arm() {
  loop_.accept(&accept_op_, listener_.get());
  accept_armed_ = true;
}

void Acceptor::close() {
  if (closing_) return;
  closing_ = true;
  // Cancelled by completion, not by fd: the fd stays open until the accept is over.
  if (accept_armed_) loop_.cancel(&accept_op_);
  if (retry_armed_) loop_.cancelTimeout(&retry_op_);
  finishIfIdle();
}

void Acceptor::release(Acceptor* acceptor) {
  acceptor->released_ = true;
  acceptor->on_accepted_ = nullptr;
  acceptor->on_closed_ = nullptr;
  if (acceptor->closing_) {
    acceptor->finishIfIdle();
  } else {
    acceptor->close();
  }
}

void Acceptor::onAccept(int32_t res, uint32_t flags) {
  if (!(flags & loop::kFlagMore)) accept_armed_ = false;
  if (closing_) {
    Fd late(res >= 0 ? res : -1);  // accepted while closing: closed at once
    finishIfIdle();
    return;
  }
  if (res >= 0) {
    on_accepted_(Fd(res));
  } else if (res != -EAGAIN && res != -EINTR && res != -ECONNABORTED) {
    // EMFILE and friends: keep serving what we have; the backlog holds the rest.
    uint64_t suppressed = 0;
    if (error_log_.allow(&suppressed)) {
      log::warn("{}: accept: {} ({} more not logged)", name_, std::strerror(-res), suppressed);
    }
  }
  if (accept_armed_ || closing_) return;  // on_accepted_ may have closed us
  if (res < 0 && isResourceError(-res)) {
    loop_.timeout(&retry_op_, &retry_after_);
    retry_armed_ = true;
  } else {
    arm();
  }
}

void Acceptor::onRetry(int32_t /*res*/, uint32_t /*flags*/) {
  retry_armed_ = false;
  if (closing_) {
    finishIfIdle();
    return;
  }
  arm();
}

void Acceptor::finishIfIdle() {
  if (!idle()) return;
  if (listener_.valid()) {
    listener_.reset();
    if (on_closed_) on_closed_();
  }
  if (released_) loop_.deferDelete(std::unique_ptr<loop::Deferred>(this));
}

}  // namespace spindle::net
