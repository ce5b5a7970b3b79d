// loop::Timer on a real loop: it fires, re-arms, and may be destroyed while armed (a resolver
// or a discovery made anew on a config reload) without its completion touching freed memory.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>

#include "engines.h"
#include "loop/loop.h"

namespace spindle::loop {
namespace {

using namespace std::chrono_literals;

class TimerTest : public ::testing::TestWithParam<Engine> {
 protected:
  std::unique_ptr<Loop> makeLoop() {
    auto loop = Loop::create(GetParam(), 16);
    EXPECT_TRUE(loop) << loop.error();
    return std::move(*loop);
  }
};

TEST_P(TimerTest, Timer_FiresOnceAndCanBeArmedAgainFromItsCallback) {
  auto loop = makeLoop();
  int fired = 0;
  std::unique_ptr<Timer> timer;
  timer = std::make_unique<Timer>(*loop, [&] {
    if (++fired < 3) timer->arm(1ms);
  });
  timer->arm(1ms);
  EXPECT_TRUE(timer->armed());
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (fired < 3 && std::chrono::steady_clock::now() < deadline) loop->runOnce(10ms);
  EXPECT_EQ(fired, 3);
  EXPECT_FALSE(timer->armed());
}

TEST_P(TimerTest, Timer_DestroyedWhileArmedNeverFires) {
  auto loop = makeLoop();
  int fired = 0;
  auto timer = std::make_unique<Timer>(*loop, [&] { ++fired; });
  timer->arm(5ms);
  loop->runOnce(0ms);  // submitted
  timer.reset();       // its completion comes later: it must find no owner (ASan: no UAF)
  for (int i = 0; i < 5; ++i) loop->runOnce(10ms);
  EXPECT_EQ(fired, 0);
}

TEST_P(TimerTest, Timer_DestroyedBeforeItsTimeoutWasEvenSubmitted) {
  auto loop = makeLoop();
  int fired = 0;
  auto timer = std::make_unique<Timer>(*loop, [&] { ++fired; });
  timer->arm(1ms);
  timer.reset();  // the SQE still points at the timespec: it must still be there
  for (int i = 0; i < 5; ++i) loop->runOnce(10ms);
  EXPECT_EQ(fired, 0);
}

INSTANTIATE_ON_BOTH_ENGINES(TimerTest);

}  // namespace
}  // namespace spindle::loop
