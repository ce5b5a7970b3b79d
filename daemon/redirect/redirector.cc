#include "redirect/redirector.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <random>

#include "redirect.skel.h"
#include "redirect/platform.h"
#include "util/fd.h"
#include "util/log.h"

namespace spindle::redirect {
namespace {

spindle_sockaddr_key keyOf(const net::SocketAddress& address) {
  spindle_sockaddr_key key{};
  const net::MappedBytes bytes = address.mapped();
  std::memcpy(key.addr, bytes.data(), sizeof(key.addr));
  key.port = htons(address.port());
  return key;
}

bool sameKey(const spindle_sockaddr_key& a, const spindle_sockaddr_key& b) {
  return std::memcmp(&a, &b, sizeof(a)) == 0;
}

uint64_t monotonicNanos() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);  // the clock bpf_ktime_get_ns() reads
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

std::string libbpfError(long rc) { return std::strerror(static_cast<int>(rc < 0 ? -rc : rc)); }

}  // namespace

const char* reasonName(int reason) {
  switch (reason) {
    case SPINDLE_REASON_REDIRECTED: return "redirected";
    case SPINDLE_REASON_NOT_SERVICE: return "not_service";
    case SPINDLE_REASON_HOST_NETNS: return "host_netns";
    case SPINDLE_REASON_OWN_SOCKET: return "own_socket";
    case SPINDLE_REASON_PROXY_NOT_ALIVE: return "proxy_not_alive";
    case SPINDLE_REASON_MAP_FULL: return "map_full";
    case SPINDLE_REASON_NO_PROXY_FAMILY: return "no_proxy_family";
    case SPINDLE_REASON_RELAYED: return "relayed";
    default: return "unknown";
  }
}

std::optional<OriginalDst> OriginalDstMap::take(const net::SocketAddress& peer, uint16_t proxy_port,
                                                std::optional<uint32_t> isn) const {
  spindle_peer_key key{};
  const net::MappedBytes client = peer.mapped();
  std::memcpy(key.addr, client.data(), sizeof(key.addr));
  key.port = htons(peer.port());
  key.proxy_port = htons(proxy_port);
  spindle_peer_record record{};
  if (bpf_map_lookup_elem(fd_, &key, &record) != 0) return std::nullopt;
  // The client of an accepted connection has seen the SYN-ACK, so its record has the initial
  // sequence number. Another one is that of a newer connection with the same key (this one's
  // client reset it and the port was reused before this accept): it stays for that one.
  if (!(record.state & SPINDLE_PEER_ESTABLISHED) || (isn && record.isn != *isn)) {
    return std::nullopt;
  }
  // Removed only after the check; if the client's close removed it meanwhile, the copy is
  // still this connection's record.
  if (bpf_map_delete_elem(fd_, &key) == 0) {
    std::atomic_ref<int64_t>(*count_).fetch_sub(1, std::memory_order_relaxed);
  }
  const spindle_orig_dst& orig = record.orig;
  net::MappedBytes bytes;
  std::memcpy(bytes.data(), orig.addr, bytes.size());
  return OriginalDst{net::SocketAddress::fromMapped(bytes, orig.port), orig.service_id,
                     orig.cgroup_id, orig.netns_cookie, orig.pid};
}

Result<std::string> Redirector::pinDirectory(const std::string& pin_path) {
  // The deepest part of the path that exists must be on bpffs; the rest is made there.
  std::string existing = pin_path;
  struct stat st {};
  while (::stat(existing.c_str(), &st) != 0 && existing.size() > 1) {
    existing = existing.substr(0, std::max<size_t>(1, existing.rfind('/')));
  }
  struct statfs fs {};
  if (::statfs(existing.c_str(), &fs) != 0 ||
      fs.f_type != static_cast<decltype(fs.f_type)>(BPF_FS_MAGIC)) {
    return makeError(
        fmt::format("{} is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)", existing));
  }
  const std::string dir = fmt::format("{}/v{}", pin_path, SPINDLE_ABI_VERSION);
  for (size_t slash = dir.find('/', 1);; slash = dir.find('/', slash + 1)) {
    const std::string part = dir.substr(0, slash);
    if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) {
      return makeError(fmt::format("cannot create {}: {}", part, std::strerror(errno)));
    }
    if (slash == std::string::npos) break;
  }
  return dir;
}

