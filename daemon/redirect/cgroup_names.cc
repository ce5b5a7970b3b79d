#include "redirect/cgroup_names.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

namespace spindle::redirect {

namespace {

// Where a kubelet path names its Pod: the UID, and where the path component holding it ends.
struct PodInPath {
  std::string uid;
  size_t component_end = 0;
};

std::optional<PodInPath> podInPath(std::string_view path) {
  // Kubelet names a Pod's cgroup "pod<uid>" (cgroupfs driver) or "kubepods-<qos>-pod<uid>.slice"
  // with dashes in the UID turned into underscores (systemd driver).
  if (path.find("kubepods") == std::string_view::npos) return std::nullopt;
  for (size_t at = path.find("pod"); at != std::string_view::npos; at = path.find("pod", at + 3)) {
    std::string_view rest = path.substr(at + 3);
    std::string uid;
    for (char c : rest) {
      if (std::isxdigit(static_cast<unsigned char>(c))) {
        uid += c;
      } else if (c == '-' || c == '_') {
        uid += '-';
      } else {
        break;
      }
    }
    if (uid.size() == 36) {
      const size_t end = path.find('/', at);
      return PodInPath{std::move(uid), end == std::string_view::npos ? path.size() : end};
    }
  }
  return std::nullopt;
}

}  // namespace

std::string sourceLabel(std::string_view path) {
  if (auto pod = podInPath(path)) return std::move(pod->uid);
  while (!path.empty() && path.front() == '/') path.remove_prefix(1);
  return path.empty() ? std::string("/") : std::string(path);
}

std::string_view sourceDirectory(std::string_view path) {
  if (auto pod = podInPath(path)) return path.substr(0, pod->component_end);
  return path;
}

Result<CgroupNames> CgroupNames::open(const std::string& mount) {
  CgroupNames names;
  names.mount_fd_.reset(::open(mount.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!names.mount_fd_.valid()) {
    return makeError(fmt::format("cannot open {}: {}", mount, std::strerror(errno)));
  }
  names.unknown_ = std::make_shared<const std::string>("unknown");
  return names;
}

CgroupNames::Label CgroupNames::labelOf(uint64_t cgroup_id) {
  if (auto it = cache_.find(cgroup_id); it != cache_.end()) return it->second;
  auto path = paths_.find(cgroup_id);
  const auto now = std::chrono::steady_clock::now();
  if (path == paths_.end() && now - walked_ >= std::chrono::seconds(1)) {
    walked_ = now;
    walk();
    path = paths_.find(cgroup_id);
  }
  // Not cached: a Pod made after the walk is found by a later one.
  if (path == paths_.end()) return unknown_;
  if (cache_.size() >= kMaxCached) cache_.clear();
  auto label = std::make_shared<const std::string>(sourceLabel(path->second));
  // Kept relative to the mount, as fstatat takes it ("." for the mount itself).
  std::string_view directory = sourceDirectory(path->second);
  while (!directory.empty() && directory.front() == '/') directory.remove_prefix(1);
  directories_.try_emplace(*label, directory.empty() ? std::string_view(".") : directory);
  return cache_.emplace(cgroup_id, std::move(label)).first->second;
}

bool CgroupNames::present(std::string_view label) const {
  return label == *unknown_ || directories_.find(label) != directories_.end();
}

void CgroupNames::refresh() {
  for (auto it = directories_.begin(); it != directories_.end();) {
    struct stat st {};
    const bool gone = ::fstatat(mount_fd_.get(), it->second.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0
                          ? errno == ENOENT || errno == ENOTDIR
                          : !S_ISDIR(st.st_mode);
    if (!gone) {
      ++it;
      continue;
    }
    // Its cgroup ids leave the cache too: one seen again is named afresh.
    std::erase_if(cache_, [&](const auto& entry) { return *entry.second == it->first; });
    it = directories_.erase(it);
  }
}

void CgroupNames::walk() {
  paths_.clear();
  struct stat st {};
  if (::fstat(mount_fd_.get(), &st) == 0) paths_.emplace(st.st_ino, "/");
  const int dir = ::dup(mount_fd_.get());
  if (dir >= 0) walkBelow(dir, "", 0);
}

// Takes `dir_fd` (closed here). A cgroup tree is shallow (kubelet's is four or five deep);
// the depth bound only keeps a strange one from exhausting the stack.
void CgroupNames::walkBelow(int dir_fd, const std::string& path, int depth) {
  DIR* dir = ::fdopendir(dir_fd);
  if (dir == nullptr) {
    ::close(dir_fd);
    return;
  }
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_type != DT_DIR || entry->d_name[0] == '.') continue;
    if (paths_.size() >= kMaxDirectories || depth >= 32) break;
    const int child =
        ::openat(::dirfd(dir), entry->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (child < 0) continue;
    struct stat st {};
    const std::string child_path = path + "/" + entry->d_name;
    if (::fstat(child, &st) != 0) {
      ::close(child);
      continue;
    }
    paths_.emplace(st.st_ino, child_path);
    walkBelow(child, child_path, depth + 1);
  }
  ::closedir(dir);
}

}  // namespace spindle::redirect
