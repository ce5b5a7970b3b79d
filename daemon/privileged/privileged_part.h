// The privileged part of spindle: the process started as `spindle --config FILE`. It does what
// needs privilege and parses no network input: the start-up checks of the host, the listeners
// (bound here, so that they belong to the same user in every spindle of a rollout), the BPF
// programs and maps, and sockets inside Pods' network namespaces. The proxy, which parses every
// Pod's HTTP/2, runs as its child without privilege (daemon.h) and asks it over a channel
// (channel.h) for what it cannot do itself.
//
// Each notices the other's death: the proxy dies with this process (PR_SET_PDEATHSIG), and
// this process, seeing the proxy's end of the channel close, destroys its links and exits. The
// links are never pinned and only this process holds them, so in both cases every connect
// goes direct from then on.
#pragma once

#include <string>

#include "config/config.h"

namespace spindle::privileged {

// Starts the proxy and serves it until both have stopped. Returns the exit code.
int run(const std::string& config_path, const config::Config& config);

}  // namespace spindle::privileged
