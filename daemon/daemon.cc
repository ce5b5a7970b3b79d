#include "daemon.h"

#include <linux/capability.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <thread>
#include <vector>

#include "net/socket.h"
#include "redirect/platform.h"
#include "status_pages.h"
#include "util/capabilities.h"
#include "util/log.h"

namespace spindle {
namespace {

// SO_MARK on spindle's own upstream sockets, so connect4/6 never redirect them. Chosen clear
// of the bits kube-proxy (0x4000, 0x8000), Calico (0xffff0000) and Cilium (0x0f00) use.
constexpr uint32_t kSocketMark = 0x5d;

constexpr unsigned kMainRingEntries = 64;

// The signals the main loop reads; blocked in every thread before any starts.
sigset_t handledSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  return signals;
}

struct ProxyAddresses {
  std::optional<net::SocketAddress> v4;
  std::optional<net::SocketAddress> v6;
  uint16_t port = 0;
};

static_assert(config::kMaxServicePorts <= SPINDLE_MAX_SERVICE_PORTS,
              "the kernel's service_ports map holds every port proxy.service_ports may give");

Result<ProxyAddresses> proxyAddresses(const config::Config& config) {
  ProxyAddresses out;
  for (const net::SocketAddress& address : config.proxy.listen) {
    const bool unspecified = address.ipString() == "0.0.0.0" || address.ipString() == "::";
    if (unspecified) {
      return makeError(
          fmt::format("proxy.listen {}: needs the node's own address, not a wildcard: connects are "
                      "rewritten to it",
                      address.toString()));
    }
    if (out.port != 0 && address.port() != out.port) {
      return makeError("proxy.listen: all addresses must share one port");
    }
    out.port = address.port();
    (address.isV4() ? out.v4 : out.v6) = address;
  }
  if (out.port == 0) return makeError("proxy.listen: no address");
  return out;
}

unsigned workerCount(const config::Config& config) {
  if (config.proxy.workers != 0) return config.proxy.workers;
  return std::max(1u, std::thread::hardware_concurrency());
}

std::chrono::nanoseconds heartbeatInterval(std::chrono::nanoseconds timeout) {
  // Four beats per timeout: one late beat is not a missed heartbeat.
  return std::clamp<std::chrono::nanoseconds>(timeout / 4, std::chrono::milliseconds(50),
                                              std::chrono::seconds(1));
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// What a reload cannot change in a running process: it is kept, and the log says so.
void warnAboutRestartOnly(const config::Config& running, const config::Config& next) {
  auto warn = [](const char* what) {
    log::warn("config reload: {} changed; it takes effect when spindle restarts", what);
  };
  if (!(running.proxy.listen == next.proxy.listen)) warn("proxy.listen");
  if (running.proxy.workers != next.proxy.workers) warn("proxy.workers");
  if (running.proxy.service_ports != next.proxy.service_ports) warn("proxy.service_ports");
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
  log::info("service {}: {} endpoints:{}", service, set.size(), list);
}

void logCounters(const redirect::Counters& counters) {
  std::string line;
  for (int reason = 0; reason < SPINDLE_REASON_COUNT; ++reason) {
    line += fmt::format("{}{}={}", reason == 0 ? "" : " ", redirect::reasonName(reason),
                        counters[static_cast<size_t>(reason)]);
  }
  log::info("redirect counters: {}", line);
}

// Is another process listening on proxy.listen's port or on the first service port after it
// (another spindle on this node)? A listener of a spindle that just died lingers until the
// kernel has torn down its io_uring, a few milliseconds: give that up to `wait_for_dying`
// before calling the address taken.
Result<bool> anotherSpindle(const config::Config& config,
                            std::chrono::milliseconds wait_for_dying) {
  std::vector<net::SocketAddress> ports;
  for (net::SocketAddress address : config.proxy.listen) {
    ports.push_back(address);
    address.setPort(static_cast<uint16_t>(address.port() + 1));
    ports.push_back(address);
  }
  for (const net::SocketAddress& address : ports) {
    auto taken = net::isListenedOn(address);
    for (int tries = 0; taken && *taken && tries < wait_for_dying.count() / 50; ++tries) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      taken = net::isListenedOn(address);
    }
    if (!taken) return makeError(fmt::format("proxy.listen: {}", taken.error()));
    if (*taken) return true;
  }
  return false;
}

// When a spindle stops, connections still queued on its listeners move to the other
// spindle's listeners of the same port instead of being reset (Linux 5.14+). Per network
// namespace; it changes nothing for sockets without SO_REUSEPORT peers.
void allowListenerMigration() {
  constexpr const char* kPath = "/proc/sys/net/ipv4/tcp_migrate_req";
  std::ifstream in(kPath);
  char value = '0';
  if (in >> value && value == '1') return;
  std::ofstream out(kPath);
  if (!(out << "1\n" << std::flush)) {
    log::warn(
        "cannot set net.ipv4.tcp_migrate_req=1: in a rollout, connections queued on the "
        "stopping spindle's listener are reset instead of moved to the new one");
  }
}

}  // namespace

