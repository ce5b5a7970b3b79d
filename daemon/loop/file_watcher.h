// Calls back when a file may have changed: inotify on the file's directory, read on the loop,
// and one call once the events have been quiet for a moment (an editor's save, or a Kubernetes
// ConfigMap update that swaps a "..data" symlink, is several events). The caller decides
// whether the content really changed.
#pragma once

#include <sys/inotify.h>

#include <functional>
#include <string>

#include "loop/loop.h"
#include "util/fd.h"

namespace spindle::loop {

class FileWatcher final : public Completion {
 public:
  // Without inotify (or a watch on the directory) it logs why and never calls back.
  FileWatcher(Loop& loop, const std::string& path, std::function<void()> on_change);
  FileWatcher(const FileWatcher&) = delete;
  FileWatcher& operator=(const FileWatcher&) = delete;

  void complete(int32_t res, uint32_t flags) override;

 private:
  static constexpr auto kSettle = std::chrono::milliseconds(200);
  void arm();

  Loop& loop_;
  std::function<void()> on_change_;
  Timer settle_;
  Fd fd_;
  alignas(inotify_event) char events_[4096] = {};
};

}  // namespace spindle::loop
