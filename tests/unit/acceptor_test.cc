// net::Acceptor on a real loop and loopback sockets: what the proxy workers and the admin
// server both accept with.
#include "net/acceptor.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <functional>
#include <vector>

#include "engines.h"
#include "loop/loop.h"
#include "net/address.h"
#include "net/socket.h"
#include "util/fd.h"

namespace spindle::net {
namespace {

using namespace std::chrono_literals;

class AcceptorTest : public ::testing::TestWithParam<loop::Engine> {
 protected:
  void SetUp() override {
    auto loop = loop::Loop::create(GetParam(), 64);
    ASSERT_TRUE(loop) << loop.error();
    loop_ = std::move(*loop);
    auto address = SocketAddress::parseIp("127.0.0.1", 0);
    ASSERT_TRUE(address);
    auto listener = listenTcp(*address, /*reuse_port=*/false, 16);
    ASSERT_TRUE(listener) << listener.error();
    sockaddr_in bound{};
    socklen_t len = sizeof(bound);
    ASSERT_EQ(::getsockname(listener->get(), reinterpret_cast<sockaddr*>(&bound), &len), 0);
    port_ = bound.sin_port;
    listener_ = std::move(*listener);
  }

  // A blocking connect to the listener; its result (0 or errno).
  int dial(Fd* out = nullptr) {
    Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = port_;
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const int rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&to), sizeof(to));
    const int err = rc == 0 ? 0 : errno;
    if (out != nullptr) *out = std::move(fd);
    return err;
  }

  bool runUntil(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 2s;
    while (!done() && std::chrono::steady_clock::now() < deadline) loop_->runOnce(10ms);
    return done();
  }

  std::unique_ptr<loop::Loop> loop_;
  Fd listener_;
  uint16_t port_ = 0;  // network order
};

TEST_P(AcceptorTest, Acceptor_HandsOverEveryConnectionUntilClosed) {
  std::vector<Fd> accepted;
  int closed = 0;
  auto* acceptor = new Acceptor(
      *loop_, std::move(listener_), "test", [&](Fd fd) { accepted.push_back(std::move(fd)); },
      [&] { ++closed; });
  acceptor->start();
  Fd a, b, c;
  ASSERT_EQ(dial(&a), 0);
  ASSERT_EQ(dial(&b), 0);
  ASSERT_EQ(dial(&c), 0);
  EXPECT_TRUE(runUntil([&] { return accepted.size() == 3; }));
  for (const Fd& fd : accepted) EXPECT_TRUE(fd.valid());

  acceptor->close();
  EXPECT_TRUE(runUntil([&] { return closed == 1; }));
  EXPECT_TRUE(acceptor->idle());
  // The listener is gone with the accept: nobody listens on the port any more.
  EXPECT_EQ(dial(), ECONNREFUSED);
  acceptor->close();  // twice is harmless
  EXPECT_EQ(closed, 1);
  Acceptor::release(acceptor);
  loop_->runOnce(0ms);  // frees it (ASan would report a leak or a use after free)
}

TEST_P(AcceptorTest, Acceptor_ReleasedWhileArmedFreesItselfAtItsLastCompletion) {
  int accepted = 0;
  auto* acceptor = new Acceptor(*loop_, std::move(listener_), "test", [&](Fd) { ++accepted; });
  acceptor->start();
  // The owner goes away with the accept still armed: no callback may run after that.
  Acceptor::release(acceptor);
  for (int i = 0; i < 5; ++i) loop_->runOnce(10ms);
  EXPECT_EQ(dial(), ECONNREFUSED);
  EXPECT_EQ(accepted, 0);
}

TEST_P(AcceptorTest, Acceptor_ClosedFromItsOwnCallbackStopsAtOnce) {
  std::vector<Fd> accepted;
  int closed = 0;
  Acceptor* acceptor = nullptr;
  acceptor = new Acceptor(
      *loop_, std::move(listener_), "test",
      [&](Fd fd) {
        accepted.push_back(std::move(fd));
        acceptor->close();
      },
      [&] { ++closed; });
  acceptor->start();
  Fd a;
  ASSERT_EQ(dial(&a), 0);
  EXPECT_TRUE(runUntil([&] { return closed == 1; }));
  EXPECT_EQ(accepted.size(), 1u);
  EXPECT_EQ(dial(), ECONNREFUSED);
  Acceptor::release(acceptor);
  loop_->runOnce(0ms);
}

INSTANTIATE_ON_BOTH_ENGINES(AcceptorTest);

}  // namespace
}  // namespace spindle::net
