#include "metrics/process.h"

#include <fmt/core.h>

#include <charconv>
#include <limits>
#include <vector>

#include "metrics/text_format.h"

namespace spindle::metrics {
namespace {

bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::vector<std::string_view> splitFields(std::string_view text) {
  std::vector<std::string_view> fields;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && isSpace(text[i])) ++i;
    const size_t start = i;
    while (i < text.size() && !isSpace(text[i])) ++i;
    if (i > start) fields.push_back(text.substr(start, i - start));
  }
  return fields;
}

std::optional<uint64_t> parseUnsigned(std::string_view text) {
  uint64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end || text.empty()) return std::nullopt;
  return value;
}

// The lines of `text`, without their '\n'.
template <typename F>
void forEachLine(std::string_view text, F&& f) {
  while (!text.empty()) {
    const size_t end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    if (f(line)) return;
    if (end == std::string_view::npos) return;
    text.remove_prefix(end + 1);
  }
}

void appendSingle(std::string& out, std::string_view name, std::string_view help,
                  std::string_view type, const std::optional<double>& value) {
  if (!value) return;
  appendHeader(out, name, help, type);
  out += name;
  out += ' ';
  out += formatValue(*value);
  out += '\n';
}

}  // namespace

Result<ProcStat> parseProcStat(std::string_view text) {
  const size_t close = text.rfind(')');
  if (close == std::string_view::npos || text.find('(') > close) {
    return makeError("/proc stat: no command name in parentheses");
  }
  // fields[0] is field 3 of proc(5), "state".
  const std::vector<std::string_view> fields = splitFields(text.substr(close + 1));
  struct Wanted {
    size_t field;  // 1-based, as proc(5) numbers them
    uint64_t ProcStat::*member;
  };
  static constexpr Wanted kWanted[] = {
      {14, &ProcStat::utime_ticks}, {15, &ProcStat::stime_ticks}, {22, &ProcStat::start_ticks},
      {23, &ProcStat::vsize_bytes}, {24, &ProcStat::rss_pages},
  };
  ProcStat stat;
  for (const Wanted& wanted : kWanted) {
    const size_t index = wanted.field - 3;
    if (index >= fields.size()) {
      return makeError(fmt::format("/proc stat: only {} fields", fields.size() + 2));
    }
    auto value = parseUnsigned(fields[index]);
    if (!value) {
      return makeError(fmt::format("/proc stat: field {} is not a number", wanted.field));
    }
    stat.*wanted.member = *value;
  }
  return stat;
}

Result<uint64_t> parseBootTime(std::string_view text) {
  std::optional<uint64_t> boot;
  forEachLine(text, [&](std::string_view line) {
    const std::vector<std::string_view> fields = splitFields(line);
    if (fields.size() == 2 && fields[0] == "btime") {
      boot = parseUnsigned(fields[1]);
      return true;
    }
    return false;
  });
  if (!boot) return makeError("/proc/stat: no btime line");
  return *boot;
}

Result<double> parseMaxOpenFiles(std::string_view text) {
  constexpr std::string_view kName = "Max open files";
  std::optional<double> limit;
  bool found = false;
  forEachLine(text, [&](std::string_view line) {
    if (!line.starts_with(kName)) return false;
    found = true;
    // "Max open files            1024                 1048576              files"
    const std::vector<std::string_view> fields = splitFields(line.substr(kName.size()));
    if (fields.empty()) return true;
    if (fields[0] == "unlimited") {
      limit = std::numeric_limits<double>::infinity();
    } else if (auto value = parseUnsigned(fields[0])) {
      limit = static_cast<double>(*value);
    }
    return true;
  });
  if (!found) return makeError("/proc limits: no \"Max open files\" line");
  if (!limit) return makeError("/proc limits: \"Max open files\" has no soft limit");
  return *limit;
}

void applyProcStat(ProcessMetrics& metrics, const ProcStat& stat, uint64_t ticks_per_second,
                   uint64_t page_size, std::optional<uint64_t> boot_time) {
  if (ticks_per_second == 0) return;
  const auto ticks = static_cast<double>(ticks_per_second);
  metrics.cpu_seconds = static_cast<double>(stat.utime_ticks + stat.stime_ticks) / ticks;
  metrics.resident_memory_bytes = static_cast<double>(stat.rss_pages * page_size);
  metrics.virtual_memory_bytes = static_cast<double>(stat.vsize_bytes);
  if (boot_time) {
    metrics.start_time_seconds =
        static_cast<double>(*boot_time) + static_cast<double>(stat.start_ticks) / ticks;
  }
}

void renderProcessMetrics(const ProcessMetrics& metrics, std::string& out) {
  appendSingle(out, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
               "counter", metrics.cpu_seconds);
  appendSingle(out, "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge",
               metrics.resident_memory_bytes);
  appendSingle(out, "process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge",
               metrics.virtual_memory_bytes);
  appendSingle(out, "process_start_time_seconds",
               "Start time of the process since unix epoch in seconds.", "gauge",
               metrics.start_time_seconds);
  appendSingle(out, "process_open_fds", "Number of open file descriptors.", "gauge",
               metrics.open_fds);
  appendSingle(out, "process_max_fds", "Maximum number of open file descriptors.", "gauge",
               metrics.max_fds);
}

void renderPrivilegedMetrics(const ProcessMetrics& metrics, std::string& out) {
  appendSingle(out, "spindle_privileged_cpu_seconds_total",
               "CPU time of spindle's privileged part (BPF, sockets for the proxy), in seconds.",
               "counter", metrics.cpu_seconds);
  appendSingle(out, "spindle_privileged_resident_memory_bytes",
               "Resident memory of spindle's privileged part, in bytes.", "gauge",
               metrics.resident_memory_bytes);
}

}  // namespace spindle::metrics
