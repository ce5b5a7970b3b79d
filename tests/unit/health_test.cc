#include "lb/health.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "lb/endpoints.h"
#include "lb/picker.h"

namespace spindle::lb {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const TimePoint kNow = TimePoint(std::chrono::hours(1));

EndpointSet makeSet(size_t n) {
  std::vector<Endpoint> endpoints;
  for (size_t i = 0; i < n; ++i) {
    auto address = net::SocketAddress::parse("198.18.1." + std::to_string(2 + i) + ":50051");
    EXPECT_TRUE(address.ok());
    endpoints.push_back(Endpoint{*address, std::make_shared<EndpointLoad>()});
  }
  return EndpointSet("svc", std::move(endpoints));
}

OutlierSettings settings(uint32_t failures = 5, milliseconds base = seconds(1),
                         milliseconds max = seconds(60), uint32_t percent = 50) {
  OutlierSettings out;
  out.consecutive_failures = failures;
  out.base_ejection = base;
  out.max_ejection = max;
  out.max_ejected_percent = percent;
  return out;
}

// Fails the endpoint `n` times at `now`; returns the last outcome.
FailureOutcome failTimes(const Endpoint& endpoint, const EndpointSet& set, TimePoint now,
                         const OutlierSettings& s, uint32_t n) {
  FailureOutcome last = FailureOutcome::kCounted;
  for (uint32_t i = 0; i < n; ++i) last = onFailure(*endpoint.load, set, now, s);
  return last;
}

// When the endpoint's current ejection ends, seen from the outside.
TimePoint ejectedUntil(const Endpoint& endpoint) {
  return TimePoint(std::chrono::nanoseconds(endpoint.load->ejected_until_ns.load()));
}

TEST(HealthTest, Health_EjectsAfterConsecutiveFailures) {
  const EndpointSet set = makeSet(3);
  const auto s = settings();
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(onFailure(*set[0].load, set, kNow, s), FailureOutcome::kCounted) << "failure " << i;
    EXPECT_FALSE(isEjected(*set[0].load, kNow));
  }
  EXPECT_EQ(onFailure(*set[0].load, set, kNow, s), FailureOutcome::kEjected);
  EXPECT_TRUE(isEjected(*set[0].load, kNow));
  EXPECT_EQ(ejectedUntil(set[0]), kNow + seconds(1));
  EXPECT_FALSE(isEjected(*set[1].load, kNow));
}

TEST(HealthTest, Health_OneFailureEjectsWhenThatIsTheThreshold) {
  const EndpointSet set = makeSet(2);
  EXPECT_EQ(onFailure(*set[1].load, set, kNow, settings(1)), FailureOutcome::kEjected);
}

TEST(HealthTest, Health_SuccessResetsTheFailureCount) {
  const EndpointSet set = makeSet(3);
  const auto s = settings();
  failTimes(set[0], set, kNow, s, 4);
  onSuccess(*set[0].load);
  EXPECT_EQ(set[0].load->consecutive_failures.load(), 0u);
  EXPECT_EQ(failTimes(set[0], set, kNow, s, 4), FailureOutcome::kCounted);
  EXPECT_FALSE(isEjected(*set[0].load, kNow));
  EXPECT_EQ(onFailure(*set[0].load, set, kNow, s), FailureOutcome::kEjected);
}

TEST(HealthTest, Health_ReturnsWhenItsTimeIsUpWithAFreshCount) {
  const EndpointSet set = makeSet(3);
  const auto s = settings();
  failTimes(set[0], set, kNow, s, 5);
  EXPECT_TRUE(isEjected(*set[0].load, kNow + milliseconds(999)));
  const TimePoint back = kNow + seconds(1);
  EXPECT_FALSE(isEjected(*set[0].load, back));
  // Counted from zero: four failures after its return do not eject it again.
  EXPECT_EQ(failTimes(set[0], set, back, s, 4), FailureOutcome::kCounted);
  EXPECT_FALSE(isEjected(*set[0].load, back));
  EXPECT_EQ(onFailure(*set[0].load, set, back, s), FailureOutcome::kEjected);
}

TEST(HealthTest, Health_FailuresWhileEjectedAreNotCounted) {
  // Calls in flight at the ejection fail late; they must not count toward the next one.
  const EndpointSet set = makeSet(3);
  const auto s = settings();
  failTimes(set[0], set, kNow, s, 5);
  EXPECT_EQ(failTimes(set[0], set, kNow + milliseconds(500), s, 10),
            FailureOutcome::kAlreadyEjected);
  EXPECT_EQ(ejectedUntil(set[0]), kNow + seconds(1));  // not extended either
  EXPECT_EQ(failTimes(set[0], set, kNow + seconds(1), s, 4), FailureOutcome::kCounted);
}

TEST(HealthTest, Health_BackoffDoublesUpToMax) {
  const EndpointSet set = makeSet(3);
  const auto s = settings(5, seconds(1), seconds(10));
  const seconds expected[] = {seconds(1), seconds(2),  seconds(4),
                              seconds(8), seconds(10), seconds(10)};
  TimePoint now = kNow;
  for (seconds want : expected) {
    // Each ejection right after the endpoint came back: it never served long enough to be
    // forgiven.
    ASSERT_EQ(failTimes(set[0], set, now, s, 5), FailureOutcome::kEjected);
    EXPECT_EQ(ejectedUntil(set[0]) - now, want);
    now = ejectedUntil(set[0]);
  }
  EXPECT_EQ(set[0].load->ejections.load(), 6u);
}

