// Tenant isolation: an app that holds streams open and never grants HTTP/2 flow-control
// window (or an endpoint that reads no request) holds its own streams' windows only, never a
// connection window other calls share; and a call whose app takes none of its response for
// limits.send_timeout is reset, CANCEL both ways, and counted.
#include <gtest/gtest.h>

#include "backend.h"
#include "client.h"
#include "fixtures.h"
#include "h2/session.h"
#include "harness.h"

namespace spindle::component {
namespace {

// Our clients and backends keep HTTP/2's initial windows: 65,535 bytes.
constexpr size_t kPeerWindow = NGHTTP2_INITIAL_WINDOW_SIZE;

// send_timeout long enough that the stalled calls of the sharing tests are not reset.
config::Limits patientLimits() {
  config::Limits limits = testLimits();
  limits.send_timeout = std::chrono::milliseconds(20000);
  return limits;
}

class SharedConnections : public ::testing::Test {
 protected:
  ProxyHarness h_{echoService({}), patientLimits()};
  Backend a_{h_, "a"};
  Backend b_{h_, "b"};
};

TEST_F(SharedConnections, AppThatGrantsNoWindowDoesNotHoldTheUpstreamConnectionOthersShare) {
  h_.setService(echoService({a_.address()}));
  const h2::Settings upstream = h2::upstreamSettings();
  // More stalled calls than the upstream connection window has room for, at a full stream
  // window each: 10 x 1 MiB against 8 MiB.
  const size_t stalled_calls = upstream.connection_window / upstream.stream_window + 2;
  a_.setReplyBytes(2 * upstream.stream_window);
  TestClient stalled(h_, ClientOptions{.grant_window = false});
  for (size_t i = 0; i < stalled_calls; ++i) stalled.startCall();

  // Each call takes what its own stream window allows, and no more: what the backend could
  // send is a stream window per call, plus what went on to the app within its window.
  const size_t reachable = stalled_calls * upstream.stream_window;
  EXPECT_TRUE(h_.runUntil([&] { return a_.responseBytesSent() >= reachable; }, 3s))
      << "the backend could send only " << a_.responseBytesSent() << " of " << reachable
      << " bytes: the stalled calls hold the upstream connection's window";
  const size_t bound = reachable + kPeerWindow;
  EXPECT_FALSE(h_.runUntil([&] { return a_.responseBytesSent() > bound; }, 300ms))
      << "the backend sent " << a_.responseBytesSent() << " bytes to an app that takes none";

  // Another Pod's call on the same upstream connection is answered at once.
  a_.setReplyBytes(0);
  TestClient other(h_);
  const int32_t id = other.startCall();
  ASSERT_TRUE(h_.runUntil([&] { return other.done(id); }, 1s))
      << "a call sharing the upstream connection with the stalled ones was held";
  EXPECT_EQ(other.result(id).grpcStatus(), "0");
  EXPECT_EQ(other.result(id).message(), "a#1");
  EXPECT_EQ(a_.connections().size(), 1u) << "the calls did not share one upstream connection";
}

TEST_F(SharedConnections, EndpointThatReadsNoRequestDoesNotHoldTheAppsConnectionWindow) {
  h_.setService(echoService({a_.address()}));
  const h2::Settings downstream = h2::downstreamSettings();
  // More calls to the endpoint that reads nothing than the app's connection window to the
  // proxy has room for, at a full stream window each: 20 x 64 KiB against 1 MiB.
  const size_t stuck_calls = downstream.connection_window / downstream.stream_window + 4;
  a_.setReading(false);
  TestClient client(h_);
  for (size_t i = 0; i < stuck_calls; ++i)
    client.startCall(patterned(2 * downstream.stream_window));
  const size_t reachable = stuck_calls * downstream.stream_window;
  EXPECT_TRUE(h_.runUntil([&] { return client.requestBytesSent() >= reachable; }, 3s))
      << "the app could send only " << client.requestBytesSent() << " of " << reachable
      << " bytes: the stuck calls hold its connection window";
  // What went on upstream within the endpoint's window reopened stream windows for more.
  const size_t bound = reachable + kPeerWindow;
  EXPECT_FALSE(h_.runUntil([&] { return client.requestBytesSent() > bound; }, 300ms))
      << "the app sent " << client.requestBytesSent() << " bytes for an endpoint that reads none";

  // The app's next call, on the same connection, goes to an endpoint that reads.
  h_.setService(echoService({b_.address()}));
  const int32_t id = client.startCall("hello");
  ASSERT_TRUE(h_.runUntil([&] { return client.done(id); }, 1s))
      << "a call on the app's connection was held by its calls to an endpoint that reads none";
  EXPECT_EQ(client.result(id).grpcStatus(), "0");
  EXPECT_EQ(client.result(id).message(), "b#1");
}

using CallSendTimeout = OneBackendTest;  // testLimits(): send_timeout 2 s

uint64_t sendTimeoutResets(const ProxyHarness& h) {
  return h.counter(h.families().limit_resets_total, {"send_timeout"});
}

TEST_F(CallSendTimeout, CallWhoseAppTakesNoneOfTheResponseIsResetBothWays) {
  const auto timeout = testLimits().send_timeout;
  backend_.setReplyBytes(h2::upstreamSettings().stream_window);
  TestClient client(h_, ClientOptions{.grant_window = false});
  const auto started = std::chrono::steady_clock::now();
  const int32_t id = client.startCall();
  ASSERT_TRUE(h_.runUntil([&] { return client.done(id); }, timeout + 2s))
      << "a call whose app takes nothing was never reset";
  EXPECT_GE(std::chrono::steady_clock::now() - started, timeout);
  EXPECT_EQ(client.result(id).close_code, static_cast<uint32_t>(NGHTTP2_CANCEL));
  ASSERT_TRUE(h_.runUntil([&] { return !backend_.resetsReceived().empty(); }));
  EXPECT_EQ(backend_.resetsReceived()[0], static_cast<uint32_t>(NGHTTP2_CANCEL));
  EXPECT_EQ(sendTimeoutResets(h_), 1u);
  EXPECT_EQ(h_.requests(backend_.address().toString(), "reset"), 1u);
  // The call, not the connection: nothing was being sent, the peer broke no rule.
  EXPECT_FALSE(client.closed());
  EXPECT_TRUE(client.goaways().empty());
}

TEST_F(CallSendTimeout, CallWhoseAppKeepsTakingIsNotReset) {
  const auto timeout = testLimits().send_timeout;
  const size_t reply = h2::upstreamSettings().stream_window;
  backend_.setReplyBytes(reply);
  TestClient client(h_, ClientOptions{.grant_window = false});
  const int32_t id = client.startCall();
  // The app takes what arrived, at most `most` bytes more, and grants that much window.
  size_t taken = 0;
  auto take = [&](size_t most) {
    const size_t n = std::min(most, client.result(id).body.size() - taken);
    nghttp2_session_consume(client.session(), id, n);
    taken += n;
  };
  // A little every 200 ms (its session sends WINDOW_UPDATE each time half of its 64 KiB
  // window was taken, so every 0.8 s): far too slow to finish within the timeout, but
  // never without progress for long.
  const auto until = std::chrono::steady_clock::now() + timeout + 1s;
  while (std::chrono::steady_clock::now() < until) {
    EXPECT_FALSE(h_.runUntil([&] { return client.done(id); }, 200ms)) << "the call was reset";
    take(8192);
  }
  // Then it reads the rest at full speed.
  ASSERT_TRUE(h_.runUntil(
      [&] {
        take(SIZE_MAX);
        return client.done(id);
      },
      3s));
  EXPECT_EQ(client.result(id).grpcStatus(), "0");
  EXPECT_TRUE(client.result(id).message() == patterned(reply)) << "the body arrived changed";
  EXPECT_EQ(sendTimeoutResets(h_), 0u);
}

TEST_F(CallSendTimeout, CallThatWaitsForItsAnswerIsNotReset) {
  const auto timeout = testLimits().send_timeout;
  backend_.hold(true);
  TestClient client(h_, ClientOptions{.grant_window = false});
  const int32_t id = client.startCall();
  // Nothing waits for the app: it is the endpoint that takes its time.
  EXPECT_FALSE(h_.runUntil([&] { return client.done(id); }, timeout + 1s));
  backend_.releaseHeld();
  ASSERT_TRUE(h_.runUntil([&] { return client.done(id); }));
  EXPECT_EQ(client.result(id).grpcStatus(), "0");
  EXPECT_EQ(sendTimeoutResets(h_), 0u);
}

}  // namespace
}  // namespace spindle::component