Daemon::Daemon(std::string config_path, const config::Config& config)
    : config_path_(std::move(config_path)),
      effective_(std::make_shared<const config::Config>(config)) {}

Daemon::~Daemon() = default;

Result<std::unique_ptr<Daemon>> Daemon::start(const std::string& config_path,
                                              const config::Config& config) {
  std::unique_ptr<Daemon> daemon(new Daemon(config_path, config));
  if (Status s = daemon->init(); !s) return Error{s.error()};
  return daemon;
}

Status Daemon::init() {
  const config::Config& config = *effective_;
  const sigset_t signals = handledSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  if (Status s = redirect::checkPrivileges(); !s) return s;
  auto mount = redirect::findCgroup2Mount();
  if (!mount) return Error{mount.error()};
  cgroup_mount_ = *mount;
  const std::string cgroup =
      config.redirect.cgroup.empty() ? cgroup_mount_ : config.redirect.cgroup;
  if (Status s = redirect::checkCgroup2(cgroup); !s) return s;

  auto main_loop = loop::Loop::create(kMainRingEntries);
  if (!main_loop) return Error{main_loop.error()};
  loop_ = std::move(main_loop).value();
  if (Status s = loop::probeOpcodes(*loop_); !s) return s;
  if (Status s = redirect::probeProgramTypes(); !s) return s;

  auto proxy = proxyAddresses(config);
  if (!proxy) return Error{proxy.error()};

  // Two spindles on a node (the old and the new one of a rollout) share the listening port
  // and, through pinned maps, the record of where each redirected connection was going.
  // Without pinned maps they would reject each other's connections: then a second one is
  // refused.
  if (!config.redirect.pin_path.empty()) {
    auto dir = redirect::Redirector::pinDirectory(config.redirect.pin_path);
    if (dir) {
      pin_dir_ = *dir;
    } else {
      log::warn(
          "redirect.pin_path: {}; the maps are not shared, so a second spindle on this "
          "node (a rollout with maxSurge) will not start beside this one",
          dir.error());
    }
  }
  // Without shared maps a dying spindle must be gone first; with them, a live one is welcome.
  auto another = anotherSpindle(config, std::chrono::milliseconds(pin_dir_.empty() ? 2000 : 0));
  if (!another) return Error{another.error()};
  if (*another && pin_dir_.empty()) {
    return makeError(
        fmt::format("proxy.listen: {} is in use: is another spindle running on "
                    "this node? Two can share it only with redirect.pin_path on "
                    "bpffs",
                    config.proxy.listen.front().toString()));
  }
  // A spindle of another map ABI version pins its maps elsewhere (they share no records), and
  // one before ABI version 3 takes its redirects on proxy.listen's port itself. Redirects of
  // this version go to the service ports only, so this one leaves that port to it: neither
  // accepts a connection whose record only the other has.
  const bool other_version =
      *another && !pin_dir_.empty() && ::access((pin_dir_ + "/control").c_str(), F_OK) != 0;
  if (other_version) {
    log::warn(
        "another spindle serves this node with maps of another version (none pinned in {}): "
        "sharing nothing with it, and not listening on {}",
        pin_dir_, config.proxy.listen.front().toString());
  } else if (*another) {
    log::info("another spindle serves this node: sharing its maps in {}", pin_dir_);
  }
  allowListenerMigration();
  // Listeners before the programs are attached: a connect is never redirected to a port
  // that nobody listens on. The listen port (but see other_version), and each service's own
  // port after it.
  std::vector<std::vector<Fd>> listeners(workerCount(config));
  for (std::vector<Fd>& worker_listeners : listeners) {
    for (net::SocketAddress address : config.proxy.listen) {
      const uint32_t first = other_version ? proxy->port + 1u : proxy->port;
      for (uint32_t port = first; port <= proxy->port + config.proxy.service_ports; ++port) {
        address.setPort(static_cast<uint16_t>(port));
        auto fd = net::listenTcp(address, /*reuse_port=*/true);
        if (!fd) {
          return makeError(fmt::format("proxy.listen{}: {}",
                                       port == proxy->port ? "" : " (a service port)", fd.error()));
        }
        // The client's initial sequence number tells its connection from an older one with
        // the same address and ports (OriginalDstMap::take).
        if (Status s = net::saveSyns(fd->get()); !s)
          return makeError(fmt::format("proxy.listen: {}", s.error()));
        worker_listeners.push_back(std::move(*fd));
      }
    }
  }

  // The admin address is bound now, so that a bad one stops the start before anything is
  // attached; it serves once everything it reports on exists.
  if (config.admin.listen) {
    auto created = admin::AdminServer::create(*loop_, *config.admin.listen);
    if (!created) return makeError(fmt::format("admin.listen: {}", created.error()));
    admin_server_ = std::move(created).value();
  }
  if (!config.admin.socket.empty()) {
    auto created = admin::AdminServer::createUnix(*loop_, config.admin.socket);
    if (!created) return makeError(fmt::format("admin.socket: {}", created.error()));
    probe_server_ = std::move(created).value();
  }

  auto netns_cookie = net::networkNamespaceCookie();
  if (!netns_cookie) return Error{netns_cookie.error()};

  auto loaded = redirect::Redirector::load(pin_dir_);
  if (!loaded) return Error{loaded.error()};
  redirector_ = std::move(loaded).value();
  if (!*another) {  // what a spindle that is gone left there
    redirector_->claimServicesMap();
    redirector_->forgetRecords();
  }
  redirect::ControlSettings control;
  control.proxy_v4 = proxy->v4;
  control.proxy_v6 = proxy->v6;
  control.proxy_port = proxy->port;
  control.service_ports = config.proxy.service_ports;
  control.mark = kSocketMark;
  control.netns_cookie = *netns_cookie;
  control.host_netns = config.redirect.host_netns;
  control.heartbeat_timeout = config.redirect.heartbeat_timeout;
  if (Status s = redirector_->setControl(control); !s) return s;
  registry_ = std::make_unique<ServiceRegistry>(config.services);
  if (Status s = redirector_->setServiceAddresses(registry_->redirectAddresses()); !s) return s;

  if (Status s = registerMetrics(); !s) return s;
  if (Status s = redirector_->attach(cgroup); !s) return s;
  for (const std::string& program : redirector_->connectProgramsBefore(cgroup)) {
    log::warn(
        "another BPF program runs before spindle's on connect(): {}; if it rewrites Service "
        "addresses (a CNI's socket load balancer: Cilium socketLB, Calico connect-time load "
        "balancing), spindle sees Pod addresses and balances nothing (README: What the network "
        "sees)",
        program);
  }
  attached_ = true;
  // From here on: SO_MARK on upstream sockets (naming Pods walks the cgroup tree, which
  // needs none). Maps and links are used through the fds already open, which needs no capability
  // (Linux 5.19+). Before the workers start, so that their threads inherit the reduced sets;
  // what is redirected meanwhile waits in the listeners' backlog.
  // upstream.source pod also enters the calling Pod's network namespace (CAP_SYS_ADMIN),
  // found through /proc/<pid>/ns/net of a process of another user (CAP_SYS_PTRACE). Until
  // that moves to a privileged process of its own, the proxy keeps both in this mode.
  const bool from_pods = config.upstream.source == config::Upstream::Source::kPod;
  auto kept = from_pods ? keepOnlyCapabilities({{CAP_NET_ADMIN, "CAP_NET_ADMIN"},
                                                {CAP_SYS_ADMIN, "CAP_SYS_ADMIN"},
                                                {CAP_SYS_PTRACE, "CAP_SYS_PTRACE"}},
                                               {})
                        : keepOnlyCapabilities({{CAP_NET_ADMIN, "CAP_NET_ADMIN"}}, {});
  if (!kept) return Error{kept.error()};
  log::info("capabilities: kept {}, dropped the rest{}; no new privileges", kept->names,
            kept->bounding ? " (bounding set too)" : "");
  if (Status s = startWorkers(std::move(listeners), *netns_cookie); !s) return s;

  beat_ = heartbeatInterval(config.redirect.heartbeat_timeout);
  heartbeat_ = std::make_unique<loop::Timer>(*loop_, [this] { onHeartbeat(); });
  heartbeat_->arm(beat_);

  if (Status s = startDiscovery(); !s) return s;
  // A change of the file reloads it too, including a Kubernetes ConfigMap volume's update.
  applied_text_ = readFile(config_path_);
  watcher_ = std::make_unique<loop::FileWatcher>(*loop_, config_path_, [this] {
    if (readFile(config_path_) != applied_text_) reload("file changed");
  });
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
  log::info("ready: listening on {}, {} workers, {} services, attached to {}", listening,
            workers_.size(), config.services.size(), cgroup);
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
  return {};
}

