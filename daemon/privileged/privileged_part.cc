#include "privileged/privileged_part.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <thread>
#include <vector>

#include "loop/file_watcher.h"
#include "loop/loop.h"
#include "loop/signal_reader.h"
#include "net/socket.h"
#include "privileged/callers.h"
#include "privileged/channel.h"
#include "proxy/upstream_sockets.h"
#include "redirect/platform.h"
#include "redirect/redirector.h"
#include "util/capabilities.h"
#include "util/log.h"

extern char** environ;

namespace spindle::privileged {
namespace {

// SO_MARK on spindle's own upstream sockets, so connect4/6 never redirect them. Chosen clear
// of the bits kube-proxy (0x4000, 0x8000), Calico (0xffff0000) and Cilium (0x0f00) use.
constexpr uint32_t kSocketMark = 0x5d;
constexpr unsigned kRingEntries = 64;
// The fd the proxy finds its channel on.
constexpr int kProxyChannelFd = 3;
// How long a request may take to arrive in full once its first part has.
constexpr auto kPartTimeout = std::chrono::milliseconds(500);

static_assert(config::kMaxServicePorts <= SPINDLE_MAX_SERVICE_PORTS,
              "the kernel's service_ports map holds every port proxy.service_ports may give");
static_assert(SPINDLE_REASON_COUNT <= std::size(RedirectState{}.counters));

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

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
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

void logCounters(const redirect::Counters& counters) {
  std::string line;
  for (int reason = 0; reason < SPINDLE_REASON_COUNT; ++reason) {
    line += fmt::format("{}{}={}", reason == 0 ? "" : " ", redirect::reasonName(reason),
                        counters[static_cast<size_t>(reason)]);
  }
  log::info("redirect counters: {}", line);
}

class PrivilegedPart {
 public:
  PrivilegedPart(std::string config_path, const config::Config& config)
      : config_path_(std::move(config_path)), config_(config) {}
  Status start();
  int run();

 private:
  // Reads one channel: its requests come in turn, each answered before the next is read.
  struct Peer final : loop::Completion {
    Peer(PrivilegedPart& o, Channel c) : owner(o), channel(std::move(c)) {}
    void arm() { owner.loop_->poll(this, channel.fd(), POLLIN); }
    void complete(int32_t res, uint32_t flags) override;
    PrivilegedPart& owner;
    Channel channel;
  };

  Result<pid_t> spawnProxy(Fd channel);
  void serve(Peer& peer);
  void answer(Peer& peer, const Message& request);
  void reply(Peer& peer, int32_t status, std::span<const uint8_t> payload = {},
             std::span<const int> fds = {});
  void replyStatus(Peer& peer, const Status& status);
  // The proxy exited, or (kill) is to be stopped now: detach, reap it, end the run.
  void onProxyGone(const char* why, bool kill = false);
  void onSignal(int signo);

  const std::string config_path_;
  const config::Config config_;
  std::vector<config::Service> declared_ = config_.services;  // as the file says now
  std::string cgroup_;
  std::string pin_dir_;
  std::string config_text_;  // the file as last read: a change event alone is no change
  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<redirect::Redirector> redirector_;
  std::unique_ptr<proxy::UpstreamSockets> sockets_;
  Callers callers_;  // whose namespaces kSocket may enter
  // Handed to the proxy at its start, then closed here: a listener open in this process
  // would keep taking connections that nobody serves once the proxy is gone.
  std::vector<Fd> handover_;
  StartReply start_{};
  bool started_ = false;                      // the proxy took what kStart gives
  std::vector<std::unique_ptr<Peer>> peers_;  // the main channel first
  std::unique_ptr<loop::SignalReader> signals_;
  std::unique_ptr<loop::FileWatcher> watcher_;
  pid_t proxy_ = -1;
  bool stopping_ = false;  // SIGTERM: the proxy drains
  bool done_ = false;
  int exit_code_ = 1;
  Message request_;
};

Status PrivilegedPart::start() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  if (Status s = redirect::checkPrivileges(); !s) return s;
  auto mount = redirect::findCgroup2Mount();
  if (!mount) return Error{mount.error()};
  cgroup_ = config_.redirect.cgroup.empty() ? *mount : config_.redirect.cgroup;
  if (Status s = redirect::checkCgroup2(cgroup_); !s) return s;
  if (Status s = redirect::checkKernel(); !s) return s;
  // Its own choice: the proxy, another user, may be refused io_uring where this process is not.
  auto engine = loop::chooseEngine(config_.proxy.io_engine);
  if (!engine) return Error{engine.error()};
  auto created = loop::Loop::create(engine->engine, kRingEntries);
  if (!created) return Error{created.error()};
  loop_ = std::move(created).value();

