// Every open connection of a worker (downstream, upstream, passthrough, not yet detected), so
// that the worker can drain or close them all, and the HTTP/2 connections that a batch of
// completions gave something to send.
#pragma once

#include <vector>

#include "loop/loop.h"
#include "proxy/connection.h"
#include "util/intrusive_list.h"

namespace spindle::proxy {

class H2Connection;

class ConnectionSet {
 public:
  explicit ConnectionSet(loop::Loop& loop) : loop_(loop) {}
  ConnectionSet(const ConnectionSet&) = delete;
  ConnectionSet& operator=(const ConnectionSet&) = delete;

  void add(Connection* connection) { connections_.pushFront(connection); }
  // Unlinks the connection and frees it after the current batch of completions.
  void remove(Connection* connection);
  bool empty() const { return connections_.empty(); }
  // Closes every connection now, whatever is in flight (at shutdown).
  void abortAll();

  // SIGTERM: every connection, and every one added from now on, drains to this step.
  void drainAll(DrainStep step);
  DrainStep drainStep() const { return drain_step_; }
  // No connection the process must wait for is left.
  bool drained() const;

  void markDirty(H2Connection* connection) { dirty_.push_back(connection); }
  // Runs after each batch: sends what the batch made the sessions queue.
  void flushDirty();

 private:
  loop::Loop& loop_;
  IntrusiveList<Connection> connections_;
  DrainStep drain_step_ = DrainStep::kNone;
  std::vector<H2Connection*> dirty_;
  std::vector<H2Connection*> flushing_;
};

}  // namespace spindle::proxy
