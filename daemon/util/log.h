// Logging: one line per event on stderr, the way a DaemonSet's runtime collects it. As text
// ("spindle: warn: ...") or, for log pipelines (log.format: json), one JSON object per line with
// the time, level, message and, where the event has them, fields a pipeline can index without
// parsing the message: service, endpoint, source (the calling Pod), reason.
#pragma once

#include <fmt/core.h>

#include <cstdio>
#include <optional>
#include <string_view>

namespace spindle::log {

enum class Level { kDebug, kInfo, kWarn, kError };
enum class Format { kText, kJson };

Level threshold();
const char* levelName(Level level);  // "debug", "info", "warn", "error": what --log-level takes
std::optional<Level> parseLevel(std::string_view name);
void setThreshold(Level level);
Format format();
// The command line's --log-level: it stays whatever the config says.
void pinThreshold(Level level);
bool thresholdPinned();
// The config's log section, at start and on each reload.
void configure(Level level, Format format);

// What an event is about. Empty fields are left out.
struct Fields {
  std::string_view service = {};
  std::string_view endpoint = {};
  std::string_view source = {};
  std::string_view reason = {};
};

void write(Level level, const Fields& fields, fmt::string_view format, fmt::format_args args);
// The line write() would print, without its newline (for tests).
std::string render(Level level, const Fields& fields, std::string_view message);

template <typename... Args>
void debug(fmt::format_string<Args...> format, Args&&... args) {
  if (threshold() <= Level::kDebug)
    write(Level::kDebug, {}, format, fmt::make_format_args(args...));
}
template <typename... Args>
void info(fmt::format_string<Args...> format, Args&&... args) {
  write(Level::kInfo, {}, format, fmt::make_format_args(args...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> format, Args&&... args) {
  write(Level::kWarn, {}, format, fmt::make_format_args(args...));
}
template <typename... Args>
void error(fmt::format_string<Args...> format, Args&&... args) {
  write(Level::kError, {}, format, fmt::make_format_args(args...));
}

// The same with fields.
template <typename... Args>
void info(const Fields& fields, fmt::format_string<Args...> format, Args&&... args) {
  write(Level::kInfo, fields, format, fmt::make_format_args(args...));
}
template <typename... Args>
void warn(const Fields& fields, fmt::format_string<Args...> format, Args&&... args) {
  write(Level::kWarn, fields, format, fmt::make_format_args(args...));
}
template <typename... Args>
void error(const Fields& fields, fmt::format_string<Args...> format, Args&&... args) {
  write(Level::kError, fields, format, fmt::make_format_args(args...));
}

}  // namespace spindle::log
