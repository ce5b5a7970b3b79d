// Scrape: merge the shards of every worker, render Prometheus text format 0.0.4.
//
// The output is deterministic: families in registration order, series sorted by their label
// values (byte order), so that tests can compare exact text. Counters and histogram buckets of
// all shards are added up, and so are gauges (per-worker parts of one node-wide number).
// A family with labels but no series yet still gets its # HELP and # TYPE lines.
//
// Bounded cardinality shows in two places: the family's own overflow series (every label set
// to "__overflow__") carries the overflowing events, and kOverflowFamilyName{family="..."}
// counts the lookups that fell into it; that family is rendered only once something
// overflowed.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "metrics/registry.h"

namespace spindle::metrics {

inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";
inline constexpr std::string_view kOverflowFamilyName = "spindle_metrics_series_overflow_total";

struct MergedSeries {
  std::vector<std::string> label_values;
  uint64_t counter = 0;
  double gauge = 0;
  std::vector<uint64_t> buckets;  // histograms: per bucket, not cumulative; the last is +Inf
  double sum = 0;
};

struct MergedFamily {
  const FamilySpec* spec = nullptr;
  std::vector<MergedSeries> series;  // sorted by label values
  uint64_t overflowed = 0;           // lookups that fell into the overflow series, all shards
};

// Every shard must come from `registry` (aborts otherwise). Safe while the shards' threads
// keep writing, adding and removing series: each value is read whole, though a scrape is not
// one atomic snapshot. A series is left out when one shard's copy of it is past its grace
// (see registry.h) as of `as_of`; by default the clock read once every shard was.
std::vector<MergedFamily> merge(const Registry& registry, std::span<const Shard* const> shards,
                                std::optional<TimePoint> as_of = std::nullopt);
std::string renderText(std::span<const MergedFamily> families);
std::string render(const Registry& registry, std::span<const Shard* const> shards,
                   std::optional<TimePoint> as_of = std::nullopt);

// Building blocks, also used by the process metrics.
void appendEscapedLabelValue(std::string& out, std::string_view value);  // \\ \" \n
void appendEscapedHelp(std::string& out, std::string_view help);         // \\ \n
std::string formatValue(double value);                                   // +Inf, -Inf, NaN
void appendHeader(std::string& out, std::string_view name, std::string_view help,
                  std::string_view type);

}  // namespace spindle::metrics
