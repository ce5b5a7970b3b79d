// Names the Pod behind a connection from the cgroup id the BPF program recorded: the Pod UID
// when the cgroup path is a kubelet's (".../kubepods.../pod<uid>/..." with either cgroup
// driver), else the path below the cgroup2 mount. A cgroup id is the inode number of the
// cgroup's directory: the ids are found by walking the cgroup2 tree, which needs no privilege
// (file handles, open_by_handle_at, would need CAP_DAC_READ_SEARCH, a known container-escape
// primitive). One per worker: the cache is not shared.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "util/fd.h"
#include "util/result.h"

namespace spindle::redirect {

// The Pod UID in a kubelet cgroup path, or the path itself. Pure, for tests.
std::string sourceLabel(std::string_view cgroup_path);
// The directory whose existence is the labelled Pod's: the Pod's own cgroup in a kubelet
// path (its containers come and go beneath it), else the path itself. Pure, for tests.
std::string_view sourceDirectory(std::string_view cgroup_path);

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

  // Whether the Pod a label returned by labelOf names still exists, as of the last refresh:
  // its directory was there. "unknown" always exists; a label this never gave out does not.
  bool present(std::string_view label) const;
  // Looks whether the directory of every label given out is still there, one fstatat each
  // (a few hundred on a busy node): those gone are forgotten, so that present() says no and
  // memory follows the Pods that exist. A directory that cannot be looked at is kept.
  void refresh();

 private:
  static constexpr size_t kMaxCached = 4096;
  static constexpr size_t kMaxDirectories = 200000;  // a walk stops there
  void walk();
  void walkBelow(int dir_fd, const std::string& path, int depth);

  Fd mount_fd_;
  std::unordered_map<uint64_t, std::string> paths_;  // id -> path below the mount, last walk
  std::chrono::steady_clock::time_point walked_{};
  std::unordered_map<uint64_t, Label> cache_;
  // The labels given out, with their directory relative to the mount; found by a view.
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
  };
  std::unordered_map<std::string, std::string, Hash, std::equal_to<>> directories_;
  Label unknown_;
};

}  // namespace spindle::redirect