  auto proxy = proxyAddresses(config_);
  if (!proxy) return Error{proxy.error()};

  // Two spindles on a node (the old and the new one of a rollout) share the listening port
  // and, through pinned maps, the record of where each redirected connection was going.
  // Without pinned maps they would reject each other's connections: then a second one is
  // refused.
  if (!config_.redirect.pin_path.empty()) {
    auto dir = redirect::Redirector::pinDirectory(config_.redirect.pin_path);
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
  auto another = anotherSpindle(config_, std::chrono::milliseconds(pin_dir_.empty() ? 2000 : 0));
  if (!another) return Error{another.error()};
  if (*another && pin_dir_.empty()) {
    return makeError(
        fmt::format("proxy.listen: {} is in use: is another spindle running on "
                    "this node? Two can share it only with redirect.pin_path on "
                    "bpffs",
                    config_.proxy.listen.front().toString()));
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
        pin_dir_, config_.proxy.listen.front().toString());
  } else if (*another) {
    log::info("another spindle serves this node: sharing its maps in {}", pin_dir_);
  }
  allowListenerMigration();

  // The admin listeners first: a bad address stops the start before anything else is made.
  if (config_.admin.listen) {
    // SO_REUSEPORT: during a rollout the new spindle binds the port beside the old one.
    auto fd = net::listenTcp(*config_.admin.listen, /*reuse_port=*/true);
    if (!fd) return makeError(fmt::format("admin.listen: {}", fd.error()));
    handover_.push_back(std::move(*fd));
    start_.admin_tcp = 1;
  }
  if (!config_.admin.socket.empty()) {
    auto fd = net::listenUnix(config_.admin.socket);
    if (!fd) return makeError(fmt::format("admin.socket: {}", fd.error()));
    handover_.push_back(std::move(*fd));
    start_.admin_unix = 1;
  }
  auto pair = Channel::pair();
  if (!pair) return Error{pair.error()};
  Fd proxy_end = pair->second.release();
  peers_.push_back(std::make_unique<Peer>(*this, std::move(pair->first)));
  // One channel per worker: a worker waits only for its own answers.
  start_.workers = workerCount(config_);
  for (unsigned w = 0; w < start_.workers; ++w) {
    auto worker_pair = Channel::pair();
    if (!worker_pair) return Error{worker_pair.error()};
    handover_.push_back(worker_pair->second.release());
    peers_.push_back(std::make_unique<Peer>(*this, std::move(worker_pair->first)));
  }
  // The listen port (but see other_version), and each service's own port after it.
  struct Listener {
    uint32_t worker;
    uint32_t port_offset;
    bool ipv6;
    size_t handover;  // its index in handover_
  };
  std::vector<Listener> listeners;
  for (unsigned w = 0; w < start_.workers; ++w) {
    size_t count = 0;
    for (net::SocketAddress address : config_.proxy.listen) {
      const uint32_t first = other_version ? proxy->port + 1u : proxy->port;
      for (uint32_t port = first; port <= proxy->port + config_.proxy.service_ports; ++port) {
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
        listeners.push_back({w, port - proxy->port, !address.isV4(), handover_.size()});
        handover_.push_back(std::move(*fd));
        ++count;
      }
    }
    start_.listeners_per_worker = static_cast<uint32_t>(count);
  }

