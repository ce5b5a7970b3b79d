#include "metrics/registry.h"

#include <fmt/core.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>

#include "metrics/text_format.h"

namespace spindle::metrics {
namespace detail {

// Series are stored in chunks that never move once allocated, so handles can point at their
// cells and a scrape can read a chunk while the owner adds series to the next one.
constexpr uint32_t kChunkSeries = 32;

struct Chunk {
  std::array<std::vector<std::string>, kChunkSeries> labels;
  std::unique_ptr<Cell[]> cells;
};

class FamilyStore {
 public:
  explicit FamilyStore(const FamilySpec& spec)
      : spec_(spec),
        cells_per_series_(
            spec.type == Type::kHistogram ? static_cast<uint32_t>(spec.buckets.size()) + 2 : 1),
        // A family without labels has exactly one series; others get one more for overflow.
        capacity_(spec.label_names.empty() ? 1 : spec.max_series + 1),
        chunk_count_((capacity_ + kChunkSeries - 1) / kChunkSeries),
        chunks_(new std::atomic<Chunk*>[chunk_count_]()) {
    if (spec.label_names.empty()) publish({});
  }

  ~FamilyStore() {
    for (uint32_t i = 0; i < chunk_count_; ++i) delete chunks_[i].load(std::memory_order_relaxed);
  }

  FamilyStore(const FamilyStore&) = delete;
  FamilyStore& operator=(const FamilyStore&) = delete;

  const FamilySpec& spec() const { return spec_; }

