#include "proxy/worker_parts.h"

#include <algorithm>
#include <chrono>

namespace spindle::proxy {
namespace {

// A quarter of the shortest deadline, so that each is met within 25% (2.5 s with the
// defaults); never under 50 ms.
__kernel_timespec tickPeriod(const config::Limits& limits, const config::Upstream& upstream) {
  auto shortest = std::min(limits.header_timeout, limits.send_timeout);
  if (limits.idle_timeout.count() > 0) shortest = std::min(shortest, limits.idle_timeout);
  if (upstream.idle_timeout.count() > 0) shortest = std::min(shortest, upstream.idle_timeout);
  const auto period = std::max(std::chrono::duration_cast<std::chrono::nanoseconds>(shortest) / 4,
                               std::chrono::nanoseconds(std::chrono::milliseconds(50)));
  __kernel_timespec ts{};
  ts.tv_sec = period.count() / 1'000'000'000;
  ts.tv_nsec = period.count() % 1'000'000'000;
  return ts;
}

}  // namespace

WorkerParts::WorkerParts(loop::Loop& loop_in, loop::BufferPool& buffers_in,
                         WorkerMetrics& metrics_in, const config::Limits& limits_in,
                         const config::Upstream& upstream_in, UpstreamSockets& sockets_in,
                         std::shared_ptr<const lb::ServiceTable> table, uint64_t seed)
    : loop(loop_in),
      buffers(buffers_in),
      metrics(metrics_in),
      limits(limits_in),
      upstream(upstream_in),
      tick(tickPeriod(limits_in, upstream_in)),
      sockets(sockets_in),
      connections(loop_in),
      services(std::move(table), seed),
      upstreams(*this) {}

void WorkerParts::setServices(std::shared_ptr<const lb::ServiceTable> table) {
  services.update(std::move(table));
  upstreams.keepOnly(services.table());
}

h2::Settings withLimits(h2::Settings settings, const config::Limits& limits) {
  settings.max_premature_resets = limits.max_premature_resets;
  settings.max_glitches = limits.max_glitches;
  settings.max_control_frames = limits.max_control_frames;
  return settings;
}

}  // namespace spindle::proxy