  auto netns_cookie = net::networkNamespaceCookie();
  if (!netns_cookie) return Error{netns_cookie.error()};
  start_.netns_cookie = *netns_cookie;
  if (config_.upstream.source == config::Upstream::Source::kNode) {
    sockets_ = std::make_unique<proxy::NodeSockets>(kSocketMark);
  } else {
    auto pod = proxy::PodSockets::create(kSocketMark, *netns_cookie);
    if (!pod) return Error{pod.error()};
    sockets_ = std::move(pod).value();
  }

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
  control.service_ports = config_.proxy.service_ports;
  control.mark = kSocketMark;
  control.netns_cookie = *netns_cookie;
  control.host_netns = config_.redirect.host_netns;
  control.heartbeat_timeout = config_.redirect.heartbeat_timeout;
  if (Status s = redirector_->setControl(control); !s) return s;
  redirector_->claimInstance(start_.workers);
  redirector_->learnProgramNames(cgroup_);
  for (const Listener& listener : listeners) {
    if (Status s =
            redirector_->addListener(listener.worker, listener.port_offset, listener.ipv6,
                                     handover_[listener.handover].get(), listener.worker == 0);
        !s) {
      return s;
    }
  }

  config_text_ = readFile(config_path_);
  auto spawned = spawnProxy(std::move(proxy_end));
  if (!spawned) return Error{spawned.error()};
  proxy_ = *spawned;
  log::info("proxy process started: pid {}", proxy_);
  if (Status s = redirector_->watchProxy(proxy_); !s) {
    ::kill(proxy_, SIGKILL);
    ::waitpid(proxy_, nullptr, 0);
    return s;
  }
  if (!redirector_->watchesExits()) {
    log::warn(
        "no CAP_PERFMON: should the proxy die, connects made before this process has detached "
        "(a few ms) go to it and are refused; with CAP_PERFMON they go direct at once");
  }
  // What this process still does: attach and detach (CAP_BPF, CAP_NET_ADMIN), mark upstream
  // sockets (CAP_NET_ADMIN), signal the proxy (CAP_KILL), and in pod mode make sockets in
  // other namespaces (CAP_SYS_ADMIN), found through other users' /proc/<pid>/ns/net
  // (CAP_SYS_PTRACE). The proxy, started already, changes its user itself.
  const bool from_pods = config_.upstream.source == config::Upstream::Source::kPod;
  // CAP_SYS_ADMIN stands in for CAP_BPF where that is not granted (checkPrivileges).
  const Capability bpf = isPermitted(CAP_BPF) ? Capability{CAP_BPF, "CAP_BPF"}
                                              : Capability{CAP_SYS_ADMIN, "CAP_SYS_ADMIN"};
  auto kept = from_pods ? keepOnlyCapabilities({{CAP_NET_ADMIN, "CAP_NET_ADMIN"},
                                                {CAP_KILL, "CAP_KILL"},
                                                {CAP_SYS_ADMIN, "CAP_SYS_ADMIN"},
                                                {CAP_SYS_PTRACE, "CAP_SYS_PTRACE"}},
                                               {{CAP_BPF, "CAP_BPF"}})
                        : keepOnlyCapabilities(
                              {{CAP_NET_ADMIN, "CAP_NET_ADMIN"}, {CAP_KILL, "CAP_KILL"}, bpf}, {});
  if (!kept) {
    ::kill(proxy_, SIGKILL);
    ::waitpid(proxy_, nullptr, 0);
    return Error{kept.error()};
  }
  log::info("capabilities: kept {}, dropped the rest{}; no new privileges", kept->names,
            kept->bounding ? " (bounding set too)" : "");

