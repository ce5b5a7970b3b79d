// Flow control end to end: the proxy gives window back to one side only once the other side
// has taken the bytes, so a slow reader holds its sender back instead of filling the proxy.
// What the proxy holds for a stream is then bounded by the windows it advertised.
#include <gtest/gtest.h>

#include "client.h"
#include "fixtures.h"
#include "h2/session.h"
#include "harness.h"

namespace spindle::component {
namespace {

using FlowControl = OneBackendTest;

constexpr size_t kBody = 4 * 1024 * 1024;
// Our client keeps HTTP/2's initial windows (65,535 bytes for the stream and the connection);
// the backend too.
constexpr size_t kPeerWindow = NGHTTP2_INITIAL_WINDOW_SIZE;

TEST_F(FlowControl, LargeResponseToAClientThatStopsReadingIsHeldAtTheBackend) {
  backend_.setReplyBytes(kBody);
  TestClient client(h_);

  client.setReading(false);
  const int32_t id = client.startCall();
  // The backend sends until the proxy's window for the stream is used up. Were the proxy
  // to give window back as it receives (not as the client takes), it would take all 4 MiB.
  ASSERT_TRUE(h_.runUntil(
      [&] { return backend_.responseBytesSent() >= h2::upstreamSettings().stream_window; }));
  // What the backend could send: the proxy's upstream stream window, plus what the proxy
  // passed on to the client within the client's window.
  const size_t bound = h2::upstreamSettings().stream_window + kPeerWindow;
  EXPECT_FALSE(h_.runUntil([&] { return backend_.responseBytesSent() > bound; }, 300ms))
      << "the backend sent " << backend_.responseBytesSent()
      << " bytes to a client that reads none";
  EXPECT_LT(backend_.responseBytesSent(), kBody);

  client.setReading(true);
  ASSERT_TRUE(h_.runUntil([&] { return client.done(id); }, 5s));
  const TestClient::Call& call = client.result(id);
  EXPECT_EQ(call.grpcStatus(), "0");
  ASSERT_EQ(call.body.size(), kBody + 5);
  EXPECT_TRUE(call.message() == patterned(kBody)) << "the body arrived changed";
}

TEST_F(FlowControl, LargeRequestToABackendThatStopsReadingIsHeldAtTheClient) {
  TestClient client(h_);

  backend_.setReading(false);
  const int32_t id = client.startCall(patterned(kBody));
  // What the client could send: the proxy's downstream stream window, plus what the proxy
  // passed on upstream within the backend's window.
  const size_t bound = h2::downstreamSettings().stream_window + kPeerWindow;
  ASSERT_TRUE(h_.runUntil(
      [&] { return client.requestBytesSent() >= h2::downstreamSettings().stream_window; }));
  EXPECT_FALSE(h_.runUntil([&] { return client.requestBytesSent() > bound; }, 300ms))
      << "the client sent " << client.requestBytesSent() << " bytes to a backend that reads none";

  backend_.setReading(true);
  ASSERT_TRUE(h_.runUntil([&] { return client.done(id); }, 5s));
  EXPECT_EQ(client.result(id).grpcStatus(), "0");
  EXPECT_TRUE(grpcMessage(backend_.lastRequestBody()) == patterned(kBody))
      << "the request arrived changed (" << backend_.lastRequestBody().size() << " bytes)";
}

}  // namespace
}  // namespace spindle::component
