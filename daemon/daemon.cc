#include "daemon.h"

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "net/socket.h"
#include "redirect/platform.h"
#include "status_pages.h"
#include "util/log.h"
#include "util/sandbox.h"

namespace spindle {
namespace {

constexpr unsigned kMainRingEntries = 64;

// The signals the main loop reads; blocked in every thread before any starts.
sigset_t handledSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGUSR1);
  return signals;
}

std::chrono::nanoseconds heartbeatInterval(std::chrono::nanoseconds timeout) {
  // Four beats per timeout: one late beat is not a missed heartbeat.
  return std::clamp<std::chrono::nanoseconds>(timeout / 4, std::chrono::milliseconds(50),
                                              std::chrono::seconds(1));
}

// What a reload cannot change in a running process: it is kept, and the log says so.
void warnAboutRestartOnly(const config::Config& running, const config::Config& next) {
  auto warn = [](const char* what) {
    log::warn("config reload: {} changed; it takes effect when spindle restarts", what);
  };
  if (!(running.proxy.listen == next.proxy.listen)) warn("proxy.listen");
  if (running.proxy.workers != next.proxy.workers) warn("proxy.workers");
  if (running.proxy.service_ports != next.proxy.service_ports) warn("proxy.service_ports");
  if (running.proxy.uid != next.proxy.uid || running.proxy.gid != next.proxy.gid) {
    warn("proxy.uid, proxy.gid");
  }
  if (running.proxy.io_engine != next.proxy.io_engine) warn("proxy.io_engine");
  if (running.admin.listen != next.admin.listen) warn("admin.listen");
  if (running.admin.socket != next.admin.socket) warn("admin.socket");
  if (running.admin.pages != next.admin.pages) warn("admin.pages");
  if (running.metrics.by_source != next.metrics.by_source) warn("metrics.by_source");
  if (!(running.upstream == next.upstream)) warn("upstream");
  if (!(running.limits == next.limits)) warn("limits");
  if (running.redirect.cgroup != next.redirect.cgroup ||
      running.redirect.host_netns != next.redirect.host_netns ||
      running.redirect.heartbeat_timeout != next.redirect.heartbeat_timeout ||
      running.redirect.pin_path != next.redirect.pin_path) {
    warn("redirect");
  }
}

bool needsDns(const config::Config& config) {
  for (const config::Service& service : config.services) {
    if (!service.endpoints.dns.empty()) return true;
    for (const config::Intercept& intercept : service.intercept) {
      if (!intercept.literal) return true;
    }
  }
  return false;
}

// One line per change, so that an operator can follow a service's Pods in the log.
void logEndpoints(const std::string& service, const lb::EndpointSet& set) {
  constexpr size_t kListed = 16;
  std::string list;
  for (size_t i = 0; i < set.size() && i < kListed; ++i) {
    list += " " + set[i].address.toString();
  }
  if (set.size() > kListed) list += fmt::format(" and {} more", set.size() - kListed);
  log::info({.service = service}, "service {}: {} endpoints:{}", service, set.size(), list);
}

}  // namespace

Daemon::Daemon(std::unique_ptr<privileged::Client> privileged, const config::Config& config)
    : effective_(std::make_shared<const config::Config>(config)),
      privileged_(std::move(privileged)) {}

Daemon::~Daemon() = default;

Result<std::unique_ptr<Daemon>> Daemon::start(std::unique_ptr<privileged::Client> privileged,
                                              privileged::Start start,
                                              const config::Config& config) {
  std::unique_ptr<Daemon> daemon(new Daemon(std::move(privileged), config));
  if (Status s = daemon->init(std::move(start)); !s) return Error{s.error()};
  return daemon;
}

