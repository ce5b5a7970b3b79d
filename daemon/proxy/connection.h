// What a worker keeps a list of: every open connection, so it can close them all at stop.
#pragma once

#include "loop/loop.h"

namespace spindle::proxy {

class Connection : public loop::Deferred {
 public:
  // Closes now, whatever is in flight (at shutdown).
  virtual void abort() = 0;
  // The process is stopping (SIGTERM): take no new work, let what is in flight finish.
  // Called once with final == false, then once with final == true a round trip later.
  virtual void stopGracefully(bool /*final*/) {}
  // Whether the process waits for this connection to close before it exits. A connection
  // that cannot be told to stop (a byte stream) is cut when shutdown.drain ends.
  virtual bool holdsDrain() const { return true; }

  // Intrusive list of a worker's connections.
  Connection* prev = nullptr;
  Connection* next = nullptr;
};

}  // namespace spindle::proxy
