// Transparent retries: a call the endpoint never processed (its stream refused, or left out by
// a GOAWAY, or its connection refused) goes to another endpoint and the app sees only the
// answer; a call the endpoint may have processed is never sent twice.
#include <gtest/gtest.h>

#include "client.h"
#include "fixtures.h"
#include "harness.h"

namespace spindle::component {
namespace {

// Round robin over {a, b}: of two calls in a row one starts on `a`, whichever the picker's
// first place, so two calls are enough to see a retry.
constexpr int kCalls = 4;

class Retry : public TwoBackendsTest {
 protected:
  // `a` leaves every call it gets unprocessed: each must be answered by `b`, the app none
  // the wiser, and each that went to `a` first counted as a retry for `reason`.
  void expectEveryCallAnsweredByB(std::string_view reason = "refused") {
    TestClient client(h_);
    for (int i = 0; i < kCalls; ++i) {
      const TestClient::Call& call = client.call();
      EXPECT_EQ(call.grpcStatus(), "0");
      EXPECT_EQ(call.message(), "b#1");
    }
    EXPECT_GE(a_.refused(), kCalls / 2);
    EXPECT_EQ(b_.answered(), kCalls);
    EXPECT_EQ(h_.retries(reason), static_cast<uint64_t>(a_.refused()));
  }

  // Both backends react to every call with `reaction`, which says it processed the call: the
  // app gets `status` for each, and no call is sent twice.
  void expectEachCallSentOnce(Backend::Reaction reaction, std::string_view status) {
    a_.setReaction(reaction);
    b_.setReaction(reaction);
    TestClient client(h_);
    for (int i = 0; i < kCalls; ++i) {
      const TestClient::Call& call = client.call();
      EXPECT_EQ(call.grpcStatus(), status);
      EXPECT_EQ(a_.calls() + b_.calls(), i + 1) << "call " << i << " was sent twice";
    }
  }
};

TEST_F(Retry, RefusedStreamSucceedsOnTheOtherBackend) {
  a_.setReaction(Backend::Reaction::kRefuse);
  expectEveryCallAnsweredByB();
}

TEST_F(Retry, StreamLeftOutByGoawaySucceedsOnTheOtherBackend) {
  a_.setReaction(Backend::Reaction::kGoaway);
  expectEveryCallAnsweredByB();
  // A connection that said GOAWAY takes no new call: each call that went to `a` again
  // opened a new connection there.
  EXPECT_EQ(a_.connections().size(), static_cast<size_t>(a_.refused()));
  for (const Backend::ConnectionLog& log : a_.connections()) EXPECT_EQ(log.calls, 1);
}

TEST_F(Retry, CallCancelledUnprocessedByADrainingBackendSucceedsOnTheOtherBackend) {
  a_.setReaction(Backend::Reaction::kCancelWhileDraining);
  expectEveryCallAnsweredByB("endpoint_draining");
  EXPECT_EQ(h_.retries("refused"), 0u);
}

TEST_F(Retry, CancelledAnswerOfABackendThatIsNotDrainingIsPassedOn) {
  // Without a GOAWAY before it, CANCELLED is the handler's answer: the call was processed.
  expectEachCallSentOnce(Backend::Reaction::kAnswerCancelled, "1");
  EXPECT_EQ(h_.retries("endpoint_draining"), 0u);
}

TEST_F(Retry, CallTheBackendProcessedIsNotRetried) {
  // Both read the whole request, then reset the stream: whichever gets the call processed it.
  // The app gets UNAVAILABLE: the endpoint reset the call.
  expectEachCallSentOnce(Backend::Reaction::kResetProcessed, "14");
  EXPECT_EQ(h_.retries("refused"), 0u);
  EXPECT_EQ(h_.retries("connect_failed"), 0u);
}

TEST_F(Retry, CallWhoseConnectionIsLostIsNotRetried) {
  TestClient client(h_);
  a_.hold(true);
  b_.hold(true);

  // The backend may have processed it before it died: the app gets UNAVAILABLE, as it
  // would from the backend directly, and decides itself.
  const int32_t id = client.startCall();
  ASSERT_TRUE(h_.runUntil([&] { return a_.held() + b_.held() == 1; }));
  a_.closeConnections();
  b_.closeConnections();
  ASSERT_TRUE(h_.runUntil([&] { return client.done(id); }));
  EXPECT_EQ(client.result(id).grpcStatus(), "14");
  EXPECT_EQ(a_.calls() + b_.calls(), 1);
  EXPECT_EQ(h_.retries("refused") + h_.retries("connect_failed"), 0u);

  // The lost connection is not reused: the next call opens another.
  a_.hold(false);
  b_.hold(false);
  EXPECT_EQ(client.call().grpcStatus(), "0");
}

TEST_F(Retry, ConnectRefusedSucceedsOnTheOtherBackend) {
  // In place of `a`, a port nothing listens on: connect() is refused, nothing was sent.
  net::SocketAddress closed;
  listenLoopback(&closed);  // the listener closes at once: its port is free again
  h_.setService(echoService({closed, b_.address()}));
  TestClient client(h_);

  for (int i = 0; i < kCalls; ++i) {
    const TestClient::Call& call = client.call();
    EXPECT_EQ(call.grpcStatus(), "0");
    EXPECT_EQ(call.message().substr(0, 2), "b#");
  }
  EXPECT_GE(h_.retries("connect_failed"), 1u);
  EXPECT_EQ(b_.answered(), kCalls);
}

}  // namespace
}  // namespace spindle::component
