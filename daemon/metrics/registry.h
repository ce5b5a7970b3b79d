// Metrics: a Registry describes the families; every worker owns a Shard that holds its own
// values. The data path writes through handles (Counter, Gauge, Histogram) that point straight
// at the shard's cells: no lookup, no string work, no allocation and no lock per event. Each
// cell has one writer (the shard's thread), which updates it with a relaxed load and store, so
// a scrape from the main thread reads whole values without stopping anyone.
//
// Cardinality is bounded per shard and family: label sets beyond max_series go to one overflow
// series whose label values are all kOverflowLabelValue, and every such lookup is counted (see
// text_format.h for how both show on a scrape).
#pragma once

#include <atomic>
#include <bit>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace spindle::metrics {

enum class Type : uint8_t { kCounter, kGauge, kHistogram };
// As the text format names it.
const char* typeName(Type type);

// The value of every label of a family's overflow series.
inline constexpr std::string_view kOverflowLabelValue = "__overflow__";

struct FamilySpec {
  std::string name;  // counters end in _total (Prometheus convention)
  std::string help;
  Type type = Type::kCounter;
  std::vector<std::string> label_names;
  std::vector<double> buckets;  // histograms: finite upper bounds, increasing; +Inf is implied
  uint32_t max_series = 256;    // label sets per shard before the overflow series takes over
};

using FamilyId = uint32_t;

class Shard;

// Built once on the main thread at start-up, then frozen by the first makeShard(). It must
// outlive its shards, so it neither moves nor copies.
class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Validates names (Prometheus syntax, counters end in _total, no duplicates, no "le" label
  // on a histogram) and bucket bounds. Fails once the registry is frozen.
  Result<FamilyId> add(FamilySpec spec);

  // A shard for one thread. Freezes the registry: families cannot be added afterwards.
  std::unique_ptr<Shard> makeShard();

  size_t size() const { return families_.size(); }
  const FamilySpec& family(FamilyId id) const { return families_.at(id); }

 private:
  std::vector<FamilySpec> families_;
  bool frozen_ = false;
};

namespace detail {
// A cell holds a uint64 (counters, bucket counts) or the bits of a double (gauges, sums).
using Cell = std::atomic<uint64_t>;
static_assert(Cell::is_always_lock_free);

// Single writer: a load and a store, not a locked read-modify-write.
inline void addTo(Cell& cell, uint64_t delta) {
  cell.store(cell.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
}
inline double loadDouble(const Cell& cell) {
  return std::bit_cast<double>(cell.load(std::memory_order_relaxed));
}
inline void storeDouble(Cell& cell, double value) {
  cell.store(std::bit_cast<uint64_t>(value), std::memory_order_relaxed);
}

class FamilyStore;
}  // namespace detail

// Handles. Cheap to copy; valid as long as their shard lives; used only on the shard's thread.
// A default-constructed handle writes to a discarded sink, so a component without metrics
// wired up can still count.
class Counter {
 public:
  Counter();
  void inc(uint64_t delta = 1) const { detail::addTo(*cell_, delta); }

 private:
  friend class Shard;
  explicit Counter(detail::Cell* cell) : cell_(cell) {}
  detail::Cell* cell_;
};

// Gauges of all shards are summed on a scrape (active connections per worker add up).
class Gauge {
 public:
  Gauge();
  void set(double value) const { detail::storeDouble(*cell_, value); }
  void add(double delta) const { set(detail::loadDouble(*cell_) + delta); }
  void inc() const { add(1); }
  void dec() const { add(-1); }

 private:
  friend class Shard;
  explicit Gauge(detail::Cell* cell) : cell_(cell) {}
  detail::Cell* cell_;
};

class Histogram {
 public:
  Histogram();
  // Counts `value` in the first bucket whose bound is >= value (Prometheus' "le"). NaN is
  // dropped: it would poison the sum for good.
  void observe(double value) const;

 private:
  friend class Shard;
  Histogram(detail::Cell* cells, const double* bounds, uint32_t bound_count)
      : cells_(cells), bounds_(bounds), bound_count_(bound_count) {}
  // bound_count_ + 1 bucket counts (the last is +Inf), then the sum.
  detail::Cell* cells_;
  const double* bounds_;
  uint32_t bound_count_;
};

// What a scrape sees of one series of one shard. Label values stay valid while the shard
// lives: a series, once published, never changes its labels or moves.
struct SeriesView {
  const std::vector<std::string>* label_values;
  const detail::Cell* cells;  // as in Histogram; counters and gauges have one cell
};

class Shard {
 public:
  explicit Shard(const Registry& registry);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  // Handles for a family's series, creating it on first use (owner thread only). The label
  // values are given in the order of the family's label_names. A wrong family type or label
  // count is a programming error and aborts with a message.
  Counter counter(FamilyId family, std::span<const std::string_view> label_values);
  Counter counter(FamilyId family, std::initializer_list<std::string_view> label_values = {}) {
    return counter(family, std::span(label_values.begin(), label_values.size()));
  }
  Gauge gauge(FamilyId family, std::span<const std::string_view> label_values);
  Gauge gauge(FamilyId family, std::initializer_list<std::string_view> label_values = {}) {
    return gauge(family, std::span(label_values.begin(), label_values.size()));
  }
  Histogram histogram(FamilyId family, std::span<const std::string_view> label_values);
  Histogram histogram(FamilyId family, std::initializer_list<std::string_view> label_values = {}) {
    return histogram(family, std::span(label_values.begin(), label_values.size()));
  }

  // Read side, any thread.
  const Registry& registry() const { return registry_; }
  // The series published so far, in creation order.
  std::vector<SeriesView> series(FamilyId family) const;
  // How many lookups of `family` fell into its overflow series.
  uint64_t overflowed(FamilyId family) const;

 private:
  detail::Cell* cellsFor(FamilyId family, Type type, std::span<const std::string_view> values);

  const Registry& registry_;
  std::vector<std::unique_ptr<detail::FamilyStore>> families_;
  std::string key_scratch_;  // reused for interning lookups: no allocation once warm
};

}  // namespace spindle::metrics
