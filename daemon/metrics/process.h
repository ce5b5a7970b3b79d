// Process metrics with the names every Prometheus client library uses (process_*), parsed
// from the text of /proc files handed in by the caller: this module reads no files itself
// (admin/process_metrics.h does).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "util/result.h"

namespace spindle::metrics {

// The fields of /proc/<pid>/stat that the process metrics need.
struct ProcStat {
  uint64_t utime_ticks = 0;
  uint64_t stime_ticks = 0;
  uint64_t start_ticks = 0;  // since boot
  uint64_t vsize_bytes = 0;
  uint64_t rss_pages = 0;
};

// /proc/<pid>/stat. The command name is in parentheses and may hold spaces and ')', so the
// fields are counted from the last ')'.
Result<ProcStat> parseProcStat(std::string_view text);
// The "btime" line of /proc/stat: boot time, seconds since the epoch.
Result<uint64_t> parseBootTime(std::string_view text);
// The soft limit of "Max open files" in /proc/<pid>/limits; "unlimited" is +Inf.
Result<double> parseMaxOpenFiles(std::string_view text);

// What is known; a missing value is left out of the output.
struct ProcessMetrics {
  std::optional<double> cpu_seconds;
  std::optional<double> resident_memory_bytes;
  std::optional<double> virtual_memory_bytes;
  std::optional<double> start_time_seconds;
  std::optional<double> open_fds;
  std::optional<double> max_fds;
};

// Fills cpu, memory and (with a boot time) start time from a parsed stat.
void applyProcStat(ProcessMetrics& metrics, const ProcStat& stat, uint64_t ticks_per_second,
                   uint64_t page_size, std::optional<uint64_t> boot_time);

// process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
// process_start_time_seconds, process_open_fds, process_max_fds, each with HELP and TYPE.
void renderProcessMetrics(const ProcessMetrics& metrics, std::string& out);
// The privileged part's CPU and memory, beside the proxy's process_* (which a generic
// dashboard sums per target): spindle_privileged_cpu_seconds_total and
// spindle_privileged_resident_memory_bytes.
void renderPrivilegedMetrics(const ProcessMetrics& metrics, std::string& out);

}  // namespace spindle::metrics
