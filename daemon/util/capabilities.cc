#include "util/capabilities.h"

#include <fmt/core.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace spindle {
namespace {

constexpr int kMaxCapability = 63;  // capability bits span two 32-bit words

uint64_t bit(int cap) { return uint64_t{1} << static_cast<unsigned>(cap); }

// Returns 0 or an errno.
int restrictThisThread(uint64_t keep, bool bounding) {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1L, 0L, 0L, 0L) != 0) return errno;
  // The bounding set first: dropping from it takes CAP_SETPCAP, which capset removes below.
  // EINVAL: a number this kernel does not know.
  for (int cap = 0; bounding && cap <= kMaxCapability; ++cap) {
    if ((keep & bit(cap)) != 0) continue;
    if (::prctl(PR_CAPBSET_DROP, static_cast<unsigned long>(cap), 0L, 0L, 0L) != 0 &&
        errno != EINVAL) {
      return errno;
    }
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0L, 0L, 0L) != 0) return errno;
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  for (unsigned i = 0; i < 2; ++i) {
    data[i].permitted = data[i].effective = static_cast<uint32_t>(keep >> (32 * i));
  }
  if (::syscall(SYS_capset, &header, data) != 0) return errno;
  return 0;
}

struct Sets {
  uint64_t permitted = 0;
  uint64_t effective = 0;
};

Result<Sets> currentSets() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capget, &header, data) != 0) {
    return makeError(fmt::format("cannot read capabilities: {}", std::strerror(errno)));
  }
  return Sets{uint64_t{data[0].permitted} | (uint64_t{data[1].permitted} << 32),
              uint64_t{data[0].effective} | (uint64_t{data[1].effective} << 32)};
}

}  // namespace

// Threads of this process other than the calling one (the kernel's io_uring workers, which
// copy the creds of the task they serve, excepted).
int otherThreads() {
  int count = -1;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream in(entry.path() / "comm");
    std::string name;
    std::getline(in, name);
    if (name.rfind("iou-", 0) != 0) ++count;
  }
  return count;
}

bool isPermitted(int cap) {
  auto sets = currentSets();
  return sets && (sets->permitted & bit(cap)) != 0;
}

Result<KeptCapabilities> keepOnlyCapabilities(std::initializer_list<Capability> required,
                                              std::initializer_list<Capability> optional) {
  auto sets = currentSets();
  if (!sets) return Error{sets.error()};
  const uint64_t permitted = sets->permitted;
  uint64_t keep = 0;
  KeptCapabilities kept;
  auto add = [&](const Capability& cap) {
    keep |= bit(cap.number);
    kept.names += (kept.names.empty() ? "" : ", ") + std::string(cap.name);
  };
  for (const Capability& cap : required) {
    if ((permitted & bit(cap.number)) == 0) {
      return makeError(fmt::format("{} is not permitted", cap.name));
    }
    add(cap);
  }
  for (const Capability& cap : optional) {
    if ((permitted & bit(cap.number)) != 0) add(cap);
  }
  if (kept.names.empty()) kept.names = "none";

  // Capabilities are per thread: a thread started earlier would keep all of its own.
  if (int others = otherThreads(); others != 0) {
    return makeError(
        fmt::format("capabilities must be dropped before threads start ({} run)", others));
  }
  // Without CAP_SETPCAP (a container granted only what it uses) the bounding set stays as
  // the runtime made it; no_new_privs alone keeps an exec from gaining anything.
  kept.bounding = (sets->effective & bit(CAP_SETPCAP)) != 0;
  if (int err = restrictThisThread(keep, kept.bounding); err != 0) {
    return makeError(fmt::format("cannot drop capabilities: {}", std::strerror(err)));
  }
  return kept;
}

}  // namespace spindle