Status Daemon::init(privileged::Start start) {
  const config::Config& config = *effective_;
  const sigset_t signals = handledSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto engine = loop::chooseEngine(config.proxy.io_engine);
  if (!engine) return Error{engine.error()};
  engine_ = *engine;
  if (engine_.engine == loop::Engine::kEpoll && !engine_.fallback_reason.empty()) {
    log::info("I/O engine: epoll, as io_uring cannot run here: {}", engine_.fallback_reason);
  } else {
    log::info("I/O engine: {}", loop::engineName(engine_.engine));
  }
  auto main_loop = loop::Loop::create(engine_.engine, kMainRingEntries);
  if (!main_loop) return Error{main_loop.error()};
  loop_ = std::move(main_loop).value();
  // Where the workers name calling Pods: for the log's source always, for the metrics with
  // metrics.by_source.
  if (auto mount = redirect::findCgroup2Mount()) {
    cgroup_mount_ = *mount;
  } else if (config.metrics.by_source) {
    return Error{mount.error()};
  } else {
    log::warn("the log will not name calling Pods: {}", mount.error());
  }

  // The fds, in the order StartReply gives.
  auto next = start.fds.begin();
  // The admin listeners, bound by the privileged part; they serve once everything they
  // report on exists.
  if (start.info.admin_tcp != 0) {
    auto created = admin::AdminServer::serve(*loop_, std::move(*next++));
    if (!created) return makeError(fmt::format("admin.listen: {}", created.error()));
    admin_server_ = std::move(created).value();
  }
  if (start.info.admin_unix != 0) {
    auto created = admin::AdminServer::serve(*loop_, std::move(*next++));
    if (!created) return makeError(fmt::format("admin.socket: {}", created.error()));
    probe_server_ = std::move(created).value();
  }
  std::vector<Fd> channels;
  for (uint32_t w = 0; w < start.info.workers; ++w) channels.push_back(std::move(*next++));
  std::vector<std::vector<Fd>> listeners(start.info.workers);
  for (std::vector<Fd>& worker_listeners : listeners) {
    for (uint32_t i = 0; i < start.info.listeners_per_worker; ++i) {
      worker_listeners.push_back(std::move(*next++));
    }
  }

  registry_ = std::make_unique<ServiceRegistry>(config.services);
  if (Status s = privileged_->setServiceAddresses(registry_->redirectAddresses()); !s) return s;
  if (Status s = registerMetrics(); !s) return s;
  if (Status s = startWorkers(std::move(listeners), std::move(channels)); !s) return s;
  setSeriesGrace();
  // The workers run: from here on connects are redirected to them.
  if (Status s = privileged_->attach(); !s) return s;
  attached_ = true;

  beat_ = heartbeatInterval(config.redirect.heartbeat_timeout);
  heartbeat_ = std::make_unique<loop::Timer>(*loop_, [this] { onHeartbeat(); });
  heartbeat_->arm(beat_);

  if (Status s = startDiscovery(); !s) return s;
  if (auto text = privileged_->configText()) applied_text_ = std::move(*text);
  auto signal_reader =
      loop::SignalReader::create(*loop_, signals, [this](int signo) { onSignal(signo); });
  if (!signal_reader) return Error{signal_reader.error()};
  signals_ = std::move(signal_reader).value();
  signals_->arm();

  // Every Pod of the node reaches admin.listen: it serves what it is allowed to. The Unix
  // socket is this Pod's own: it serves every page.
  if (admin_server_) {
    installStatusPages(*admin_server_, *this, config.admin.pages);
    admin_server_->start();
  }
  if (probe_server_) {
    installStatusPages(*probe_server_, *this,
                       {config::AdminPage::kEndpoints, config::AdminPage::kConfig,
                        config::AdminPage::kStatus});
    probe_server_->start();
  }
  std::string listening;
  for (const net::SocketAddress& address : config.proxy.listen) {
    listening += (listening.empty() ? "" : ", ") + address.toString();
  }
  log::info("ready: listening on {}, {} workers, {} services", listening, workers_.size(),
            config.services.size());
  return {};
}

Status Daemon::registerMetrics() {
  auto families = proxy::ProxyFamilies::registerIn(metric_registry_);
  if (!families) return Error{families.error()};
  families_ = std::move(*families);
  auto dns_family = metric_registry_.add({"spindle_dns_resolutions_total",
                                          "DNS answers for the services' endpoints, by result.",
                                          metrics::Type::kCounter,
                                          {"service", "result"},
                                          {},
                                          1024});
  if (!dns_family) return Error{dns_family.error()};
  dns_family_ = *dns_family;
  auto reload_family = metric_registry_.add({"spindle_config_reloads_total",
                                             "Configuration reloads, by result.",
                                             metrics::Type::kCounter,
                                             {"result"},
                                             {},
                                             4});
  if (!reload_family) return Error{reload_family.error()};
  reload_family_ = *reload_family;
  main_shard_ = metric_registry_.makeShard();
  // Both results exist from the start: the first failure is an increase from 0, which rate()
  // and increase() see, not a new series.
  main_shard_->counter(reload_family_, {"ok"});
  main_shard_->counter(reload_family_, {"failed"});
  return {};
}

