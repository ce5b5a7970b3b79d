// Metrics: a Registry describes the families; every worker owns a Shard that holds its own
// values. The data path writes through handles (Counter, Gauge, Histogram) that point straight
// at the shard's cells: no string work, no allocation and no lock per event once a series
// exists (a lookup by label values is memoized). Each cell has one writer (the shard's
// thread), which updates it with a relaxed load and store, so a scrape from the main thread
// reads whole values without stopping anyone.
//
// Cardinality is bounded per shard and family: label sets beyond max_series go to one overflow
// series whose label values are all kOverflowLabelValue, and every such lookup is counted (see
// text_format.h for how both show on a scrape).
//
// Series that stop existing. Label values such as an endpoint's address or a Pod's UID churn:
// the owner says which series still name something that exists (Shard::reconcile), and the
// others are retired. A retired series still counts (calls in flight finish) and is still
// scraped for the grace (setSeriesGrace: at least two scrape intervals, so that its last
// increments are seen); from then on a scrape leaves it out, and the owner's next sweep
// (Shard::sweep), kUnlinkSlack later, unlinks it. A series that exists again before then is
// revived with its counts: a rate() over it never sees a reset.
//
// Reader/writer protocol, per family. A series lives in a slot of a chunk that never moves:
// an atomic pointer to its label values (an immutable block) and its cells. The owner
// publishes a series by writing its cells (zero) and its retirement time, then storing the
// label pointer with release; a scrape loads it with acquire, so it sees whole labels and
// cells that belong to them. Unlinking stores a null pointer; the label block and the slot
// then wait in a limbo until no scrape that could have loaded the old pointer is still
// reading: scrapes read inside read sections counted by epoch parity (two counters), the
// owner moves the epoch on only when the counter of the epoch before the current one is zero,
// and frees what it unlinked in epoch e once the epoch reached e + 2. A scrape that started
// later sees the null pointer, or the slot's next series, whole. So a scrape never reads freed
// labels, nor a slot that is being reused, and the owner never waits for a scrape: what a
// scrape still holds is freed at a later sweep. Handles stay valid while the shard lives, but
// a handle of a series that can be retired must be used at once, not kept: once unlinked its
// cells may belong to another series.
#pragma once

#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <functional>
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

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

// The value of every label of a family's overflow series.
inline constexpr std::string_view kOverflowLabelValue = "__overflow__";

struct FamilySpec {
  std::string name;  // counters end in _total (Prometheus convention)
  std::string help;
  Type type = Type::kCounter;
  std::vector<std::string> label_names;
  std::vector<double> buckets;  // histograms: finite upper bounds, increasing; +Inf is implied
  // Label sets per shard (retired ones included) before the overflow series takes over.
  uint32_t max_series = 256;
};

// How long a retired series is still scraped unless Shard::setSeriesGrace says otherwise
// (metrics.series_grace): longer than two scrape intervals of every usual setup (15 s to
// 2 min), and Prometheus' own lookback (5 min).
inline constexpr std::chrono::nanoseconds kDefaultSeriesGrace = std::chrono::minutes(5);
// A series whose grace is over is unlinked this much later. Shards retire a series each on
// its own thread, a sweep apart (a second or so); a scrape leaves a series out as soon as one
// shard's copy is past its grace, and by the time any shard unlinks its copy the others' are
// past theirs too, so a scrape shows every shard's part of a series or none: the sum a
// counter shows never goes down.
inline constexpr std::chrono::nanoseconds kUnlinkSlack = std::chrono::seconds(10);

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

// Handles. Cheap to copy; valid as long as their shard lives (for a series that can be
// retired: until it is unlinked, so look it up per event); used only on the shard's thread.
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

// What a scrape sees of one series of one shard, valid only during the visit
// (Shard::forEachSeries).
struct SeriesView {
  std::span<const std::string> label_values;
  const detail::Cell* cells;  // as in Histogram; counters and gauges have one cell
  // A scrape at or after this time leaves the series out: it was retired and its grace is
  // over. TimePoint::max() while it lives.
  TimePoint shown_until;
};

// The storage of one family in one shard, for tests and measurements (owner thread).
struct SeriesStats {
  uint32_t series = 0;   // held: live, retired and the overflow series
  uint32_t retired = 0;  // of those, retired
  uint32_t slots = 0;    // slots ever used: the storage allocated
  uint32_t waiting = 0;  // unlinked, freed once the scrapes that may read them are done
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

  // Owner thread: series come and go (see the top of this file). `present` is asked about
  // every series of `family` but its overflow series: those it says no longer exist are
  // retired at `now` (kept as they are if retired already), those it says exist again are
  // revived.
  using Present = std::function<bool(std::span<const std::string> label_values)>;
  void reconcile(FamilyId family, TimePoint now, const Present& present);
  // Owner thread: unlinks the series past their grace and kUnlinkSlack, and frees what no
  // scrape can still be reading. About once a second; it never waits.
  void sweep(TimePoint now);
  // Owner thread: series created in `family` so far, so that a caller reconciles only when
  // there is something new.
  uint64_t created(FamilyId family) const;
  SeriesStats stats(FamilyId family) const;

  // Any thread: how long a retired series is still scraped.
  void setSeriesGrace(std::chrono::nanoseconds grace) {
    grace_ns_.store(grace.count(), std::memory_order_relaxed);
  }
  std::chrono::nanoseconds seriesGrace() const {
    return std::chrono::nanoseconds(grace_ns_.load(std::memory_order_relaxed));
  }

  // Read side, any thread.
  const Registry& registry() const { return registry_; }
  // Visits the series of `family` held now, in slot order, inside a read section: the view
  // is valid during the visit only.
  void forEachSeries(FamilyId family, const std::function<void(const SeriesView&)>& visit) const;
  // How many lookups of `family` fell into its overflow series.
  uint64_t overflowed(FamilyId family) const;

 private:
  detail::Cell* cellsFor(FamilyId family, Type type, std::span<const std::string_view> values);

  const Registry& registry_;
  std::vector<std::unique_ptr<detail::FamilyStore>> families_;
  std::string key_scratch_;  // reused for interning lookups: no allocation once warm
  std::atomic<int64_t> grace_ns_{kDefaultSeriesGrace.count()};
};

}  // namespace spindle::metrics
