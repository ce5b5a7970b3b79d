// What a worker keeps a list of: every open connection, so it can close them all at stop.
#pragma once

#include "loop/loop.h"

namespace spindle::proxy {

class Connection : public loop::Deferred {
 public:
  // Closes now, whatever is in flight (at shutdown).
  virtual void abort() = 0;

  // Intrusive list of a worker's connections.
  Connection* prev = nullptr;
  Connection* next = nullptr;
};

}  // namespace spindle::proxy
