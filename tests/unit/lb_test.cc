#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "lb/endpoints.h"
#include "lb/picker.h"

namespace spindle::lb {
namespace {

constexpr uint64_t kSeed = 42;
// A fake steady-clock time: far enough from the epoch that "a second ago" is a valid time.
const TimePoint kNow = TimePoint(std::chrono::seconds(1000));

// Distribution checks: kPicks picks over 3 equal endpoints. Each count is Binomial(30000,
// 1/3): mean 10000, standard deviation sqrt(30000 * 1/3 * 2/3) = 81.6. The bound of ±400 is
// 4.9 standard deviations, so a correct picker fails it with probability ~1e-6 per count
// whatever the seed (and with the fixed seeds here, never); a picker that drops an endpoint
// or favours one by 1.3 percentage points or more fails it.
constexpr size_t kPicks = 30000;
constexpr double kTolerance = 400;

EndpointSet makeSet(size_t n, std::vector<uint32_t> streams = {}) {
  std::vector<Endpoint> endpoints;
  for (size_t i = 0; i < n; ++i) {
    auto address = net::SocketAddress::parse("198.18.1." + std::to_string(2 + i) + ":50051");
    EXPECT_TRUE(address.ok());
    auto load = std::make_shared<EndpointLoad>();
    if (i < streams.size()) load->active_streams.store(streams[i]);
    endpoints.push_back(Endpoint{*address, std::move(load)});
  }
  return EndpointSet("svc", std::move(endpoints));
}

Exclusions exclusions(std::initializer_list<size_t> indices) {
  Exclusions out;
  for (size_t i : indices) out.add(i);
  return out;
}

// How often each endpoint was picked in `picks` picks; a nullopt is a test failure.
std::vector<size_t> countPicks(Picker& picker, const EndpointSet& set, size_t picks,
                               const Exclusions& exclude = {}, TimePoint now = kNow) {
  std::vector<size_t> counts(set.size(), 0);
  for (size_t i = 0; i < picks; ++i) {
    auto index = picker.pick(set, exclude, now);
    if (!index) {
      ADD_FAILURE() << "pick " << i << " gave nothing";
      break;
    }
    if (*index >= set.size()) {
      ADD_FAILURE() << "pick " << i << " gave index " << *index << " of " << set.size();
      break;
    }
    ++counts[*index];
  }
  return counts;
}

double asDouble(size_t n) { return static_cast<double>(n); }

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

// Pearson's chi-square statistic of `counts` against a uniform spread over the endpoints
// listed in `expected_over` (all of them when empty).
double chiSquare(const std::vector<size_t>& counts, std::vector<size_t> expected_over = {}) {
  if (expected_over.empty()) {
    for (size_t i = 0; i < counts.size(); ++i) expected_over.push_back(i);
  }
  size_t total = 0;
  for (size_t i : expected_over) total += counts[i];
  const double expected = asDouble(total) / asDouble(expected_over.size());
  double statistic = 0;
  for (size_t i : expected_over) {
    const double d = asDouble(counts[i]) - expected;
    statistic += d * d / expected;
  }
  return statistic;
}

// Upper 0.1% points of the chi-square distribution by degrees of freedom: a uniform picker
// exceeds them once in a thousand seeds (and with the fixed seeds here, never). A picker that
// drops one endpoint of ten, or sends one 1.3 times its share, lands far above.
constexpr double kChiSquare999[] = {0,     10.83, 13.82, 16.27, 18.47,
                                    20.52, 22.46, 24.32, 26.12, 27.88};

void eject(const Endpoint& endpoint, TimePoint until) {
  endpoint.load->ejected_until_ns.store(toNanos(until));
}

// --- Random -------------------------------------------------------------------------------

TEST(RandomTest, Random_MatchesSplitmix64ReferenceOutput) {
  // The first outputs of Vigna's reference splitmix64.c for seed 1234567.
  Random random(1234567);
  EXPECT_EQ(random.next(), 6457827717110365317ULL);
  EXPECT_EQ(random.next(), 3203168211198807973ULL);
  EXPECT_EQ(random.next(), 9817491932198370423ULL);
  EXPECT_EQ(random.next(), 4593380528125082431ULL);
  EXPECT_EQ(random.next(), 16408922859458223821ULL);
}

TEST(RandomTest, Random_SameSeedGivesSameSequence) {
  Random a(kSeed);
  Random b(kSeed);
  for (int i = 0; i < 1000; ++i) {
    ASSERT_EQ(a.next(), b.next()) << "draw " << i;
    ASSERT_EQ(a.below(1000), b.below(1000)) << "draw " << i;
  }
}

TEST(RandomTest, Random_DifferentSeedsGiveDifferentSequences) {
  Random a(1);
  Random b(2);
  int same = 0;
  for (int i = 0; i < 100; ++i) same += a.next() == b.next() ? 1 : 0;
  EXPECT_EQ(same, 0);
}

TEST(RandomTest, Random_BelowIsUniformOverItsRange) {
  // 70000 draws below 7: each count has mean 10000 and sd sqrt(70000 * 1/7 * 6/7) = 92.6.
  Random random(kSeed);
  std::vector<size_t> counts(7, 0);
  for (int i = 0; i < 70000; ++i) {
    const size_t v = random.below(7);
    ASSERT_LT(v, 7u);
    ++counts[v];
  }
  for (size_t v = 0; v < counts.size(); ++v) {
    EXPECT_NEAR(asDouble(counts[v]), 10000, 5 * 92.6) << "value " << v;
  }
  EXPECT_EQ(random.below(1), 0u);
}

// --- every policy -------------------------------------------------------------------------

class EveryPolicy : public ::testing::TestWithParam<Balance> {
 protected:
  std::unique_ptr<Picker> picker(uint64_t seed = kSeed) { return makePicker(GetParam(), seed); }
};

TEST_P(EveryPolicy, SpreadsEvenlyOverEqualEndpoints) {
  auto p = picker();
  const EndpointSet set = makeSet(3);
  const auto counts = countPicks(*p, set, kPicks);
  for (size_t i = 0; i < counts.size(); ++i) {
    EXPECT_NEAR(asDouble(counts[i]), asDouble(kPicks) / 3, kTolerance) << "endpoint " << i;
  }
}

TEST_P(EveryPolicy, NeverPicksAnExcludedEndpoint) {
  // Exclusions at the start and in the middle; the three left share the picks evenly (same
  // bound as above: 30000 picks over 3).
  auto p = picker();
  const EndpointSet set = makeSet(5);
  const auto counts = countPicks(*p, set, kPicks, exclusions({0, 3}));
  EXPECT_EQ(counts[0], 0u);
  EXPECT_EQ(counts[3], 0u);
  for (size_t i : {1u, 2u, 4u}) {
    EXPECT_NEAR(asDouble(counts[i]), asDouble(kPicks) / 3, kTolerance) << "endpoint " << i;
  }
}

TEST_P(EveryPolicy, IgnoresRepeatedAndOutOfRangeExclusions) {
  // The last endpoint excluded twice, and an index no endpoint has (from a larger snapshot):
  // four endpoints remain, 7500 picks each on average (sd 75).
  auto p = picker();
  const EndpointSet set = makeSet(5);
  const auto counts = countPicks(*p, set, kPicks, exclusions({4, 9, 4}));
  EXPECT_EQ(counts[4], 0u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(asDouble(counts[i]), asDouble(kPicks) / 4, kTolerance) << "endpoint " << i;
  }
}

TEST_P(EveryPolicy, PicksTheOnlyCandidateLeft) {
  auto p = picker();
  // The one left is also the most loaded: with nothing to compare it with, it is the answer.
  const EndpointSet set = makeSet(4, {0, 0, 50, 0});
  const Exclusions exclude = exclusions({0, 1, 3});
  for (int i = 0; i < 100; ++i) EXPECT_EQ(p->pick(set, exclude, kNow), std::optional<size_t>(2));
}

TEST_P(EveryPolicy, EmptySetGivesNothing) {
  auto p = picker();
  const EndpointSet set = makeSet(0);
  EXPECT_EQ(p->pick(set, {}, kNow), std::nullopt);
  EXPECT_EQ(p->pick(set, exclusions({0}), kNow), std::nullopt);
}

TEST_P(EveryPolicy, AllExcludedGivesNothing) {
  auto p = picker();
  const EndpointSet set = makeSet(3);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(p->pick(set, exclusions({2, 0, 1}), kNow), std::nullopt);
  // And the picker is not left stuck by it.
  EXPECT_NE(p->pick(set, {}, kNow), std::nullopt);
}

TEST_P(EveryPolicy, SameSeedGivesSamePicks) {
  auto a = picker(7);
  auto b = picker(7);
  const EndpointSet set = makeSet(5, {1, 0, 1, 0, 2});
  for (int i = 0; i < 1000; ++i)
    ASSERT_EQ(a->pick(set, {}, kNow), b->pick(set, {}, kNow)) << "pick " << i;
}

TEST_P(EveryPolicy, ChiSquareOverTenEqualEndpointsIsWithinTolerance) {
  auto p = picker();
  const EndpointSet set = makeSet(10);
  const auto counts = countPicks(*p, set, kPicks);
  const double statistic = chiSquare(counts);
  EXPECT_LT(statistic, kChiSquare999[9]);
  // Every endpoint is used: a statistic that averages out a dropped endpoint cannot hide it.
  for (size_t i = 0; i < counts.size(); ++i) EXPECT_GT(counts[i], 2000u) << "endpoint " << i;
}

// --- passive health in the pickers ----------------------------------------------------------

TEST_P(EveryPolicy, SkipsEjectedEndpoints) {
  auto p = picker();
  const EndpointSet set = makeSet(10);
  for (size_t i : {1u, 4u, 5u}) eject(set[i], kNow + seconds(1));
  const auto counts = countPicks(*p, set, kPicks);
  for (size_t i : {1u, 4u, 5u}) EXPECT_EQ(counts[i], 0u) << "ejected endpoint " << i;
  const std::vector<size_t> in_service = {0, 2, 3, 6, 7, 8, 9};
  EXPECT_LT(chiSquare(counts, in_service), kChiSquare999[6]);
  EXPECT_EQ(p->panics(), 0u);
}

TEST_P(EveryPolicy, SkipsEjectedAndExcludedEndpointsTogether) {
  auto p = picker();
  const EndpointSet set = makeSet(5);
  eject(set[2], kNow + seconds(1));
  const auto counts = countPicks(*p, set, kPicks, exclusions({0, 4}));
  EXPECT_EQ(counts[0] + counts[2] + counts[4], 0u);
  EXPECT_NEAR(asDouble(counts[1]), asDouble(kPicks) / 2, kTolerance);
  EXPECT_NEAR(asDouble(counts[3]), asDouble(kPicks) / 2, kTolerance);
  EXPECT_EQ(p->panics(), 0u);
}

TEST_P(EveryPolicy, FindsTheOneEndpointInServiceAmongManyEjected) {
  // 19 of 20 ejected (max_ejected_percent: 100): random draws mostly miss, and the picker
  // must still find the one left, without calling it a panic.
  auto p = picker();
  const EndpointSet set = makeSet(20);
  for (size_t i = 0; i < 20; ++i) {
    if (i != 13) eject(set[i], kNow + seconds(5));
  }
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(p->pick(set, {}, kNow), std::optional<size_t>(13));
  EXPECT_EQ(p->panics(), 0u);
}

TEST_P(EveryPolicy, EjectedEndpointReturnsWhenItsTimeIsUp) {
  auto p = picker();
  const EndpointSet set = makeSet(3);
  eject(set[0], kNow + seconds(1));
  EXPECT_EQ(countPicks(*p, set, 300, {}, kNow + milliseconds(999))[0], 0u);
  const auto counts = countPicks(*p, set, kPicks, {}, kNow + seconds(1));
  EXPECT_NEAR(asDouble(counts[0]), asDouble(kPicks) / 3, kTolerance);
}

TEST_P(EveryPolicy, PanicsAndUsesEveryEndpointWhenAllAreEjected) {
  auto p = picker();
  const EndpointSet set = makeSet(3);
  for (const Endpoint& e : set.endpoints()) eject(e, kNow + seconds(1));
  const auto counts = countPicks(*p, set, kPicks);
  for (size_t i = 0; i < counts.size(); ++i) {
    EXPECT_NEAR(asDouble(counts[i]), asDouble(kPicks) / 3, kTolerance) << "endpoint " << i;
  }
  EXPECT_EQ(p->panics(), kPicks);
}

TEST_P(EveryPolicy, PanicsOnlyOverTheEndpointsNotExcluded) {
  // 0 is in service but excluded (the call failed there); the rest are ejected: the retry
  // goes to an ejected one, never back to 0.
  auto p = picker();
  const EndpointSet set = makeSet(4);
  for (size_t i : {1u, 2u, 3u}) eject(set[i], kNow + seconds(1));
  const auto counts = countPicks(*p, set, 3000, exclusions({0}));
  EXPECT_EQ(counts[0], 0u);
  for (size_t i : {1u, 2u, 3u}) EXPECT_GT(counts[i], 500u) << "endpoint " << i;
  EXPECT_EQ(p->panics(), 3000u);
  // One in service and not excluded: no panic.
  const uint64_t before = p->panics();
  set[2].load->ejected_until_ns.store(0);
  EXPECT_EQ(countPicks(*p, set, 100, exclusions({0}))[2], 100u);
  EXPECT_EQ(p->panics(), before);
}

TEST_P(EveryPolicy, AllExcludedIsNotAPanic) {
  auto p = picker();
  const EndpointSet set = makeSet(2);
  eject(set[0], kNow + seconds(1));
  EXPECT_EQ(p->pick(set, exclusions({0, 1}), kNow), std::nullopt);
  EXPECT_EQ(p->panics(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Lb, EveryPolicy,
                         ::testing::Values(Balance::kLeastRequest, Balance::kRoundRobin,
                                           Balance::kPeakEwma, Balance::kRandom),
                         [](const ::testing::TestParamInfo<Balance>& param_info) {
                           return std::string(balanceName(param_info.param));
                         });

// --- least_request ------------------------------------------------------------------------

TEST(LeastRequestTest, LeastRequest_PrefersIdleEndpoint) {
  // Loads 0, 5, 5: the idle endpoint is one of the two choices with probability 2/3 and then
  // always wins; each loaded one wins only against the other loaded one (1/3 * 1/2).
  // Expected 20000 / 5000 / 5000, sd 81.6 / 64.5.
  auto p = makePicker(Balance::kLeastRequest, kSeed);
  const EndpointSet set = makeSet(3, {0, 5, 5});
  const auto counts = countPicks(*p, set, kPicks);
  EXPECT_NEAR(asDouble(counts[0]), 20000, kTolerance);
  EXPECT_NEAR(asDouble(counts[1]), 5000, kTolerance);
  EXPECT_NEAR(asDouble(counts[2]), 5000, kTolerance);
}

TEST(LeastRequestTest, LeastRequest_NeverPicksTheMuchMoreLoadedEndpoint) {
  // Its rival is always another endpoint, with fewer streams. (Were the two choices allowed
  // to coincide, it would win 1/16 of the picks: about 1900 here.)
  auto p = makePicker(Balance::kLeastRequest, kSeed);
  const EndpointSet set = makeSet(4, {0, 1, 0, 100});
  const auto counts = countPicks(*p, set, kPicks);
  EXPECT_EQ(counts[3], 0u);
  EXPECT_GT(counts[1], 0u);  // loaded, but it still beats the much more loaded one
}

TEST(LeastRequestTest, LeastRequest_TwoChoicesAreAlwaysDistinct) {
  // Every endpoint has a different load, the busiest the most: it can only be picked if it
  // is drawn as both choices. For n endpoints that would happen 1/n^2 of the time (at n = 9,
  // 20000 picks: about 250), so zero for every n shows the choices never repeat.
  for (size_t n = 2; n <= 9; ++n) {
    std::vector<uint32_t> streams;
    for (size_t i = 0; i < n; ++i) streams.push_back(static_cast<uint32_t>(i));
    auto p = makePicker(Balance::kLeastRequest, kSeed + n);
    const EndpointSet set = makeSet(n, streams);
    const auto counts = countPicks(*p, set, 20000);
    EXPECT_EQ(counts[n - 1], 0u) << n << " endpoints";
  }
  // The same with exclusions: the two candidates left are compared with each other.
  auto p = makePicker(Balance::kLeastRequest, kSeed);
  const EndpointSet set = makeSet(5, {0, 9, 0, 7, 3});
  const auto counts = countPicks(*p, set, 10000, exclusions({0, 2, 4}));
  EXPECT_EQ(counts[3], 10000u);
}

TEST(LeastRequestTest, LeastRequest_BreaksTiesAtRandom) {
  // Two endpoints with equal load: each wins half (15000, sd 86.6). A tie going to the lower
  // index would give 30000 / 0.
  auto p = makePicker(Balance::kLeastRequest, kSeed);
  const EndpointSet set = makeSet(2, {4, 4});
  const auto counts = countPicks(*p, set, kPicks);
  EXPECT_NEAR(asDouble(counts[0]), 15000, kTolerance);
  EXPECT_NEAR(asDouble(counts[1]), 15000, kTolerance);
}

TEST(LeastRequestTest, LeastRequest_FollowsLoadAsItChanges) {
  // The loads are read at each pick, not remembered: the endpoint that was busy becomes the
  // idle one.
  auto p = makePicker(Balance::kLeastRequest, kSeed);
  const EndpointSet set = makeSet(2, {3, 0});
  for (int i = 0; i < 100; ++i) ASSERT_EQ(p->pick(set, {}, kNow), std::optional<size_t>(1));
  set[0].load->active_streams.store(0);
  set[1].load->active_streams.store(3);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(p->pick(set, {}, kNow), std::optional<size_t>(0));
}

TEST(LeastRequestTest, LeastRequest_KeepsLongCallsBalanced) {
  // Calls that never end: each pick adds a stream to its endpoint. The busiest endpoint is
  // picked only when it ties with its rival, so the loads stay within a few streams of each
  // other (3 at most over seeds 1..200 for these sizes); random placement of 30000 calls over
  // 3 endpoints drifts apart by hundreds.
  auto p = makePicker(Balance::kLeastRequest, kSeed);
  const EndpointSet set = makeSet(3);
  for (size_t i = 0; i < kPicks; ++i) {
    auto index = p->pick(set, {}, kNow);
    ASSERT_TRUE(index.has_value());
    set[*index].load->active_streams.fetch_add(1, std::memory_order_relaxed);
  }
  uint32_t low = UINT32_MAX;
  uint32_t high = 0;
  for (const Endpoint& e : set.endpoints()) {
    low = std::min(low, e.load->active_streams.load());
    high = std::max(high, e.load->active_streams.load());
  }
  EXPECT_LE(high - low, 3u);
}

// --- round_robin --------------------------------------------------------------------------

TEST(RoundRobinTest, RoundRobin_VisitsEndpointsInOrder) {
  auto p = makePicker(Balance::kRoundRobin, kSeed);
  const EndpointSet set = makeSet(4);
  const auto first = p->pick(set, {}, kNow);
  ASSERT_TRUE(first.has_value());
  for (size_t k = 1; k <= 12; ++k) {
    EXPECT_EQ(p->pick(set, {}, kNow), std::optional<size_t>((*first + k) % 4)) << "pick " << k;
  }
}

TEST(RoundRobinTest, RoundRobin_SkipsExcludedEndpoints) {
  auto p = makePicker(Balance::kRoundRobin, kSeed);
  const EndpointSet set = makeSet(5);
  const Exclusions exclude = exclusions({1, 3});
  const std::vector<size_t> allowed = {0, 2, 4};
  const auto first = p->pick(set, exclude, kNow);
  ASSERT_TRUE(first.has_value());
  auto at = std::find(allowed.begin(), allowed.end(), *first);
  ASSERT_NE(at, allowed.end()) << "picked excluded endpoint " << *first;
  size_t position = static_cast<size_t>(at - allowed.begin());
  for (size_t k = 1; k <= 9; ++k) {
    EXPECT_EQ(p->pick(set, exclude, kNow), std::optional<size_t>(allowed[(position + k) % 3]))
        << "pick " << k;
  }
}

TEST(RoundRobinTest, RoundRobin_ExclusionDoesNotDisturbTheOrderAfterIt) {
  // A retry that skipped endpoint 2 lands on 3, and the next call goes on from there.
  auto p = makePicker(Balance::kRoundRobin, kSeed);
  const EndpointSet set = makeSet(4);
  auto index = p->pick(set, {}, kNow);
  ASSERT_TRUE(index.has_value());
  while (*index != 1) index = p->pick(set, {}, kNow);  // ends within 4 picks: the order is cyclic
  EXPECT_EQ(p->pick(set, exclusions({2}), kNow), std::optional<size_t>(3));
  EXPECT_EQ(p->pick(set, {}, kNow), std::optional<size_t>(0));
  EXPECT_EQ(p->pick(set, {}, kNow), std::optional<size_t>(1));
}

TEST(RoundRobinTest, RoundRobin_StartsAtASeededPlace) {
  // Each worker has its own picker; starting them all at endpoint 0 would send every worker's
  // first call to the same Pod.
  const EndpointSet set = makeSet(4);
  std::set<size_t> firsts;
  for (uint64_t seed = 1; seed <= 32; ++seed) {
    auto index = makePicker(Balance::kRoundRobin, seed)->pick(set, {}, kNow);
    ASSERT_TRUE(index.has_value());
    firsts.insert(*index);
  }
  EXPECT_EQ(firsts.size(), 4u);
}

TEST(RoundRobinTest, RoundRobin_FollowsASmallerSnapshot) {
  auto p = makePicker(Balance::kRoundRobin, kSeed);
  const EndpointSet big = makeSet(5);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(p->pick(big, {}, kNow).has_value());
  const EndpointSet small = makeSet(2);
  const auto counts = countPicks(*p, small, 10);
  EXPECT_EQ(counts[0], 5u);
  EXPECT_EQ(counts[1], 5u);
}

// --- latency EWMA ---------------------------------------------------------------------------

constexpr nanoseconds kDecay = seconds(10);

TEST(LatencyTest, RecordLatency_FirstSampleIsTakenWhole) {
  EndpointLoad load;
  recordLatency(load, 5'000'000, kNow, kDecay);
  EXPECT_EQ(load.latency_ewma_ns.load(), 5'000'000u);
  EXPECT_EQ(load.latency_updated_ns.load(), toNanos(kNow));
}

TEST(LatencyTest, RecordLatency_APeakReplacesTheAverageAtOnce) {
  EndpointLoad load;
  recordLatency(load, 1'000'000, kNow, kDecay);
  recordLatency(load, 40'000'000, kNow + milliseconds(1), kDecay);
  EXPECT_EQ(load.latency_ewma_ns.load(), 40'000'000u);
}

TEST(LatencyTest, RecordLatency_ALowerSampleWeighsByTheTimeSinceTheLast) {
  EndpointLoad load;
  recordLatency(load, 10'000'000, kNow, kDecay);
  // At the same instant, the old average keeps all its weight.
  recordLatency(load, 2'000'000, kNow, kDecay);
  EXPECT_EQ(load.latency_ewma_ns.load(), 10'000'000u);
  // One decay later, the old average keeps e^-1: 10 * 0.3679 + 2 * 0.6321 = 4.943 ms.
  recordLatency(load, 2'000'000, kNow + kDecay, kDecay);
  EXPECT_NEAR(static_cast<double>(load.latency_ewma_ns.load()),
              10e6 * std::exp(-1.0) + 2e6 * (1 - std::exp(-1.0)), 1.0);
  // Long after, the sample is nearly all of it.
  recordLatency(load, 2'000'000, kNow + 20 * kDecay, kDecay);
  EXPECT_NEAR(static_cast<double>(load.latency_ewma_ns.load()), 2e6, 10.0);
}

TEST(LatencyTest, RecordLatency_AZeroSampleStillCountsAsASample) {
  EndpointLoad load;
  recordLatency(load, 0, kNow, kDecay);
  EXPECT_NE(load.latency_ewma_ns.load(), 0u);
}

TEST(LatencyTest, RecordLatency_AnOlderClockReadingDoesNotMoveTimeBack) {
  EndpointLoad load;
  recordLatency(load, 1'000'000, kNow, kDecay);
  recordLatency(load, 2'000'000, kNow - milliseconds(5), kDecay);
  EXPECT_EQ(load.latency_updated_ns.load(), toNanos(kNow));
}

TEST(LatencyTest, CurrentLatency_DecaysTowardZeroWithoutSamples) {
  EndpointLoad load;
  EXPECT_EQ(currentLatency(load, kNow, kDecay), 0.0);
  recordLatency(load, 10'000'000, kNow, kDecay);
  EXPECT_DOUBLE_EQ(currentLatency(load, kNow, kDecay), 10e6);
  EXPECT_NEAR(currentLatency(load, kNow + kDecay, kDecay), 10e6 * std::exp(-1.0), 1.0);
  EXPECT_NEAR(currentLatency(load, kNow + 3 * kDecay, kDecay), 10e6 * std::exp(-3.0), 1.0);
}

// --- peak_ewma ------------------------------------------------------------------------------

TEST(PeakEwmaTest, PeakEwma_WithoutSamplesIsLeastRequest) {
  auto ewma = makePicker(Balance::kPeakEwma, kSeed);
  auto least = makePicker(Balance::kLeastRequest, kSeed);
  const EndpointSet set = makeSet(4, {2, 0, 1, 0});
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(ewma->pick(set, {}, kNow), least->pick(set, {}, kNow));
}

TEST(PeakEwmaTest, PeakEwma_PrefersTheFasterEndpointAtEqualLoad) {
  auto p = makePicker(Balance::kPeakEwma, kSeed);
  const EndpointSet set = makeSet(3);
  recordLatency(*set[0].load, 1'000'000, kNow, kDecay);
  recordLatency(*set[1].load, 1'000'000, kNow, kDecay);
  recordLatency(*set[2].load, 3'000'000, kNow, kDecay);
  const auto counts = countPicks(*p, set, kPicks);
  EXPECT_EQ(counts[2], 0u);
  EXPECT_NEAR(asDouble(counts[0]), asDouble(kPicks) / 2, kTolerance);
}

TEST(PeakEwmaTest, PeakEwma_WeighsLatencyByActiveStreams) {
  // 1 ms with 9 streams costs 10, 4 ms idle costs 4: the slower, idle endpoint wins; with
  // 2 streams on the fast one (cost 3), it wins back.
  auto p = makePicker(Balance::kPeakEwma, kSeed);
  const EndpointSet set = makeSet(2, {9, 0});
  recordLatency(*set[0].load, 1'000'000, kNow, kDecay);
  recordLatency(*set[1].load, 4'000'000, kNow, kDecay);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(p->pick(set, {}, kNow), std::optional<size_t>(1));
  set[0].load->active_streams.store(2);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(p->pick(set, {}, kNow), std::optional<size_t>(0));
}

TEST(PeakEwmaTest, PeakEwma_NewEndpointIsTriedButNotFlooded) {
  // No sample yet: as fast as its rival, so active streams decide. Idle, it shares the
  // picks; busier than its rival, it loses (a cost of zero would win every pick).
  auto p = makePicker(Balance::kPeakEwma, kSeed);
  const EndpointSet set = makeSet(2);
  recordLatency(*set[0].load, 5'000'000, kNow, kDecay);
  const auto counts = countPicks(*p, set, 1000);
  EXPECT_NEAR(asDouble(counts[1]), 500, 50);
  set[1].load->active_streams.store(3);
  EXPECT_EQ(countPicks(*p, set, 1000)[1], 0u);
}

TEST(PeakEwmaTest, PeakEwma_SlowEndpointIsTriedAgainAfterItsLatencyDecays) {
  // The slow endpoint loses every comparison, so it gets no new sample; read as decaying
  // toward zero, its 10 ms falls below the fast one's fresh 1 ms after ln(10) decay times.
  PickerOptions options;
  options.decay = kDecay;
  auto p = makePicker(Balance::kPeakEwma, kSeed, options);
  const EndpointSet set = makeSet(2);
  recordLatency(*set[1].load, 10'000'000, kNow, kDecay);
  const TimePoint soon = kNow + 2 * kDecay;  // 10 ms * e^-2 = 1.35 ms: still slower
  recordLatency(*set[0].load, 1'000'000, soon, kDecay);
  EXPECT_EQ(countPicks(*p, set, 100, {}, soon)[1], 0u);
  const TimePoint later = kNow + 3 * kDecay;  // 10 ms * e^-3 = 0.50 ms
  recordLatency(*set[0].load, 1'000'000, later, kDecay);
  EXPECT_EQ(countPicks(*p, set, 100, {}, later)[1], 100u);
}

// Calls arrive every `gap` and last their endpoint's latency; the picker sees the active
// streams, and the latencies recorded as calls end. Returns the picks per endpoint.
std::vector<size_t> simulate(Balance balance, const std::vector<nanoseconds>& latency,
                             nanoseconds gap, size_t calls) {
  auto p = makePicker(balance, kSeed);
  const EndpointSet set = makeSet(latency.size());
  std::vector<size_t> counts(latency.size(), 0);
  using Ending = std::pair<TimePoint, size_t>;
  std::priority_queue<Ending, std::vector<Ending>, std::greater<>> in_flight;
  TimePoint now = kNow;
  for (size_t i = 0; i < calls; ++i) {
    now += gap;
    while (!in_flight.empty() && in_flight.top().first <= now) {
      const auto [end, index] = in_flight.top();
      in_flight.pop();
      set[index].load->active_streams.fetch_sub(1);
      recordLatency(*set[index].load, static_cast<uint64_t>(latency[index].count()), end, kDecay);
    }
    const auto index = p->pick(set, {}, now);
    if (!index) {
      ADD_FAILURE() << "no pick";
      break;
    }
    set[*index].load->active_streams.fetch_add(1);
    in_flight.emplace(now + latency[*index], *index);
    ++counts[*index];
  }
  return counts;
}

TEST(PeakEwmaTest, PeakEwma_SendsLittleToAnEndpointTenTimesSlower) {
  // Three endpoints, one 10x slower, at light load (mostly idle: least_request sees ties and
  // spreads evenly) and at heavy load (about 10 calls in flight).
  const std::vector<nanoseconds> latency = {milliseconds(1), milliseconds(1), milliseconds(10)};
  for (nanoseconds gap : {nanoseconds(milliseconds(2)), nanoseconds(100'000)}) {
    const auto ewma = simulate(Balance::kPeakEwma, latency, gap, kPicks);
    const auto least = simulate(Balance::kLeastRequest, latency, gap, kPicks);
    const double ewma_share = asDouble(ewma[2]) / asDouble(kPicks);
    const double least_share = asDouble(least[2]) / asDouble(kPicks);
    EXPECT_LE(ewma_share, 0.20) << "gap " << gap.count() << " ns";
    EXPECT_LE(ewma_share, least_share) << "gap " << gap.count() << " ns";
  }
  // At light load least_request cannot tell (every endpoint idle at each pick); peak_ewma can.
  const auto ewma = simulate(Balance::kPeakEwma, latency, milliseconds(2), kPicks);
  EXPECT_LE(asDouble(ewma[2]) / asDouble(kPicks), 0.01);
}

TEST(LeastRequestTest, LeastRequest_AvoidsASaturatedEndpoint) {
  // At heavy load the 10x slower endpoint holds its calls 10x longer, and least_request sees
  // them as active streams: it gets far less than a third.
  const std::vector<nanoseconds> latency = {milliseconds(1), milliseconds(1), milliseconds(10)};
  const auto counts = simulate(Balance::kLeastRequest, latency, nanoseconds(100'000), kPicks);
  EXPECT_LE(asDouble(counts[2]) / asDouble(kPicks), 0.20);
  // Random, for contrast, cannot: a third.
  const auto blind = simulate(Balance::kRandom, latency, nanoseconds(100'000), kPicks);
  EXPECT_NEAR(asDouble(blind[2]), asDouble(kPicks) / 3, kTolerance);
}

// --- slow start -----------------------------------------------------------------------------

class SlowStart : public ::testing::TestWithParam<Balance> {};

// An endpoint back from an ejection has fewer picks than the others; it must not win every
// tie until it has caught up (that would send it most calls right after it recovered).
TEST(LeastRequest, EndpointBackFromEjectionIsNotFlooded) {
  for (Balance balance : {Balance::kLeastRequest, Balance::kPeakEwma}) {
    auto p = makePicker(balance, kSeed);
    const EndpointSet set = makeSet(3);
    set[2].load->ejected_until_ns.store(toNanos(kNow + seconds(60)));
    const auto during = countPicks(*p, set, 3000);
    EXPECT_EQ(during[2], 0u) << balanceName(balance);
    const TimePoint back = kNow + seconds(61);
    const auto after = countPicks(*p, set, 300, {}, back);
    EXPECT_NEAR(asDouble(after[2]) / 300, 1.0 / 3, 0.05) << balanceName(balance);
  }
}

TEST_P(SlowStart, NewEndpointShareGrowsWithItsAge) {
  // Two idle endpoints, the second joined a fraction of slow_start ago: its share of picks
  // is that fraction (10% at least), and half once slow start is over.
  PickerOptions options;
  options.slow_start = seconds(30);
  const std::pair<nanoseconds, double> cases[] = {
      {seconds(0), 0.10},  {seconds(3), 0.10},  {seconds(7) + milliseconds(500), 0.25},
      {seconds(15), 0.50}, {seconds(30), 0.50}, {seconds(300), 0.50},
  };
  for (const auto& [age, share] : cases) {
    auto p = makePicker(GetParam(), kSeed, options);
    const EndpointSet set = makeSet(2);
    set[1].load->joined_ns.store(toNanos(kNow - age));
    const auto counts = countPicks(*p, set, 10000);
    // sd of a binomial share over 10000 picks is at most 0.005.
    EXPECT_NEAR(asDouble(counts[1]) / 10000, share, 0.025) << "age " << age.count() << " ns";
  }
}

TEST_P(SlowStart, EndpointsThatJoinedTogetherShareEvenly) {
  PickerOptions options;
  options.slow_start = seconds(30);
  auto p = makePicker(GetParam(), kSeed, options);
  const EndpointSet set = makeSet(3);
  for (const Endpoint& e : set.endpoints()) e.load->joined_ns.store(toNanos(kNow - seconds(1)));
  const auto counts = countPicks(*p, set, kPicks);
  EXPECT_LT(chiSquare(counts), kChiSquare999[2]);
}

TEST_P(SlowStart, IsOffWhenZero) {
  auto p = makePicker(GetParam(), kSeed);  // default options: slow_start 0
  const EndpointSet set = makeSet(2);
  set[1].load->joined_ns.store(toNanos(kNow));
  const auto counts = countPicks(*p, set, 10000);
  EXPECT_NEAR(asDouble(counts[1]), 5000, 250);
}

INSTANTIATE_TEST_SUITE_P(Lb, SlowStart,
                         ::testing::Values(Balance::kLeastRequest, Balance::kPeakEwma),
                         [](const ::testing::TestParamInfo<Balance>& param_info) {
                           return std::string(balanceName(param_info.param));
                         });

TEST(ServicePolicyTest, ServicePolicy_ComesFromTheServiceConfig) {
  config::Service service;
  service.balance = Balance::kPeakEwma;
  service.peak_ewma.decay = milliseconds(2500);
  service.slow_start = seconds(45);
  service.outlier.consecutive_failures = 7;
  service.retries.budget_percent = 30;
  const ServicePolicy policy = config::policyOf(service);
  EXPECT_EQ(policy.balance, Balance::kPeakEwma);
  EXPECT_EQ(policy.picker.decay, milliseconds(2500));
  EXPECT_EQ(policy.picker.slow_start, seconds(45));
  EXPECT_EQ(policy.outlier.consecutive_failures, 7u);
  EXPECT_EQ(policy.retries.budget_percent, 30u);
}

// A reload rebuilds a service's picker and budget when its policy differs: every setting
// takes part in the comparison, so a new one cannot be forgotten there.
TEST(ServicePolicyTest, ServicePolicy_DiffersWhenAnySettingDoes) {
  const ServicePolicy base;
  auto changed = [&](auto change) {
    ServicePolicy other = base;
    change(other);
    return !(other == base);
  };
  EXPECT_TRUE(base == ServicePolicy{});
  EXPECT_TRUE(changed([](ServicePolicy& p) { p.balance = Balance::kRandom; }));
  EXPECT_TRUE(changed([](ServicePolicy& p) { p.picker.decay = seconds(1); }));
  EXPECT_TRUE(changed([](ServicePolicy& p) { p.picker.slow_start = seconds(1); }));
  EXPECT_TRUE(changed([](ServicePolicy& p) { p.outlier.max_ejected_percent = 10; }));
  EXPECT_TRUE(changed([](ServicePolicy& p) { p.outlier.base_ejection = seconds(2); }));
  EXPECT_TRUE(changed([](ServicePolicy& p) { p.retries.max = 1; }));
  EXPECT_TRUE(changed([](ServicePolicy& p) { p.retries.budget_percent = 0; }));
}

}  // namespace
}  // namespace spindle::lb
