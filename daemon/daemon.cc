#include "daemon.h"

#include <linux/capability.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "dns/discovery.h"
#include "dns/resolver.h"
#include "loop/loop.h"
#include "metrics/registry.h"
#include "admin/admin_server.h"
#include "net/socket.h"
#include "proxy/h2_connection.h"
#include "proxy/worker.h"
#include "redirect/platform.h"
#include "redirect/redirector.h"
#include "service_registry.h"
#include "status_pages.h"
#include "util/capabilities.h"
#include "util/log.h"

namespace spindle {
namespace {

// SO_MARK on spindle's own upstream sockets, so connect4/6 never redirect them. Chosen clear
// of the bits kube-proxy (0x4000, 0x8000), Calico (0xffff0000) and Cilium (0x0f00) use.
constexpr uint32_t kSocketMark = 0x5d;

constexpr unsigned kMainRingEntries = 64;

// Reads signals as completions of the main loop.
class SignalReader final : public loop::Completion {
 public:
  SignalReader(loop::Loop& loop, int fd, std::function<void(int)> on_signal)
      : loop_(loop), fd_(fd), on_signal_(std::move(on_signal)) {}
  void arm() { io_uring_prep_read(loop_.prepare(this), fd_, &info_, sizeof(info_), 0); }
  void complete(int32_t res, uint32_t /*flags*/) override {
    if (res == static_cast<int32_t>(sizeof(info_))) on_signal_(static_cast<int>(info_.ssi_signo));
    arm();
  }

