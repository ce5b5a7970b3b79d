// The limits of config::Limits that protect a worker from silent peers: a client that never
// finishes its handshake, or keeps a connection without calls, is closed with a GOAWAY and
// counted; one with a call in flight is never idle, however quiet.
#include <gtest/gtest.h>

#include <optional>

#include "client.h"
#include "fixtures.h"
#include "harness.h"
#include "raw_peers.h"

namespace spindle::component {
namespace {

using Limits = OneBackendTest;

TEST_F(Limits, ClientThatSendsOnlyThePrefaceIsClosedAtTheHeaderTimeout) {
  RawClient client(h_);

  const auto started = std::chrono::steady_clock::now();
  // The preface, then nothing: no SETTINGS (a slowloris).
  client.send(std::string_view(NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN));
  ASSERT_TRUE(h_.runUntil([&] { return client.eof(); }, 2s));
  EXPECT_GE(std::chrono::steady_clock::now() - started, testLimits().header_timeout);
  EXPECT_EQ(client.goawayCode(), std::optional<uint32_t>(NGHTTP2_ENHANCE_YOUR_CALM));
  EXPECT_EQ(h_.counter(h_.families().h2_violations_total, {"downstream", "header_timeout"}), 1u);
}

TEST_F(Limits, ConnectionWithoutCallsIsClosedAtTheIdleTimeout) {
  TestClient client(h_);
  // Idle from the end of the call at the latest, which is after this.
  const auto call_started = std::chrono::steady_clock::now();
  ASSERT_EQ(client.call().grpcStatus(), "0");

  ASSERT_TRUE(h_.runUntil([&] { return client.closed(); }, 2s));
  EXPECT_GE(std::chrono::steady_clock::now() - call_started, testLimits().idle_timeout);
  ASSERT_EQ(client.goaways().size(), 1u);
  EXPECT_EQ(client.goaways()[0].error_code, NGHTTP2_NO_ERROR);
  EXPECT_EQ(h_.counter(h_.families().limit_closes_total, {"idle"}), 1u);
}

TEST_F(Limits, ConnectionWithACallInFlightIsNotIdle) {
  TestClient client(h_);
  backend_.hold(true);
  const int32_t id = client.startCall();

  // Twice the idle timeout with a call in flight and not a byte on the connection.
  EXPECT_FALSE(h_.runUntil([&] { return client.closed() || !client.goaways().empty(); },
                           2 * testLimits().idle_timeout));
  backend_.releaseHeld();
  ASSERT_TRUE(h_.runUntil([&] { return client.done(id); }));
  EXPECT_EQ(client.result(id).grpcStatus(), "0");
  EXPECT_EQ(h_.counter(h_.families().limit_closes_total, {"idle"}), 0u);
}

}  // namespace
}  // namespace spindle::component
