// Calls balanced through the real Call, UpstreamPool and Upstream: every stream of one client
// connection is its own pick, over HTTP/2 connections to the endpoints that the calls share.
#include <gtest/gtest.h>

#include <vector>

#include "client.h"
#include "fixtures.h"
#include "harness.h"

namespace spindle::component {
namespace {

using Balance = TwoBackendsTest;

TEST_F(Balance, CallsOfOneConnectionSpreadOverBothBackends) {
  TestClient client(h_);

  // 20 calls in flight at once, answered only once all have arrived: round robin gives
  // each backend exactly 10, whatever it started with.
  a_.hold(true);
  b_.hold(true);
  std::vector<int32_t> ids;
  for (int i = 0; i < 20; ++i) ids.push_back(client.startCall());
  ASSERT_TRUE(h_.runUntil([&] { return a_.held() + b_.held() == 20; }));
  EXPECT_EQ(a_.held(), 10);
  EXPECT_EQ(b_.held(), 10);
  // The calls share one upstream connection per backend, not one each.
  EXPECT_EQ(a_.connections().size(), 1u);
  EXPECT_EQ(b_.connections().size(), 1u);

  a_.releaseHeld();
  b_.releaseHeld();
  ASSERT_TRUE(h_.runUntil([&] {
    for (int32_t id : ids) {
      if (!client.done(id)) return false;
    }
    return true;
  }));
  int from_a = 0;
  int from_b = 0;
  for (int32_t id : ids) {
    const TestClient::Call& call = client.result(id);
    EXPECT_EQ(call.grpcStatus(), "0");
    from_a += call.message() == "a#1" ? 1 : 0;
    from_b += call.message() == "b#1" ? 1 : 0;
  }
  EXPECT_EQ(from_a, 10);
  EXPECT_EQ(from_b, 10);
  EXPECT_EQ(h_.requests(a_.address().toString(), "0"), 10u);
  EXPECT_EQ(h_.requests(b_.address().toString(), "0"), 10u);
  // Every stream the upstreams counted as active was counted out again.
  for (const lb::Endpoint& endpoint : h_.endpoints().endpoints()) {
    EXPECT_EQ(endpoint.load->active_streams.load(), 0u) << endpoint.load->label;
  }
}

TEST_F(Balance, LeastRequestSendsNewCallsAwayFromTheBusyBackend) {
  config::Service service = echoService({a_.address(), b_.address()});
  service.balance = config::Balance::kLeastRequest;
  h_.setService(service);
  TestClient client(h_);

  // `a` keeps every call it gets; `b` answers at once. Only while both are idle can a call
  // land on `a`: after that its one active stream loses every comparison. Were the
  // upstream's stream counts not kept, ties would alternate the calls, 5 to each.
  a_.hold(true);
  for (int i = 0; i < 10; ++i) {
    const int held = a_.held();
    const int32_t id = client.startCall();
    ASSERT_TRUE(h_.runUntil([&] { return client.done(id) || a_.held() > held; }));
  }
  EXPECT_LE(a_.held(), 1);
  EXPECT_GE(b_.answered(), 9);
  a_.releaseHeld();
}

}  // namespace
}  // namespace spindle::component