  for (auto& peer : peers_) peer->arm();
  auto signal_reader =
      loop::SignalReader::create(*loop_, signals, [this](int signo) { onSignal(signo); });
  if (!signal_reader) return Error{signal_reader.error()};
  signals_ = std::move(signal_reader).value();
  signals_->arm();
  // A change of the file reloads it too, including a Kubernetes ConfigMap volume's update.
  watcher_ = std::make_unique<loop::FileWatcher>(*loop_, config_path_, [this] {
    std::string text = readFile(config_path_);
    if (text == config_text_) return;
    config_text_ = std::move(text);
    if (proxy_ > 0) ::kill(proxy_, SIGUSR1);
  });
  return {};
}

Result<pid_t> PrivilegedPart::spawnProxy(Fd channel) {
  // The proxy is this binary anew (exec): it shares no memory with this process and holds
  // no fd but its channel (every other is close-on-exec), the links least of all.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, channel.get(), kProxyChannelFd);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
  std::string channel_arg = std::to_string(kProxyChannelFd);
  std::string level = log::levelName(log::threshold());
  char arg0[] = "spindle";
  char arg1[] = "--proxy-channel";
  char arg3[] = "--log-level";
  std::vector<char*> argv = {arg0, arg1, channel_arg.data()};
  // The command line's level goes on to the proxy; otherwise it takes the config's.
  if (log::thresholdPinned()) argv.insert(argv.end(), {arg3, level.data()});
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int err =
      ::posix_spawn(&pid, "/proc/self/exe", &actions, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (err != 0) return makeError(fmt::format("starting the proxy process: {}", std::strerror(err)));
  return pid;
}

void PrivilegedPart::Peer::complete(int32_t res, uint32_t /*flags*/) {
  if (owner.done_) return;
  if (res < 0 || (res & (POLLHUP | POLLERR)) != 0) {
    // The proxy's ends close together when it exits; the main one tells.
    if (this == owner.peers_.front().get()) owner.onProxyGone("its channel closed");
    return;
  }
  owner.serve(*this);
  if (!owner.done_) arm();
}

void PrivilegedPart::serve(Peer& peer) {
  if (Status s = peer.channel.receive(request_, kPartTimeout); !s) {
    onProxyGone(s.error().c_str());
    return;
  }
  answer(peer, request_);
}

void PrivilegedPart::reply(Peer& peer, int32_t status, std::span<const uint8_t> payload,
                           std::span<const int> fds) {
  if (Status s = peer.channel.send(request_.op, request_.seq, status, payload, fds); !s) {
    onProxyGone(s.error().c_str());
  }
}

void PrivilegedPart::replyStatus(Peer& peer, const Status& status) {
  if (status) {
    reply(peer, kOk);
  } else {
    reply(peer, kFailed, bytesOf(std::string_view(status.error())));
  }
}

// What the proxy may ask. Each answer is the same code the daemon ran before it was split;
// the proxy gets results, never a handle on the maps or a namespace.
void PrivilegedPart::answer(Peer& peer, const Message& request) {
  switch (request.op) {
    case Op::kStart: {
      if (started_) return reply(peer, kFailed, bytesOf(std::string_view("started already")));
      std::vector<uint8_t> payload(sizeof(start_));
      std::memcpy(payload.data(), &start_, sizeof(start_));
      payload.insert(payload.end(), config_text_.begin(), config_text_.end());
      std::vector<int> fds;
      for (const Fd& fd : handover_) fds.push_back(fd.get());
      reply(peer, kOk, payload, fds);
      handover_.clear();
      started_ = true;
      return;
    }
    case Op::kConfigText: {
      config_text_ = readFile(config_path_);
      // What the proxy may ask to redirect follows the file (a bad one changes nothing).
      if (auto next = config::parse(config_text_, config_path_, config::processEnv())) {
        log::configure(next->log.level, next->log.format);
        declared_ = std::move(next->services);
      }
      return reply(peer, kOk, bytesOf(std::string_view(config_text_)));
    }
    case Op::kServices: {
      std::vector<ServiceAddress> entries;
      if (!readPayload(request, &entries)) break;
      std::vector<std::pair<net::SocketAddress, uint32_t>> addresses;
      std::vector<ServicePort> ports;
      size_t refused = 0;
      for (const ServiceAddress& entry : entries) {
        net::MappedBytes bytes;
        std::memcpy(bytes.data(), entry.addr, bytes.size());
        const auto address = net::SocketAddress::fromMapped(bytes, htons(entry.port));
        // Only what the config declares: a compromised proxy cannot draw the connects to
        // any address of the node's Pods into itself.
        if (!config::mayIntercept(declared_, address, entry.service_id)) {
          if (refused++ == 0) {
            log::warn("the proxy asked to redirect {} for a service that does not intercept it",
                      address.toString());
          }
          continue;
        }
        addresses.emplace_back(address, entry.service_id);
      }
      if (refused > 1) log::warn("{} such addresses in all: left out", refused);
      if (Status s = redirector_->setServiceAddresses(addresses); !s) return replyStatus(peer, s);
      for (const auto& [address, id] : addresses) {
        if (std::none_of(ports.begin(), ports.end(),
                         [id = id](const ServicePort& p) { return p.service_id == id; })) {
          ports.push_back({id, redirector_->servicePort(id), 0});
        }
      }
      return reply(peer, kOk, bytesOf(ports));
    }
    case Op::kAttach: {
      Status s = redirector_->attach(cgroup_);
      if (s) {
        log::info("attached to {}", cgroup_);
        for (const std::string& program : redirector_->connectProgramsBefore(cgroup_)) {
          log::warn(
              "another BPF program runs before spindle's on connect(): {}; if it rewrites "
              "Service addresses (a CNI's socket load balancer: Cilium socketLB, Calico "
              "connect-time load balancing), spindle sees Pod addresses and balances nothing "
              "(README: What the network sees)",
              program);
        }
      }
      return replyStatus(peer, s);
    }
    case Op::kDetach: redirector_->detach(); return reply(peer, kOk);
    case Op::kHeartbeat: return replyStatus(peer, redirector_->heartbeat());
    case Op::kCounters: {
      RedirectState state;
      const redirect::Counters counters = redirector_->counters();
      std::copy(counters.begin(), counters.end(), state.counters);
      state.records = redirector_->peerRecords();
      return reply(peer, kOk, bytesOf(state));
    }
    case Op::kTakeOrigin: {
      TakeOrigin take;
      if (!readPayload(request, &take)) break;
      net::MappedBytes peer_bytes;
      std::memcpy(peer_bytes.data(), take.peer, peer_bytes.size());
      const auto found = redirector_->originalDsts().take(
          net::SocketAddress::fromMapped(peer_bytes, htons(take.peer_port)), take.proxy_port,
          take.has_isn ? std::optional<uint32_t>(take.isn) : std::nullopt);
      if (!found) return reply(peer, kNotFound);
      Origin origin;
      const net::MappedBytes dst = found->destination.mapped();
      std::memcpy(origin.addr, dst.data(), sizeof(origin.addr));
      origin.port = found->destination.port();
      origin.service_id = found->service_id;
      origin.cgroup_id = found->cgroup_id;
      origin.netns_cookie = found->netns_cookie;
      origin.pid = found->pid;
      callers_.seen(found->netns_cookie);
      return reply(peer, kOk, bytesOf(origin));
    }
    case Op::kSocket: {
      SocketRequest want;
      if (!readPayload(request, &want)) break;
      proxy::SocketFailure why = proxy::SocketFailure::kLocal;
      Result<Fd> socket = makeError("not the namespace of a redirected connection");
      const uint64_t cookie = want.caller.netns_cookie;
      // Only where a redirected connection came from (the node's own namespace aside).
      if (!sockets_->perCaller() || cookie == 0 || cookie == start_.netns_cookie ||
          callers_.known(cookie)) {
        socket = sockets_->open({cookie, want.caller.pid}, want.family, &why);
      } else {
        why = proxy::SocketFailure::kCallerNamespace;
        log::warn(
            "the proxy asked for a socket in a network namespace no redirected "
            "connection came from (cookie {}): refused",
            cookie);
      }
      if (socket) {
        const int fd = socket->get();
        return reply(peer, kOk, {}, std::span<const int>(&fd, 1));
      }
      SocketError error;
      error.why = static_cast<uint8_t>(why);
      std::vector<uint8_t> payload(sizeof(error));
      std::memcpy(payload.data(), &error, sizeof(error));
      payload.insert(payload.end(), socket.error().begin(), socket.error().end());
      return reply(peer, kFailed, payload);
    }
    case Op::kHold:
    case Op::kRelease: {
      CallerKey caller;
      if (!readPayload(request, &caller)) break;
      const proxy::Caller key{caller.netns_cookie, caller.pid};
      if (request.op == Op::kHold) {
        sockets_->hold(key);
        callers_.hold(caller.netns_cookie);
      } else {
        sockets_->release(key);
        callers_.release(caller.netns_cookie);
      }
      return reply(peer, kOk);
    }
  }
  // The proxy and this process are one binary: a request it cannot have sent means it is
  // not itself any more. It is stopped, and the node fails open.
  log::error("the proxy sent a malformed request (op {}): stopping it",
             static_cast<unsigned>(request.op));
  onProxyGone("malformed request", /*kill=*/true);
}

void PrivilegedPart::onProxyGone(const char* why, bool kill) {
  if (done_) return;
  done_ = true;
  redirector_->detach();  // from now on every connect goes direct
  if (proxy_ <= 0) return;
  // Its channel closes as it exits: let it finish (a drained proxy exits 0), but not forever.
  if (kill) ::kill(proxy_, SIGKILL);  // no longer to be trusted
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (pid_t reaped = 0; reaped == 0;) {
    reaped = ::waitpid(proxy_, &status, WNOHANG);
    if (reaped < 0 && errno == EINTR) reaped = 0;
    if (reaped < 0) break;
    if (reaped == 0 && std::chrono::steady_clock::now() > deadline) ::kill(proxy_, SIGKILL);
    if (reaped == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (WIFEXITED(status) && stopping_) {
    exit_code_ = WEXITSTATUS(status);
  } else if (WIFEXITED(status)) {
    log::error("the proxy process exited with {} ({}): detached", WEXITSTATUS(status), why);
  } else if (WIFSIGNALED(status)) {
    log::error("the proxy process was killed ({}): detached", strsignal(WTERMSIG(status)));
  }
  proxy_ = -1;
}

void PrivilegedPart::onSignal(int signo) {
  if (proxy_ <= 0) return;
  if (signo == SIGHUP) {
    ::kill(proxy_, SIGHUP);
    return;
  }
  // Detach here too: a proxy that does not go round its loop any more must not delay it.
  if (!stopping_) redirector_->detach();
  stopping_ = true;
  ::kill(proxy_, signo);  // a second one ends the proxy's drain
}

int PrivilegedPart::run() {
  while (!done_) loop_->runOnce(std::chrono::milliseconds(1000));
  logCounters(redirector_->counters());
  if (!config_.admin.socket.empty()) ::unlink(config_.admin.socket.c_str());
  // The last spindle of the node removes the pins; the maps go with the last open fd. The
  // proxy's listeners may linger until the kernel has torn down its rings.
  if (redirector_->pinned()) {
    auto still_another = anotherSpindle(config_, std::chrono::milliseconds(500));
    if (still_another && !*still_another) redirector_->unpin();
  }
  return exit_code_;
}

}  // namespace

int run(const std::string& config_path, const config::Config& config) {
  PrivilegedPart part(config_path, config);
  if (Status s = part.start(); !s) {
    log::error("{}", s.error());
    return 1;
  }
  return part.run();
}

}  // namespace spindle::privileged
