// A listening socket's multishot accept on a loop: the one acceptor of the proxy workers and
// the admin server. It owns the listener and closes it only once the accept is over: while a
// multishot accept is armed the ring holds its own reference, so closing the fd alone would
// not stop it.
#pragma once

#include <functional>
#include <string>

#include "loop/loop.h"
#include "util/fd.h"
#include "util/rate_limit.h"

namespace spindle::net {

class Acceptor final : public loop::Deferred {
 public:
  using OnAccepted = std::function<void(Fd connection)>;
  using OnClosed = std::function<void()>;

  // `name` for the log ("worker 0", "admin"). on_closed runs once, when the listener is closed
  // after close() and nothing more can be accepted.
  Acceptor(loop::Loop& loop, Fd listener, std::string name, OnAccepted on_accepted,
           OnClosed on_closed = nullptr);
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  void start();
  // Stops accepting: what is accepted meanwhile is closed at once.
  void close();
  // Nothing of the acceptor is in flight on the loop.
  bool idle() const { return !accept_armed_ && !retry_armed_; }

  // The owner is going: closes, and frees the acceptor after this batch or, if an operation is
  // still in flight, after its last completion (never, if the loop is gone first: owners that
  // can, run the loop until idle() before).
  static void release(Acceptor* acceptor);

 private:
  void arm();
  void onAccept(int32_t res, uint32_t flags);
  void onRetry(int32_t res, uint32_t flags);
  void finishIfIdle();

  loop::Loop& loop_;
  Fd listener_;
  std::string name_;
  OnAccepted on_accepted_;
  OnClosed on_closed_;
  loop::MemberCompletion<Acceptor, &Acceptor::onAccept> accept_op_{*this};
  loop::MemberCompletion<Acceptor, &Acceptor::onRetry> retry_op_{*this};
  __kernel_timespec retry_after_{};
  bool accept_armed_ = false;
  bool retry_armed_ = false;
  bool closing_ = false;
  bool released_ = false;
  RateLimit error_log_{std::chrono::seconds(10)};
};

}  // namespace spindle::net
