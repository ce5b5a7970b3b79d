#include "lb/retry_budget.h"

#include <gtest/gtest.h>

#include <chrono>

namespace spindle::lb {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// On a second boundary, so that "half a second later" is half-way through a bucket.
const TimePoint kStart = TimePoint(seconds(100));

int grantRetries(RetryBudget& budget, TimePoint now, int attempts) {
  int granted = 0;
  for (int i = 0; i < attempts; ++i) granted += budget.tryRetry(now) ? 1 : 0;
  return granted;
}

void calls(RetryBudget& budget, TimePoint now, int n) {
  for (int i = 0; i < n; ++i) budget.onCall(now);
}

TEST(RetryBudgetTest, RetryBudget_AllowsTenPerSecondWithoutTraffic) {
  RetryBudget budget(20);
  EXPECT_EQ(grantRetries(budget, kStart, 100), 10);
}

TEST(RetryBudgetTest, RetryBudget_AllowsItsShareOfTheCalls) {
  RetryBudget budget(20);
  calls(budget, kStart, 1000);
  EXPECT_EQ(grantRetries(budget, kStart + milliseconds(10), 1000), 200);
  EXPECT_FALSE(budget.tryRetry(kStart + milliseconds(20)));
}

TEST(RetryBudgetTest, RetryBudget_FloorAppliesWhenTheShareIsSmaller) {
  // 20% of 30 calls is 6: the floor of 10 wins. 0% keeps the floor too.
  RetryBudget budget(20);
  calls(budget, kStart, 30);
  EXPECT_EQ(grantRetries(budget, kStart, 100), 10);
  RetryBudget none(0);
  calls(none, kStart, 1000);
  EXPECT_EQ(grantRetries(none, kStart, 100), 10);
}

TEST(RetryBudgetTest, RetryBudget_ExhaustedBudgetRecoversOnceTheBurstLeavesTheWindow) {
  RetryBudget budget(20);
  calls(budget, kStart + milliseconds(500), 1000);
  ASSERT_EQ(grantRetries(budget, kStart + milliseconds(500), 1000), 200);
  // A second bucket later the burst still counts in full at its start, and fades after.
  EXPECT_FALSE(budget.tryRetry(kStart + seconds(1)));
  EXPECT_FALSE(budget.tryRetry(kStart + milliseconds(1500)));
  // Two buckets later it is gone: the floor is back.
  EXPECT_EQ(grantRetries(budget, kStart + seconds(2), 100), 10);
}

TEST(RetryBudgetTest, RetryBudget_ACallJustBeforeABucketEdgeKeepsItsRetry) {
  // 100%: every refused call may be retried once. 40 calls in one second, each retried at
  // once, except the last: its retry comes 2 ms later, in the next bucket, where the window
  // has begun to fade its call out but not the 39 retries before it.
  RetryBudget budget(100);
  for (int i = 0; i < 39; ++i) {
    const TimePoint at = kStart + milliseconds(25 * i);
    budget.onCall(at);
    ASSERT_TRUE(budget.tryRetry(at, at)) << i;
  }
  const TimePoint last = kStart + milliseconds(999);
  budget.onCall(last);
  EXPECT_TRUE(budget.tryRetry(kStart + milliseconds(1001), last));
  // Without the call's own time the faded window refuses it: the case this guards.
  RetryBudget plain(100);
  for (int i = 0; i < 39; ++i) {
    plain.onCall(kStart + milliseconds(25 * i));
    ASSERT_TRUE(plain.tryRetry(kStart + milliseconds(25 * i)));
  }
  plain.onCall(last);
  EXPECT_FALSE(plain.tryRetry(kStart + milliseconds(1001)));
}

TEST(RetryBudgetTest, RetryBudget_NewCallsRefillTheBudget) {
  RetryBudget budget(20);
  calls(budget, kStart, 1000);
  ASSERT_EQ(grantRetries(budget, kStart, 1000), 200);
  // Half-way through the next second the last one counts half: 500 calls, 100 retries.
  // 1000 new calls make it 1500 calls, room for 300 retries: 200 more.
  const TimePoint half = kStart + milliseconds(1500);
  EXPECT_NEAR(budget.callsLastSecond(half), 500, 1e-6);
  EXPECT_NEAR(budget.retriesLastSecond(half), 100, 1e-6);
  calls(budget, half, 1000);
  EXPECT_EQ(grantRetries(budget, half, 1000), 200);
}

TEST(RetryBudgetTest, RetryBudget_LongGapForgetsEverything) {
  RetryBudget budget(20);
  calls(budget, kStart, 1000);
  ASSERT_EQ(grantRetries(budget, kStart, 1000), 200);
  const TimePoint later = kStart + seconds(30);
  EXPECT_EQ(budget.callsLastSecond(later), 0);
  EXPECT_EQ(budget.retriesLastSecond(later), 0);
  EXPECT_EQ(grantRetries(budget, later, 100), 10);
}

TEST(RetryBudgetTest, RetryBudget_AnOlderClockReadingCountsInTheCurrentSecond) {
  RetryBudget budget(20);
  calls(budget, kStart + seconds(1), 100);
  calls(budget, kStart + milliseconds(900), 100);  // read before, arrived after
  EXPECT_EQ(budget.callsLastSecond(kStart + seconds(1)), 200);
}

}  // namespace
}  // namespace spindle::lb
