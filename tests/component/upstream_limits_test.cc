// The bounds on a worker's upstream connections (config::Upstream): one without calls is
// closed at upstream.idle_timeout, whatever the downstream limits say; at
// upstream.max_connections a call that needs one more fails at once with UNAVAILABLE, is
// counted, and is not sent anywhere.
#include <gtest/gtest.h>

#include "backend.h"
#include "client.h"
#include "harness.h"

namespace spindle::component {
namespace {

config::Upstream upstreamWith(std::chrono::milliseconds idle, uint32_t max_connections) {
  config::Upstream upstream;
  upstream.idle_timeout = idle;
  upstream.max_connections = max_connections;
  return upstream;
}

TEST(UpstreamLimits, UpstreamWithoutCallsIsClosedAtItsOwnIdleTimeout) {
  config::Limits limits = testLimits();
  limits.idle_timeout = std::chrono::seconds(30);  // the client's connection stays
  ProxyHarness h(echoService({}), limits, upstreamWith(200ms, 100));
  Backend backend(h, "a");
  h.setService(echoService({backend.address()}));
  TestClient client(h);

  const auto call_started = std::chrono::steady_clock::now();
  ASSERT_EQ(client.call().grpcStatus(), "0");
  ASSERT_EQ(backend.connections().size(), 1u);
  ASSERT_TRUE(h.runUntil([&] { return backend.connections()[0].closed; }, 2s));
  EXPECT_GE(std::chrono::steady_clock::now() - call_started, 200ms);
  EXPECT_FALSE(client.closed());
  // The next call opens a new one.
  ASSERT_EQ(client.call().grpcStatus(), "0");
  EXPECT_EQ(backend.connections().size(), 2u);
}

TEST(UpstreamLimits, AtMaxConnectionsACallNeedingOneMoreFailsAndIsCounted) {
  // echoService balances round robin.
  ProxyHarness h(echoService({}), testLimits(), upstreamWith(30s, 1));
  Backend a(h, "a");
  Backend b(h, "b");
  h.setService(echoService({a.address(), b.address()}));
  TestClient client(h);

  // Round robin: the first call opens the worker's one upstream connection, the second
  // needs another (to the other backend), the third goes back to the first.
  EXPECT_EQ(client.call().grpcStatus(), "0");
  EXPECT_EQ(client.call().grpcStatus(), "14");
  EXPECT_EQ(client.call().grpcStatus(), "0");
  EXPECT_EQ(a.calls() + b.calls(), 2);
  EXPECT_EQ(a.connections().size() + b.connections().size(), 1u);
  EXPECT_EQ(h.counter(h.families().socket_failures_total, {"max_connections"}), 1u);
}

}  // namespace
}  // namespace spindle::component
