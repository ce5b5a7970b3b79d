// A stopping spindle (SIGTERM) lets its clients go step by step (ConnectionSet::drainAll):
// listeners closed, then a GOAWAY notice with a PING, then the final GOAWAY once the PING is
// answered (or when the last step forces it). Calls in flight finish; the connection closes
// once they have; the worker is then drained.
#include <gtest/gtest.h>

#include "client.h"
#include "fixtures.h"
#include "harness.h"
#include "proxy/connection.h"

namespace spindle::component {
namespace {

using Drain = OneBackendTest;

using proxy::DrainStep;

// The last-stream-id of a GOAWAY that refuses nothing yet (RFC 9113 6.8).
constexpr int32_t kNoticeLastStreamId = 0x7fffffff;

TEST_F(Drain, InFlightCallFinishesThenTheConnectionCloses) {
  TestClient client(h_);
  backend_.hold(true);
  const int32_t id = client.startCall();
  ASSERT_TRUE(h_.runUntil([&] { return backend_.held() == 1; }));

  auto& connections = h_.parts().connections;
  // Listeners closed, nothing said to clients yet: no one is sent away before every
  // listener of the process is closed.
  connections.drainAll(DrainStep::kStopAccepting);
  EXPECT_FALSE(h_.runUntil([&] { return !client.goaways().empty(); }, 100ms));

  // The notice, then the final GOAWAY as soon as the client answered the PING.
  connections.drainAll(DrainStep::kGoaway);
  ASSERT_TRUE(h_.runUntil([&] { return client.goaways().size() >= 2; }));
  EXPECT_EQ(client.goaways()[0].last_stream_id, kNoticeLastStreamId);
  EXPECT_EQ(client.goaways()[1].last_stream_id, id);  // the call in flight is kept
  EXPECT_EQ(client.goaways()[1].error_code, NGHTTP2_NO_ERROR);
  connections.drainAll(DrainStep::kFinalGoaway);  // already there: changes nothing

  EXPECT_FALSE(connections.drained()) << "a call is still in flight";
  EXPECT_FALSE(client.done(id));
  backend_.releaseHeld();
  ASSERT_TRUE(h_.runUntil([&] { return client.done(id); }));
  EXPECT_EQ(client.result(id).grpcStatus(), "0");
  EXPECT_EQ(client.result(id).message(), "a#1");
  // With the call done, both ends are finished with the connection: it closes, and with it
  // the last connection the worker had to wait for.
  ASSERT_TRUE(h_.runUntil([&] { return client.closed() && connections.drained(); }));
  EXPECT_EQ(client.goaways().size(), 2u);
}

TEST_F(Drain, CallSentBeforeTheClientSawTheNoticeIsServedAndTheLastStepEndsIt) {
  // A client that never answers the PING: only the last step sends it the final GOAWAY.
  TestClient client(h_, ClientOptions{.answer_pings = false});
  backend_.hold(true);

  auto& connections = h_.parts().connections;
  // The notice is on its way, but the client has not read it when it starts a call.
  client.setReading(false);
  connections.drainAll(DrainStep::kStopAccepting);
  connections.drainAll(DrainStep::kGoaway);
  const int32_t late = client.startCall();
  ASSERT_TRUE(h_.runUntil([&] { return backend_.held() == 1; })) << "the late call was refused";
  client.setReading(true);
  ASSERT_TRUE(h_.runUntil([&] { return !client.goaways().empty(); }));
  EXPECT_EQ(client.goaways()[0].last_stream_id, kNoticeLastStreamId);
  // The PING goes unanswered: no final GOAWAY yet.
  EXPECT_FALSE(h_.runUntil([&] { return client.goaways().size() > 1; }, 100ms));

  connections.drainAll(DrainStep::kFinalGoaway);
  ASSERT_TRUE(h_.runUntil([&] { return client.goaways().size() == 2; }));
  EXPECT_EQ(client.goaways()[1].last_stream_id, late);
  EXPECT_FALSE(connections.drained());
  backend_.releaseHeld();
  ASSERT_TRUE(h_.runUntil([&] { return client.done(late); }));
  EXPECT_EQ(client.result(late).grpcStatus(), "0");
  ASSERT_TRUE(h_.runUntil([&] { return client.closed() && connections.drained(); }));
}

TEST_F(Drain, ConnectionAcceptedAfterTheNoticeDrainsToo) {
  h_.parts().connections.drainAll(DrainStep::kStopAccepting);
  h_.parts().connections.drainAll(DrainStep::kGoaway);
  // Redirected just before the listeners closed, accepted after the notice went out.
  TestClient client(h_);
  // With no call to finish, the client is done at the notice and closes.
  ASSERT_TRUE(h_.runUntil([&] { return client.closed() && h_.parts().connections.drained(); }));
  ASSERT_FALSE(client.goaways().empty());
  EXPECT_EQ(client.goaways()[0].last_stream_id, kNoticeLastStreamId);
}

}  // namespace
}  // namespace spindle::component
