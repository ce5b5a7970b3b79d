// How a service is balanced: the settings of lb/, which config/ fills in from the YAML. A
// reload compares them as whole values, so that a new setting can never be left out of the
// comparison and silently not reload.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

namespace spindle::lb {

enum class Balance { kLeastRequest, kRoundRobin, kPeakEwma, kRandom };
std::string_view balanceName(Balance balance);

// Passive health (lb/health.h): an endpoint whose calls fail `consecutive_failures` times in a
// row is ejected for base_ejection * 2^(ejections so far), at most max_ejection.
struct OutlierSettings {
  uint32_t consecutive_failures = 5;  // 1..1000
  std::chrono::milliseconds base_ejection{1000};
  std::chrono::milliseconds max_ejection{60000};  // not below base_ejection
  uint32_t max_ejected_percent = 50;              // 0..100; 0 never ejects
  bool operator==(const OutlierSettings&) const = default;
};

// Transparent retries of calls the endpoint never processed (lb/retry_budget.h).
struct RetrySettings {
  uint32_t max = 3;  // tries per call, the first included: 1..10; 1 = no retries
  // Retries per second may reach this share of the calls per second, and never fall below
  // 10 per second whatever it says: 0 keeps only that floor (max: 1 turns retries off).
  uint32_t budget_percent = 20;  // 0..100
  bool operator==(const RetrySettings&) const = default;
};

// What a picker needs besides the policy.
struct PickerOptions {
  // The latency average's time constant (peak_ewma.decay). peak_ewma also reads an
  // endpoint's latency as decaying toward zero while no new sample comes: an endpoint that
  // was slow once and then lost every comparison is tried again after a few decay times,
  // and one slow answer puts it back where it was (the peak is taken whole).
  std::chrono::nanoseconds decay = std::chrono::seconds(10);
  // 0 = off. Otherwise an endpoint that joined less than this long ago keeps a pick that
  // least_request or peak_ewma gave it only with probability age / slow_start (at least 10%,
  // so that it is warmed at all) relative to its rival's; see PowerOfTwoPicker.
  std::chrono::nanoseconds slow_start{0};
  bool operator==(const PickerOptions&) const = default;
};

struct ServicePolicy {
  Balance balance = Balance::kLeastRequest;
  PickerOptions picker;
  OutlierSettings outlier;
  RetrySettings retries;
  bool operator==(const ServicePolicy&) const = default;
};

}  // namespace spindle::lb
