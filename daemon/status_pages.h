// What the admin listeners serve: /metrics, /ready, /healthz, and /endpoints, /config and a
// small HTML page (/) where allowed. Every handler runs on the main loop and only reads the
// daemon's state.
#pragma once

#include <vector>

#include "admin/admin_server.h"
#include "config/config.h"
#include "daemon.h"

namespace spindle {

// /metrics, /ready and /healthz, and the `pages` of the others. The handlers keep a reference
// to `daemon`, which outlives the server.
void installStatusPages(admin::AdminServer& server, const Daemon& daemon,
                        const std::vector<config::AdminPage>& pages);

}  // namespace spindle
