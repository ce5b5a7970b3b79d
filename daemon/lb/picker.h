// Balancing policies: pick an endpoint of a snapshot for one call. Pure logic, no I/O; one
// Picker per worker and service, so picks take no lock.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "lb/endpoints.h"
#include "lb/policy.h"

namespace spindle::lb {

// Endpoints a call must not go to (already tried and failed), by index in the snapshot.
// Calls are tried on at most a few endpoints, so a small inline list is enough.
class Exclusions {
 public:
  static constexpr size_t kCapacity = 8;
  void add(size_t index) {
    if (count_ < kCapacity) indices_[count_++] = index;
  }
  bool contains(size_t index) const {
    for (size_t i = 0; i < count_; ++i) {
      if (indices_[i] == index) return true;
    }
    return false;
  }
  size_t size() const { return count_; }
  // The i-th index added, i < size(): lets a picker walk the list without probing every
  // endpoint of a large set.
  size_t at(size_t i) const { return indices_[i]; }

 private:
  size_t indices_[kCapacity] = {};
  size_t count_ = 0;
};

// A small fast PRNG (splitmix64): deterministic from its seed, for tests with fixed seeds.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform in [0, bound), bound > 0.
  size_t below(size_t bound);
  // Uniform in [0, 1), with 53 random bits.
  double uniform();

 private:
  uint64_t state_;
};

class Picker {
 public:
  virtual ~Picker() = default;
  // The index of the endpoint for the next call; nullopt when every endpoint is excluded or
  // the set is empty. Ejected endpoints (lb/health.h) are skipped; when every endpoint not
  // excluded is ejected, they are all used as if none were (panic: some answer beats none,
  // and passive health cannot tell a dead service from a dead few) and panics() counts it.
  virtual std::optional<size_t> pick(const EndpointSet& set, const Exclusions& exclude,
                                     TimePoint now) = 0;
  // Picks made in panic since the picker was made (a counter: the caller takes differences).
  uint64_t panics() const { return panics_; }

 protected:
  void countPanic() { ++panics_; }

 private:
  uint64_t panics_ = 0;
};

std::unique_ptr<Picker> makePicker(Balance balance, uint64_t seed, PickerOptions options = {});

// Adds a call's latency to the endpoint's peak EWMA: a sample above the average replaces it
// (a slowdown shows at once), one below pulls it down with weight 1 - exp(-dt / decay), dt
// being the time since the previous sample. Shared by all workers: a load, then a store, so a
// sample racing another worker's may be lost, which leaves the estimate approximate, not wrong.
void recordLatency(EndpointLoad& load, uint64_t sample_ns, TimePoint now,
                   std::chrono::nanoseconds decay);

// The latency peak_ewma uses at `now`: the average decayed toward zero over the time since
// its last sample (see PickerOptions::decay); 0 when there was no sample yet.
double currentLatency(const EndpointLoad& load, TimePoint now, std::chrono::nanoseconds decay);

}  // namespace spindle::lb
