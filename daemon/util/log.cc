#include "util/log.h"

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

namespace spindle::log {
namespace {

std::atomic<Level> gThreshold{Level::kInfo};
std::atomic<Format> gFormat{Format::kText};
std::atomic<bool> gPinned{false};

// A JSON string: quotes, backslashes and control characters escaped; bytes that are not UTF-8
// (a peer's bytes in a message) pass through escaped as \u00XX, so a line always parses.
void appendJsonString(std::string& out, std::string_view text) {
  out.push_back('"');
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20 || c == 0x7f) {
      fmt::format_to(std::back_inserter(out), "\\u{:04x}", c);
    } else if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      // A whole, valid UTF-8 sequence is kept; anything else is escaped byte by byte.
      const size_t length = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
      bool valid = length > 0 && c < 0xf5 && i + length <= text.size();
      for (size_t k = 1; valid && k < length; ++k) {
        valid = (static_cast<unsigned char>(text[i + k]) & 0xc0) == 0x80;
      }
      if (valid) {
        out.append(text.substr(i, length));
        i += length - 1;
      } else {
        fmt::format_to(std::back_inserter(out), "\\u{:04x}", c);
      }
    }
  }
  out.push_back('"');
}

void appendField(std::string& out, std::string_view name, std::string_view value) {
  if (value.empty()) return;
  out += ",\"";
  out += name;
  out += "\":";
  appendJsonString(out, value);
}

std::string renderLine(Level level, const Fields& fields, std::string_view message) {
  std::string line;
  if (gFormat.load(std::memory_order_relaxed) == Format::kText) {
    line = fmt::format("spindle: {}: {}", levelName(level), message);
    return line;
  }
  // RFC 3339 in UTC with milliseconds: what Loki and Elastic take as the event's time.
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
  line = fmt::format("{{\"time\":\"{}.{:03d}Z\",\"level\":\"{}\",\"msg\":", stamp, millis,
                     levelName(level));
  appendJsonString(line, message);
  appendField(line, "service", fields.service);
  appendField(line, "endpoint", fields.endpoint);
  appendField(line, "source", fields.source);
  appendField(line, "reason", fields.reason);
  line.push_back('}');
  return line;
}

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

std::optional<Level> parseLevel(std::string_view name) {
  for (Level level : {Level::kDebug, Level::kInfo, Level::kWarn, Level::kError}) {
    if (name == levelName(level)) return level;
  }
  return std::nullopt;
}

Level threshold() { return gThreshold.load(std::memory_order_relaxed); }
void setThreshold(Level level) { gThreshold.store(level, std::memory_order_relaxed); }
Format format() { return gFormat.load(std::memory_order_relaxed); }

void pinThreshold(Level level) {
  setThreshold(level);
  gPinned.store(true, std::memory_order_relaxed);
}

bool thresholdPinned() { return gPinned.load(std::memory_order_relaxed); }

void configure(Level level, Format format) {
  gFormat.store(format, std::memory_order_relaxed);
  if (!thresholdPinned()) setThreshold(level);
}

std::string render(Level level, const Fields& fields, std::string_view message) {
  return renderLine(level, fields, message);
}

void write(Level level, const Fields& fields, fmt::string_view format, fmt::format_args args) {
  if (level < threshold()) return;
  std::string line = renderLine(level, fields, fmt::vformat(format, args));
  line.push_back('\n');
  // One write per line, so that lines from workers do not interleave.
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace spindle::log
