// What the connections of one worker share, each part with one job: the loop and receive
// buffers they do their I/O with, the limits they obey, the set they belong to, the services
// they balance over and the upstream connections their calls go out on. Owned by the Worker
// and used only on its thread; every connection keeps one reference to it.
#pragma once

#include <linux/time_types.h>

#include <cstdint>
#include <memory>

#include "config/config.h"
#include "h2/session.h"
#include "lb/service_table.h"
#include "loop/buffer_pool.h"
#include "loop/loop.h"
#include "proxy/connection_set.h"
#include "proxy/proxy_metrics.h"
#include "proxy/upstream_pool.h"
#include "proxy/upstream_sockets.h"
#include "proxy/worker_services.h"
#include "util/log.h"
#include "util/rate_limit.h"

namespace spindle::proxy {

struct WorkerParts {
  WorkerParts(loop::Loop& loop, loop::BufferPool& buffers, WorkerMetrics& metrics,
              const config::Limits& limits, const config::Upstream& upstream,
              UpstreamSockets& sockets, std::shared_ptr<const lb::ServiceTable> services,
              uint64_t seed);
  WorkerParts(const WorkerParts&) = delete;
  WorkerParts& operator=(const WorkerParts&) = delete;

  // New endpoint snapshots (same services, same order). Upstream connections to endpoints
  // that left every service are drained: their calls finish, new calls go elsewhere.
  void setServices(std::shared_ptr<const lb::ServiceTable> table);

  // Rate-limited: a failing endpoint must not flood the log. `describe` is called only when
  // the line is written; `destination` is the endpoint (or a passthrough's destination);
  // `source` the calling Pod's label where the connection has one caller.
  template <typename Describe>
  void logUpstreamFailure(const net::SocketAddress& destination, std::string_view source,
                          Describe&& describe, const char* why) {
    uint64_t suppressed = 0;
    if (upstream_log.allow(&suppressed)) {
      const std::string endpoint = destination.toString();
      log::warn({.endpoint = endpoint, .source = source, .reason = why},
                "{}: {} ({} more upstream failures not logged)", describe(), why, suppressed);
    }
  }

  loop::Loop& loop;
  loop::BufferPool& buffers;
  WorkerMetrics& metrics;
  // Read at start: a reload does not change them.
  const config::Limits limits;
  const config::Upstream upstream;
  // The period of every connection's deadline check (see H2Connection), derived from the
  // limits and upstream.idle_timeout; one timespec for all, as the kernel copies it when a
  // timeout is submitted.
  __kernel_timespec tick;
  UpstreamSockets& sockets;  // where upstream and passthrough connections leave from
  ConnectionSet connections;
  WorkerServices services;
  UpstreamPool upstreams;
  RateLimit upstream_log{std::chrono::seconds(1)};
};

// HTTP/2 settings with the abuse budgets of `limits` filled in.
h2::Settings withLimits(h2::Settings settings, const config::Limits& limits);

}  // namespace spindle::proxy
