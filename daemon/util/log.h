// Logging: one line per event on stderr, prefixed with the level. Enough for a DaemonSet,
// whose stderr is collected by the container runtime.
#pragma once

#include <fmt/core.h>

#include <cstdio>

namespace spindle::log {

enum class Level { kDebug, kInfo, kWarn, kError };

Level threshold();
const char* levelName(Level level);  // "debug", "info", "warn", "error": what --log-level takes
void setThreshold(Level level);
void write(Level level, fmt::string_view format, fmt::format_args args);

template <typename... Args>
void debug(fmt::format_string<Args...> format, Args&&... args) {
  if (threshold() <= Level::kDebug) write(Level::kDebug, format, fmt::make_format_args(args...));
}
template <typename... Args>
void info(fmt::format_string<Args...> format, Args&&... args) {
  write(Level::kInfo, format, fmt::make_format_args(args...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> format, Args&&... args) {
  write(Level::kWarn, format, fmt::make_format_args(args...));
}
template <typename... Args>
void error(fmt::format_string<Args...> format, Args&&... args) {
  write(Level::kError, format, fmt::make_format_args(args...));
}

}  // namespace spindle::log
