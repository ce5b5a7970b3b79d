#include "lb/picker.h"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace spindle::lb {

static_assert(std::numeric_limits<size_t>::max() <= std::numeric_limits<uint64_t>::max(),
              "Random::below draws size_t values from 64 random bits");

uint64_t Random::next() {
  // splitmix64 (Steele, Lea, Flood 2014): one add and two multiply-xorshift rounds; every
  // seed, zero included, gives a full-period, well-mixed sequence.
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

size_t Random::below(size_t bound) {
  // Lemire's multiply-shift: the high 64 bits of x * bound are uniform in [0, bound) once the
  // few low products that would bias it are redrawn. The division runs only on the rare
  // near-miss, and a redraw happens with probability < bound / 2^64.
  __extension__ using Wide = unsigned __int128;
  const uint64_t b = bound;
  Wide m = static_cast<Wide>(next()) * b;
  auto low = static_cast<uint64_t>(m);
  if (low < b) {
    const uint64_t threshold = (0 - b) % b;  // 2^64 mod b
    while (low < threshold) {
      m = static_cast<Wide>(next()) * b;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<size_t>(m >> 64);
}

double Random::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

void recordLatency(EndpointLoad& load, uint64_t sample_ns, TimePoint now,
                   std::chrono::nanoseconds decay) {
  const int64_t now_ns = toNanos(now);
  const uint64_t current = load.latency_ewma_ns.load(std::memory_order_relaxed);
  const int64_t at = load.latency_updated_ns.load(std::memory_order_relaxed);
  uint64_t next = sample_ns;
  if (current != 0 && sample_ns < current) {
    // Weight of the old average: 1 for a sample at the same instant, e^-1 one decay later.
    const double elapsed = now_ns > at ? static_cast<double>(now_ns - at) : 0.0;
    const double w =
        decay.count() > 0 ? std::exp(-elapsed / static_cast<double>(decay.count())) : 0.0;
    next = static_cast<uint64_t>(std::llround(static_cast<double>(current) * w +
                                              static_cast<double>(sample_ns) * (1.0 - w)));
  }
  // 0 means "no sample yet"; a 0 ns answer is still an answer.
  if (next == 0) next = 1;
  load.latency_ewma_ns.store(next, std::memory_order_relaxed);
  // A worker whose clock reading is older than the last sample's must not move time back.
  if (now_ns > at) load.latency_updated_ns.store(now_ns, std::memory_order_relaxed);
}

double currentLatency(const EndpointLoad& load, TimePoint now, std::chrono::nanoseconds decay) {
  const uint64_t value = load.latency_ewma_ns.load(std::memory_order_relaxed);
  if (value == 0) return 0;
  const int64_t elapsed = toNanos(now) - load.latency_updated_ns.load(std::memory_order_relaxed);
  if (elapsed <= 0 || decay.count() <= 0) return static_cast<double>(value);
  return static_cast<double>(value) *
         std::exp(-static_cast<double>(elapsed) / static_cast<double>(decay.count()));
}

namespace {

// The endpoints a call may still go to, the snapshot minus its exclusions, addressed by rank
// (the r-th allowed index) so that a uniform draw over them needs no list and no allocation.
class Candidates {
 public:
  Candidates(size_t total, const Exclusions& exclude) : total_(total) {
    for (size_t i = 0; i < exclude.size(); ++i) {
      const size_t index = exclude.at(i);
      if (index >= total) continue;  // names no endpoint of this snapshot
      // Insertion sort, dropping repeats: a call excluded twice from one endpoint is one
      // exclusion.
      size_t pos = count_;
      while (pos > 0 && excluded_[pos - 1] > index) --pos;
      if (pos > 0 && excluded_[pos - 1] == index) continue;
      for (size_t j = count_; j > pos; --j) excluded_[j] = excluded_[j - 1];
      excluded_[pos] = index;
      ++count_;
    }
  }

  size_t size() const { return total_ - count_; }

  // The index of the rank-th allowed endpoint, rank < size(): step over every excluded index
  // at or below it (they are sorted, so one pass does).
  size_t at(size_t rank) const {
    size_t index = rank;
    for (size_t i = 0; i < count_ && excluded_[i] <= index; ++i) ++index;
    return index;
  }

 private:
  size_t total_;
  size_t excluded_[Exclusions::kCapacity] = {};
  size_t count_ = 0;
};

uint32_t activeStreams(const Endpoint& endpoint) {
  return endpoint.load ? endpoint.load->active_streams.load(std::memory_order_relaxed) : 0;
}

bool ejected(const Endpoint& endpoint, int64_t now_ns) {
  return endpoint.load && now_ns < endpoint.load->ejected_until_ns.load(std::memory_order_relaxed);
}

constexpr size_t kNoRank = std::numeric_limits<size_t>::max();
// Random draws before a picker looks at every candidate for one in service. Ejected endpoints
// are at most max_ejected_percent of the set (half by default), so 8 draws miss with
// probability 1/256 or less.
constexpr int kDraws = 8;

// Draws a rank uniformly from the candidates other than `skip` (kNoRank: none skipped) whose
// endpoint is in service, or from all of them when `with_ejected`; nullopt when there is none.
// Rejection sampling reads only the endpoints drawn: their loads are cache lines that other
// workers write, and a pass over all of them on every call would bounce every line. Accepted
// draws and the fallback pass are both uniform over the endpoints in service, so the mix is.
std::optional<size_t> drawRank(Random& random, const EndpointSet& set, const Candidates& candidates,
                               size_t skip, int64_t now_ns, bool with_ejected,
                               std::vector<size_t>& scratch) {
  const size_t n = candidates.size();
  const size_t m = skip == kNoRank ? n : n - 1;
  if (m == 0) return std::nullopt;
  auto rankOf = [skip](size_t r) { return skip != kNoRank && r >= skip ? r + 1 : r; };
  const int draws = m == 1 ? 1 : kDraws;
  for (int i = 0; i < draws; ++i) {
    const size_t rank = rankOf(m == 1 ? 0 : random.below(m));
    if (with_ejected || !ejected(set[candidates.at(rank)], now_ns)) return rank;
  }
  if (m == 1) return std::nullopt;
  scratch.clear();  // keeps its capacity: allocates only the first time a set is this large
  for (size_t r = 0; r < m; ++r) {
    const size_t rank = rankOf(r);
    if (!ejected(set[candidates.at(rank)], now_ns)) scratch.push_back(rank);
  }
  if (scratch.empty()) return std::nullopt;
  return scratch[scratch.size() == 1 ? 0 : random.below(scratch.size())];
}

enum class Cost { kActiveStreams, kPeakEwma };

// Power of two choices (Mitzenmacher): two distinct random candidates, the cheaper one wins.
// Almost as even as asking every endpoint, at the cost of a few atomic loads, and it does not
// herd every worker onto the one idle endpoint as "least of all" does when the loads they read
// are a little stale.
//
// least_request: the cost is the endpoint's active streams.
// peak_ewma: the cost is latency * (active streams + 1), the latency as currentLatency() reads
// it. An endpoint without a sample yet is taken to be as fast as its rival, so the pair is
// decided by active streams: a new endpoint gets tried (it ties or wins while it is no busier)
// but is not flooded, as a cost of zero would do until its first answer came back. Without
// samples on either side, peak_ewma is least_request exactly.
class PowerOfTwoPicker final : public Picker {
 public:
  PowerOfTwoPicker(Cost cost, uint64_t seed, PickerOptions options)
      : cost_(cost), random_(seed), options_(options) {}

  std::optional<size_t> pick(const EndpointSet& set, const Exclusions& exclude,
                             TimePoint now) override {
    const Candidates candidates(set.size(), exclude);
    if (candidates.size() == 0) return std::nullopt;
    const int64_t now_ns = toNanos(now);
    bool panic = false;
    auto first_rank = drawRank(random_, set, candidates, kNoRank, now_ns, false, scratch_);
    if (!first_rank) {
      panic = true;
      countPanic();
      first_rank = drawRank(random_, set, candidates, kNoRank, now_ns, true, scratch_);
    }
    // The second is drawn from the others, so the two choices always differ: with a repeat,
    // a loaded endpoint could be "compared" with itself and win.
    const auto second_rank =
        drawRank(random_, set, candidates, *first_rank, now_ns, panic, scratch_);
    const size_t first = candidates.at(*first_rank);
    if (!second_rank) return first;  // the only one in service
    const size_t second = candidates.at(*second_rank);
    syncSnapshot(set);
    const int order = compare(set[first], set[second], now);
    size_t chosen;
    if (order != 0) {
      chosen = order < 0 ? first : second;
    } else {
      // A tie is the common case at light load, when every endpoint is idle. Coin flips
      // would spread sequential calls only as evenly as a binomial does (±2.6% over 3000
      // calls to 3 endpoints, one sigma); the endpoint this picker sent fewer calls to since
      // the snapshot appeared wins instead, and only a second tie is left to chance.
      const uint32_t first_picks = picksOf(set, first, now_ns);
      const uint32_t second_picks = picksOf(set, second, now_ns);
      if (first_picks != second_picks) {
        chosen = first_picks < second_picks ? first : second;
      } else {
        chosen = (random_.next() >> 63) != 0 ? first : second;
      }
    }
    if (options_.slow_start.count() > 0) {
      chosen = slowStart(set, chosen, chosen == first ? second : first, now_ns);
    }
    picks_[chosen] = picksOf(set, chosen, now_ns) + 1;
    most_picks_ = std::max(most_picks_, picks_[chosen]);
    return chosen;
  }

 private:
  // <0 when a is cheaper, >0 when b is, 0 on a tie.
  int compare(const Endpoint& a, const Endpoint& b, TimePoint now) const {
    const uint32_t streams_a = activeStreams(a);
    const uint32_t streams_b = activeStreams(b);
    if (cost_ == Cost::kActiveStreams) {
      return streams_a == streams_b ? 0 : streams_a < streams_b ? -1 : 1;
    }
    double latency_a = a.load ? currentLatency(*a.load, now, options_.decay) : 0;
    double latency_b = b.load ? currentLatency(*b.load, now, options_.decay) : 0;
    if (latency_a == 0 && latency_b == 0) {
      latency_a = latency_b = 1;
    } else if (latency_a == 0) {
      latency_a = latency_b;
    } else if (latency_b == 0) {
      latency_b = latency_a;
    }
    const double cost_a = latency_a * (static_cast<double>(streams_a) + 1);
    const double cost_b = latency_b * (static_cast<double>(streams_b) + 1);
    return cost_a == cost_b ? 0 : cost_a < cost_b ? -1 : 1;
  }

  // How far an endpoint is through its slow start, in [0.1, 1]; 1 when it is done or has
  // none. The floor gives a brand-new endpoint some calls at once, to warm it at all.
  double warmth(const Endpoint& endpoint, int64_t now_ns) const {
    if (!endpoint.load) return 1;
    const int64_t joined = endpoint.load->joined_ns.load(std::memory_order_relaxed);
    if (joined == 0) return 1;
    const int64_t age = now_ns - joined;
    const int64_t window = options_.slow_start.count();
    if (age >= window) return 1;
    const double share = age > 0 ? static_cast<double>(age) / static_cast<double>(window) : 0;
    return share > kMinWarmth ? share : kMinWarmth;
  }

  // The winner keeps the pick with probability warmth(winner) / warmth(loser) when it is the
  // colder of the two, else the loser takes it. Against a warm rival that is age/slow_start;
  // between two endpoints equally new (a whole set that started together) nothing changes, so
  // slow start never turns the balancing upside down.
  size_t slowStart(const EndpointSet& set, size_t winner, size_t loser, int64_t now_ns) {
    const double hot = warmth(set[loser], now_ns);
    const double cold = warmth(set[winner], now_ns);
    if (cold >= hot) return winner;
    return random_.uniform() * hot < cold ? winner : loser;
  }

  // Counts restart with each snapshot, so an endpoint that joins is not flooded while it
  // "catches up" with the others.
  void syncSnapshot(const EndpointSet& set) {
    if (&set != snapshot_ || picks_.size() != set.size()) {
      snapshot_ = &set;
      picks_.assign(set.size(), 0);  // allocates only when the snapshot changes
      most_picks_ = 0;
    }
  }

  // An endpoint that was out of the running (ejected) for a while must not win every tie
  // until its count catches up: it is never counted more than kCatchUp picks behind. One in
  // slow start is behind on purpose and keeps its count, which is how its share grows back.
  uint32_t picksOf(const EndpointSet& set, size_t index, int64_t now_ns) {
    if (picks_[index] + kCatchUp < most_picks_ && warmth(set[index], now_ns) >= 1) {
      picks_[index] = most_picks_ - kCatchUp;
    }
    return picks_[index];
  }

  static constexpr uint32_t kCatchUp = 2;

  static constexpr double kMinWarmth = 0.1;

  Cost cost_;
  Random random_;
  PickerOptions options_;
  const EndpointSet* snapshot_ = nullptr;
  std::vector<uint32_t> picks_;
  uint32_t most_picks_ = 0;
  std::vector<size_t> scratch_;
};

// Round robin over the snapshot. The counter starts at a seeded random place so that the
// workers, one picker each, do not all send their first calls to endpoint 0.
class RoundRobinPicker final : public Picker {
 public:
  explicit RoundRobinPicker(uint64_t seed) : next_(Random(seed).next()) {}

  std::optional<size_t> pick(const EndpointSet& set, const Exclusions& exclude,
                             TimePoint now) override {
    const size_t n = set.size();
    if (n == 0) return std::nullopt;
    const int64_t now_ns = toNanos(now);
    // A snapshot of another size just moves the position: the counter is taken modulo n.
    const size_t start = static_cast<size_t>(next_ % n);
    // Ejected endpoints are stepped over like excluded ones; the first endpoint not excluded
    // is kept in case every one is ejected (panic).
    std::optional<size_t> fallback;
    for (size_t step = 0; step < n; ++step) {
      size_t index = start + step;
      if (index >= n) index -= n;
      if (exclude.contains(index)) continue;
      if (!ejected(set[index], now_ns)) {
        next_ = index + 1;
        return index;
      }
      if (!fallback) fallback = index;
    }
    if (!fallback) return std::nullopt;
    countPanic();
    next_ = *fallback + 1;
    return fallback;
  }

 private:
  uint64_t next_;
};

class RandomPicker final : public Picker {
 public:
  explicit RandomPicker(uint64_t seed) : random_(seed) {}

  std::optional<size_t> pick(const EndpointSet& set, const Exclusions& exclude,
                             TimePoint now) override {
    const Candidates candidates(set.size(), exclude);
    if (candidates.size() == 0) return std::nullopt;
    const int64_t now_ns = toNanos(now);
    auto rank = drawRank(random_, set, candidates, kNoRank, now_ns, false, scratch_);
    if (!rank) {
      countPanic();
      rank = drawRank(random_, set, candidates, kNoRank, now_ns, true, scratch_);
    }
    return candidates.at(*rank);
  }

 private:
  Random random_;
  std::vector<size_t> scratch_;
};

}  // namespace

std::string_view balanceName(Balance balance) {
  switch (balance) {
    case Balance::kLeastRequest: return "least_request";
    case Balance::kRoundRobin: return "round_robin";
    case Balance::kPeakEwma: return "peak_ewma";
    case Balance::kRandom: return "random";
  }
  return "?";
}

std::unique_ptr<Picker> makePicker(Balance balance, uint64_t seed, PickerOptions options) {
  switch (balance) {
    case Balance::kLeastRequest:
      return std::make_unique<PowerOfTwoPicker>(Cost::kActiveStreams, seed, options);
    case Balance::kRoundRobin: return std::make_unique<RoundRobinPicker>(seed);
    case Balance::kRandom: return std::make_unique<RandomPicker>(seed);
    case Balance::kPeakEwma:
      return std::make_unique<PowerOfTwoPicker>(Cost::kPeakEwma, seed, options);
  }
  return std::make_unique<PowerOfTwoPicker>(Cost::kActiveStreams, seed, options);
}

}  // namespace spindle::lb