Result<std::unique_ptr<Redirector>> Redirector::load(const std::string& pin_dir) {
  std::unique_ptr<Redirector> redirector(new Redirector());
  redirector->skel_ = redirect_bpf__open();
  if (redirector->skel_ == nullptr) {
    return makeError(fmt::format("cannot open the BPF object: {}", std::strerror(errno)));
  }
  if (!pin_dir.empty()) {
    bpf_map* map = nullptr;
    bpf_object__for_each_map(map, redirector->skel_->obj) {
      const std::string path = pin_dir + "/" + bpf_map__name(map);
      if (int rc = bpf_map__set_pin_path(map, path.c_str()); rc != 0) {
        return makeError(fmt::format("pin path {}: {}", path, libbpfError(rc)));
      }
    }
    redirector->pin_dir_ = pin_dir;
  }
  redirector->watches_exits_ = canLoadTracingPrograms();
  if (!redirector->watches_exits_) {
    bpf_program__set_autoload(redirector->skel_->progs.spindle_proxy_exit, false);
  }
  int rc = redirect_bpf__load(redirector->skel_);
  if (rc != 0) {
    if (!pin_dir.empty()) {
      return makeError(fmt::format(
          "the kernel refused spindle's BPF programs, or the maps pinned in {} differ from "
          "this version's: {}",
          pin_dir, libbpfError(rc)));
    }
    return makeError(fmt::format("the kernel refused spindle's BPF programs: {}", libbpfError(rc)));
  }
  // The count of orig_by_peer's records, shared with the kernel side (and with the other
  // spindle of a rollout, through the pin): the workers decrement it as they take records.
  void* count =
      ::mmap(nullptr, static_cast<size_t>(::sysconf(_SC_PAGESIZE)), PROT_READ | PROT_WRITE,
             MAP_SHARED, bpf_map__fd(redirector->skel_->maps.peer_count), 0);
  if (count == MAP_FAILED) {
    return makeError(fmt::format("cannot map the peer_count map: {}", std::strerror(errno)));
  }
  redirector->peer_count_ = static_cast<int64_t*>(count);
  return redirector;
}

void Redirector::forgetRecords() {
  const int fd = bpf_map__fd(skel_->maps.orig_by_peer);
  std::vector<spindle_peer_key> keys;
  spindle_peer_key key{};
  const void* previous = nullptr;
  while (bpf_map_get_next_key(fd, previous, &key) == 0) {
    keys.push_back(key);
    previous = &keys.back();
  }
  for (const spindle_peer_key& old_key : keys) bpf_map_delete_elem(fd, &old_key);
  std::atomic_ref<int64_t>(*peer_count_).store(0, std::memory_order_relaxed);
  if (!keys.empty()) log::info("dropped {} records a spindle that is gone left", keys.size());
}

void Redirector::unpin() {
  if (pin_dir_.empty()) return;
  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, skel_->obj) bpf_map__unpin(map, nullptr);
  ::rmdir(pin_dir_.c_str());
  ::rmdir(pin_dir_.substr(0, pin_dir_.rfind('/')).c_str());  // if no other version uses it
  pin_dir_.clear();
}

void Redirector::claimServicesMap() {
  const int fd = bpf_map__fd(skel_->maps.services);
  spindle_sockaddr_key key{};
  spindle_sockaddr_key next{};
  const void* previous = nullptr;
  while (bpf_map_get_next_key(fd, previous, &next) == 0) {
    service_keys_.push_back(next);
    key = next;
    previous = &key;
  }
  // Ports of services that are gone go with the next setServiceAddresses(); the others stay.
  for (const auto& [port, service_id] : sharedServicePorts()) ports_[service_id] = port;
}

