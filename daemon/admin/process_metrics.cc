#include "admin/process_metrics.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <fmt/core.h>

#include <optional>

#include "util/fd.h"

namespace spindle::admin {
namespace {

// procfs files are generated on read: read until EOF, with a cap in case one is huge.
std::optional<std::string> readProcFile(const char* path) {
  constexpr size_t kMaxBytes = 1 << 20;
  Fd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return std::nullopt;
  std::string text;
  char chunk[4096];
  while (text.size() < kMaxBytes) {
    const ssize_t n = ::read(fd.get(), chunk, sizeof(chunk));
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    text.append(chunk, static_cast<size_t>(n));
  }
  return text;
}

std::optional<double> countOpenFds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return std::nullopt;
  double count = 0;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count - 1;  // the directory's own fd
}

// CPU, memory and start time from `stat_path` (/proc/<pid>/stat).
void readStat(const char* stat_path, metrics::ProcessMetrics& result) {
  const long ticks = ::sysconf(_SC_CLK_TCK);
  const long page = ::sysconf(_SC_PAGESIZE);
  std::optional<uint64_t> boot;
  if (auto text = readProcFile("/proc/stat")) {
    if (auto parsed = metrics::parseBootTime(*text)) boot = *parsed;
  }
  if (auto text = readProcFile(stat_path); text && ticks > 0 && page > 0) {
    if (auto stat = metrics::parseProcStat(*text)) {
      metrics::applyProcStat(result, *stat, static_cast<uint64_t>(ticks),
                             static_cast<uint64_t>(page), boot);
    }
  }
}

}  // namespace

metrics::ProcessMetrics readProcessMetrics() {
  metrics::ProcessMetrics result;
  readStat("/proc/self/stat", result);
  if (auto text = readProcFile("/proc/self/limits")) {
    if (auto limit = metrics::parseMaxOpenFiles(*text)) result.max_fds = *limit;
  }
  result.open_fds = countOpenFds();
  return result;
}

std::string renderProcessMetrics() {
  std::string out;
  metrics::renderProcessMetrics(readProcessMetrics(), out);
  return out;
}

std::string renderPrivilegedMetrics(pid_t pid) {
  metrics::ProcessMetrics privileged;
  readStat(fmt::format("/proc/{}/stat", pid).c_str(), privileged);
  std::string out;
  metrics::renderPrivilegedMetrics(privileged, out);
  return out;
}

}  // namespace spindle::admin