Status Daemon::startWorkers(std::vector<std::vector<Fd>> listeners, uint64_t netns_cookie) {
  const auto services = registry_->table();
  // One per worker: entering a Pod's namespace changes only the thread that does it.
  std::vector<std::unique_ptr<proxy::UpstreamSockets>> sockets;
  for (size_t w = 0; w < listeners.size(); ++w) {
    if (effective_->upstream.source == config::Upstream::Source::kNode) {
      sockets.push_back(std::make_unique<proxy::NodeSockets>(kSocketMark));
      continue;
    }
    auto pod = proxy::PodSockets::create(kSocketMark, netns_cookie);
    if (!pod) return Error{pod.error()};
    sockets.push_back(std::move(pod).value());
  }
  for (unsigned w = 0; w < listeners.size(); ++w) {
    workers_.push_back(std::make_unique<proxy::Worker>(
        w, std::move(listeners[w]), redirector_->originalDsts(), services, effective_->limits,
        effective_->upstream, std::move(sockets[w]), *families_, metric_registry_.makeShard(),
        effective_->metrics.by_source ? cgroup_mount_ : std::string()));
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
  if (Status s = redirector_->setServiceAddresses(registry_->redirectAddresses()); !s) {
    log::error("service {}: {}", declared->name, s.error());
  }
}

void Daemon::publish(const std::shared_ptr<const lb::ServiceTable>& table) {
  for (auto& worker : workers_) worker->publish(table);
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
    if (Status s = redirector_->heartbeat(); !s) log::error("heartbeat: {}", s.error());
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
}

// Reload: validate the whole file first; a bad one changes nothing. Services, endpoints,
// balancing and DNS settings apply at once; listeners, workers, limits and the redirect
// settings need a restart, and say so.
void Daemon::reload(const char* why) {
  auto reloaded = config::load(config_path_);
  if (!reloaded) {
    log::error("config reload ({}): {}; the running config stays", why, reloaded.error());
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
  next.proxy = effective_->proxy;
  next.admin = effective_->admin;
  next.metrics = effective_->metrics;
  next.redirect = effective_->redirect;
  next.limits = effective_->limits;
  next.upstream = effective_->upstream;
  effective_ = std::make_shared<const config::Config>(std::move(next));
  auto table = registry_->reload(effective_->services);
  if (Status s = redirector_->setServiceAddresses(registry_->redirectAddresses()); !s) {
    log::error("config reload ({}): {}", why, s.error());
  }
  publish(table);
  if (Status s = startDiscovery(); !s) log::error("config reload ({}): {}", why, s.error());
  applied_text_ = readFile(config_path_);
  main_shard_->counter(reload_family_, {"ok"}).inc();
  log::info("config reloaded ({}): {} services", why, effective_->services.size());
}

void Daemon::onSignal(int signo) {
  if (signo == SIGHUP) {
    reload("SIGHUP");
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
  redirector_->detach();
  attached_ = false;
  if (admin_server_) admin_server_->stop();  // the port is the other spindle's now
  // The probe socket stays: /ready answers 503 (detached) while this spindle drains.
  drain();
  const bool listeners_closed =
      std::none_of(workers_.begin(), workers_.end(), [](const auto& w) { return w->accepting(); });
  for (auto& worker : workers_) worker->stop();
  for (auto& worker : workers_) worker->join();
  if (probe_server_) {
    probe_server_->stop();
    ::unlink(effective_->admin.socket.c_str());
  }
  logCounters(redirector_->counters());
  // The last spindle of the node removes the pins; the maps go with the last open fd. Our
  // own listeners linger until the kernel has torn down the workers' rings, unless the drain
  // saw the rings let go of every one of them.
  auto still_another = anotherSpindle(
      *effective_, std::chrono::milliseconds(redirector_->pinned() && !listeners_closed ? 500 : 0));
  if (redirector_->pinned() && still_another && !*still_another) redirector_->unpin();
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

int runDaemon(const std::string& config_path, const config::Config& config) {
  auto daemon = Daemon::start(config_path, config);
  if (!daemon) {
    log::error("{}", daemon.error());
    return 1;
  }
  return (*daemon)->run();
}

}  // namespace spindle
