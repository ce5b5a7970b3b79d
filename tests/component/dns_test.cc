// Endpoints from DNS, as the daemon wires them: dns::Discovery asks the resolver (a fake
// here), each change goes through ServiceRegistry::setEndpoints and is published to the
// worker, whose new calls then balance over the new set while upstream connections to
// endpoints that left drain: their calls finish, no new call comes.
//
// Every endpoint is 127.0.0.1: the backend's one port, once as IPv4 and once v4-mapped in
// IPv6 (::ffff:127.0.0.1). Two endpoints for spindle, two upstream connections the backend
// can tell apart by the order they came in, and no traffic off 127.0.0.1.
#include <gtest/gtest.h>

#include <memory>

#include "backend.h"
#include "client.h"
#include "dns/discovery.h"
#include "fake_resolver.h"
#include "harness.h"

namespace spindle::component {
namespace {

constexpr char kName[] = "echo-pods.test";

net::SocketAddress ip(std::string_view text) {
  auto address = net::SocketAddress::parseIp(text, 0);
  EXPECT_TRUE(address.ok()) << text;
  return *address;
}

class DnsEndpoints : public ::testing::Test {
 protected:
  DnsEndpoints()
      : h_(echoService({}), noIdleLimits()),
        backend_(h_, "a"),
        discovery_(h_.loop(), resolver_,
                   dns::PolicySettings{50ms, 200ms, /*empty_confirmations=*/2}) {}

  // The service's endpoints are the name's addresses at the backend's port; the name
  // answers 127.0.0.1 to begin with.
  void SetUp() override {
    config::Service service = echoService({});
    service.endpoints.dns = kName;
    service.port = backend_.address().port();
    h_.setService(service);
    resolver_.setAddresses(kName, {ip("127.0.0.1")});
    // What daemon.cc does with each change of a watched name.
    discovery_.watch(kName, [this](const std::vector<net::SocketAddress>& addresses) {
      h_.publish(h_.registry().setEndpoints(0, addresses));
    });
    ASSERT_TRUE(h_.runUntil([&] { return endpointsAre({endpoint("127.0.0.1")}); }));
  }

  // Connections closed while Discovery still answers, as a stopping worker does.
  void TearDown() override { h_.shutdown(); }

  bool endpointsAre(const std::vector<std::string>& labels) {
    const lb::EndpointSet& set = h_.endpoints();
    if (set.size() != labels.size()) return false;
    for (size_t i = 0; i < set.size(); ++i) {
      if (set[i].address.toString() != labels[i]) return false;
    }
    return true;
  }
  std::string endpoint(std::string_view ip_text) {
    net::SocketAddress address = ip(ip_text);
    address.setPort(backend_.address().port());
    return address.toString();
  }

  ProxyHarness h_;
  Backend backend_;
  FakeResolver resolver_;
  dns::Discovery discovery_;

 private:
  static config::Limits noIdleLimits() {
    config::Limits limits = testLimits();
    limits.idle_timeout = std::chrono::milliseconds(0);  // the waits for DNS are not idleness
    return limits;
  }
};

TEST_F(DnsEndpoints, NewEndpointTakesNewCallsWhileTheRemovedOneDrains) {
  TestClient client(h_);
  EXPECT_EQ(client.call().message(), "a#1");
  // A call in flight on the old endpoint when it leaves.
  backend_.hold(true);
  const int32_t in_flight = client.startCall();
  ASSERT_TRUE(h_.runUntil([&] { return backend_.held() == 1; }));
  backend_.hold(false);

  resolver_.setAddresses(kName, {ip("::ffff:127.0.0.1")});
  ASSERT_TRUE(h_.runUntil([&] { return endpointsAre({endpoint("::ffff:127.0.0.1")}); }));
  // The old endpoint's connection is told no new stream comes...
  ASSERT_TRUE(h_.runUntil([&] { return backend_.connections()[0].goaways == 1; }));
  // ...new calls go to the new endpoint, on a connection of their own...
  EXPECT_EQ(client.call().message(), "a#2");
  EXPECT_EQ(h_.requests(endpoint("::ffff:127.0.0.1"), "0"), 1u);
  // ...and the call in flight finishes where it was, after which the old connection closes.
  EXPECT_FALSE(backend_.connections()[0].closed);
  backend_.releaseHeld();
  ASSERT_TRUE(h_.runUntil([&] { return client.done(in_flight); }));
  EXPECT_EQ(client.result(in_flight).grpcStatus(), "0");
  EXPECT_EQ(client.result(in_flight).message(), "a#1");
  ASSERT_TRUE(h_.runUntil([&] { return backend_.connections()[0].closed; }));
  EXPECT_FALSE(backend_.connections()[1].closed);
  EXPECT_EQ(backend_.connections()[0].calls, 2);
  EXPECT_EQ(backend_.connections()[1].calls, 1);
}

TEST_F(DnsEndpoints, FailingLookupsKeepTheEndpoints) {
  resolver_.setFailing(kName);
  const int asked = resolver_.queries(kName);
  // Several refreshes (A and AAAA each), every one failing.
  ASSERT_TRUE(h_.runUntil([&] { return resolver_.queries(kName) >= asked + 6; }));
  EXPECT_TRUE(endpointsAre({endpoint("127.0.0.1")}));
  TestClient client(h_);
  EXPECT_EQ(client.call().grpcStatus(), "0");
}

// Both families failing is an outage, reported as failures (the metric, staleness, the log),
// not as fresh answers made of the last good ones; the endpoints stay all the same.
TEST_F(DnsEndpoints, AnOutageIsReportedAsFailuresNotAsFreshAnswers) {
  std::vector<dns::Outcome> outcomes;
  discovery_.watch(
      kName, [](const std::vector<net::SocketAddress>&) {},
      [&](dns::Outcome outcome) { outcomes.push_back(outcome); });
  ASSERT_TRUE(h_.runUntil([&] { return !outcomes.empty(); }));
  EXPECT_EQ(outcomes.back(), dns::Outcome::kRecords);
  resolver_.setFailing(kName);
  const size_t before = outcomes.size();
  ASSERT_TRUE(h_.runUntil([&] { return outcomes.size() >= before + 2; }));
  EXPECT_EQ(outcomes.back(), dns::Outcome::kFailure);
  EXPECT_TRUE(endpointsAre({endpoint("127.0.0.1")}));
}

TEST_F(DnsEndpoints, ConfirmedEmptyAnswerLeavesNoEndpointToCall) {
  TestClient client(h_);
  EXPECT_EQ(client.call().grpcStatus(), "0");

  // NXDOMAIN, twice in a row (empty_confirmations): the set empties, and the upstream
  // connection to the endpoint that left is drained.
  resolver_.remove(kName);
  ASSERT_TRUE(h_.runUntil([&] { return endpointsAre({}); }));
  ASSERT_TRUE(h_.runUntil([&] { return backend_.connections()[0].closed; }));
  const TestClient::Call& call = client.call();
  EXPECT_EQ(call.grpcStatus(), "14");  // UNAVAILABLE
  EXPECT_EQ(backend_.calls(), 1);
}

}  // namespace
}  // namespace spindle::component
