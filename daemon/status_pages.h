// What the admin listener serves: /metrics, /ready, /healthz, /endpoints, /config and a small
// HTML page. Every handler runs on the main loop and only reads.
#pragma once

#include <memory>
#include <vector>

#include "admin/admin_server.h"
#include "config/config.h"
#include "dns/discovery.h"
#include "metrics/registry.h"
#include "proxy/worker.h"
#include "redirect/redirector.h"
#include "service_registry.h"

namespace spindle {

struct StatusSources {
  const std::shared_ptr<const config::Config>& config;  // the config in effect
  const metrics::Registry& registry;
  const metrics::Shard& main_shard;
  const std::vector<std::unique_ptr<proxy::Worker>>& workers;
  const redirect::Redirector& redirector;
  const ServiceRegistry& services;
  const std::unique_ptr<dns::Discovery>& discovery;  // null when no service uses DNS
  const bool& attached;              // the BPF programs are attached
};

void installStatusPages(admin::AdminServer& server, const StatusSources& sources);

}  // namespace spindle
