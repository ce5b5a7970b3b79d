#include "util/log.h"

#include <fmt/format.h>

#include <atomic>
#include <cstdio>

namespace spindle::log {
namespace {
std::atomic<Level> gThreshold{Level::kInfo};
}  // namespace

const char* levelName(Level level) {
  switch (level) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
  }
  return "?";
}

Level threshold() { return gThreshold.load(std::memory_order_relaxed); }
void setThreshold(Level level) { gThreshold.store(level, std::memory_order_relaxed); }

void write(Level level, fmt::string_view format, fmt::format_args args) {
  if (level < threshold()) return;
  // One fmt::print call per line, so that lines from workers do not interleave.
  fmt::memory_buffer line;
  fmt::format_to(std::back_inserter(line), "spindle: {}: ", levelName(level));
  fmt::vformat_to(std::back_inserter(line), format, args);
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace spindle::log
