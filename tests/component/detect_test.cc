// What a redirected connection becomes, decided by its first bytes (ProtocolDetector): the
// HTTP/2 preface makes it a balanced connection (every other test); anything else is passed
// through at L4 to where the app meant to go.
#include <gtest/gtest.h>

#include "harness.h"
#include "raw_peers.h"

namespace spindle::component {
namespace {

TEST(Detect, ClientThatDoesNotSpeakHttp2IsPassedThroughToItsOriginalDestination) {
  ProxyHarness h(echoService({}));
  PlainServer destination(h, "HTTP/1.1 204 No Content\r\n\r\n");
  h.setOriginalDestination(destination.address());
  RawClient client(h);

  const std::string request = "GET / HTTP/1.1\r\nHost: echo.test\r\n\r\n";
  client.send(request);
  // The destination answers its first bytes: the rest of the request may still be on its way.
  ASSERT_TRUE(
      h.runUntil([&] { return !client.received().empty() && destination.received() == request; }));
  EXPECT_EQ(destination.received(), request);
  EXPECT_EQ(client.received(), "HTTP/1.1 204 No Content\r\n\r\n");
  EXPECT_EQ(h.counter(h.families().downstream_connections_total, {"passthrough"}), 1u);
}

}  // namespace
}  // namespace spindle::component
