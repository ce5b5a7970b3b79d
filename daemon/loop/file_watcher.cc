#include "loop/file_watcher.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "util/log.h"

namespace spindle::loop {

FileWatcher::FileWatcher(Loop& loop, const std::string& path, std::function<void()> on_change)
    : loop_(loop), on_change_(std::move(on_change)), settle_(loop, [this] { on_change_(); }) {
  fd_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  const std::string dir = std::filesystem::path(path).parent_path().string();
  if (!fd_.valid() ||
      ::inotify_add_watch(fd_.get(), dir.empty() ? "." : dir.c_str(),
                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE) < 0) {
    log::warn("cannot watch {} ({}); reload with SIGHUP", path, std::strerror(errno));
    fd_.reset();
    return;
  }
  arm();
}

void FileWatcher::complete(int32_t res, uint32_t /*flags*/) {
  if (res < 0 && res != -EAGAIN && res != -EINTR) return;  // cancelled at exit
  if (res > 0 && !settle_.armed()) settle_.arm(kSettle);
  arm();
}

void FileWatcher::arm() { loop_.read(this, fd_.get(), events_, sizeof(events_)); }

}  // namespace spindle::loop