void Daemon::setSeriesGrace() {
  const std::chrono::nanoseconds grace = effective_->metrics.series_grace;
  main_shard_->setSeriesGrace(grace);
  for (auto& worker : workers_) worker->setSeriesGrace(grace);
}

Status Daemon::startWorkers(std::vector<std::vector<Fd>> listeners, std::vector<Fd> channels) {
  const auto services = registry_->table();
  const bool from_pods = effective_->upstream.source == config::Upstream::Source::kPod;
  for (unsigned w = 0; w < listeners.size(); ++w) {
    worker_clients_.push_back(std::make_unique<privileged::WorkerClient>(
        privileged::Channel(std::move(channels[w])), from_pods));
    privileged::WorkerClient& client = *worker_clients_.back();
    workers_.push_back(std::make_unique<proxy::Worker>(
        w, engine_.engine, std::move(listeners[w]), client, services, effective_->limits,
        effective_->upstream, client, *families_, metric_registry_.makeShard(), cgroup_mount_,
        effective_->metrics.by_source));
    if (Status s = workers_.back()->start(); !s) return s;
  }
  return {};
}

Status Daemon::startDiscovery() {
  discovery_.reset();
  resolver_.reset();
  const config::Config& c = *effective_;
  if (!needsDns(c)) return {};
  auto created = dns::CaresResolver::create(*loop_, c.dns.servers);
  if (!created) return Error{created.error()};
  resolver_ = std::move(created).value();
  discovery_ = std::make_unique<dns::Discovery>(
      *loop_, *resolver_,
      dns::PolicySettings{c.dns.refresh_min, c.dns.refresh_max, c.dns.empty_confirmations});
  for (const config::Service& service : c.services) {
    const size_t index = *registry_->indexOf(service.name);
    if (!service.endpoints.dns.empty()) {
      discovery_->watch(
          service.endpoints.dns,
          [this, index](const auto& addresses) { onEndpoints(index, addresses); },
          [this, name = service.name](dns::Outcome outcome) {
            const char* result = outcome == dns::Outcome::kRecords ? "records"
                                 : outcome == dns::Outcome::kEmpty ? "empty"
                                                                   : "failure";
            main_shard_->counter(dns_family_, {name, result}).inc();
          });
    }
    for (size_t j = 0; j < service.intercept.size(); ++j) {
      if (service.intercept[j].literal) continue;
      discovery_->watch(service.intercept[j].host, [this, index, j](const auto& addresses) {
        onInterceptAddresses(index, j, addresses);
      });
    }
  }
  return {};
}

void Daemon::onEndpoints(size_t service, const std::vector<net::SocketAddress>& addresses) {
  auto table = registry_->setEndpoints(service, addresses);
  const lb::ServiceEntry& entry = (*table)[service];
  logEndpoints(entry.name, *entry.endpoints);
  publish(table);
}

void Daemon::onInterceptAddresses(size_t service, size_t intercept,
                                  const std::vector<net::SocketAddress>& addresses) {
  registry_->setInterceptAddresses(service, intercept, addresses);
  const config::Service* declared = registry_->declared(service);
  if (declared == nullptr) return;
  log::info("service {}: intercept {} is {} addresses", declared->name,
            declared->intercept[intercept].text, addresses.size());
  if (Status s = privileged_->setServiceAddresses(registry_->redirectAddresses()); !s) {
    log::error("service {}: {}", declared->name, s.error());
  }
}

void Daemon::publish(const std::shared_ptr<const lb::ServiceTable>& table) {
  for (auto& worker : workers_) worker->publish(table);
}

void Daemon::expireSeries() {
  const metrics::TimePoint now = metrics::Clock::now();
  if (effective_ != reconciled_config_ ||
      main_shard_->created(dns_family_) != reconciled_dns_created_) {
    std::vector<std::string_view> services;
    for (const config::Service& service : effective_->services) services.push_back(service.name);
    std::sort(services.begin(), services.end());
    main_shard_->reconcile(dns_family_, now, [&services](std::span<const std::string> labels) {
      return std::binary_search(services.begin(), services.end(), labels[0]);
    });
    reconciled_config_ = effective_;
    reconciled_dns_created_ = main_shard_->created(dns_family_);
  }
  main_shard_->sweep(now);
}

