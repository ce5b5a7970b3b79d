// Tenant isolation: an app that holds streams open and never grants HTTP/2 flow-control
// window (or an endpoint that reads no request) holds its own streams' windows only, never a
// connection window other calls share.
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

}  // namespace
}  // namespace spindle::component
