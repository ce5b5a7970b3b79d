// EventClock: the time of the completion being handled, or the clock outside a loop.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "util/event_clock.h"

namespace spindle {
namespace {

using namespace std::chrono_literals;

TEST(EventClock, OutsideALoopItIsTheClock) {
  const auto before = EventClock::Clock::now();
  std::this_thread::sleep_for(1ms);
  const auto now = EventClock::now();
  EXPECT_GT(now, before);
  std::this_thread::sleep_for(1ms);
  EXPECT_GT(EventClock::now(), now);
}

TEST(EventClock, WithinACompletionItStandsStillUntilTheNext) {
  EventClock::Clock::time_point first;
  {
    EventClock::Scope scope;
    first = EventClock::now();
    std::this_thread::sleep_for(1ms);
    EXPECT_EQ(EventClock::now(), first);
    scope.advance();
    EXPECT_GT(EventClock::now(), first);
  }
  // Gone with its scope: the clock again.
  const auto after = EventClock::now();
  std::this_thread::sleep_for(1ms);
  EXPECT_GT(EventClock::now(), after);
}

TEST(EventClock, EachThreadHasItsOwn) {
  EventClock::Scope scope;
  const auto here = EventClock::now();
  EventClock::Clock::time_point there{};
  std::thread other([&] {
    std::this_thread::sleep_for(1ms);
    there = EventClock::now();
  });
  other.join();
  EXPECT_GT(there, here);
  EXPECT_EQ(EventClock::now(), here);
}

}  // namespace
}  // namespace spindle