std::map<uint16_t, uint32_t> Redirector::sharedServicePorts() const {
  std::map<uint16_t, uint32_t> ports;
  const int fd = bpf_map__fd(skel_->maps.service_ports);
  uint32_t key = 0;
  uint32_t next = 0;
  const void* previous = nullptr;
  while (bpf_map_get_next_key(fd, previous, &next) == 0) {
    spindle_service_port value{};
    if (bpf_map_lookup_elem(fd, &next, &value) == 0) {
      ports[ntohs(static_cast<uint16_t>(next))] = value.service_id;
    }
    key = next;
    previous = &key;
  }
  return ports;
}

Redirector::~Redirector() {
  detach();
  spindle_instance entry{};
  const int instances = skel_ != nullptr ? bpf_map__fd(skel_->maps.instances) : -1;
  if (instance_ && bpf_map_lookup_elem(instances, &*instance_, &entry) == 0 &&
      entry.owner == self_.owner) {
    const spindle_instance free{};  // the slot is free again
    bpf_map_update_elem(instances, &*instance_, &free, BPF_ANY);
    const spindle_proxy none{};
    bpf_map_update_elem(bpf_map__fd(skel_->maps.proxies), &*instance_, &none, BPF_ANY);
  }
  if (peer_count_ != nullptr) ::munmap(peer_count_, static_cast<size_t>(::sysconf(_SC_PAGESIZE)));
  if (skel_ != nullptr) redirect_bpf__destroy(skel_);
}

Status Redirector::setControl(const ControlSettings& settings) {
  control_ = spindle_control{};
  if (settings.proxy_v4) {
    const net::MappedBytes bytes = settings.proxy_v4->mapped();
    std::memcpy(&control_.proxy_addr4, bytes.data() + 12, 4);
    control_.flags |= SPINDLE_CONTROL_HAS_V4;
  }
  if (settings.proxy_v6) {
    const net::MappedBytes bytes = settings.proxy_v6->mapped();
    std::memcpy(control_.proxy_addr6, bytes.data(), 16);
    control_.flags |= SPINDLE_CONTROL_HAS_V6;
  }
  if (settings.host_netns) control_.flags |= SPINDLE_CONTROL_HOST_NETNS;
  control_.proxy_port = htons(settings.proxy_port);
  service_ports_ = settings.service_ports;
  control_.mark = settings.mark;
  control_.netns_cookie = settings.netns_cookie;
  control_.heartbeat_timeout_ns = static_cast<uint64_t>(settings.heartbeat_timeout.count());
  return heartbeat();
}

Status Redirector::heartbeat() {
  // A proxy that has begun to exit gets no more beats: spindle_proxy_exit zeroed the last, and
  // a beat asked for just before it died must not bring the connects back to it.
  if (proxyExited()) return {};
  control_.heartbeat_ns = monotonicNanos();
  uint32_t zero = 0;
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.control), &zero, &control_, BPF_ANY) != 0) {
    return makeError(fmt::format("updating the control map: {}", std::strerror(errno)));
  }
  if (instance_ && !links_.empty()) {
    self_.heartbeat_ns = control_.heartbeat_ns;
    writeInstance();
  }
  return {};
}

void Redirector::claimInstance(uint32_t workers) {
  if (workers > SPINDLE_MAX_WORKERS) {
    log::warn("{} workers: over {}, the kernel picks among the spindles of the node", workers,
              SPINDLE_MAX_WORKERS);
    return;
  }
  // Silent this long, a spindle is gone (killed: its slot was never freed) or stopped for
  // good; its slot is taken over. Far above any heartbeat timeout.
  constexpr uint64_t kAbandonedNs = 30'000'000'000ull;
  const int fd = bpf_map__fd(skel_->maps.instances);
  const uint64_t now = monotonicNanos();
  std::optional<uint32_t> abandoned;
  for (uint32_t i = 0; i < SPINDLE_MAX_INSTANCES; ++i) {
    spindle_instance entry{};
    if (bpf_map_lookup_elem(fd, &i, &entry) != 0) continue;
    if (entry.owner == 0) {
      instance_ = i;
      break;
    }
    if (!abandoned && now - entry.heartbeat_ns > kAbandonedNs) abandoned = i;
  }
  if (!instance_) instance_ = abandoned;
  if (!instance_) {
    log::warn(
        "two other spindles hold this node's instance slots: the kernel picks among the "
        "spindles' listeners, a hung one's too");
    return;
  }
  self_ = spindle_instance{};
  self_.workers = workers;
  std::random_device random;
  do {
    self_.owner = random();
  } while (self_.owner == 0);
  // Not writeInstance(): an abandoned slot still names its old owner.
  if (bpf_map_update_elem(fd, &*instance_, &self_, BPF_ANY) != 0) {
    log::warn("updating the instances map: {}", std::strerror(errno));
  }
}

