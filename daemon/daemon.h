// The running spindle: what the main thread owns (its loop, the BPF redirector, the service
// registry, DNS discovery, the admin servers, the workers) and what ties them together:
// start-up checks, signals, reloads, the heartbeat, and the drain at exit.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "admin/admin_server.h"
#include "config/config.h"
#include "dns/discovery.h"
#include "dns/resolver.h"
#include "lb/service_table.h"
#include "loop/file_watcher.h"
#include "loop/loop.h"
#include "loop/signal_reader.h"
#include "metrics/registry.h"
#include "proxy/proxy_metrics.h"
#include "proxy/worker.h"
#include "redirect/redirector.h"
#include "service_registry.h"
#include "util/result.h"

namespace spindle {

class Daemon {
 public:
  // Checks the platform, binds the listeners, loads and attaches the BPF programs and starts
  // the workers. A failure is one line that names what is missing; nothing stays attached.
  // config_path is read again on SIGHUP and when the file changes.
  static Result<std::unique_ptr<Daemon>> start(const std::string& config_path,
                                               const config::Config& config);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Serves until SIGTERM or SIGINT, then detaches, drains and stops. Returns the exit code.
  int run();

  // What the status pages read, on the main thread.
  const config::Config& config() const { return *effective_; }
  const metrics::Registry& metricRegistry() const { return metric_registry_; }
  const metrics::Shard& mainShard() const { return *main_shard_; }
  const std::vector<std::unique_ptr<proxy::Worker>>& workers() const { return workers_; }
  const redirect::Redirector& redirector() const { return *redirector_; }
  const ServiceRegistry& services() const { return *registry_; }
  const dns::Discovery* discovery() const { return discovery_.get(); }  // null: no DNS used
  bool attached() const { return attached_; }

 private:
  Daemon(std::string config_path, const config::Config& config);
  Status init();
  Status registerMetrics();
  Status startWorkers(std::vector<std::vector<Fd>> listeners, uint64_t netns_cookie);
  // DNS for the services that name a headless Service, and intercepts given as names. Made
  // anew on each reload: the names and the servers may have changed.
  Status startDiscovery();
  void onEndpoints(size_t service, const std::vector<net::SocketAddress>& addresses);
  void onInterceptAddresses(size_t service, size_t intercept,
                            const std::vector<net::SocketAddress>& addresses);
  void publish(const std::shared_ptr<const lb::ServiceTable>& table);
  void reload(const char* why);
  void onSignal(int signo);
  void onHeartbeat();
  void drain();
  void stop();

  const std::string config_path_;
  // The config in effect: a reload replaces it, except for what needs a restart.
  std::shared_ptr<const config::Config> effective_;
  std::string applied_text_;  // the file as last applied: a change event alone is no change
  std::string cgroup_mount_;
  std::string pin_dir_;  // "" = the maps are not shared with another spindle
  std::chrono::nanoseconds beat_{};
  // When the last beat woke the workers: each must have gone round its loop since.
  std::chrono::steady_clock::time_point pinged_{};
  bool workers_stuck_ = false;  // the heartbeat is held back: logged once per episode
  bool attached_ = false;
  bool running_ = true;
  bool cut_drain_ = false;  // a second signal ends the drain

  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<admin::AdminServer> admin_server_;
  std::unique_ptr<admin::AdminServer> probe_server_;
  std::unique_ptr<redirect::Redirector> redirector_;
  std::unique_ptr<ServiceRegistry> registry_;
  // Every family is registered before the first shard freezes the registry.
  metrics::Registry metric_registry_;
  std::optional<proxy::ProxyFamilies> families_;
  metrics::FamilyId dns_family_ = 0;
  metrics::FamilyId reload_family_ = 0;
  std::unique_ptr<metrics::Shard> main_shard_;
  std::unique_ptr<dns::CaresResolver> resolver_;
  std::unique_ptr<dns::Discovery> discovery_;
  std::unique_ptr<loop::Timer> heartbeat_;
  std::unique_ptr<loop::FileWatcher> watcher_;
  std::unique_ptr<loop::SignalReader> signals_;
  // Last, so that they stop first: they use the families, the shards and the maps above.
  std::vector<std::unique_ptr<proxy::Worker>> workers_;
};

// Starts the daemon and runs it; a start-up failure is logged and returns 1.
int runDaemon(const std::string& config_path, const config::Config& config);

}  // namespace spindle
