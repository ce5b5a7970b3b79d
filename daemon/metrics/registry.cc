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

// A series' label values, immutable once published; `key` is what index_ finds it by.
struct Labels {
  std::vector<std::string> values;
  std::string key;
};

struct Slot {
  std::atomic<const Labels*> labels{nullptr};  // null: free, or waiting to be freed
  // Nanoseconds of the steady clock after which a scrape leaves the series out; 0: live.
  std::atomic<int64_t> shown_until{0};
};

struct Chunk {
  std::array<Slot, kChunkSeries> slots;
  std::unique_ptr<Cell[]> cells;
};

int64_t toNanos(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

class FamilyStore {
 public:
  explicit FamilyStore(const FamilySpec& spec)
      : spec_(spec),
        cells_per_series_(
            spec.type == Type::kHistogram ? static_cast<uint32_t>(spec.buckets.size()) + 2 : 1),
        // A family without labels has exactly one series. Others get one more for overflow,
        // and a chunk more for slots that wait to be freed (see the top of registry.h).
        capacity_(spec.label_names.empty() ? 1 : spec.max_series + 1 + kChunkSeries),
        chunk_count_((capacity_ + kChunkSeries - 1) / kChunkSeries),
        chunks_(new std::atomic<Chunk*>[chunk_count_]()) {
    // Sweeps and reuse never allocate beyond these.
    if (!spec.label_names.empty()) {
      free_.reserve(capacity_);
      limbo_.reserve(capacity_);
      index_.reserve(spec.max_series + 1);
    }
    // Slot 0 holds the family's only series, or its overflow series once something
    // overflows: kept for it, so that overflowing never needs a free slot.
    if (spec.label_names.empty()) publish(0, {}, {});
  }

  ~FamilyStore() {
    for (uint32_t i = 0; i < chunk_count_; ++i) {
      Chunk* chunk = chunks_[i].load(std::memory_order_relaxed);
      if (chunk == nullptr) continue;
      for (Slot& slot : chunk->slots) delete slot.labels.load(std::memory_order_relaxed);
      delete chunk;
    }
    for (const Waiting& waiting : limbo_) delete waiting.labels;
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
    if (auto it = index_.find(std::string_view(key)); it != index_.end()) {
      memo = Memo{tag, it->second};
      return cellsAt(it->second);
    }
    if (named_ < spec_.max_series) {
      // No slot only while a scrape holds what waits to be freed (a chunk's worth).
      if (const uint32_t index = takeSlot(); index != kNone) {
        publish(index, std::vector<std::string>(values.begin(), values.end()), key);
        ++named_;
        memo = Memo{tag, index};
        return cellsAt(index);
      }
    }
    overflowed_.store(overflowed_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    if (!overflow_published_) {
      publish(kOverflowSlot,
              std::vector<std::string>(spec_.label_names.size(), std::string(kOverflowLabelValue)),
              {});
      overflow_published_ = true;
    }
    return cellsAt(kOverflowSlot);
  }

  // Owner thread.
  void reconcile(TimePoint now, std::chrono::nanoseconds grace, const Shard::Present& present) {
    const uint32_t count = published_.load(std::memory_order_relaxed);
    const int64_t until = std::max<int64_t>(toNanos(now + grace), 1);
    for (uint32_t i = kOverflowSlot + 1; i < count; ++i) {
      Slot& slot = slotAt(i);
      const Labels* labels = slot.labels.load(std::memory_order_relaxed);
      if (labels == nullptr) continue;
      const bool exists = present(labels->values);
      const bool retired = slot.shown_until.load(std::memory_order_relaxed) != 0;
      if (exists && retired) {
        slot.shown_until.store(0, std::memory_order_relaxed);
        --retired_;
      } else if (!exists && !retired) {
        slot.shown_until.store(until, std::memory_order_relaxed);
        ++retired_;
      }
    }
  }

  // Owner thread.
  void sweep(TimePoint now) {
    if (retired_ > 0) {
      const int64_t now_ns = toNanos(now);
      const int64_t slack = kUnlinkSlack.count();
      const uint32_t count = published_.load(std::memory_order_relaxed);
      for (uint32_t i = kOverflowSlot + 1; i < count && retired_ > 0; ++i) {
        Slot& slot = slotAt(i);
        const int64_t until = slot.shown_until.load(std::memory_order_relaxed);
        if (until != 0 && until <= now_ns - slack) unlink(i);
      }
    }
    reclaim();
  }

  uint64_t created() const { return created_; }

  SeriesStats stats() const {
    SeriesStats out;
    out.series = named_ + (overflow_published_ || spec_.label_names.empty() ? 1u : 0u);
    out.retired = retired_;
    out.slots = published_.load(std::memory_order_relaxed);
    out.waiting = static_cast<uint32_t>(limbo_.size());
    return out;
  }

  // Any thread.
  void forEachSeries(const std::function<void(const SeriesView&)>& visit) const {
    const ReadSection section(*this);
    const uint32_t count = published_.load(std::memory_order_acquire);
    for (uint32_t i = 0; i < count; ++i) {
      const Chunk* chunk = chunks_[i / kChunkSeries].load(std::memory_order_acquire);
      const Slot& slot = chunk->slots[i % kChunkSeries];
      const Labels* labels = slot.labels.load(std::memory_order_acquire);
      if (labels == nullptr) continue;
      const int64_t until = slot.shown_until.load(std::memory_order_relaxed);
      visit(SeriesView{labels->values, &chunk->cells[(i % kChunkSeries) * cells_per_series_],
                       until == 0 ? TimePoint::max()
                                  : TimePoint(std::chrono::duration_cast<TimePoint::duration>(
                                        std::chrono::nanoseconds(until)))});
    }
  }

  uint64_t overflowed() const { return overflowed_.load(std::memory_order_relaxed); }

 private:
  static constexpr uint32_t kNone = UINT32_MAX;
  static constexpr uint32_t kOverflowSlot = 0;

  // A scrape inside forEachSeries: counted under the epoch it entered in (see registry.h).
  // It enters again if the epoch moved on between its reading the epoch and being counted,
  // so that the owner, which reads the counter after moving the epoch, cannot miss it.
  class ReadSection {
   public:
    explicit ReadSection(const FamilyStore& store) : store_(store) {
      for (;;) {
        entered_ = store_.epoch_.load(std::memory_order_seq_cst);
        store_.readers_[entered_ & 1].fetch_add(1, std::memory_order_seq_cst);
        if (store_.epoch_.load(std::memory_order_seq_cst) == entered_) return;
        store_.readers_[entered_ & 1].fetch_sub(1, std::memory_order_release);
      }
    }
    ~ReadSection() { store_.readers_[entered_ & 1].fetch_sub(1, std::memory_order_release); }
    ReadSection(const ReadSection&) = delete;
    ReadSection& operator=(const ReadSection&) = delete;

   private:
    const FamilyStore& store_;
    uint64_t entered_ = 0;
  };

  // Owner thread: a free slot, a never used one, or kNone.
  uint32_t takeSlot() {
    if (free_.empty()) {
      if (fresh_ < capacity_) return fresh_++;
      reclaim();
      if (free_.empty()) return kNone;
    }
    const uint32_t index = free_.back();
    free_.pop_back();
    return index;
  }

  // Owner thread. Cells and retirement are written before the labels are released, so a
  // reader that sees the labels sees them too; the count of slots is raised after, for
  // readers that look only that far.
  void publish(uint32_t index, std::vector<std::string> values, std::string_view key) {
    std::atomic<Chunk*>& slot_chunk = chunks_[index / kChunkSeries];
    Chunk* chunk = slot_chunk.load(std::memory_order_relaxed);
    if (chunk == nullptr) {
      chunk = new Chunk();
      chunk->cells.reset(new Cell[size_t{kChunkSeries} * cells_per_series_]());
      slot_chunk.store(chunk, std::memory_order_release);
    }
    Cell* cells = cellsAt(index);
    for (uint32_t c = 0; c < cells_per_series_; ++c) cells[c].store(0, std::memory_order_relaxed);
    Slot& slot = chunk->slots[index % kChunkSeries];
    slot.shown_until.store(0, std::memory_order_relaxed);
    auto* labels = new Labels{std::move(values), std::string(key)};
    slot.labels.store(labels, std::memory_order_release);
    if (index >= published_.load(std::memory_order_relaxed)) {
      published_.store(index + 1, std::memory_order_release);
    }
    if (!labels->key.empty()) index_.emplace(labels->key, index);
    ++created_;
  }

  // Owner thread: the series leaves the index and the scrapes; its labels and slot wait.
  void unlink(uint32_t index) {
    Slot& slot = slotAt(index);
    const Labels* labels = slot.labels.load(std::memory_order_relaxed);
    index_.erase(std::string_view(labels->key));
    for (Memo& memo : memo_) {
      if (memo.series == index) memo = Memo{};
    }
    slot.labels.store(nullptr, std::memory_order_release);
    slot.shown_until.store(0, std::memory_order_relaxed);  // no longer retired: not there
    limbo_.push_back(Waiting{index, labels, epoch_.load(std::memory_order_relaxed)});
    --retired_;
    --named_;
  }

  // Owner thread: moves the epoch on while no scrape is left in the one before, and frees
  // what was unlinked two epochs ago or earlier. Never waits.
  void reclaim() {
    if (limbo_.empty()) return;
    uint64_t epoch = epoch_.load(std::memory_order_relaxed);
    // Unlinked in epoch e: free at e + 2, so at most two moves are of any use.
    for (int step = 0; step < 2 && limbo_.back().epoch + 2 > epoch; ++step) {
      if (readers_[(epoch + 1) & 1].load(std::memory_order_seq_cst) != 0) break;
      epoch_.store(++epoch, std::memory_order_seq_cst);
    }
    size_t done = 0;
    for (; done < limbo_.size() && limbo_[done].epoch + 2 <= epoch; ++done) {
      delete limbo_[done].labels;
      free_.push_back(limbo_[done].slot);
    }
    limbo_.erase(limbo_.begin(), limbo_.begin() + static_cast<std::ptrdiff_t>(done));
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
    const Labels* labels = slotAt(index).labels.load(std::memory_order_relaxed);
    if (labels == nullptr || labels->values.size() != values.size()) return false;
    for (size_t i = 0; i < values.size(); ++i) {
      if (labels->values[i] != values[i]) return false;
    }
    return true;
  }

  Slot& slotAt(uint32_t index) const {
    Chunk* chunk = chunks_[index / kChunkSeries].load(std::memory_order_relaxed);
    return chunk->slots[index % kChunkSeries];
  }

  Cell* cellsAt(uint32_t index) {
    Chunk* chunk = chunks_[index / kChunkSeries].load(std::memory_order_relaxed);
    return &chunk->cells[(index % kChunkSeries) * cells_per_series_];
  }

  struct Waiting {
    uint32_t slot;
    const Labels* labels;
    uint64_t epoch;  // when it was unlinked
  };

  const FamilySpec& spec_;
  const uint32_t cells_per_series_;
  const uint32_t capacity_;
  const uint32_t chunk_count_;
  std::unique_ptr<std::atomic<Chunk*>[]> chunks_;
  std::atomic<uint32_t> published_{0};  // slots ever used; a scrape looks no further
  std::atomic<uint64_t> overflowed_{0};
  // Read sections (see registry.h): the epoch, and the scrapes inside by epoch parity.
  mutable std::atomic<uint64_t> epoch_{0};
  mutable std::array<std::atomic<uint32_t>, 2> readers_{};
  // Owner thread only. The index keys are the Labels' own keys.
  std::unordered_map<std::string_view, uint32_t> index_;
  std::array<Memo, 64> memo_{};
  bool overflow_published_ = false;
  uint32_t fresh_ = kOverflowSlot + 1;  // the first slot never used
  uint32_t named_ = 0;    // series other than the overflow series, retired ones included
  uint32_t retired_ = 0;  // of those, retired
  uint64_t created_ = 0;
  std::vector<uint32_t> free_;  // slots to reuse
  std::vector<Waiting> limbo_;  // unlinked, in epoch order
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

void Shard::forEachSeries(FamilyId family,
                          const std::function<void(const SeriesView&)>& visit) const {
  families_.at(family)->forEachSeries(visit);
}

void Shard::reconcile(FamilyId family, TimePoint now, const Present& present) {
  families_.at(family)->reconcile(now, seriesGrace(), present);
}

void Shard::sweep(TimePoint now) {
  for (const auto& family : families_) family->sweep(now);
}

uint64_t Shard::created(FamilyId family) const { return families_.at(family)->created(); }

SeriesStats Shard::stats(FamilyId family) const { return families_.at(family)->stats(); }

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