bool Redirector::proxyExited() const {
  spindle_proxy entry{};
  return watched_proxy_ != 0 && instance_ &&
         bpf_map_lookup_elem(bpf_map__fd(skel_->maps.proxies), &*instance_, &entry) == 0 &&
         entry.tgid == watched_proxy_ && entry.exited != 0;
}

Status Redirector::watchProxy(pid_t proxy) {
  if (!watches_exits_ || !instance_) return {};
  struct stat pidns {};
  if (::stat("/proc/self/ns/pid", &pidns) != 0) {
    return makeError(fmt::format("stat /proc/self/ns/pid: {}", std::strerror(errno)));
  }
  if (skel_->links.spindle_proxy_exit == nullptr) {
    bpf_link* link =
        bpf_program__attach_raw_tracepoint(skel_->progs.spindle_proxy_exit, "sched_process_exit");
    if (link == nullptr) {
      return makeError(
          fmt::format("attaching to the sched_process_exit tracepoint: {}", std::strerror(errno)));
    }
    skel_->links.spindle_proxy_exit = link;  // destroyed with the skeleton
  }
  spindle_proxy entry{};
  entry.pidns_dev = pidns.st_dev;
  entry.pidns_ino = pidns.st_ino;
  entry.tgid = static_cast<uint32_t>(proxy);
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.proxies), &*instance_, &entry, BPF_ANY) != 0) {
    return makeError(fmt::format("updating the proxies map: {}", std::strerror(errno)));
  }
  watched_proxy_ = entry.tgid;
  return {};
}

void Redirector::writeInstance() {
  const int fd = bpf_map__fd(skel_->maps.instances);
  spindle_instance entry{};
  // A slot taken over while this spindle was stopped: it is the other's now.
  if (bpf_map_lookup_elem(fd, &*instance_, &entry) == 0 && entry.owner != 0 &&
      entry.owner != self_.owner) {
    log::warn("another spindle took this one's instance slot: the kernel picks its listeners");
    instance_.reset();
    return;
  }
  if (bpf_map_update_elem(fd, &*instance_, &self_, BPF_ANY) != 0) {
    log::warn("updating the instances map: {}", std::strerror(errno));
  }
}

Status Redirector::addListener(uint32_t worker, uint32_t port_offset, bool ipv6, int fd,
                               bool first_of_group) {
  if (!instance_) return {};
  const uint32_t key = spindle_listener_key(*instance_, worker, port_offset, ipv6);
  const uint64_t value = static_cast<uint64_t>(fd);
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.listeners), &key, &value, BPF_ANY) != 0) {
    return makeError(
        fmt::format("adding a listener to the listeners map: {}", std::strerror(errno)));
  }
  if (first_of_group) {
    const int program = bpf_program__fd(skel_->progs.spindle_select_listener);
    if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &program, sizeof(program)) != 0) {
      return makeError(fmt::format("attaching the listener program (SO_ATTACH_REUSEPORT_EBPF): {}",
                                   std::strerror(errno)));
    }
  }
  return {};
}

Result<uint16_t> Redirector::portFor(uint32_t service_id,
                                     const std::map<uint16_t, uint32_t>& shared) const {
  const uint32_t first = uint32_t{ntohs(control_.proxy_port)} + 1;
  const uint32_t last = first + service_ports_ - 1;
  if (auto own = ports_.find(service_id); own != ports_.end()) return own->second;
  // Another spindle of the node (the other side of a rollout) gave it one already.
  for (const auto& [port, id] : shared) {
    if (id == service_id && port >= first && port <= last) return port;
  }
  for (uint32_t port = first; port <= last; ++port) {
    const bool taken = shared.count(static_cast<uint16_t>(port)) != 0 ||
                       std::any_of(ports_.begin(), ports_.end(),
                                   [&](const auto& entry) { return entry.second == port; });
    if (!taken) return static_cast<uint16_t>(port);
  }
  return makeError(
      fmt::format("more services than proxy.service_ports ({}) gives ports for", service_ports_));
}

