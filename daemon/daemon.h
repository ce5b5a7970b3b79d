// The daemon's life: start-up checks, BPF, listeners, workers, heartbeat, clean stop.
#pragma once

#include "config/config.h"

namespace spindle {

// Runs until SIGTERM or SIGINT; returns the process exit code. Start-up failures are logged
// as one line and return 1.
int runDaemon(const config::Config& config);

}  // namespace spindle
