#include "lb/picker.h"

#include <atomic>
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

// Power of two choices (Mitzenmacher): two distinct random candidates, the one with fewer
// active streams wins. Almost as even as asking every endpoint, at the cost of two atomic
// loads, and it does not herd every worker onto the one idle endpoint as "least of all" does
// when the counts they read are a little stale.
class LeastRequestPicker final : public Picker {
 public:
  explicit LeastRequestPicker(uint64_t seed) : random_(seed) {}

  std::optional<size_t> pick(const EndpointSet& set, const Exclusions& exclude) override {
    const Candidates candidates(set.size(), exclude);
    const size_t n = candidates.size();
    if (n == 0) return std::nullopt;
    if (n == 1) return candidates.at(0);
    // The second rank is drawn over the n - 1 others, so the two choices always differ: with
    // a repeat, a loaded endpoint could be "compared" with itself and win.
    const size_t first_rank = random_.below(n);
    size_t second_rank = random_.below(n - 1);
    if (second_rank >= first_rank) ++second_rank;
    const size_t first = candidates.at(first_rank);
    const size_t second = candidates.at(second_rank);
    syncSnapshot(set);
    const uint32_t first_streams = activeStreams(set[first]);
    const uint32_t second_streams = activeStreams(set[second]);
    size_t chosen;
    if (first_streams != second_streams) {
      chosen = first_streams < second_streams ? first : second;
    } else {
      // A tie is the common case at light load, when every endpoint is idle. Coin flips
      // would spread sequential calls only as evenly as a binomial does (±2.6% over 3000
      // calls to 3 endpoints, one sigma); the endpoint this picker sent fewer calls to since
      // the snapshot appeared wins instead, and only a second tie is left to chance.
      if (picks_[first] != picks_[second]) {
        chosen = picks_[first] < picks_[second] ? first : second;
      } else {
        chosen = (random_.next() >> 63) != 0 ? first : second;
      }
    }
    ++picks_[chosen];
    return chosen;
  }

 private:
  // Counts restart with each snapshot, so an endpoint that joins is not flooded while it
  // "catches up" with the others.
  void syncSnapshot(const EndpointSet& set) {
    if (&set != snapshot_ || picks_.size() != set.size()) {
      snapshot_ = &set;
      picks_.assign(set.size(), 0);  // allocates only when the snapshot changes
    }
  }

  Random random_;
  const EndpointSet* snapshot_ = nullptr;
  std::vector<uint32_t> picks_;
};

// Round robin over the snapshot. The counter starts at a seeded random place so that the
// workers, one picker each, do not all send their first calls to endpoint 0.
class RoundRobinPicker final : public Picker {
 public:
  explicit RoundRobinPicker(uint64_t seed) : next_(Random(seed).next()) {}

  std::optional<size_t> pick(const EndpointSet& set, const Exclusions& exclude) override {
    const size_t n = set.size();
    if (n == 0) return std::nullopt;
    // A snapshot of another size just moves the position: the counter is taken modulo n.
    const size_t start = static_cast<size_t>(next_ % n);
    // At most Exclusions::kCapacity indices are excluded, so this ends within that many + 1
    // steps unless every endpoint is excluded.
    for (size_t step = 0; step < n; ++step) {
      size_t index = start + step;
      if (index >= n) index -= n;
      if (!exclude.contains(index)) {
        next_ = index + 1;
        return index;
      }
    }
    return std::nullopt;
  }

 private:
  uint64_t next_;
};

class RandomPicker final : public Picker {
 public:
  explicit RandomPicker(uint64_t seed) : random_(seed) {}

  std::optional<size_t> pick(const EndpointSet& set, const Exclusions& exclude) override {
    const Candidates candidates(set.size(), exclude);
    if (candidates.size() == 0) return std::nullopt;
    return candidates.at(random_.below(candidates.size()));
  }

 private:
  Random random_;
};

}  // namespace

std::unique_ptr<Picker> makePicker(config::Balance balance, uint64_t seed) {
  switch (balance) {
    case config::Balance::kLeastRequest:
      return std::make_unique<LeastRequestPicker>(seed);
    case config::Balance::kRoundRobin:
      return std::make_unique<RoundRobinPicker>(seed);
    case config::Balance::kRandom:
      return std::make_unique<RandomPicker>(seed);
    case config::Balance::kPeakEwma:
      // peak_ewma needs the per-endpoint latency EWMA, which is not measured yet (a later
      // piece of work). Until then it is least_request, so a config that asks for it works.
      return std::make_unique<LeastRequestPicker>(seed);
  }
  return std::make_unique<LeastRequestPicker>(seed);
}

}  // namespace spindle::lb