Status Redirector::setServiceAddresses(
    const std::vector<std::pair<net::SocketAddress, uint32_t>>& addresses) {
  // Ports first: a connect redirected to a service's port must find it there.
  const std::map<uint16_t, uint32_t> shared = sharedServicePorts();
  std::map<uint32_t, uint16_t> ports;
  const int ports_fd = bpf_map__fd(skel_->maps.service_ports);
  for (const auto& [address, service_id] : addresses) {
    if (ports.count(service_id) != 0) continue;
    auto port = portFor(service_id, shared);
    if (!port) return Error{port.error()};
    spindle_service_port value{};
    const net::MappedBytes bytes = address.mapped();
    std::memcpy(value.addr, bytes.data(), sizeof(value.addr));
    value.port = htons(address.port());
    value.service_id = service_id;
    const uint32_t key = htons(*port);
    if (bpf_map_update_elem(ports_fd, &key, &value, BPF_ANY) != 0) {
      return makeError(
          fmt::format("adding port {} to the service ports map: {}", *port, std::strerror(errno)));
    }
    ports[service_id] = *port;
    ports_[service_id] = *port;  // taken, for the next service's portFor()
  }

  const int fd = bpf_map__fd(skel_->maps.services);
  std::vector<spindle_sockaddr_key> keys;
  for (const auto& [address, service_id] : addresses) {
    spindle_service_value value{service_id, htons(ports[service_id]), 0};
    spindle_sockaddr_key key = keyOf(address);
    if (bpf_map_update_elem(fd, &key, &value, BPF_ANY) != 0) {
      const int error = errno;
      // What went in stays known, so that a later update removes it if it is not declared.
      for (const spindle_sockaddr_key& added : keys) {
        if (std::none_of(service_keys_.begin(), service_keys_.end(),
                         [&](const spindle_sockaddr_key& k) { return sameKey(k, added); })) {
          service_keys_.push_back(added);
        }
      }
      return makeError(fmt::format("adding {} to the services map: {}", address.toString(),
                                   std::strerror(error)));
    }
    keys.push_back(key);
  }
  // Remove what is no longer declared, after the new entries are in: no gap for the others.
  for (const spindle_sockaddr_key& old_key : service_keys_) {
    bool kept = std::any_of(keys.begin(), keys.end(),
                            [&](const spindle_sockaddr_key& k) { return sameKey(k, old_key); });
    if (!kept) bpf_map_delete_elem(fd, &old_key);
  }
  service_keys_ = std::move(keys);
  for (const auto& [service_id, port] : ports_) {
    if (ports.count(service_id) != 0) continue;
    // Only if it still names this service: the other spindle of a rollout may use it.
    const uint32_t key = htons(port);
    spindle_service_port value{};
    if (bpf_map_lookup_elem(ports_fd, &key, &value) == 0 && value.service_id == service_id) {
      bpf_map_delete_elem(ports_fd, &key);
    }
  }
  ports_ = std::move(ports);
  return {};
}

uint16_t Redirector::servicePort(uint32_t service_id) const {
  auto it = ports_.find(service_id);
  return it == ports_.end() ? 0 : it->second;
}

