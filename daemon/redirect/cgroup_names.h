// Names the Pod behind a connection from the cgroup id the BPF program recorded: the Pod UID
// when the cgroup path is a kubelet's (".../kubepods.../pod<uid>/..." with either cgroup
// driver), else the path below the cgroup2 mount. One per worker: the cache is not shared.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "util/fd.h"
#include "util/result.h"

namespace spindle::redirect {

// The Pod UID in a kubelet cgroup path, or the path itself. Pure, for tests.
std::string sourceLabel(std::string_view cgroup_path);

class CgroupNames {
 public:
  // `mount`: the cgroup2 mount point. Resolving ids needs CAP_DAC_READ_SEARCH (open_by_handle_at).
  static Result<CgroupNames> open(const std::string& mount);

  // The label of a cgroup id; "unknown" when it cannot be resolved (gone, or no privilege).
  // Resolved ids are cached; the cache is bounded and starts over when full. Shared: every
  // connection from a Pod holds its label, and keeps it past the cache.
  using Label = std::shared_ptr<const std::string>;
  Label labelOf(uint64_t cgroup_id);

 private:
  static constexpr size_t kMaxCached = 4096;
  Fd mount_fd_;
  std::string mount_;
  std::unordered_map<uint64_t, Label> cache_;
};

}  // namespace spindle::redirect