TEST(HealthTest, Health_BackoffStartsOverAfterServingForMaxEjection) {
  const EndpointSet set = makeSet(3);
  const auto s = settings(5, seconds(1), seconds(10));
  failTimes(set[0], set, kNow, s, 5);               // 1 s
  failTimes(set[0], set, kNow + seconds(1), s, 5);  // 2 s, back at kNow + 3 s
  const TimePoint back = kNow + seconds(3);
  // Back for less than max_ejection: the next is 4 s.
  failTimes(set[0], set, back + seconds(9), s, 5);
  EXPECT_EQ(ejectedUntil(set[0]) - (back + seconds(9)), seconds(4));
  // Back for max_ejection (10 s) this time: it starts over at base_ejection.
  const TimePoint back_again = back + seconds(13);
  const TimePoint later = back_again + seconds(10);
  failTimes(set[0], set, later, s, 5);
  EXPECT_EQ(ejectedUntil(set[0]) - later, seconds(1));
}

TEST(HealthTest, Health_EjectionDurationNeverOverflows) {
  const auto s = settings(5, seconds(1), seconds(60));
  EXPECT_EQ(ejectionDuration(0, s), seconds(1));
  EXPECT_EQ(ejectionDuration(5, s), seconds(32));
  EXPECT_EQ(ejectionDuration(6, s), seconds(60));
  EXPECT_EQ(ejectionDuration(64, s), seconds(60));
  EXPECT_EQ(ejectionDuration(UINT32_MAX, s), seconds(60));
}

TEST(HealthTest, Health_MaxEjectedShareOfASet) {
  EXPECT_EQ(maxEjected(0, 50), 0u);
  EXPECT_EQ(maxEjected(1, 50), 0u);  // a lone endpoint has nowhere to send its calls
  EXPECT_EQ(maxEjected(1, 99), 0u);
  EXPECT_EQ(maxEjected(1, 100), 1u);
  EXPECT_EQ(maxEjected(2, 50), 1u);
  EXPECT_EQ(maxEjected(2, 10), 1u);  // at least one of two or more
  EXPECT_EQ(maxEjected(3, 30), 1u);
  EXPECT_EQ(maxEjected(3, 50), 1u);  // floor(1.5)
  EXPECT_EQ(maxEjected(10, 50), 5u);
  EXPECT_EQ(maxEjected(10, 0), 0u);  // 0 turns ejection off
  EXPECT_EQ(maxEjected(10, 100), 10u);
}

TEST(HealthTest, Health_MaxEjectedPercentIsRespected) {
  const EndpointSet set = makeSet(10);
  const auto s = settings(5, seconds(1), seconds(60), 30);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(failTimes(set[i], set, kNow, s, 5), FailureOutcome::kEjected) << "endpoint " << i;
  }
  EXPECT_EQ(failTimes(set[3], set, kNow, s, 5), FailureOutcome::kEjectionCapped);
  EXPECT_FALSE(isEjected(*set[3].load, kNow));
  EXPECT_EQ(countEjected(set, kNow), 3u);
  // Still capped while the others are out...
  EXPECT_EQ(onFailure(*set[3].load, set, kNow + milliseconds(999), s),
            FailureOutcome::kEjectionCapped);
  // ...and its count stayed at the threshold: the first failure once there is room ejects it.
  EXPECT_EQ(onFailure(*set[3].load, set, kNow + seconds(1), s), FailureOutcome::kEjected);
  EXPECT_EQ(countEjected(set, kNow + seconds(1)), 1u);
}

TEST(HealthTest, Health_ZeroPercentNeverEjects) {
  const EndpointSet set = makeSet(4);
  EXPECT_EQ(failTimes(set[0], set, kNow, settings(5, seconds(1), seconds(60), 0), 50),
            FailureOutcome::kEjectionCapped);
  EXPECT_FALSE(isEjected(*set[0].load, kNow));
}

TEST(HealthTest, Health_ALoneEndpointIsNotEjected) {
  const EndpointSet set = makeSet(1);
  EXPECT_EQ(failTimes(set[0], set, kNow, settings(), 5), FailureOutcome::kEjectionCapped);
  EXPECT_FALSE(isEjected(*set[0].load, kNow));
}

TEST(HealthTest, Health_PickersStopSendingToAnEjectedEndpoint) {
  // The pieces together: failures eject, the picker steps around it, and takes it back when
  // its time is up.
  const EndpointSet set = makeSet(3);
  auto picker = makePicker(Balance::kLeastRequest, 7);
  failTimes(set[1], set, kNow, settings(), 5);
  for (int i = 0; i < 300; ++i) ASSERT_NE(picker->pick(set, {}, kNow), std::optional<size_t>(1));
  size_t back = 0;
  for (int i = 0; i < 300; ++i) back += picker->pick(set, {}, kNow + seconds(1)) == 1u ? 1u : 0u;
  EXPECT_GT(back, 50u);
  EXPECT_EQ(picker->panics(), 0u);
}

}  // namespace
}  // namespace spindle::lb