Status Redirector::attach(const std::string& cgroup_path) {
  // The links hold the cgroup: the fd is closed on return.
  const Fd cgroup(::open(cgroup_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cgroup.valid()) {
    return makeError(fmt::format("cannot open cgroup {}: {}", cgroup_path, std::strerror(errno)));
  }
  bpf_program* programs[] = {
      skel_->progs.spindle_connect4,     skel_->progs.spindle_connect6,
      skel_->progs.spindle_sockops,      skel_->progs.spindle_getpeername4,
      skel_->progs.spindle_getpeername6,
  };
  Status status;
  for (bpf_program* program : programs) {
    bpf_link* link = bpf_program__attach_cgroup(program, cgroup.get());
    if (link == nullptr) {
      status = makeError(fmt::format("cannot attach {} to {}: {}", bpf_program__name(program),
                                     cgroup_path, std::strerror(errno)));
      break;
    }
    links_.push_back(link);
  }
  if (!status) {
    detach();
    return status;
  }
  // This spindle serves from now on: its instance counts as live at once, not from the next
  // beat (spindle_select_listener; spindle_proxy_exit leaves the shared heartbeat to it).
  return heartbeat();
}

std::vector<std::string> Redirector::connectProgramsBefore(const std::string& cgroup_path) const {
  std::vector<std::string> before;
  const Fd cgroup(::open(cgroup_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cgroup.valid()) return before;
  const std::pair<bpf_attach_type, bpf_program*> hooks[] = {
      {BPF_CGROUP_INET4_CONNECT, skel_->progs.spindle_connect4},
      {BPF_CGROUP_INET6_CONNECT, skel_->progs.spindle_connect6},
  };
  for (const auto& [type, ours] : hooks) {
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bpf_program__fd(ours), &info, &len) != 0) continue;
    // In the order the kernel runs them: this cgroup's and its ancestors'.
    std::array<uint32_t, 64> ids{};
    uint32_t count = ids.size();
    if (bpf_prog_query(cgroup.get(), type, BPF_F_QUERY_EFFECTIVE, nullptr, ids.data(), &count) !=
        0) {
      continue;
    }
    for (uint32_t i = 0; i < count && ids[i] != info.id; ++i) {
      const std::string name = programName(ids[i]);
      // Another spindle's (the old one of a rollout): it redirects as this one does.
      if (name.starts_with("spindle_connect")) continue;
      before.push_back(name.empty()
                           ? fmt::format("id {}", ids[i])
                           : fmt::format("{} ({}, id {})", name,
                                         type == BPF_CGROUP_INET4_CONNECT ? "connect4" : "connect6",
                                         ids[i]));
    }
  }
  return before;
}

void Redirector::learnProgramNames(const std::string& cgroup_path) {
  const Fd cgroup(::open(cgroup_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cgroup.valid()) return;
  for (const bpf_attach_type type : {BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT}) {
    std::array<uint32_t, 64> ids{};
    uint32_t count = ids.size();
    if (bpf_prog_query(cgroup.get(), type, BPF_F_QUERY_EFFECTIVE, nullptr, ids.data(), &count) !=
        0) {
      continue;
    }
    for (uint32_t i = 0; i < count; ++i) program_names_[ids[i]] = programName(ids[i]);
  }
}

std::string Redirector::programName(uint32_t id) const {
  if (auto known = program_names_.find(id); known != program_names_.end()) return known->second;
  // Needs CAP_SYS_ADMIN, which the privileged part may have dropped: learnProgramNames asked
  // before.
  const Fd program(bpf_prog_get_fd_by_id(id));
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (!program.valid() || bpf_obj_get_info_by_fd(program.get(), &info, &len) != 0) return "";
  return info.name;
}

void Redirector::detach() {
  for (bpf_link* link : links_) bpf_link__destroy(link);
  links_.clear();
  if (instance_) {
    self_.heartbeat_ns = 0;  // not serving: new connections go to the other spindle's
    writeInstance();
  }
}

Counters Redirector::counters() const {
  Counters totals{};
  const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return totals;
  std::vector<uint64_t> per_cpu(static_cast<size_t>(cpus));
  const int fd = bpf_map__fd(skel_->maps.counters);
  for (uint32_t reason = 0; reason < SPINDLE_REASON_COUNT; ++reason) {
    if (bpf_map_lookup_elem(fd, &reason, per_cpu.data()) != 0) continue;
    for (uint64_t value : per_cpu) totals[reason] += value;
  }
  return totals;
}

int64_t Redirector::peerRecords() const {
  return std::atomic_ref<int64_t>(*peer_count_).load(std::memory_order_relaxed);
}

OriginalDstMap Redirector::originalDsts() const {
  return OriginalDstMap(bpf_map__fd(skel_->maps.orig_by_peer), peer_count_);
}

}  // namespace spindle::redirect
