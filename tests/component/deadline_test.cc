// Deadlines. A call's grpc-timeout is passed on as the time left; a call already past it is
// answered DEADLINE_EXCEEDED without being sent. The proxy keeps no timer per call (no
// blanket stream timeout): when the deadline passes in flight, the backend's gRPC stack
// answers DEADLINE_EXCEEDED, or the client's resets the stream, and the proxy passes either
// on.
#include <gtest/gtest.h>

#include "client.h"
#include "fixtures.h"
#include "harness.h"
#include "proxy/grpc_timeout.h"

namespace spindle::component {
namespace {

using Deadline = OneBackendTest;

TEST_F(Deadline, BackendGetsTheTimeLeftAndItsDeadlineExceededReachesTheClient) {
  backend_.hold(true);
  backend_.honourDeadlines(true);
  TestClient client(h_);

  // The client leaves the deadline to the server here, so that the answer is the backend's.
  const int32_t id = client.startCall("hello", {.timeout = 300ms, .reset_at_deadline = false});
  ASSERT_TRUE(h_.runUntil([&] { return backend_.held() == 1; }));
  // The time left when the proxy sent the call: under what the app gave, never over.
  const auto left = proxy::parseGrpcTimeout(backend_.lastRequestHeader("grpc-timeout"));
  ASSERT_TRUE(left.has_value()) << backend_.lastRequestHeader("grpc-timeout");
  EXPECT_LT(*left, 300ms);
  EXPECT_GT(*left, 100ms);

  ASSERT_TRUE(h_.runUntil([&] { return client.done(id); }));
  EXPECT_EQ(client.result(id).grpcStatus(), "4");
  EXPECT_EQ(h_.requests(backend_.address().toString(), "4"), 1u);
}

TEST_F(Deadline, ClientThatGivesUpAtItsDeadlineResetsTheBackendStream) {
  backend_.hold(true);  // and ignores the deadline
  TestClient client(h_);

  const int32_t id = client.startCall("hello", {.timeout = 200ms});
  ASSERT_TRUE(h_.runUntil([&] { return backend_.held() == 1; }));
  // The client's gRPC stack resets the stream at its deadline; the proxy resets the
  // backend's, which stops working for an app that gave up.
  ASSERT_TRUE(h_.runUntil([&] { return !backend_.resetsReceived().empty(); }));
  EXPECT_TRUE(client.result(id).deadline_passed);
  EXPECT_EQ(backend_.resetsReceived()[0], static_cast<uint32_t>(NGHTTP2_CANCEL));
  ASSERT_TRUE(h_.runUntil([&] { return backend_.held() == 0; }));
  EXPECT_EQ(backend_.answered(), 0);
}

TEST_F(Deadline, CallAlreadyPastItsDeadlineIsAnsweredWithoutBeingSent) {
  TestClient client(h_);

  // "0m" is a valid grpc-timeout: the deadline is now. (The client's own stack would give
  // up at once too; here it waits, to see what the proxy answers.)
  const int32_t id = client.startCall("hello", {.timeout = 0ms, .reset_at_deadline = false});
  ASSERT_TRUE(h_.runUntil([&] { return client.done(id); }));
  EXPECT_EQ(client.result(id).grpcStatus(), "4");
  EXPECT_NE(client.result(id).grpcMessageHeader().find("deadline exceeded"), std::string::npos);
  EXPECT_EQ(backend_.calls(), 0);
}

}  // namespace
}  // namespace spindle::component