void Daemon::onHeartbeat() {
  // The heartbeat says that connects redirected here will be served, so it must prove every
  // worker alive, not only this thread: each beat wakes the workers, and the next one is
  // written only if each has gone round its loop since. A worker that hangs while this
  // thread runs would otherwise keep getting its share of new connects (its SO_REUSEPORT
  // listeners), none of them served: with the heartbeat held back they go direct after
  // redirect.heartbeat_timeout (four beats).
  size_t stuck = 0;
  for (const auto& worker : workers_) stuck += worker->lastBeat() < pinged_ ? 1u : 0u;
  if (stuck == 0) {
    if (Status s = privileged_->heartbeat(); !s) {
      // It is gone (then this process dies with it) or hung: either way its links redirect
      // nothing once the heartbeat is stale.
      log::error("heartbeat: {}", s.error());
    }
    if (workers_stuck_) log::info("every worker goes round its loop again: heartbeat resumed");
    workers_stuck_ = false;
  } else if (!workers_stuck_) {
    log::error(
        "{} of {} workers did not go round their loops within {} ms: heartbeat held "
        "back, so new connects go direct",
        stuck, workers_.size(),
        std::chrono::duration_cast<std::chrono::milliseconds>(beat_).count());
    workers_stuck_ = true;
  }
  pinged_ = std::chrono::steady_clock::now();
  for (const auto& worker : workers_) worker->ping();
  heartbeat_->arm(beat_);
  expireSeries();
}

// Reload: validate the whole file first; a bad one changes nothing. Services, endpoints,
// balancing and DNS settings apply at once; listeners, workers, limits and the redirect
// settings need a restart, and say so.
void Daemon::reload(const char* why) {
  auto text = privileged_->configText();
  if (!text) {
    log::error({.reason = why}, "config reload ({}): {}; the running config stays", why,
               text.error());
    main_shard_->counter(reload_family_, {"failed"}).inc();
    return;
  }
  if (std::string_view(why) == "file changed" && *text == applied_text_) return;
  auto reloaded = config::parse(*text, "config", config::processEnv());
  if (!reloaded) {
    log::error({.reason = why}, "config reload ({}): {}; the running config stays", why,
               reloaded.error());
    main_shard_->counter(reload_family_, {"failed"}).inc();
    return;
  }
  config::Config next = std::move(reloaded).value();
  // The service ports were bound at start: a reload cannot add more.
  if (next.services.size() > effective_->proxy.service_ports) {
    log::error(
        "config reload ({}): {} services, but the running proxy.service_ports gives ports for "
        "{}; the running config stays",
        why, next.services.size(), effective_->proxy.service_ports);
    main_shard_->counter(reload_family_, {"failed"}).inc();
    return;
  }
  warnAboutRestartOnly(*effective_, next);
  log::configure(next.log.level, next.log.format);
  next.proxy = effective_->proxy;
  next.admin = effective_->admin;
  next.metrics.by_source = effective_->metrics.by_source;
  next.redirect = effective_->redirect;
  next.limits = effective_->limits;
  next.upstream = effective_->upstream;
  effective_ = std::make_shared<const config::Config>(std::move(next));
  setSeriesGrace();
  auto table = registry_->reload(effective_->services);
  if (Status s = privileged_->setServiceAddresses(registry_->redirectAddresses()); !s) {
    log::error("config reload ({}): {}", why, s.error());
  }
  publish(table);
  if (Status s = startDiscovery(); !s) log::error("config reload ({}): {}", why, s.error());
  applied_text_ = std::move(*text);
  main_shard_->counter(reload_family_, {"ok"}).inc();
  log::info("config reloaded ({}): {} services", why, effective_->services.size());
}

void Daemon::onSignal(int signo) {
  if (signo == SIGHUP) {
    reload("SIGHUP");
    return;
  }
  if (signo == SIGUSR1) {  // the privileged part saw the file change
    reload("file changed");
    return;
  }
  if (!running_) {
    log::info("{}: ending the drain now", strsignal(signo));
    cut_drain_ = true;
    return;
  }
  log::info("{}: stopping", strsignal(signo));
  running_ = false;
}

int Daemon::run() {
  while (running_) loop_->runOnce(std::chrono::milliseconds(1000));
  stop();
  return 0;
}

