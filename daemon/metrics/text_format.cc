#include "metrics/text_format.h"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>

namespace spindle::metrics {
namespace {

// `{a="x",b="y"` without the closing brace, so that a histogram can add its le; nothing when
// there are no labels at all.
void appendLabels(std::string& out, const std::vector<std::string>& names,
                  const std::vector<std::string>& values) {
  for (size_t i = 0; i < names.size(); ++i) {
    out += i == 0 ? '{' : ',';
    out += names[i];
    out += "=\"";
    appendEscapedLabelValue(out, values[i]);
    out += '"';
  }
}

void appendSample(std::string& out, std::string_view name, std::string_view suffix,
                  const std::vector<std::string>& names, const std::vector<std::string>& values,
                  std::string_view value) {
  out += name;
  out += suffix;
  appendLabels(out, names, values);
  if (!names.empty()) out += '}';
  out += ' ';
  out += value;
  out += '\n';
}

void appendHistogram(std::string& out, const FamilySpec& spec, const MergedSeries& series) {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < series.buckets.size(); ++i) {
    cumulative += series.buckets[i];
    out += spec.name;
    out += "_bucket";
    appendLabels(out, spec.label_names, series.label_values);
    out += spec.label_names.empty() ? "{le=\"" : ",le=\"";
    out += i < spec.buckets.size() ? formatValue(spec.buckets[i]) : "+Inf";
    out += "\"} ";
    out += std::to_string(cumulative);
    out += '\n';
  }
  appendSample(out, spec.name, "_sum", spec.label_names, series.label_values,
               formatValue(series.sum));
  // The count is the +Inf bucket by definition: both come from the same reads.
  appendSample(out, spec.name, "_count", spec.label_names, series.label_values,
               std::to_string(cumulative));
}

}  // namespace

void appendEscapedLabelValue(std::string& out, std::string_view value) {
  for (char c : value) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
}

void appendEscapedHelp(std::string& out, std::string_view help) {
  for (char c : help) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
}

std::string formatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Shortest text that reads back as the same double ("1", "0.005", "1e+21"): Go's
  // ParseFloat, which Prometheus uses, reads all of these.
  return fmt::format("{}", value);
}

void appendHeader(std::string& out, std::string_view name, std::string_view help,
                  std::string_view type) {
  out += "# HELP ";
  out += name;
  out += ' ';
  appendEscapedHelp(out, help);
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

namespace {

// Orders label sets, and finds one by a shard's view of it without copying it first.
struct LabelsLess {
  using is_transparent = void;
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
  }
};

struct Merging {
  MergedSeries series;
  TimePoint shown_until = TimePoint::max();  // the earliest of its shards' copies
};

}  // namespace

std::vector<MergedFamily> merge(const Registry& registry, std::span<const Shard* const> shards,
                                std::optional<TimePoint> as_of) {
  for (const Shard* shard : shards) {
    if (&shard->registry() != &registry) {
      fmt::print(stderr, "spindle: error: metrics: a shard of another registry was merged\n");
      std::abort();
    }
  }
  std::vector<std::map<std::vector<std::string>, Merging, LabelsLess>> families(registry.size());
  std::vector<uint64_t> overflowed(registry.size(), 0);
  for (FamilyId id = 0; id < registry.size(); ++id) {
    const FamilySpec& spec = registry.family(id);
    const size_t bucket_count = spec.buckets.size() + 1;
    auto& merged = families[id];
    for (const Shard* shard : shards) {
      overflowed[id] += shard->overflowed(id);
      shard->forEachSeries(id, [&](const SeriesView& view) {
        auto it = merged.find(view.label_values);
        if (it == merged.end()) {
          it = merged
                   .emplace(std::vector<std::string>(view.label_values.begin(),
                                                     view.label_values.end()),
                            Merging{})
                   .first;
        }
        Merging& entry = it->second;
        entry.shown_until = std::min(entry.shown_until, view.shown_until);
        MergedSeries& series = entry.series;
        switch (spec.type) {
          case Type::kCounter:
            series.counter += view.cells[0].load(std::memory_order_relaxed);
            break;
          case Type::kGauge: series.gauge += detail::loadDouble(view.cells[0]); break;
          case Type::kHistogram:
            series.buckets.resize(bucket_count, 0);
            for (size_t i = 0; i < bucket_count; ++i) {
              series.buckets[i] += view.cells[i].load(std::memory_order_relaxed);
            }
            series.sum += detail::loadDouble(view.cells[bucket_count]);
            break;
        }
      });
    }
  }
  // Read after every shard was: a shard that already unlinked its copy of a series did so
  // past that copy's grace and kUnlinkSlack, so by now every other shard's copy is past its
  // grace too, and the series is left out whole (see kUnlinkSlack).
  const TimePoint now = as_of ? *as_of : Clock::now();
  std::vector<MergedFamily> out;
  out.reserve(registry.size());
  for (FamilyId id = 0; id < registry.size(); ++id) {
    MergedFamily family{&registry.family(id), {}, overflowed[id]};
    family.series.reserve(families[id].size());
    for (auto& [labels, entry] : families[id]) {
      if (entry.shown_until <= now) continue;
      entry.series.label_values = labels;
      family.series.push_back(std::move(entry.series));
    }
    out.push_back(std::move(family));
  }
  return out;
}

std::string renderText(std::span<const MergedFamily> families) {
  std::string out;
  bool any_overflow = false;
  for (const MergedFamily& family : families) {
    const FamilySpec& spec = *family.spec;
    appendHeader(out, spec.name, spec.help, typeName(spec.type));
    for (const MergedSeries& series : family.series) {
      switch (spec.type) {
        case Type::kCounter:
          appendSample(out, spec.name, "", spec.label_names, series.label_values,
                       std::to_string(series.counter));
          break;
        case Type::kGauge:
          appendSample(out, spec.name, "", spec.label_names, series.label_values,
                       formatValue(series.gauge));
          break;
        case Type::kHistogram: appendHistogram(out, spec, series); break;
      }
    }
    any_overflow = any_overflow || family.overflowed > 0;
  }
  if (any_overflow) {
    appendHeader(out, kOverflowFamilyName,
                 "Label sets that did not fit their family's series limit; their events are "
                 "in the series whose labels are all __overflow__.",
                 "counter");
    std::map<std::string_view, uint64_t> by_name;
    for (const MergedFamily& family : families) {
      if (family.overflowed > 0) by_name[family.spec->name] = family.overflowed;
    }
    static const std::vector<std::string> kLabel = {"family"};
    for (const auto& [name, count] : by_name) {
      appendSample(out, kOverflowFamilyName, "", kLabel, {std::string(name)},
                   std::to_string(count));
    }
  }
  return out;
}

std::string render(const Registry& registry, std::span<const Shard* const> shards,
                   std::optional<TimePoint> as_of) {
  return renderText(merge(registry, shards, as_of));
}

}  // namespace spindle::metrics