 private:
  loop::Loop& loop_;
  int fd_;
  std::function<void(int)> on_signal_;
  signalfd_siginfo info_{};
};

struct ProxyAddresses {
  std::optional<net::SocketAddress> v4;
  std::optional<net::SocketAddress> v6;
  uint16_t port = 0;
};

Result<ProxyAddresses> proxyAddresses(const config::Config& config) {
  ProxyAddresses out;
  for (const net::SocketAddress& address : config.proxy.listen) {
    const bool unspecified = address.ipString() == "0.0.0.0" || address.ipString() == "::";
    if (unspecified) {
      return makeError(fmt::format(
          "proxy.listen {}: needs the node's own address, not a wildcard: connects are "
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
  if (running.admin.listen != next.admin.listen) warn("admin.listen");
  if (running.redirect.cgroup != next.redirect.cgroup ||
      running.redirect.host_netns != next.redirect.host_netns ||
      running.redirect.heartbeat_timeout != next.redirect.heartbeat_timeout) {
    warn("redirect");
  }
}

// Watches the config file's directory with inotify (on the loop) and calls back once events
// have been quiet for a moment: an editor's save or a ConfigMap update is several events.
class ConfigWatcher final : public loop::Completion {
 public:
  ConfigWatcher(loop::Loop& loop, const std::string& path, std::function<void()> on_change)
      : loop_(loop), on_change_(std::move(on_change)), settle_(loop, [this] { on_change_(); }) {
    fd_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    const std::string dir = std::filesystem::path(path).parent_path().string();
    if (!fd_.valid() ||
        ::inotify_add_watch(fd_.get(), dir.empty() ? "." : dir.c_str(),
                            IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE) < 0) {
      log::warn("config: cannot watch {} ({}); reload with SIGHUP", path, std::strerror(errno));
      fd_.reset();
      return;
    }
    arm();
  }

  void complete(int32_t res, uint32_t /*flags*/) override {
    if (res < 0 && res != -EAGAIN && res != -EINTR) return;  // cancelled at exit
    if (res > 0 && !settle_.armed()) settle_.arm(kSettle);
    arm();
  }

 private:
  static constexpr auto kSettle = std::chrono::milliseconds(200);
  void arm() { io_uring_prep_read(loop_.prepare(this), fd_.get(), events_, sizeof(events_), 0); }

  loop::Loop& loop_;
  std::function<void()> on_change_;
  loop::Timer settle_;
  Fd fd_;
  alignas(inotify_event) char events_[4096] = {};
};

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

// Is another process listening on proxy.listen (another spindle on this node)? A listener of
// a spindle that just died lingers until the kernel has torn down its io_uring, a few
// milliseconds: give that up to `wait_for_dying` before calling the address taken.
Result<bool> anotherSpindle(const config::Config& config,
                            std::chrono::milliseconds wait_for_dying) {
  for (const net::SocketAddress& address : config.proxy.listen) {
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
    log::warn("cannot set net.ipv4.tcp_migrate_req=1: in a rollout, connections queued on the "
              "stopping spindle's listener are reset instead of moved to the new one");
  }
}

// SIGTERM: stop accepting, and once no listener of this process is left, tell every HTTP/2
// client to go elsewhere (a GOAWAY notice, the final GOAWAY once its PING comes back, at most
// a second later); then wait up to `limit` for the calls in flight. Another signal (cut)
// ends the wait.
void drain(loop::Loop& loop, std::vector<std::unique_ptr<proxy::Worker>>& workers,
           std::chrono::milliseconds limit, const bool& cut) {
  if (limit.count() == 0) return;
  using proxy::DrainStep;
  const auto start = std::chrono::steady_clock::now();
  // What the programs redirected just before the detach is still being accepted.
  constexpr auto kAcceptGrace = std::chrono::milliseconds(100);
  constexpr auto kFinalAfter = std::chrono::seconds(1);  // after the notice
  while (!cut && std::chrono::steady_clock::now() - start < kAcceptGrace) {
    loop.runOnce(std::chrono::milliseconds(20));
  }
  // A client told to go elsewhere reconnects at once: were one of our listeners still open
  // (another worker's, not yet woken), the new connection could land there and be sent away
  // again, and a call refused twice fails.
  constexpr auto kCloseWait = std::chrono::milliseconds(500);
  for (auto& worker : workers) worker->drain(DrainStep::kStopAccepting);
  const auto closing = std::chrono::steady_clock::now();
  auto accepting = [&] {
    return std::any_of(workers.begin(), workers.end(),
                       [](const auto& w) { return w->accepting(); });
  };
  while (!cut && accepting() && std::chrono::steady_clock::now() - closing < kCloseWait) {
    loop.runOnce(std::chrono::milliseconds(5));
  }
  log::info("draining: up to {} ms for the calls in flight", limit.count());
  for (auto& worker : workers) worker->drain(DrainStep::kGoaway);
  const auto notice = std::chrono::steady_clock::now();
  bool final_sent = false;
  for (;;) {
    const auto elapsed = std::chrono::steady_clock::now() - start;
    const bool all_drained = std::all_of(workers.begin(), workers.end(),
                                         [](const auto& w) { return w->drained(); });
    if (all_drained) {
      log::info("drained in {} ms",
                std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count());
      return;
    }
    if (cut || elapsed >= limit) {
      log::warn("drain ended with connections still open: they are closed now");
      return;
    }
    if (!final_sent && std::chrono::steady_clock::now() - notice >= kFinalAfter) {
      for (auto& worker : workers) worker->drain(DrainStep::kFinalGoaway);
      final_sent = true;
    }
    loop.runOnce(std::chrono::milliseconds(50));
  }
}

}  // namespace

int runDaemon(const std::string& config_path, const config::Config& config) {
  auto fail = [](const std::string& message) {
    log::error("{}", message);
    return 1;
  };

  // Signals are read from a signalfd on the main loop; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  if (Status s = redirect::checkPrivileges(); !s) return fail(s.error());

  auto mount = redirect::findCgroup2Mount();
  if (!mount) return fail(mount.error());
  const std::string cgroup_mount = *mount;
  const std::string cgroup = config.redirect.cgroup.empty() ? cgroup_mount : config.redirect.cgroup;
  if (Status s = redirect::checkCgroup2(cgroup); !s) return fail(s.error());

  auto main_loop = loop::Loop::create(kMainRingEntries);
  if (!main_loop) return fail(main_loop.error());
  loop::Loop& loop = **main_loop;
  if (Status s = loop::probeOpcodes(loop); !s) return fail(s.error());
  if (Status s = redirect::probeProgramTypes(); !s) return fail(s.error());

  auto proxy = proxyAddresses(config);
  if (!proxy) return fail(proxy.error());

  // Two spindles on a node (the old and the new one of a rollout) share the listening port
  // and, through pinned maps, the record of where each redirected connection was going.
  // Without pinned maps they would reject each other's connections: then a second one is
  // refused.
  std::string pin_dir;
  if (!config.redirect.pin_path.empty()) {
    auto dir = redirect::Redirector::pinDirectory(config.redirect.pin_path);
    if (dir) {
      pin_dir = *dir;
    } else {
      log::warn("redirect.pin_path: {}; the maps are not shared, so a second spindle on this "
                "node (a rollout with maxSurge) will not start beside this one",
                dir.error());
    }
  }
  // Without shared maps a dying spindle must be gone first; with them, a live one is welcome.
  auto another = anotherSpindle(config, std::chrono::milliseconds(pin_dir.empty() ? 2000 : 0));
  if (!another) return fail(another.error());
  if (*another && pin_dir.empty()) {
    return fail(fmt::format("proxy.listen: {} is in use: is another spindle running on this "
                            "node? Two can share it only with redirect.pin_path on bpffs",
                            config.proxy.listen.front().toString()));
  }
  if (*another) log::info("another spindle serves this node: sharing its maps in {}", pin_dir);
  allowListenerMigration();
  // Listeners before the programs are attached: a connect is never redirected to a port
  // that nobody listens on.
  const unsigned workers = workerCount(config);
  std::vector<std::vector<Fd>> listeners(workers);
  for (unsigned w = 0; w < workers; ++w) {
    for (const net::SocketAddress& address : config.proxy.listen) {
      auto fd = net::listenTcp(address, /*reuse_port=*/true);
      if (!fd) return fail(fmt::format("proxy.listen: {}", fd.error()));
      listeners[w].push_back(std::move(*fd));
    }
  }

  // The admin address is bound now, so that a bad one stops the start before anything is
  // attached; it serves once everything it reports on exists.
  std::unique_ptr<admin::AdminServer> admin_server;
  if (config.admin.listen) {
    auto created = admin::AdminServer::create(loop, *config.admin.listen);
    if (!created) return fail(fmt::format("admin.listen: {}", created.error()));
    admin_server = std::move(created).value();
  }
  std::unique_ptr<admin::AdminServer> probe_server;
  if (!config.admin.socket.empty()) {
    auto created = admin::AdminServer::createUnix(loop, config.admin.socket);
    if (!created) return fail(fmt::format("admin.socket: {}", created.error()));
    probe_server = std::move(created).value();
  }

  auto netns_cookie = net::networkNamespaceCookie();
  if (!netns_cookie) return fail(netns_cookie.error());

  auto loaded = redirect::Redirector::load(pin_dir);
  if (!loaded) return fail(loaded.error());
  redirect::Redirector& redirector = **loaded;
  if (!*another) redirector.claimServicesMap();  // what a spindle that is gone left there
  redirect::ControlSettings control;
  control.proxy_v4 = proxy->v4;
  control.proxy_v6 = proxy->v6;
  control.proxy_port = proxy->port;
  control.mark = kSocketMark;
  control.netns_cookie = *netns_cookie;
  control.host_netns = config.redirect.host_netns;
  control.heartbeat_timeout = config.redirect.heartbeat_timeout;
  if (Status s = redirector.setControl(control); !s) return fail(s.error());
  ServiceRegistry registry(config.services);
  if (Status s = redirector.setServiceAddresses(registry.redirectAddresses()); !s) {
    return fail(s.error());
  }

  // Metrics: every family is registered before the first shard freezes the registry.
  metrics::Registry metric_registry;
  auto families = proxy::ProxyFamilies::registerIn(metric_registry);
  if (!families) return fail(families.error());
  auto dns_family = metric_registry.add(
      {"spindle_dns_resolutions_total", "DNS answers for the services' endpoints, by result.",
       metrics::Type::kCounter, {"service", "result"}, {}, 1024});
  if (!dns_family) return fail(dns_family.error());
  auto reload_family = metric_registry.add(
      {"spindle_config_reloads_total", "Configuration reloads, by result.",
       metrics::Type::kCounter, {"result"}, {}, 4});
  if (!reload_family) return fail(reload_family.error());
  std::unique_ptr<metrics::Shard> main_shard = metric_registry.makeShard();

  const auto services = registry.table();
  if (Status s = redirector.attach(cgroup); !s) return fail(s.error());
  bool attached = true;
  // From here on: SO_MARK on upstream sockets, and open_by_handle_at for per-Pod counts when
  // granted. Maps and links are used through the fds already open, which needs no capability
  // (Linux 5.19+). Before the workers start, so that their threads inherit the reduced sets;
  // what is redirected meanwhile waits in the listeners' backlog.
  auto kept = keepOnlyCapabilities({{CAP_NET_ADMIN, "CAP_NET_ADMIN"}},
                                   {{CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"}});
  if (!kept) return fail(kept.error());
  log::info("capabilities: kept {}, dropped the rest{}; no new privileges", kept->names,
            kept->bounding ? " (bounding set too)" : "");
  std::vector<std::unique_ptr<proxy::Worker>> worker_list;
  for (unsigned w = 0; w < workers; ++w) {
    worker_list.push_back(std::make_unique<proxy::Worker>(
        w, std::move(listeners[w]), redirector.originalDsts(), services, config.limits,
        kSocketMark, *families,
        metric_registry.makeShard(), cgroup_mount));
    if (Status s = worker_list.back()->start(); !s) return fail(s.error());
  }

  const auto beat = heartbeatInterval(config.redirect.heartbeat_timeout);
  loop::Timer heartbeat(loop, [&] {
    if (Status s = redirector.heartbeat(); !s) log::error("heartbeat: {}", s.error());
    heartbeat.arm(beat);
  });
  heartbeat.arm(beat);

  // The config in effect: a reload replaces it, except for what needs a restart.
  std::shared_ptr<const config::Config> effective = std::make_shared<const config::Config>(config);
  auto publish = [&](const std::shared_ptr<const lb::ServiceTable>& table) {
    for (auto& worker : worker_list) worker->publish(table);
  };

  // DNS: endpoints of services that name a headless Service, and intercepts given as names.
  // Made anew on each reload: the names and the servers may have changed.
  std::unique_ptr<dns::CaresResolver> resolver;
  std::unique_ptr<dns::Discovery> discovery;
  auto startDiscovery = [&]() -> Status {
    discovery.reset();
    resolver.reset();
    const config::Config& c = *effective;
    if (!needsDns(c)) return {};
    auto created = dns::CaresResolver::create(loop, c.dns.servers);
    if (!created) return Error{created.error()};
    resolver = std::move(created).value();
    discovery = std::make_unique<dns::Discovery>(
        loop, *resolver,
        dns::PolicySettings{c.dns.refresh_min, c.dns.refresh_max, c.dns.empty_confirmations});
    for (const config::Service& service : c.services) {
      const size_t index = *registry.indexOf(service.name);
      const std::string name = service.name;
      if (!service.endpoints.dns.empty()) {
        discovery->watch(
            service.endpoints.dns,
            [&, index, name](const auto& addresses) {
              auto table = registry.setEndpoints(index, addresses);
              logEndpoints(name, *(*table)[index].endpoints);
              publish(table);
            },
            [&, name](dns::Outcome outcome) {
              const char* result = outcome == dns::Outcome::kRecords ? "records"
                                   : outcome == dns::Outcome::kEmpty ? "empty"
                                                                     : "failure";
              main_shard->counter(*dns_family, {name, result}).inc();
            });
      }
      for (size_t j = 0; j < service.intercept.size(); ++j) {
        if (service.intercept[j].literal) continue;
        const std::string text = service.intercept[j].text;
        discovery->watch(service.intercept[j].host, [&, index, j, name, text](const auto& addresses) {
          registry.setInterceptAddresses(index, j, addresses);
          log::info("service {}: intercept {} is {} addresses", name, text, addresses.size());
          if (Status s = redirector.setServiceAddresses(registry.redirectAddresses()); !s) {
            log::error("service {}: {}", name, s.error());
          }
        });
      }
    }
    return {};
  };
  if (Status s = startDiscovery(); !s) return fail(s.error());

  // Reload: validate the whole file first; a bad one changes nothing. Services, endpoints,
  // balancing and DNS settings apply at once; listeners, workers and the redirect settings
  // need a restart, and say so.
  std::string applied_text = readFile(config_path);
  auto reload = [&](const char* why) {
    auto reloaded = config::load(config_path);
    if (!reloaded) {
      log::error("config reload ({}): {}; the running config stays", why, reloaded.error());
      main_shard->counter(*reload_family, {"failed"}).inc();
      return;
    }
    config::Config next = std::move(reloaded).value();
    warnAboutRestartOnly(*effective, next);
    next.proxy = effective->proxy;
    next.admin = effective->admin;
    next.redirect = effective->redirect;
    effective = std::make_shared<const config::Config>(std::move(next));
    auto table = registry.reload(effective->services);
    if (Status s = redirector.setServiceAddresses(registry.redirectAddresses()); !s) {
      log::error("config reload ({}): {}", why, s.error());
    }
    publish(table);
    if (Status s = startDiscovery(); !s) log::error("config reload ({}): {}", why, s.error());
    applied_text = readFile(config_path);
    main_shard->counter(*reload_family, {"ok"}).inc();
    log::info("config reloaded ({}): {} services", why, effective->services.size());
  };

  // A change of the file reloads it too, including a Kubernetes ConfigMap volume's update,
  // which swaps a "..data" symlink in the file's directory: watch the directory, and reload
  // once the events settle and the content differs from what was applied.
  ConfigWatcher watcher(loop, config_path, [&] {
    if (readFile(config_path) != applied_text) reload("file changed");
  });

  Fd signal_fd(::signalfd(-1, &signals, SFD_CLOEXEC));
  if (!signal_fd.valid()) return fail(fmt::format("signalfd: {}", std::strerror(errno)));
  bool running = true;
  bool cut_drain = false;
  SignalReader signal_reader(loop, signal_fd.get(), [&](int signo) {
    if (signo == SIGHUP) {
      reload("SIGHUP");
      return;
    }
    if (!running) {
      log::info("{}: ending the drain now", strsignal(signo));
      cut_drain = true;
      return;
    }
    log::info("{}: stopping", strsignal(signo));
    running = false;
  });
  signal_reader.arm();

  const StatusSources status_sources{effective, metric_registry, *main_shard, worker_list,
                                     redirector,  registry,        discovery,   attached};
  for (admin::AdminServer* server : {admin_server.get(), probe_server.get()}) {
    if (server == nullptr) continue;
    installStatusPages(*server, status_sources);
    server->start();
  }

  std::string listening;
  for (const net::SocketAddress& address : config.proxy.listen) {
    listening += (listening.empty() ? "" : ", ") + address.toString();
  }
  log::info("ready: listening on {}, {} workers, {} services, attached to {}", listening,
            workers, config.services.size(), cgroup);

  while (running) loop.runOnce(std::chrono::milliseconds(1000));

  // Detach first: from now on new connects go direct, or to another spindle of this node
  // whose programs stay attached, while this one finishes what it holds.
  redirector.detach();
  attached = false;
  if (admin_server) admin_server->stop();  // the port is the other spindle's now
  // The probe socket stays: /ready answers 503 (detached) while this spindle drains.
  drain(loop, worker_list, effective->shutdown.drain, cut_drain);
  const bool listeners_closed = std::none_of(worker_list.begin(), worker_list.end(),
                                             [](const auto& w) { return w->accepting(); });
  for (auto& worker : worker_list) worker->stop();
  for (auto& worker : worker_list) worker->join();
  if (probe_server) {
    probe_server->stop();
    ::unlink(config.admin.socket.c_str());
  }
  logCounters(redirector.counters());
  // The last spindle of the node removes the pins; the maps go with the last open fd. Our
  // own listeners linger until the kernel has torn down the workers' rings, unless the drain
  // saw the rings let go of every one of them.
  auto still_another = anotherSpindle(
      *effective, std::chrono::milliseconds(redirector.pinned() && !listeners_closed ? 500 : 0));
  if (redirector.pinned() && still_another && !*still_another) redirector.unpin();
  return 0;
}

}  // namespace spindle
