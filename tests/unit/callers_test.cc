#include "privileged/callers.h"

#include <gtest/gtest.h>

namespace spindle::privileged {
namespace {

TEST(Callers, OnlyNamespacesOfRedirectedConnectionsAreKnown) {
  Callers callers;
  EXPECT_FALSE(callers.known(7));
  callers.seen(7);
  EXPECT_TRUE(callers.known(7));
  EXPECT_FALSE(callers.known(8));
}

TEST(Callers, PastTheLimitOnlyHeldNamespacesStay) {
  Callers callers(/*limit=*/3);
  callers.seen(1);
  callers.seen(2);
  callers.seen(3);
  callers.hold(2);
  callers.seen(3);  // known already: nothing is forgotten
  EXPECT_EQ(callers.size(), 3u);
  callers.seen(4);  // over the limit: 1 and 3 go, 2 is held
  EXPECT_FALSE(callers.known(1));
  EXPECT_TRUE(callers.known(2));
  EXPECT_FALSE(callers.known(3));
  EXPECT_TRUE(callers.known(4));
  callers.release(2);
  callers.seen(5);
  callers.seen(6);  // 2 is no longer held
  EXPECT_FALSE(callers.known(2));
  EXPECT_TRUE(callers.known(6));
}

}  // namespace
}  // namespace spindle::privileged