  // Owner thread: the cells of the series with these label values, created on first use.
  Cell* intern(std::span<const std::string_view> values, std::string& key) {
    if (spec_.label_names.empty()) return cellsAt(0);
    const uint64_t tag = memoTag(values);
    Memo& memo = memo_[tag % memo_.size()];
    if (memo.series != kNone && memo.tag == tag && labelsAre(memo.series, values)) {
      return cellsAt(memo.series);
    }
    // Length-prefixed, so that no label value can make two label sets look alike.
    key.clear();
    for (std::string_view value : values) {
      key += std::to_string(value.size());
      key += ':';
      key += value;
    }
    if (auto it = index_.find(key); it != index_.end()) {
      memo = Memo{tag, it->second};
      return cellsAt(it->second);
    }
    const uint32_t used = published_.load(std::memory_order_relaxed);
    const bool has_overflow = overflow_index_ != kNone;
    if (used - (has_overflow ? 1 : 0) < spec_.max_series) {
      const uint32_t index = publish(std::vector<std::string>(values.begin(), values.end()));
      index_.emplace(key, index);
      memo = Memo{tag, index};
      return cellsAt(index);
    }
    overflowed_.store(overflowed_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    if (!has_overflow) {
      overflow_index_ = publish(
          std::vector<std::string>(spec_.label_names.size(), std::string(kOverflowLabelValue)));
    }
    return cellsAt(overflow_index_);
  }

  // Any thread.
  std::vector<SeriesView> series() const {
    const uint32_t count = published_.load(std::memory_order_acquire);
    std::vector<SeriesView> out;
    out.reserve(count);
    for (uint32_t i = 0; i < count; ++i) {
      const Chunk* chunk = chunks_[i / kChunkSeries].load(std::memory_order_acquire);
      const uint32_t slot = i % kChunkSeries;
      out.push_back(SeriesView{&chunk->labels[slot], &chunk->cells[slot * cells_per_series_]});
    }
    return out;
  }

  uint64_t overflowed() const { return overflowed_.load(std::memory_order_relaxed); }

 private:
  static constexpr uint32_t kNone = UINT32_MAX;

  // Owner thread. The label values are written before the count is released, so a reader
  // that sees the count sees them too.
  uint32_t publish(std::vector<std::string> values) {
    const uint32_t index = published_.load(std::memory_order_relaxed);
    std::atomic<Chunk*>& slot = chunks_[index / kChunkSeries];
    Chunk* chunk = slot.load(std::memory_order_relaxed);
    if (chunk == nullptr) {
      chunk = new Chunk();
      chunk->cells.reset(new Cell[size_t{kChunkSeries} * cells_per_series_]());
      slot.store(chunk, std::memory_order_release);
    }
    chunk->labels[index % kChunkSeries] = std::move(values);
    published_.store(index + 1, std::memory_order_release);
    return index;
  }

  // A direct-mapped memo in front of index_, keyed by where the label values live: the call
  // path passes the same strings call after call (a service's name, an endpoint's label, a
  // status literal), so a hit costs no key building or hashing of the values. A hit is
  // checked against the series' labels: a string that moved or changed costs only the
  // full lookup.
  struct Memo {
    uint64_t tag = 0;
    uint32_t series = kNone;
  };

  static uint64_t memoTag(std::span<const std::string_view> values) {
    uint64_t tag = 0xcbf29ce484222325ULL;
    for (std::string_view value : values) {
      tag = (tag ^ reinterpret_cast<uintptr_t>(value.data())) * 0x100000001b3ULL;
      tag = (tag ^ value.size()) * 0x100000001b3ULL;
    }
    return tag ^ (tag >> 29);
  }

  bool labelsAre(uint32_t index, std::span<const std::string_view> values) const {
    const Chunk* chunk = chunks_[index / kChunkSeries].load(std::memory_order_relaxed);
    const std::vector<std::string>& labels = chunk->labels[index % kChunkSeries];
    if (labels.size() != values.size()) return false;
    for (size_t i = 0; i < values.size(); ++i) {
      if (labels[i] != values[i]) return false;
    }
    return true;
  }

  Cell* cellsAt(uint32_t index) {
    Chunk* chunk = chunks_[index / kChunkSeries].load(std::memory_order_relaxed);
    return &chunk->cells[(index % kChunkSeries) * cells_per_series_];
  }

  const FamilySpec& spec_;
  const uint32_t cells_per_series_;
  const uint32_t capacity_;
  const uint32_t chunk_count_;
  std::unique_ptr<std::atomic<Chunk*>[]> chunks_;
  std::atomic<uint32_t> published_{0};
  std::atomic<uint64_t> overflowed_{0};
  std::unordered_map<std::string, uint32_t> index_;  // owner thread only
  std::array<Memo, 64> memo_{};                      // owner thread only
  uint32_t overflow_index_ = kNone;
};

}  // namespace detail

namespace {

// Where default-constructed handles write: nobody reads it.
detail::Cell gSinkCounter{0};
detail::Cell gSinkGauge{0};
detail::Cell gSinkHistogram[2] = {};

[[noreturn]] void die(const std::string& message) {
  fmt::print(stderr, "spindle: error: metrics: {}\n", message);
  std::abort();
}

bool isNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool isNameChar(char c) { return isNameStart(c) || (c >= '0' && c <= '9'); }

bool isMetricName(std::string_view name) {
  if (name.empty() || !(isNameStart(name[0]) || name[0] == ':')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return isNameChar(c) || c == ':'; });
}

bool isLabelName(std::string_view name) {
  if (name.empty() || !isNameStart(name[0])) return false;
  return std::all_of(name.begin(), name.end(), isNameChar);
}

}  // namespace

Counter::Counter() : cell_(&gSinkCounter) {}
Gauge::Gauge() : cell_(&gSinkGauge) {}
Histogram::Histogram() : cells_(gSinkHistogram), bounds_(nullptr), bound_count_(0) {}

void Histogram::observe(double value) const {
  if (std::isnan(value)) return;
  const double* end = bounds_ + bound_count_;
  const auto bucket = static_cast<size_t>(std::lower_bound(bounds_, end, value) - bounds_);
  detail::addTo(cells_[bucket], 1);
  detail::Cell& sum = cells_[bound_count_ + 1];
  detail::storeDouble(sum, detail::loadDouble(sum) + value);
}

Result<FamilyId> Registry::add(FamilySpec spec) {
  const std::string& name = spec.name;
  if (frozen_) return makeError(fmt::format("metric {}: added after the first shard", name));
  if (!isMetricName(name)) return makeError(fmt::format("metric name {:?} is not valid", name));
  if (name == kOverflowFamilyName) {
    return makeError(fmt::format("metric name {} is reserved", name));
  }
  const bool total = name.size() > 6 && name.ends_with("_total");
  if (spec.type == Type::kCounter && !total) {
    return makeError(fmt::format("counter {} must end in _total", name));
  }
  for (const FamilySpec& other : families_) {
    if (other.name == name) return makeError(fmt::format("metric {} added twice", name));
  }
  for (size_t i = 0; i < spec.label_names.size(); ++i) {
    const std::string& label = spec.label_names[i];
    if (!isLabelName(label) || label.starts_with("__")) {
      return makeError(fmt::format("metric {}: label name {:?} is not valid", name, label));
    }
    if (spec.type == Type::kHistogram && label == "le") {
      return makeError(fmt::format("histogram {}: the label le is reserved", name));
    }
    for (size_t j = 0; j < i; ++j) {
      if (spec.label_names[j] == label) {
        return makeError(fmt::format("metric {}: label {} given twice", name, label));
      }
    }
  }
  if (spec.type != Type::kHistogram && !spec.buckets.empty()) {
    return makeError(fmt::format("{} {} has buckets", typeName(spec.type), name));
  }
  for (size_t i = 0; i < spec.buckets.size(); ++i) {
    if (!std::isfinite(spec.buckets[i]) || (i > 0 && spec.buckets[i] <= spec.buckets[i - 1])) {
      return makeError(
          fmt::format("histogram {}: bucket bounds must be finite and increasing", name));
    }
  }
  if (spec.max_series == 0 || spec.max_series > (1u << 20)) {
    return makeError(fmt::format("metric {}: max_series must be in 1..{}", name, 1u << 20));
  }
  families_.push_back(std::move(spec));
  return static_cast<FamilyId>(families_.size() - 1);
}

std::unique_ptr<Shard> Registry::makeShard() {
  frozen_ = true;
  return std::make_unique<Shard>(*this);
}

Shard::Shard(const Registry& registry) : registry_(registry) {
  families_.reserve(registry.size());
  for (FamilyId id = 0; id < registry.size(); ++id) {
    families_.push_back(std::make_unique<detail::FamilyStore>(registry.family(id)));
  }
}

Shard::~Shard() = default;

detail::Cell* Shard::cellsFor(FamilyId family, Type type,
                              std::span<const std::string_view> values) {
  if (family >= families_.size()) die(fmt::format("no family with id {}", family));
  detail::FamilyStore& store = *families_[family];
  const FamilySpec& spec = store.spec();
  if (spec.type != type) {
    die(fmt::format("{} is a {}, not a {}", spec.name, typeName(spec.type), typeName(type)));
  }
  if (values.size() != spec.label_names.size()) {
    die(fmt::format("{} has {} labels, got {} values", spec.name, spec.label_names.size(),
                    values.size()));
  }
  return store.intern(values, key_scratch_);
}

Counter Shard::counter(FamilyId family, std::span<const std::string_view> label_values) {
  return Counter(cellsFor(family, Type::kCounter, label_values));
}

Gauge Shard::gauge(FamilyId family, std::span<const std::string_view> label_values) {
  return Gauge(cellsFor(family, Type::kGauge, label_values));
}

Histogram Shard::histogram(FamilyId family, std::span<const std::string_view> label_values) {
  detail::Cell* cells = cellsFor(family, Type::kHistogram, label_values);
  const std::vector<double>& bounds = registry_.family(family).buckets;
  return Histogram(cells, bounds.data(), static_cast<uint32_t>(bounds.size()));
}

std::vector<SeriesView> Shard::series(FamilyId family) const {
  return families_.at(family)->series();
}

uint64_t Shard::overflowed(FamilyId family) const { return families_.at(family)->overflowed(); }

const char* typeName(Type type) {
  switch (type) {
    case Type::kCounter: return "counter";
    case Type::kGauge: return "gauge";
    case Type::kHistogram: return "histogram";
  }
  return "untyped";
}

}  // namespace spindle::metrics
