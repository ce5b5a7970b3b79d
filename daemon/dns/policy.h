// What a DNS answer does to a name's endpoints: pure logic, a clock passed in, so that the
// failure policy is tested without a network.
//
// - An answer with records replaces the set; the name is asked again within its TTL, clamped
//   to [refresh_min, refresh_max].
// - A failure (timeout, SERVFAIL, REFUSED, a broken connection) keeps the last good set and
//   retries with exponential backoff from refresh_min up to refresh_max.
// - NXDOMAIN or an empty answer empties the set only after `empty_confirmations` of them in a
//   row: one bad answer never empties a service.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "net/address.h"

namespace spindle::dns {

using Clock = std::chrono::steady_clock;

enum class Outcome {
  kRecords,  // NOERROR with at least one address
  kEmpty,    // NXDOMAIN, or NOERROR without an address
  kFailure,  // no usable answer: timeout, SERVFAIL, REFUSED, connection error
};

struct Answer {
  Outcome outcome = Outcome::kFailure;
  std::vector<net::SocketAddress> addresses;  // port 0
  std::chrono::seconds ttl{0};                // the smallest TTL of the records
  std::string error;                          // for kFailure and kEmpty, what the server said
};

// A and AAAA are asked separately; a name's answer is both together. The caller puts a
// family's last good answer in place of its failure, so that half an answer never drops the
// other family's endpoints. A family that failed with no good answer before counts as
// empty when the other answered; both failing is a failure.
Answer combine(const Answer& a, const Answer& aaaa);

struct PolicySettings {
  std::chrono::milliseconds refresh_min{1000};
  std::chrono::milliseconds refresh_max{30000};
  uint32_t empty_confirmations = 3;
};

class NameState {
 public:
  explicit NameState(PolicySettings settings) : settings_(settings) {}

  // Applies an answer received at `now`. Returns the new address set when it changed.
  std::optional<std::vector<net::SocketAddress>> onAnswer(const Answer& answer,
                                                          Clock::time_point now);

  Clock::time_point nextQuery() const { return next_query_; }
  // A good answer (records, or confirmed empty) has been seen.
  bool resolved() const { return resolved_; }
  const std::vector<net::SocketAddress>& addresses() const { return addresses_; }
  uint32_t consecutiveFailures() const { return failures_; }
  uint32_t consecutiveEmpty() const { return empties_; }
  // Seconds since the last good answer; nullopt before the first.
  std::optional<std::chrono::seconds> staleness(Clock::time_point now) const;
  // How long the last good answer holds: its TTL clamped to the refresh bounds, when spindle
  // asks again (refresh_min for a confirmed empty answer); zero before the first.
  std::chrono::milliseconds goodFor() const { return good_for_; }

 private:
  std::chrono::milliseconds clampRefresh(std::chrono::milliseconds wanted) const;

  PolicySettings settings_;
  std::vector<net::SocketAddress> addresses_;  // sorted, without duplicates
  Clock::time_point next_query_{};
  std::optional<Clock::time_point> last_good_;
  std::chrono::milliseconds good_for_{0};
  uint32_t failures_ = 0;
  uint32_t empties_ = 0;
  bool resolved_ = false;
};

}  // namespace spindle::dns
