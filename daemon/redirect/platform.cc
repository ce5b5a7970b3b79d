#include "redirect/platform.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/core.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "util/fd.h"

namespace spindle::redirect {
namespace {

#ifndef CAP_BPF
constexpr int kCapBpf = 39;
#else
constexpr int kCapBpf = CAP_BPF;
#endif

#ifndef CAP_PERFMON
constexpr int kCapPerfmon = 38;
#else
constexpr int kCapPerfmon = CAP_PERFMON;
#endif

using CapabilitySets = __user_cap_data_struct[2];

bool readCapabilities(CapabilitySets& data) {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  return ::syscall(SYS_capget, &header, data) == 0;
}

bool hasCapability(const CapabilitySets& data, int cap) {
  const auto index = static_cast<unsigned>(cap) / 32;
  const auto bit = 1u << (static_cast<unsigned>(cap) % 32);
  return (data[index].effective & bit) != 0;
}

}  // namespace

Status checkPrivileges() {
  CapabilitySets data{};
  if (!readCapabilities(data)) {
    return makeError(fmt::format("cannot read capabilities: {}", std::strerror(errno)));
  }
  std::string missing;
  auto need = [&](bool held, const char* name) {
    if (!held) missing += (missing.empty() ? "" : ", ") + std::string(name);
  };
  need(hasCapability(data, kCapBpf) || hasCapability(data, CAP_SYS_ADMIN), "CAP_BPF");
  need(hasCapability(data, CAP_NET_ADMIN), "CAP_NET_ADMIN");
  // The proxy process starts as this user and becomes proxy.uid with nothing left, its
  // bounding set included; signals tell it to reload and stop.
  need(hasCapability(data, CAP_SETUID), "CAP_SETUID");
  need(hasCapability(data, CAP_SETGID), "CAP_SETGID");
  need(hasCapability(data, CAP_SETPCAP), "CAP_SETPCAP");
  need(hasCapability(data, CAP_KILL), "CAP_KILL");
  if (missing.empty()) return {};
  return makeError(fmt::format(
      "missing privilege: spindle needs {} (CAP_BPF and CAP_NET_ADMIN to load and attach its "
      "BPF programs, the others to run its proxy as an unprivileged user; run it as root, or "
      "grant the capabilities)",
      missing));
}

Result<std::string> findCgroup2Mount() {
  std::ifstream mountinfo("/proc/self/mountinfo");
  if (!mountinfo) return makeError("cannot read /proc/self/mountinfo");
  // Fields: id parent major:minor root mount-point options [optional...] - fstype source ...
  std::string line;
  while (std::getline(mountinfo, line)) {
    std::istringstream fields(line);
    std::string id, parent, device, root, mount_point, field;
    fields >> id >> parent >> device >> root >> mount_point;
    while (fields >> field && field != "-") {
    }
    std::string fstype;
    fields >> fstype;
    if (fstype == "cgroup2") return mount_point;
  }
  return makeError("no cgroup v2 mount found: spindle needs the unified cgroup hierarchy");
}

Status checkCgroup2(const std::string& path) {
  struct statfs fs {};
  if (::statfs(path.c_str(), &fs) != 0) {
    return makeError(fmt::format("redirect.cgroup '{}': {}", path, std::strerror(errno)));
  }
  if (fs.f_type != CGROUP2_SUPER_MAGIC) {
    return makeError(fmt::format("redirect.cgroup '{}' is not a cgroup v2 directory", path));
  }
  return {};
}

std::optional<KernelVersion> parseKernelRelease(std::string_view release) {
  KernelVersion version;
  const char* end = release.data() + release.size();
  auto [dot, major_error] = std::from_chars(release.data(), end, version.major);
  if (major_error != std::errc{} || dot == end || *dot != '.') return std::nullopt;
  if (std::from_chars(dot + 1, end, version.minor).ec != std::errc{}) return std::nullopt;
  return version;
}

namespace {

using Probe = KernelFeature::Probe;

constexpr KernelFeature program(const char* name, KernelVersion since, bpf_prog_type type,
                                bpf_attach_type attach = BPF_CGROUP_INET_INGRESS) {
  return {
      .name = name, .since = since, .probe = Probe::kProgram, .program = type, .attach = attach};
}

constexpr KernelFeature contextField(const char* name, KernelVersion since, bpf_prog_type type,
                                     bpf_attach_type attach, uint32_t offset) {
  return {.name = name,
          .since = since,
          .probe = Probe::kContextField,
          .program = type,
          .attach = attach,
          .offset = offset};
}

// Helpers of cgroup sock_addr programs are the same for connect and getpeername: asked of
// connect4's.
constexpr KernelFeature helper(const char* name, KernelVersion since, bpf_prog_type type,
                               bpf_func_id id) {
  return {.name = name,
          .since = since,
          .probe = Probe::kHelper,
          .program = type,
          .attach = type == BPF_PROG_TYPE_CGROUP_SOCK_ADDR ? BPF_CGROUP_INET4_CONNECT
                                                           : BPF_CGROUP_INET_INGRESS,
          .helper = id};
}

constexpr KernelFeature mapType(const char* name, KernelVersion since, bpf_map_type type) {
  return {.name = name, .since = since, .probe = Probe::kMapType, .map = type};
}

constexpr KernelFeature tracing(KernelFeature feature) {
  feature.tracing = true;
  return feature;
}

constexpr auto kSockAddr = BPF_PROG_TYPE_CGROUP_SOCK_ADDR;
constexpr auto kSockOps = BPF_PROG_TYPE_SOCK_OPS;
constexpr auto kReuseport = BPF_PROG_TYPE_SK_REUSEPORT;
constexpr auto kRawTracepoint = BPF_PROG_TYPE_RAW_TRACEPOINT;

// What bpf/redirect.bpf.c and the privileged part use, with the first mainline release of
// each (docs/kernel.md says where each was checked).
constexpr KernelFeature kFeatures[] = {
    program("BPF program type cgroup/connect4", {4, 17}, kSockAddr, BPF_CGROUP_INET4_CONNECT),
    program("BPF program type cgroup/connect6", {4, 17}, kSockAddr, BPF_CGROUP_INET6_CONNECT),
    program("BPF program type cgroup/getpeername4", {5, 8}, kSockAddr,
            BPF_CGROUP_INET4_GETPEERNAME),
    program("BPF program type cgroup/getpeername6", {5, 8}, kSockAddr,
            BPF_CGROUP_INET6_GETPEERNAME),
    program("BPF program type sockops", {4, 13}, kSockOps),
    program("BPF program type sk_reuseport", {4, 19}, kReuseport),
    tracing(program("BPF program type raw_tracepoint", {4, 17}, kRawTracepoint)),
    contextField("BPF context field bpf_sock_addr.sk", {5, 3}, kSockAddr, BPF_CGROUP_INET4_CONNECT,
                 offsetof(bpf_sock_addr, sk)),
    contextField("BPF context field bpf_sock_ops.sk", {5, 3}, kSockOps, BPF_CGROUP_INET_INGRESS,
                 offsetof(bpf_sock_ops, sk)),
    contextField("BPF context field sk_reuseport_md.sk", {5, 14}, kReuseport,
                 BPF_CGROUP_INET_INGRESS, offsetof(sk_reuseport_md, sk)),
    helper("BPF helper bpf_sk_storage_get in cgroup sock_addr programs", {5, 3}, kSockAddr,
           BPF_FUNC_sk_storage_get),
    helper("BPF helper bpf_sk_storage_delete in cgroup sock_addr programs", {5, 3}, kSockAddr,
           BPF_FUNC_sk_storage_delete),
    helper("BPF helper bpf_get_netns_cookie in cgroup sock_addr programs", {5, 7}, kSockAddr,
           BPF_FUNC_get_netns_cookie),
    helper("BPF helper bpf_get_current_cgroup_id in cgroup sock_addr programs", {5, 7}, kSockAddr,
           BPF_FUNC_get_current_cgroup_id),
    helper("BPF helper bpf_get_current_pid_tgid in cgroup sock_addr programs", {5, 7}, kSockAddr,
           BPF_FUNC_get_current_pid_tgid),
    helper("BPF helper bpf_ktime_get_ns in cgroup sock_addr programs", {4, 17}, kSockAddr,
           BPF_FUNC_ktime_get_ns),
    helper("BPF helper bpf_sk_storage_get in sockops programs", {5, 3}, kSockOps,
           BPF_FUNC_sk_storage_get),
    helper("BPF helper bpf_get_socket_cookie in sockops programs", {4, 19}, kSockOps,
           BPF_FUNC_get_socket_cookie),
    helper("BPF helper bpf_sock_ops_cb_flags_set in sockops programs", {4, 16}, kSockOps,
           BPF_FUNC_sock_ops_cb_flags_set),
    helper("BPF helper bpf_timer_init in sockops programs", {5, 15}, kSockOps, BPF_FUNC_timer_init),
    helper("BPF helper bpf_timer_set_callback in sockops programs", {5, 15}, kSockOps,
           BPF_FUNC_timer_set_callback),
    helper("BPF helper bpf_timer_start in sockops programs", {5, 15}, kSockOps,
           BPF_FUNC_timer_start),
    helper("BPF helper bpf_sk_select_reuseport in sk_reuseport programs", {4, 19}, kReuseport,
           BPF_FUNC_sk_select_reuseport),
    helper("BPF helper bpf_ktime_get_ns in sk_reuseport programs", {4, 19}, kReuseport,
           BPF_FUNC_ktime_get_ns),
    tracing(helper("BPF helper bpf_get_ns_current_pid_tgid in raw_tracepoint programs", {5, 7},
                   kRawTracepoint, BPF_FUNC_get_ns_current_pid_tgid)),
    tracing(helper("BPF helper bpf_ktime_get_ns in raw_tracepoint programs", {4, 17},
                   kRawTracepoint, BPF_FUNC_ktime_get_ns)),
    mapType("BPF map type hash", {3, 19}, BPF_MAP_TYPE_HASH),
    mapType("BPF map type array", {3, 19}, BPF_MAP_TYPE_ARRAY),
    mapType("BPF map type percpu_array", {4, 6}, BPF_MAP_TYPE_PERCPU_ARRAY),
    mapType("BPF map type reuseport_sockarray", {4, 19}, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY),
    mapType("BPF map type sk_storage", {5, 2}, BPF_MAP_TYPE_SK_STORAGE),
    {.name = "mmap-able BPF array maps (BPF_F_MMAPABLE)",
     .since = {5, 5},
     .probe = Probe::kMapFlags,
     .map_flags = BPF_F_MMAPABLE},
    {.name = "BPF links for cgroup programs (BPF_LINK_CREATE)",
     .since = {5, 7},
     .probe = Probe::kCgroupLink},
    {.name = "socket option SO_NETNS_COOKIE",
     .since = {5, 14},
     .probe = Probe::kSocketOption,
     .option = SO_NETNS_COOKIE},
};

bpf_insn instruction(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn insn{};
  insn.code = code;
  insn.dst_reg = dst & 0xf;
  insn.src_reg = src & 0xf;
  insn.off = off;
  insn.imm = imm;
  return insn;
}

struct Loaded {
  int error = 0;    // -errno; 0: it loaded
  std::string log;  // the verifier's
};

Loaded load(const KernelFeature& feature, const std::vector<bpf_insn>& insns) {
  char log[4096] = "";
  bpf_prog_load_opts opts{};
  opts.sz = sizeof(opts);
  opts.expected_attach_type = feature.attach;
  opts.log_buf = log;
  opts.log_size = sizeof(log);
  opts.log_level = 1;
  const int fd =
      bpf_prog_load(feature.program, nullptr, "Dual BSD/GPL", insns.data(), insns.size(), &opts);
  if (fd >= 0) ::close(fd);
  return {fd >= 0 ? 0 : fd, log};
}

// A program that returns 1 (allow, for cgroup programs; SK_PASS for sk_reuseport), after
// reading the pointer at `offset` of its context for a context field. An unknown program or
// attach type is EINVAL; a context field the verifier does not know, EACCES; EPERM says
// nothing of the kernel.
int programLoads(const KernelFeature& feature) {
  std::vector<bpf_insn> insns;
  if (feature.probe == Probe::kContextField) {
    insns.push_back(instruction(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_2, BPF_REG_1,
                                static_cast<int16_t>(feature.offset), 0));
  }
  insns.push_back(instruction(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1));
  insns.push_back(instruction(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  const Loaded loaded = load(feature, insns);
  if (loaded.error == 0) return 1;
  return loaded.error == -EINVAL || loaded.error == -EACCES ? 0 : loaded.error;
}

// Calls the helper with whatever the registers hold: the verifier looks the helper up before it
// checks the arguments, so any other complaint means the helper is there. Not
// libbpf_probe_bpf_helper: libbpf 1.1 knows only older kernels' words for "not in this program
// type", and takes a newer kernel's refusal for support.
int helperLoads(const KernelFeature& feature) {
  const std::vector<bpf_insn> insns = {
      instruction(BPF_JMP | BPF_CALL, 0, 0, 0, feature.helper),
      instruction(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
  };
  const Loaded loaded = load(feature, insns);
  if (loaded.error == 0) return 1;
  for (const char* refusal : {
           "invalid func ",                            // an id it does not know
           "unknown func ",                            // not in this program type: older kernels
           "program of this type cannot use helper ",  // the same: newer kernels
       }) {
    if (loaded.log.find(refusal) != std::string::npos) return 0;
  }
  return loaded.log.empty() ? loaded.error : 1;
}

}  // namespace

std::span<const KernelFeature> kernelFeatures() { return kFeatures; }

KernelVersion kernelFloor(std::span<const KernelFeature> features) {
  KernelVersion floor;
  for (const KernelFeature& feature : features) floor = std::max(floor, feature.since);
  return floor;
}

int probeKernelFeature(const KernelFeature& feature) {
  switch (feature.probe) {
    // Not libbpf_probe_bpf_prog_type: it cannot ask for an attach type, and it answers "absent"
    // for a load refused with EPERM too.
    case Probe::kProgram:
    case Probe::kContextField: return programLoads(feature);
    case Probe::kHelper: return helperLoads(feature);
    // libbpf's answers "absent" for EPERM too, but a refused program load has stopped the
    // check before the maps: the programs come first in the table.
    case Probe::kMapType: return libbpf_probe_bpf_map_type(feature.map, nullptr);
    case Probe::kMapFlags: {
      bpf_map_create_opts opts{};
      opts.sz = sizeof(opts);
      opts.map_flags = feature.map_flags;
      const int fd =
          bpf_map_create(BPF_MAP_TYPE_ARRAY, nullptr, sizeof(uint32_t), sizeof(uint64_t), 1, &opts);
      if (fd >= 0) ::close(fd);
      return fd >= 0 ? 1 : fd == -EINVAL ? 0 : fd;
    }
    case Probe::kCgroupLink: {
      // No program: a kernel that knows the command looks for one first (EBADF); an older one
      // does not know the command (EINVAL).
      const int fd = bpf_link_create(-1, -1, BPF_CGROUP_INET4_CONNECT, nullptr);
      if (fd >= 0) ::close(fd);
      return fd >= 0 || fd == -EBADF ? 1 : fd == -EINVAL ? 0 : fd;
    }
    case Probe::kSocketOption: {
      const Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      if (!fd.valid()) return -errno;
      uint64_t value = 0;
      socklen_t len = sizeof(value);
      if (::getsockopt(fd.get(), SOL_SOCKET, feature.option, &value, &len) == 0) return 1;
      return errno == ENOPROTOOPT ? 0 : -errno;
    }
  }
  return -EINVAL;
}

Status firstMissingFeature(std::span<const KernelFeature> features, const FeatureProbe& probe,
                           std::string_view release) {
  const KernelVersion floor = kernelFloor(features);
  for (const KernelFeature& feature : features) {
    const int present = probe(feature);
    if (present > 0) continue;
    const std::string what =
        fmt::format("{} (Linux {}.{})", feature.name, feature.since.major, feature.since.minor);
    if (present < 0) {
      return makeError(
          fmt::format("cannot tell whether the kernel has {}: {}", what, std::strerror(-present)));
    }
    const std::optional<KernelVersion> running = parseKernelRelease(release);
    if (running && *running >= floor) {
      return makeError(
          fmt::format("the kernel lacks {}: this {} kernel was built without it", what, release));
    }
    return makeError(
        fmt::format("the kernel lacks {}: spindle needs Linux {}.{} or later, this is {}", what,
                    floor.major, floor.minor, release));
  }
  return {};
}

bool canLoadTracingPrograms() {
  CapabilitySets data{};
  return readCapabilities(data) &&
         (hasCapability(data, kCapPerfmon) || hasCapability(data, CAP_SYS_ADMIN));
}

Status checkKernel() {
  utsname name{};
  ::uname(&name);
  std::vector<KernelFeature> features;
  const bool tracing = canLoadTracingPrograms();
  for (const KernelFeature& feature : kernelFeatures()) {
    if (!feature.tracing || tracing) features.push_back(feature);
  }
  return firstMissingFeature(features, probeKernelFeature, name.release);
}

}  // namespace spindle::redirect
