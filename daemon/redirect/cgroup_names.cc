#include "redirect/cgroup_names.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

namespace spindle::redirect {
namespace {

// The kernfs file handle of a cgroup: its 64-bit id, as bpf_get_current_cgroup_id() gives it.
constexpr int kFileIdKernfs = 0xfe;

}  // namespace

std::string sourceLabel(std::string_view path) {
  // Kubelet names a Pod's cgroup "pod<uid>" (cgroupfs driver) or "kubepods-<qos>-pod<uid>.slice"
  // with dashes in the UID turned into underscores (systemd driver).
  if (path.find("kubepods") != std::string_view::npos) {
    for (size_t at = path.find("pod"); at != std::string_view::npos;
         at = path.find("pod", at + 3)) {
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
      if (uid.size() == 36) return uid;
    }
  }
  while (!path.empty() && path.front() == '/') path.remove_prefix(1);
  return path.empty() ? std::string("/") : std::string(path);
}

Result<CgroupNames> CgroupNames::open(const std::string& mount) {
  CgroupNames names;
  names.mount_ = mount;
  names.mount_fd_.reset(::open(mount.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!names.mount_fd_.valid()) {
    return makeError(fmt::format("cannot open {}: {}", mount, std::strerror(errno)));
  }
  return names;
}

CgroupNames::Label CgroupNames::labelOf(uint64_t cgroup_id) {
  if (auto it = cache_.find(cgroup_id); it != cache_.end()) return it->second;
  if (cache_.size() >= kMaxCached) cache_.clear();
  std::string label = "unknown";
  // struct file_handle ends in a flexible array: lay it out in an aligned buffer.
  alignas(file_handle) unsigned char storage[sizeof(file_handle) + sizeof(uint64_t)] = {};
  auto* handle = reinterpret_cast<file_handle*>(storage);
  handle->handle_bytes = sizeof(uint64_t);
  handle->handle_type = kFileIdKernfs;
  std::memcpy(storage + sizeof(file_handle), &cgroup_id, sizeof(cgroup_id));
  Fd dir(::open_by_handle_at(mount_fd_.get(), handle, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.valid()) {
    char path[4096];
    const std::string link = fmt::format("/proc/self/fd/{}", dir.get());
    const ssize_t n = ::readlink(link.c_str(), path, sizeof(path) - 1);
    if (n > 0) {
      std::string_view full(path, static_cast<size_t>(n));
      if (full.substr(0, mount_.size()) == mount_) full.remove_prefix(mount_.size());
      label = sourceLabel(full);
    }
  }
  return cache_.emplace(cgroup_id, std::make_shared<const std::string>(std::move(label)))
      .first->second;
}

}  // namespace spindle::redirect
