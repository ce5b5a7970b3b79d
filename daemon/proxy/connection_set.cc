#include "proxy/connection_set.h"

#include <memory>

#include "proxy/h2_connection.h"

namespace spindle::proxy {

void ConnectionSet::remove(Connection* connection) {
  connections_.remove(connection);
  // It may still be in the dirty list of this batch: it is freed after the flush.
  loop_.deferDelete(std::unique_ptr<loop::Deferred>(connection));
}

void ConnectionSet::abortAll() {
  connections_.forEach([](Connection& c) { c.abort(); });
}

void ConnectionSet::drainAll(DrainStep step) {
  drain_step_ = step;
  connections_.forEach([step](Connection& c) { c.stopGracefully(step); });
}

bool ConnectionSet::drained() const {
  return !connections_.anyOf([](const Connection& c) { return c.holdsDrain(); });
}

void ConnectionSet::flushDirty() {
  // Flushing one connection can dirty another (window given back to its peer): repeat until
  // nothing is left.
  while (!dirty_.empty()) {
    flushing_.swap(dirty_);
    for (H2Connection* connection : flushing_) connection->flush();
    flushing_.clear();
  }
}

}  // namespace spindle::proxy
