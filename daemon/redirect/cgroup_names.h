// Names the Pod behind a connection from the cgroup id the BPF program recorded: the Pod UID
// when the cgroup path is a kubelet's (".../kubepods.../pod<uid>/..." with either cgroup
// driver), else the path below the cgroup2 mount. A cgroup id is the inode number of the
// cgroup's directory: the ids are found by walking the cgroup2 tree, which needs no privilege
// (file handles, open_by_handle_at, would need CAP_DAC_READ_SEARCH, a known container-escape
// primitive). One per worker: the cache is not shared.
#pragma once

#include <chrono>
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
  // `mount`: the cgroup2 mount point.
  static Result<CgroupNames> open(const std::string& mount);

  // The label of a cgroup id; "unknown" when it is not in the tree (gone). An id not seen
  // yet (a new Pod) walks the tree again, at most once per second. Labels are cached, the
  // cache bounded (it starts over when full). Shared: every connection from a Pod holds its
  // label, and keeps it past the cache.
  using Label = std::shared_ptr<const std::string>;
  Label labelOf(uint64_t cgroup_id);

 private:
  static constexpr size_t kMaxCached = 4096;
  static constexpr size_t kMaxDirectories = 200000;  // a walk stops there
  void walk();
  void walkBelow(int dir_fd, const std::string& path, int depth);

  Fd mount_fd_;
  std::unordered_map<uint64_t, std::string> paths_;  // id -> path below the mount, last walk
  std::chrono::steady_clock::time_point walked_{};
  std::unordered_map<uint64_t, Label> cache_;
  Label unknown_;
};

}  // namespace spindle::redirect
