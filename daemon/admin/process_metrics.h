// Process metrics of this process, read from /proc/self for a /metrics answer. The reads are
// of procfs (small, never blocking on the network), so they are fine on the main loop.
#pragma once

#include <sys/types.h>

#include <string>

#include "metrics/process.h"

namespace spindle::admin {

// What could be read of this process; anything unreadable is left out.
metrics::ProcessMetrics readProcessMetrics();

// The process_* families in Prometheus text format, to append to the registry's output.
std::string renderProcessMetrics();

// The spindle_privileged_* families, of process `pid` (the proxy's parent, another user's
// process: its stat is readable, its limits and descriptors are not). Nothing when it cannot
// be read.
std::string renderPrivilegedMetrics(pid_t pid);

}  // namespace spindle::admin
