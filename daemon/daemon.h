// The proxy process: what its main thread owns (its loop, the service registry, DNS
// discovery, the admin servers, the workers, the channel to the privileged part) and what
// ties them together: signals, reloads, the heartbeat, and the drain at exit. It runs without
// privilege (privileged/privileged_part.h does what needs it).
#pragma once

#include <sys/types.h>
#include <unistd.h>

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
#include "loop/loop.h"
#include "loop/signal_reader.h"
#include "metrics/registry.h"
#include "privileged/client.h"
#include "proxy/proxy_metrics.h"
#include "proxy/worker.h"
#include "service_registry.h"
#include "util/result.h"

namespace spindle {

class Daemon {
 public:
  // Starts the workers on the listeners of `start` and has the privileged part attach the
  // programs. A failure is one line that names what is missing; nothing stays attached.
  static Result<std::unique_ptr<Daemon>> start(std::unique_ptr<privileged::Client> privileged,
                                               privileged::Start start,
                                               const config::Config& config);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Serves until SIGTERM or SIGINT, then detaches, drains and stops. Returns the exit code.
  int run();

  // What the status pages read, on the main thread.
  const config::Config& config() const { return *effective_; }
  const loop::EngineChoice& ioEngine() const { return engine_; }
  const metrics::Registry& metricRegistry() const { return metric_registry_; }
  const metrics::Shard& mainShard() const { return *main_shard_; }
  const std::vector<std::unique_ptr<proxy::Worker>>& workers() const { return workers_; }
  // The kernel side's counters and records, asked of the privileged part (zeros when it does
  // not answer), and the proxy port of each service.
  privileged::RedirectState redirectState() const;
  uint16_t servicePort(uint32_t service_id) const { return privileged_->servicePort(service_id); }
  const ServiceRegistry& services() const { return *registry_; }
  const dns::Discovery* discovery() const { return discovery_.get(); }  // null: no DNS used
  bool attached() const { return attached_; }
  // The privileged part: this process's parent, which it dies with.
  pid_t privilegedPid() const { return privileged_pid_; }

 private:
  Daemon(std::unique_ptr<privileged::Client> privileged, const config::Config& config);
  Status init(privileged::Start start);
  Status registerMetrics();
  // metrics.series_grace to every shard (at start and on each reload).
  void setSeriesGrace();
  Status startWorkers(std::vector<std::vector<Fd>> listeners, std::vector<Fd> channels);
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
  // Retires the main shard's series of services no longer in the config and sweeps the
  // shard (see metrics/registry.h); with each heartbeat.
  void expireSeries();
  void drain();
  void stop();

  // The config in effect: a reload replaces it, except for what needs a restart.
  std::shared_ptr<const config::Config> effective_;
  std::string applied_text_;  // the file as last applied: a change event alone is no change
  std::string cgroup_mount_;
  std::chrono::nanoseconds beat_{};
  // When the last beat woke the workers: each must have gone round its loop since.
  std::chrono::steady_clock::time_point pinged_{};
  bool workers_stuck_ = false;  // the heartbeat is held back: logged once per episode
  bool attached_ = false;
  bool running_ = true;
  bool cut_drain_ = false;  // a second signal ends the drain
  pid_t privileged_pid_ = ::getppid();

  std::unique_ptr<privileged::Client> privileged_;
  loop::EngineChoice engine_{loop::Engine::kIoUring, ""};
  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<admin::AdminServer> admin_server_;
  std::unique_ptr<admin::AdminServer> probe_server_;
  std::unique_ptr<ServiceRegistry> registry_;
  // Every family is registered before the first shard freezes the registry.
  metrics::Registry metric_registry_;
  std::optional<proxy::ProxyFamilies> families_;
  metrics::FamilyId dns_family_ = 0;
  metrics::FamilyId reload_family_ = 0;
  std::unique_ptr<metrics::Shard> main_shard_;
  // What expireSeries() last reconciled with, and the DNS series created by then.
  std::shared_ptr<const config::Config> reconciled_config_;
  uint64_t reconciled_dns_created_ = 0;
  std::unique_ptr<dns::CaresResolver> resolver_;
  std::unique_ptr<dns::Discovery> discovery_;
  std::unique_ptr<loop::Timer> heartbeat_;
  std::unique_ptr<loop::SignalReader> signals_;
  // What each worker asks the privileged part (its own channel).
  std::vector<std::unique_ptr<privileged::WorkerClient>> worker_clients_;
  // Last, so that they stop first: they use the families, the shards and the channels above.
  std::vector<std::unique_ptr<proxy::Worker>> workers_;
};

// The proxy process (spindle --proxy-channel FD, started by the privileged part): takes its
// listeners and config over the channel, gives up every privilege, and serves until told to
// stop. A start-up failure is logged and returns 1.
int runProxy(int channel_fd);

}  // namespace spindle