void Daemon::stop() {
  // Detach first: from now on new connects go direct, or to another spindle of this node
  // whose programs stay attached, while this one finishes what it holds.
  if (Status s = privileged_->detach(); !s) log::error("detach: {}", s.error());
  attached_ = false;
  if (admin_server_) admin_server_->stop();  // the port is the other spindle's now
  // The probe socket stays: /ready answers 503 (detached) while this spindle drains.
  drain();
  for (auto& worker : workers_) worker->stop();
  for (auto& worker : workers_) worker->join();
  if (probe_server_) probe_server_->stop();
}

privileged::RedirectState Daemon::redirectState() const {
  auto state = privileged_->redirectState();
  return state ? *state : privileged::RedirectState{};
}

// SIGTERM: stop accepting, and once no listener of this process is left, tell every HTTP/2
// client to go elsewhere (a GOAWAY notice, the final GOAWAY once its PING comes back, at most
// a second later); then wait up to shutdown.drain for the calls in flight. Another signal
// ends the wait.
void Daemon::drain() {
  using Clock = std::chrono::steady_clock;
  using proxy::DrainStep;
  const std::chrono::milliseconds limit = effective_->shutdown.drain;
  if (limit.count() == 0) return;
  auto drainWorkers = [this](DrainStep step) {
    for (auto& worker : workers_) worker->drain(step);
  };
  auto any = [this](auto predicate) {
    return std::any_of(workers_.begin(), workers_.end(), predicate);
  };
  const auto start = Clock::now();
  // What the programs redirected just before the detach is still being accepted.
  constexpr auto kAcceptGrace = std::chrono::milliseconds(100);
  constexpr auto kFinalAfter = std::chrono::seconds(1);  // after the notice
  while (!cut_drain_ && Clock::now() - start < kAcceptGrace) {
    loop_->runOnce(std::chrono::milliseconds(20));
  }
  // A client told to go elsewhere reconnects at once: were one of our listeners still open
  // (another worker's, not yet woken), the new connection could land there and be sent away
  // again, and a call refused twice fails.
  constexpr auto kCloseWait = std::chrono::milliseconds(500);
  drainWorkers(DrainStep::kStopAccepting);
  const auto closing = Clock::now();
  while (!cut_drain_ && any([](const auto& w) { return w->accepting(); }) &&
         Clock::now() - closing < kCloseWait) {
    loop_->runOnce(std::chrono::milliseconds(5));
  }
  log::info("draining: up to {} ms for the calls in flight", limit.count());
  drainWorkers(DrainStep::kGoaway);
  const auto notice = Clock::now();
  bool final_sent = false;
  for (;;) {
    const auto elapsed = Clock::now() - start;
    if (!any([](const auto& w) { return !w->drained(); })) {
      log::info("drained in {} ms",
                std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count());
      return;
    }
    if (cut_drain_ || elapsed >= limit) {
      log::warn("drain ended with connections still open: they are closed now");
      return;
    }
    if (!final_sent && Clock::now() - notice >= kFinalAfter) {
      drainWorkers(DrainStep::kFinalGoaway);
      final_sent = true;
    }
    loop_->runOnce(std::chrono::milliseconds(50));
  }
}

int runProxy(int channel_fd) {
  auto privileged = std::make_unique<privileged::Client>(privileged::Channel(Fd(channel_fd)));
  auto start = privileged->start();
  if (!start) {
    log::error("proxy: {}", start.error());
    return 1;
  }
  // The file as the privileged part read and checked it.
  auto config = config::parse(start->config_text, "config", config::processEnv());
  if (!config) {
    log::error("proxy: {}", config.error());
    return 1;
  }
  log::configure(config->log.level, config->log.format);
  // Before anything reads a byte from the network, and before any other thread starts
  // (they inherit all of it).
  if (Status s = sandbox::dropPrivileges({config->proxy.uid, config->proxy.gid}); !s) {
    log::error("proxy: {}", s.error());
    return 1;
  }
  // Dies with the privileged part: without it, nothing is redirected here any more, and
  // nothing would tell this process to stop. (Set after the change of user, which clears it.)
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  ::prctl(PR_SET_NAME, "spindle-proxy");
  if (Status s = sandbox::installProxyFilter(); !s) {
    log::error("proxy: {}", s.error());
    return 1;
  }
  log::info("proxy: running as uid {} gid {} with no capability, under seccomp", config->proxy.uid,
            config->proxy.gid);
  auto daemon = Daemon::start(std::move(privileged), std::move(*start), *config);
  if (!daemon) {
    log::error("{}", daemon.error());
    return 1;
  }
  return (*daemon)->run();
}

}  // namespace spindle
