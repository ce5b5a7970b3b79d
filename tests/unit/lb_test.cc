#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "lb/endpoints.h"
#include "lb/picker.h"

namespace spindle::lb {
namespace {

using config::Balance;

constexpr uint64_t kSeed = 42;

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
                               const Exclusions& exclude = {}) {
  std::vector<size_t> counts(set.size(), 0);
  for (size_t i = 0; i < picks; ++i) {
    auto index = picker.pick(set, exclude);
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
  for (int i = 0; i < 100; ++i) EXPECT_EQ(p->pick(set, exclude), std::optional<size_t>(2));
}

TEST_P(EveryPolicy, EmptySetGivesNothing) {
  auto p = picker();
  const EndpointSet set = makeSet(0);
  EXPECT_EQ(p->pick(set, {}), std::nullopt);
  EXPECT_EQ(p->pick(set, exclusions({0})), std::nullopt);
}

TEST_P(EveryPolicy, AllExcludedGivesNothing) {
  auto p = picker();
  const EndpointSet set = makeSet(3);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(p->pick(set, exclusions({2, 0, 1})), std::nullopt);
  // And the picker is not left stuck by it.
  EXPECT_NE(p->pick(set, {}), std::nullopt);
}

TEST_P(EveryPolicy, SameSeedGivesSamePicks) {
  auto a = picker(7);
  auto b = picker(7);
  const EndpointSet set = makeSet(5, {1, 0, 1, 0, 2});
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(a->pick(set, {}), b->pick(set, {})) << "pick " << i;
}

INSTANTIATE_TEST_SUITE_P(Lb, EveryPolicy,
                         ::testing::Values(Balance::kLeastRequest, Balance::kRoundRobin,
                                           Balance::kPeakEwma, Balance::kRandom),
                         [](const ::testing::TestParamInfo<Balance>& param_info) {
                           return std::string(config::balanceName(param_info.param));
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
  for (int i = 0; i < 100; ++i) ASSERT_EQ(p->pick(set, {}), std::optional<size_t>(1));
  set[0].load->active_streams.store(0);
  set[1].load->active_streams.store(3);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(p->pick(set, {}), std::optional<size_t>(0));
}

TEST(LeastRequestTest, LeastRequest_KeepsLongCallsBalanced) {
  // Calls that never end: each pick adds a stream to its endpoint. The busiest endpoint is
  // picked only when it ties with its rival, so the loads stay within a few streams of each
  // other (3 at most over seeds 1..200 for these sizes); random placement of 30000 calls over
  // 3 endpoints drifts apart by hundreds.
  auto p = makePicker(Balance::kLeastRequest, kSeed);
  const EndpointSet set = makeSet(3);
  for (size_t i = 0; i < kPicks; ++i) {
    auto index = p->pick(set, {});
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

TEST(PeakEwmaTest, PeakEwma_BehavesAsLeastRequestUntilBuilt) {
  auto ewma = makePicker(Balance::kPeakEwma, kSeed);
  auto least = makePicker(Balance::kLeastRequest, kSeed);
  const EndpointSet set = makeSet(4, {2, 0, 1, 0});
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(ewma->pick(set, {}), least->pick(set, {}));
}

// --- round_robin --------------------------------------------------------------------------

TEST(RoundRobinTest, RoundRobin_VisitsEndpointsInOrder) {
  auto p = makePicker(Balance::kRoundRobin, kSeed);
  const EndpointSet set = makeSet(4);
  const auto first = p->pick(set, {});
  ASSERT_TRUE(first.has_value());
  for (size_t k = 1; k <= 12; ++k) {
    EXPECT_EQ(p->pick(set, {}), std::optional<size_t>((*first + k) % 4)) << "pick " << k;
  }
}

TEST(RoundRobinTest, RoundRobin_SkipsExcludedEndpoints) {
  auto p = makePicker(Balance::kRoundRobin, kSeed);
  const EndpointSet set = makeSet(5);
  const Exclusions exclude = exclusions({1, 3});
  const std::vector<size_t> allowed = {0, 2, 4};
  const auto first = p->pick(set, exclude);
  ASSERT_TRUE(first.has_value());
  auto at = std::find(allowed.begin(), allowed.end(), *first);
  ASSERT_NE(at, allowed.end()) << "picked excluded endpoint " << *first;
  size_t position = static_cast<size_t>(at - allowed.begin());
  for (size_t k = 1; k <= 9; ++k) {
    EXPECT_EQ(p->pick(set, exclude), std::optional<size_t>(allowed[(position + k) % 3]))
        << "pick " << k;
  }
}

TEST(RoundRobinTest, RoundRobin_ExclusionDoesNotDisturbTheOrderAfterIt) {
  // A retry that skipped endpoint 2 lands on 3, and the next call goes on from there.
  auto p = makePicker(Balance::kRoundRobin, kSeed);
  const EndpointSet set = makeSet(4);
  auto index = p->pick(set, {});
  ASSERT_TRUE(index.has_value());
  while (*index != 1) index = p->pick(set, {});  // ends within 4 picks: the order is cyclic
  EXPECT_EQ(p->pick(set, exclusions({2})), std::optional<size_t>(3));
  EXPECT_EQ(p->pick(set, {}), std::optional<size_t>(0));
  EXPECT_EQ(p->pick(set, {}), std::optional<size_t>(1));
}

TEST(RoundRobinTest, RoundRobin_StartsAtASeededPlace) {
  // Each worker has its own picker; starting them all at endpoint 0 would send every worker's
  // first call to the same Pod.
  const EndpointSet set = makeSet(4);
  std::set<size_t> firsts;
  for (uint64_t seed = 1; seed <= 32; ++seed) {
    auto index = makePicker(Balance::kRoundRobin, seed)->pick(set, {});
    ASSERT_TRUE(index.has_value());
    firsts.insert(*index);
  }
  EXPECT_EQ(firsts.size(), 4u);
}

TEST(RoundRobinTest, RoundRobin_FollowsASmallerSnapshot) {
  auto p = makePicker(Balance::kRoundRobin, kSeed);
  const EndpointSet big = makeSet(5);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(p->pick(big, {}).has_value());
  const EndpointSet small = makeSet(2);
  const auto counts = countPicks(*p, small, 10);
  EXPECT_EQ(counts[0], 5u);
  EXPECT_EQ(counts[1], 5u);
}

}  // namespace
}  // namespace spindle::lb
