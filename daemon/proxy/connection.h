// What a worker keeps a list of: every open connection, so it can close them all at stop.
#pragma once

#include "loop/loop.h"
#include "util/intrusive_list.h"

namespace spindle::proxy {

// How a stopping spindle (SIGTERM) lets go of a client connection, step by step.
enum class DrainStep : uint8_t {
  kNone,
  // The listeners are closed; connections go on as before. No client is told to go
  // elsewhere before every listener of the process is closed: its next connection would
  // otherwise land on one of them and be sent away too.
  kStopAccepting,
  // A GOAWAY notice, and a PING whose answer brings the final GOAWAY.
  kGoaway,
  // The PING was not answered in time: the final GOAWAY now.
  kFinalGoaway,
};

class Connection : public loop::Deferred, public ListNode<Connection> {
 public:
  // Closes now, whatever is in flight (at shutdown).
  virtual void abort() = 0;
  // The process is stopping (SIGTERM): let what is in flight finish, and the client go.
  virtual void stopGracefully(DrainStep /*step*/) {}
  // Whether the process waits for this connection to close before it exits. A connection
  // that cannot be told to stop (a byte stream) is cut when shutdown.drain ends.
  virtual bool holdsDrain() const { return true; }
};

}  // namespace spindle::proxy
