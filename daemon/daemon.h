// The daemon's life: start-up checks, BPF, listeners, workers, heartbeat, clean stop.
#pragma once

#include <string>

#include "config/config.h"

namespace spindle {

// Runs until SIGTERM or SIGINT; returns the process exit code. Start-up failures are logged
// as one line and return 1.
// config_path is read again on SIGHUP and when the file changes.
int runDaemon(const std::string& config_path, const config::Config& config);

}  // namespace spindle
