// What the admin listener serves: /metrics, /ready, /healthz, /endpoints, /config and a small
// HTML page. Every handler runs on the main loop and only reads the daemon's state.
#pragma once

#include "admin/admin_server.h"
#include "daemon.h"

namespace spindle {

// The handlers keep a reference to `daemon`, which outlives the server.
void installStatusPages(admin::AdminServer& server, const Daemon& daemon);

}  // namespace spindle
