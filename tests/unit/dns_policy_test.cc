// The DNS failure policy with a fake clock: what each kind of answer does to a name's set.
#include <gtest/gtest.h>

#include "dns/policy.h"

namespace spindle::dns {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

net::SocketAddress ip(const char* text) { return *net::SocketAddress::parseIp(text, 0); }

Answer records(std::vector<net::SocketAddress> addresses, seconds ttl = seconds(5)) {
  Answer answer;
  answer.outcome = Outcome::kRecords;
  answer.addresses = std::move(addresses);
  answer.ttl = ttl;
  return answer;
}

Answer empty() {
  Answer answer;
  answer.outcome = Outcome::kEmpty;
  answer.error = "NXDOMAIN";
  return answer;
}

Answer failure() {
  Answer answer;
  answer.outcome = Outcome::kFailure;
  answer.error = "SERVFAIL";
  return answer;
}

PolicySettings settings() {
  PolicySettings s;
  s.refresh_min = milliseconds(1000);
  s.refresh_max = milliseconds(30000);
  s.empty_confirmations = 3;
  return s;
}

const Clock::time_point kT0 = Clock::time_point() + seconds(1000);

TEST(DnsPolicy, FirstAnswerPublishesSortedUniqueSet) {
  NameState state(settings());
  EXPECT_FALSE(state.resolved());
  auto published =
      state.onAnswer(records({ip("198.18.1.4"), ip("198.18.1.2"), ip("198.18.1.4")}), kT0);
  ASSERT_TRUE(published);
  EXPECT_EQ(*published, (std::vector{ip("198.18.1.2"), ip("198.18.1.4")}));
  EXPECT_TRUE(state.resolved());
}

TEST(DnsPolicy, SameSetAgainPublishesNothing) {
  NameState state(settings());
  state.onAnswer(records({ip("198.18.1.2"), ip("198.18.1.3")}), kT0);
  EXPECT_FALSE(state.onAnswer(records({ip("198.18.1.3"), ip("198.18.1.2")}), kT0 + seconds(5)));
}

TEST(DnsPolicy, ChangedSetIsPublished) {
  NameState state(settings());
  state.onAnswer(records({ip("198.18.1.2")}), kT0);
  auto published = state.onAnswer(records({ip("198.18.1.2"), ip("198.18.1.5")}), kT0);
  ASSERT_TRUE(published);
  EXPECT_EQ(published->size(), 2u);
}

TEST(DnsPolicy, RefreshFollowsTtlClampedToMinAndMax) {
  NameState state(settings());
  state.onAnswer(records({ip("198.18.1.2")}, seconds(5)), kT0);
  EXPECT_EQ(state.nextQuery(), kT0 + seconds(5));
  state.onAnswer(records({ip("198.18.1.2")}, seconds(0)), kT0);
  EXPECT_EQ(state.nextQuery(), kT0 + seconds(1));
  state.onAnswer(records({ip("198.18.1.2")}, seconds(3600)), kT0);
  EXPECT_EQ(state.nextQuery(), kT0 + seconds(30));
}

TEST(DnsPolicy, FailuresKeepTheLastGoodSetAndBackOff) {
  NameState state(settings());
  state.onAnswer(records({ip("198.18.1.2")}), kT0);
  EXPECT_FALSE(state.onAnswer(failure(), kT0 + seconds(5)));
  EXPECT_EQ(state.nextQuery(), kT0 + seconds(5) + seconds(1));
  EXPECT_FALSE(state.onAnswer(failure(), kT0 + seconds(6)));
  EXPECT_EQ(state.nextQuery(), kT0 + seconds(6) + seconds(2));
  EXPECT_FALSE(state.onAnswer(failure(), kT0 + seconds(8)));
  EXPECT_EQ(state.nextQuery(), kT0 + seconds(8) + seconds(4));
  EXPECT_EQ(state.consecutiveFailures(), 3u);
  EXPECT_EQ(state.addresses(), std::vector{ip("198.18.1.2")});
}

TEST(DnsPolicy, BackoffStopsAtRefreshMax) {
  NameState state(settings());
  state.onAnswer(records({ip("198.18.1.2")}), kT0);
  for (int i = 0; i < 20; ++i) state.onAnswer(failure(), kT0);
  EXPECT_EQ(state.nextQuery(), kT0 + seconds(30));
}

TEST(DnsPolicy, StalenessCountsFromTheLastGoodAnswer) {
  NameState state(settings());
  EXPECT_FALSE(state.staleness(kT0));
  state.onAnswer(records({ip("198.18.1.2")}), kT0);
  state.onAnswer(failure(), kT0 + seconds(7));
  EXPECT_EQ(state.staleness(kT0 + seconds(12)), seconds(12));
}

// What the TTL metric exports: how long each good answer holds, which failures do not change.
TEST(DnsPolicy, GoodForIsTheTtlWithinTheRefreshBoundsAndOutlivesFailures) {
  NameState state(settings());
  EXPECT_EQ(state.goodFor(), milliseconds(0));
  state.onAnswer(records({ip("198.18.1.2")}, seconds(5)), kT0);
  EXPECT_EQ(state.goodFor(), seconds(5));
  state.onAnswer(failure(), kT0 + seconds(5));
  EXPECT_EQ(state.goodFor(), seconds(5));
  state.onAnswer(records({ip("198.18.1.2")}, seconds(0)), kT0 + seconds(6));
  EXPECT_EQ(state.goodFor(), seconds(1));
  state.onAnswer(records({ip("198.18.1.2")}, seconds(3600)), kT0 + seconds(7));
  EXPECT_EQ(state.goodFor(), seconds(30));
  // An empty answer holds from its confirmation, for refresh_min.
  state.onAnswer(empty(), kT0 + seconds(40));
  state.onAnswer(empty(), kT0 + seconds(41));
  EXPECT_EQ(state.goodFor(), seconds(30));
  state.onAnswer(empty(), kT0 + seconds(42));
  EXPECT_EQ(state.goodFor(), seconds(1));
}

TEST(DnsPolicy, OneEmptyAnswerDoesNotDropEndpoints) {
  NameState state(settings());
  state.onAnswer(records({ip("198.18.1.2")}), kT0);
  EXPECT_FALSE(state.onAnswer(empty(), kT0 + seconds(1)));
  EXPECT_FALSE(state.onAnswer(empty(), kT0 + seconds(2)));
  EXPECT_EQ(state.addresses(), std::vector{ip("198.18.1.2")});
}

TEST(DnsPolicy, ThirdEmptyAnswerInARowDropsEndpoints) {
  NameState state(settings());
  state.onAnswer(records({ip("198.18.1.2")}), kT0);
  state.onAnswer(empty(), kT0 + seconds(1));
  state.onAnswer(empty(), kT0 + seconds(2));
  auto published = state.onAnswer(empty(), kT0 + seconds(3));
  ASSERT_TRUE(published);
  EXPECT_TRUE(published->empty());
}

TEST(DnsPolicy, AnAnswerWithRecordsResetsTheEmptyCount) {
  NameState state(settings());
  state.onAnswer(records({ip("198.18.1.2")}), kT0);
  state.onAnswer(empty(), kT0);
  state.onAnswer(empty(), kT0);
  state.onAnswer(records({ip("198.18.1.2")}), kT0);
  EXPECT_FALSE(state.onAnswer(empty(), kT0));
  EXPECT_FALSE(state.onAnswer(empty(), kT0));
  EXPECT_EQ(state.addresses().size(), 1u);
}

TEST(DnsPolicy, FailuresBetweenEmptyAnswersDoNotConfirmThem) {
  NameState state(settings());
  state.onAnswer(records({ip("198.18.1.2")}), kT0);
  state.onAnswer(empty(), kT0);
  state.onAnswer(failure(), kT0);
  state.onAnswer(empty(), kT0);
  EXPECT_EQ(state.consecutiveEmpty(), 2u);
  EXPECT_EQ(state.addresses().size(), 1u);
}

TEST(DnsPolicy, NeverResolvedNameIsNotResolvedAfterFailures) {
  NameState state(settings());
  state.onAnswer(failure(), kT0);
  state.onAnswer(empty(), kT0);
  EXPECT_FALSE(state.resolved());
}

TEST(DnsPolicy, CombineUnitesFamiliesWithTheSmallerTtl) {
  Answer both =
      combine(records({ip("198.18.1.2")}, seconds(10)), records({ip("2001:2::1:2")}, seconds(4)));
  EXPECT_EQ(both.outcome, Outcome::kRecords);
  EXPECT_EQ(both.addresses.size(), 2u);
  EXPECT_EQ(both.ttl, seconds(4));
}

TEST(DnsPolicy, CombineKeepsOneFamilyWhenTheOtherIsEmpty) {
  Answer v4 = combine(records({ip("198.18.1.2")}, seconds(10)), empty());
  EXPECT_EQ(v4.outcome, Outcome::kRecords);
  EXPECT_EQ(v4.ttl, seconds(10));
  EXPECT_EQ(combine(empty(), empty()).outcome, Outcome::kEmpty);
}

TEST(DnsPolicy, CombineFailsOnlyWhenBothFamiliesFailed) {
  EXPECT_EQ(combine(failure(), failure()).outcome, Outcome::kFailure);
}

// Some servers refuse AAAA for names they only know A records of (dnsmasq without an
// upstream does): the A records must still be used.
TEST(DnsPolicy, CombineUsesTheFamilyThatAnsweredWhenTheOtherFailed) {
  Answer v4 = combine(records({ip("198.18.1.2")}, seconds(7)), failure());
  EXPECT_EQ(v4.outcome, Outcome::kRecords);
  EXPECT_EQ(v4.addresses, std::vector{ip("198.18.1.2")});
  EXPECT_EQ(v4.ttl, seconds(7));
  EXPECT_EQ(combine(failure(), empty()).outcome, Outcome::kEmpty);
}

}  // namespace
}  // namespace spindle::dns
