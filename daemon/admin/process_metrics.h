// Process metrics of this process, read from /proc/self for a /metrics answer. The reads are
// of procfs (small, never blocking on the network), so they are fine on the main loop.
#pragma once

#include <string>

#include "metrics/process.h"

namespace spindle::admin {

// What could be read; anything unreadable is left out.
metrics::ProcessMetrics readProcessMetrics();

// The process_* families in Prometheus text format, to append to the registry's output.
std::string renderProcessMetrics();

}  // namespace spindle::admin
