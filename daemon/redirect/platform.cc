#include "redirect/platform.h"

#include <bpf/libbpf.h>
#include <fmt/core.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace spindle::redirect {
namespace {

#ifndef CAP_BPF
constexpr int kCapBpf = 39;
#else
constexpr int kCapBpf = CAP_BPF;
#endif

bool hasCapability(const __user_cap_data_struct (&data)[2], int cap) {
  const auto index = static_cast<unsigned>(cap) / 32;
  const auto bit = 1u << (static_cast<unsigned>(cap) % 32);
  return (data[index].effective & bit) != 0;
}

}  // namespace

Status checkPrivileges() {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capget, &header, data) != 0) {
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

Status probeProgramTypes() {
  struct Needed {
    bpf_prog_type type;
    const char* name;
  };
  static constexpr Needed kNeeded[] = {
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, "cgroup_sock_addr"},
      {BPF_PROG_TYPE_SOCK_OPS, "sock_ops"},
  };
  for (const Needed& needed : kNeeded) {
    int rc = libbpf_probe_bpf_prog_type(needed.type, nullptr);
    if (rc == 0) {
      return makeError(fmt::format("the kernel refuses BPF programs of type {}", needed.name));
    }
    if (rc < 0) {
      return makeError(
          fmt::format("cannot probe BPF program type {}: {}", needed.name, std::strerror(-rc)));
    }
  }
  return {};
}

}  // namespace spindle::redirect
