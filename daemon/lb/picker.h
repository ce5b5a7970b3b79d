// Balancing policies: pick an endpoint of a snapshot for one call. Pure logic, no I/O; one
// Picker per worker and service, so picks take no lock.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "config/config.h"
#include "lb/endpoints.h"

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

 private:
  uint64_t state_;
};

class Picker {
 public:
  virtual ~Picker() = default;
  // The index of the endpoint for the next call; nullopt when every endpoint is excluded or
  // the set is empty.
  virtual std::optional<size_t> pick(const EndpointSet& set, const Exclusions& exclude) = 0;
};

std::unique_ptr<Picker> makePicker(config::Balance balance, uint64_t seed);

}  // namespace spindle::lb
