// The loop's contract, the same on both engines: what each operation completes with, when it
// is cancelled, bounded by a deadline, or its descriptor closed and its number reused. The
// proxy's code relies on exactly these results (tests/component runs it on both engines).
#include "loop/loop.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <liburing.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "engines.h"
#include "loop/buffer_pool.h"
#include "loop/uring_loop.h"
#include "util/fd.h"

namespace spindle::loop {
namespace {

using namespace std::chrono_literals;

struct Recorded final : Completion {
  void complete(int32_t res, uint32_t flags) override {
    results.push_back(res);
    last_flags = flags;
  }
  std::optional<int32_t> result() const {
    return results.empty() ? std::nullopt : std::optional<int32_t>(results.back());
  }
  std::vector<int32_t> results;
  uint32_t last_flags = 0;
};

class LoopTest : public ::testing::TestWithParam<Engine> {
 protected:
  void SetUp() override {
    auto loop = Loop::create(GetParam(), 64);
    ASSERT_TRUE(loop) << loop.error();
    loop_ = std::move(*loop);
  }

  // Runs the loop until `op` has completed `count` times (at most 2 s).
  void runUntil(const Recorded& op, size_t count = 1) {
    const auto deadline = std::chrono::steady_clock::now() + 2s;
    while (op.results.size() < count && std::chrono::steady_clock::now() < deadline) {
      loop_->runOnce(10ms);
    }
  }

  // A TCP listener on a free loopback port, and its address.
  static void tcpListener(Fd* listener, sockaddr_in* address) {
    listener->reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    *address = {};
    address->sin_family = AF_INET;
    address->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(*address);
    ASSERT_EQ(::bind(listener->get(), reinterpret_cast<sockaddr*>(address), length), 0);
    ASSERT_EQ(::listen(listener->get(), 8), 0);
    ASSERT_EQ(::getsockname(listener->get(), reinterpret_cast<sockaddr*>(address), &length), 0);
  }

  // A connected pair of TCP sockets on loopback.
  static void tcpPair(Fd* a, Fd* b) {
    Fd listener;
    sockaddr_in address;
    ASSERT_NO_FATAL_FAILURE(tcpListener(&listener, &address));
    a->reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(::connect(a->get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    b->reset(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(b->valid());
  }

  std::unique_ptr<Loop> loop_;
};

TEST_P(LoopTest, SendAndReceiveCompleteWithTheirByteCounts) {
  Fd a, b;
  tcpPair(&a, &b);
  char buffer[16] = {};
  Recorded received;
  loop_->recv(&received, b.get(), buffer, sizeof(buffer));
  loop_->runOnce(0ms);
  EXPECT_FALSE(received.result()) << "a receive waits for data";
  Recorded sent;
  loop_->send(&sent, a.get(), "hello", 5, MSG_NOSIGNAL);
  runUntil(sent);
  runUntil(received);
  EXPECT_EQ(sent.result(), 5);
  EXPECT_EQ(received.result(), 5);
  EXPECT_EQ(std::string(buffer, 5), "hello");
  // End of file is a receive of 0.
  a.reset();
  Recorded eof;
  loop_->recv(&eof, b.get(), buffer, sizeof(buffer));
  runUntil(eof);
  EXPECT_EQ(eof.result(), 0);
}

TEST_P(LoopTest, WhatArrivedWhileNoReceiveWaitedIsReadPieceByPiece) {
  // On epoll a socket's readiness comes as one edge: data that arrived while no receive was
  // armed, and what a short receive left behind, must be read without a new edge.
  Fd a, b;
  tcpPair(&a, &b);
  char buffer[4];
  Recorded first;
  loop_->recv(&first, b.get(), buffer, sizeof(buffer));
  ASSERT_EQ(::send(a.get(), "abcd", 4, 0), 4);
  runUntil(first);
  ASSERT_EQ(first.result(), 4);
  ASSERT_EQ(::send(a.get(), "efghijkl", 8, 0), 8);
  loop_->runOnce(10ms);  // the edge comes and goes with nothing armed
  std::string got;
  for (int i = 0; i < 2; ++i) {
    Recorded next;
    loop_->recv(&next, b.get(), buffer, sizeof(buffer));
    runUntil(next);
    ASSERT_EQ(next.result(), 4) << "piece " << i;
    got.append(buffer, 4);
  }
  EXPECT_EQ(got, "efghijkl");
}

TEST_P(LoopTest, DataAndEndOfFileTogetherAreBothRead) {
  // The peer writes and closes at once: one edge on epoll. A short read must not be taken
  // for "nothing more": the end of file is still to be read.
  Fd a, b;
  tcpPair(&a, &b);
  char buffer[64];
  Recorded first;
  loop_->recv(&first, b.get(), buffer, sizeof(buffer));
  loop_->runOnce(0ms);
  ASSERT_EQ(::send(a.get(), "reply", 5, 0), 5);
  a.reset();
  runUntil(first);
  ASSERT_EQ(first.result(), 5);
  Recorded eof;
  loop_->recv(&eof, b.get(), buffer, sizeof(buffer));
  runUntil(eof);
  EXPECT_EQ(eof.result(), 0);
}

TEST_P(LoopTest, ASendAndAReceiveOnOneSocketBothComplete) {
  Fd a, b;
  tcpPair(&a, &b);
  char in[8] = {};
  Recorded received;
  loop_->recv(&received, a.get(), in, sizeof(in));
  Recorded sent;
  loop_->send(&sent, a.get(), "ping", 4, MSG_NOSIGNAL);
  runUntil(sent);
  EXPECT_EQ(sent.result(), 4);
  ASSERT_EQ(::send(b.get(), "pong", 4, 0), 4);
  runUntil(received);
  EXPECT_EQ(received.result(), 4);
}

TEST_P(LoopTest, APooledReceiveTakesABufferOnlyWhenDataArrives) {
  Fd a, b;
  tcpPair(&a, &b);
  auto pool = BufferPool::create(*loop_, 0, 2, 1024);
  ASSERT_TRUE(pool) << pool.error();
  Recorded first;
  loop_->recv(&first, b.get(), **pool);
  ASSERT_EQ(::send(a.get(), "abc", 3, 0), 3);
  runUntil(first);
  ASSERT_EQ(first.result(), 3);
  ASSERT_TRUE(BufferPool::hasBuffer(first.last_flags));
  const uint16_t id = BufferPool::bufferId(first.last_flags);
  EXPECT_EQ(std::string((*pool)->data(id), 3), "abc");
  // Two buffers: one more receive gets the other; the third finds none.
  Recorded second;
  loop_->recv(&second, b.get(), **pool);
  ASSERT_EQ(::send(a.get(), "de", 2, 0), 2);
  runUntil(second);
  ASSERT_EQ(second.result(), 2);
  Recorded third;
  loop_->recv(&third, b.get(), **pool);
  ASSERT_EQ(::send(a.get(), "f", 1, 0), 1);
  runUntil(third);
  EXPECT_EQ(third.result(), -ENOBUFS);
  // A buffer given back serves the next receive, and wakes who waited for one.
  struct Waiter final : BufferWaiter {
    void onBufferAvailable() override { woken = true; }
    bool woken = false;
  } waiter;
  (*pool)->waitForBuffer(&waiter);
  (*pool)->release(id);
  EXPECT_TRUE(waiter.woken);
  Recorded fourth;
  loop_->recv(&fourth, b.get(), **pool);
  runUntil(fourth);
  EXPECT_EQ(fourth.result(), 1);
  EXPECT_EQ(BufferPool::bufferId(fourth.last_flags), id);
}

TEST_P(LoopTest, ADeadlineEndsTheOperationItBounds) {
  Fd a, b;
  tcpPair(&a, &b);
  char buffer[8];
  Recorded received;
  Recorded expired;
  const __kernel_timespec after{0, 20'000'000};
  const Deadline deadline{&expired, &after};
  const auto started = std::chrono::steady_clock::now();
  loop_->recv(&received, b.get(), buffer, sizeof(buffer), &deadline);
  runUntil(received);
  runUntil(expired);
  EXPECT_EQ(received.result(), -ECANCELED);
  EXPECT_EQ(expired.result(), -ETIME);
  EXPECT_GE(std::chrono::steady_clock::now() - started, 20ms);
  // Done in time: the deadline completes with -ECANCELED.
  Recorded in_time;
  Recorded unused;
  const __kernel_timespec long_after{5, 0};
  const Deadline generous{&unused, &long_after};
  loop_->recv(&in_time, b.get(), buffer, sizeof(buffer), &generous);
  ASSERT_EQ(::send(a.get(), "x", 1, 0), 1);
  runUntil(in_time);
  runUntil(unused);
  EXPECT_EQ(in_time.result(), 1);
  EXPECT_EQ(unused.result(), -ECANCELED);
}

TEST_P(LoopTest, CancelledOperationsEndWithECANCELED) {
  Fd a, b;
  tcpPair(&a, &b);
  char buffer[8];
  Recorded by_op;
  loop_->recv(&by_op, b.get(), buffer, sizeof(buffer));
  loop_->runOnce(0ms);
  loop_->cancel(&by_op);
  runUntil(by_op);
  EXPECT_EQ(by_op.result(), -ECANCELED);

  Recorded on_fd;
  Recorded bound;
  const __kernel_timespec after{5, 0};
  const Deadline deadline{&bound, &after};
  loop_->recv(&on_fd, a.get(), buffer, sizeof(buffer), &deadline);
  loop_->runOnce(0ms);
  loop_->cancelFd(a.get());
  runUntil(on_fd);
  runUntil(bound);
  EXPECT_EQ(on_fd.result(), -ECANCELED);
  EXPECT_EQ(bound.result(), -ECANCELED);

  Recorded timer;
  const __kernel_timespec later{5, 0};
  loop_->timeout(&timer, &later);
  loop_->runOnce(0ms);
  loop_->cancelTimeout(&timer);
  runUntil(timer);
  EXPECT_EQ(timer.result(), -ECANCELED);

  Recorded polled;
  loop_->poll(&polled, b.get(), POLLIN);
  loop_->runOnce(0ms);
  loop_->cancelPoll(&polled);
  runUntil(polled);
  EXPECT_EQ(polled.result(), -ECANCELED);
  // Cancelling what already completed does nothing.
  loop_->cancel(&by_op);
  loop_->runOnce(0ms);
  EXPECT_EQ(by_op.results.size(), 1u);
}

TEST_P(LoopTest, TimeoutsFireInTheOrderOfTheirExpiry) {
  std::vector<int> order;
  struct Tagged final : Completion {
    Tagged(std::vector<int>& o, int t) : order(o), tag(t) {}
    void complete(int32_t res, uint32_t /*flags*/) override {
      if (res == -ETIME) order.push_back(tag);
    }
    std::vector<int>& order;
    int tag;
  };
  Tagged late(order, 3), early(order, 1), middle(order, 2);
  const __kernel_timespec t30{0, 30'000'000}, t5{0, 5'000'000}, t15{0, 15'000'000};
  loop_->timeout(&late, &t30);
  loop_->timeout(&early, &t5);
  loop_->timeout(&middle, &t15);
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (order.size() < 3 && std::chrono::steady_clock::now() < deadline) loop_->runOnce(50ms);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
}

TEST_P(LoopTest, PollCompletesWithTheReadyEvents) {
  Fd a, b;
  tcpPair(&a, &b);
  Recorded writable;
  loop_->poll(&writable, a.get(), POLLOUT);
  runUntil(writable);
  ASSERT_TRUE(writable.result());
  EXPECT_TRUE(*writable.result() & POLLOUT);
  Recorded readable;
  loop_->poll(&readable, b.get(), POLLIN);
  loop_->runOnce(0ms);
  EXPECT_FALSE(readable.result());
  ASSERT_EQ(::send(a.get(), "x", 1, 0), 1);
  runUntil(readable);
  ASSERT_TRUE(readable.result());
  EXPECT_TRUE(*readable.result() & POLLIN);
}

// On epoll the poll registers the socket (one-shot, level) before the receive does (edge):
// the second registration finds the first and changes it.
TEST_P(LoopTest, ASocketPolledFirstIsReceivedFromAfter) {
  Fd a, b;
  tcpPair(&a, &b);
  Recorded readable;
  loop_->poll(&readable, b.get(), POLLIN);
  ASSERT_EQ(::send(a.get(), "x", 1, 0), 1);
  runUntil(readable);
  char buffer[4];
  Recorded received;
  loop_->recv(&received, b.get(), buffer, sizeof(buffer));
  runUntil(received);
  EXPECT_EQ(received.result(), 1);
  Recorded next;
  loop_->recv(&next, b.get(), buffer, sizeof(buffer));
  loop_->runOnce(0ms);
  EXPECT_FALSE(next.result()) << "a receive waits for data";
  ASSERT_EQ(::send(a.get(), "yz", 2, 0), 2);
  runUntil(next);
  EXPECT_EQ(next.result(), 2);
}

// A regular file: io_uring answers -ENOTSOCK, epoll cannot watch it (-EPERM). Either way the
// receive ends once, with an error.
TEST_P(LoopTest, AReceiveFromWhatIsNotASocketEndsWithAnError) {
  Fd file(::open("/proc/self/stat", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(file.valid());
  char buffer[16];
  Recorded received;
  loop_->recv(&received, file.get(), buffer, sizeof(buffer));
  runUntil(received);
  ASSERT_TRUE(received.result());
  EXPECT_LT(*received.result(), 0);
  loop_->runOnce(10ms);
  EXPECT_EQ(received.results.size(), 1u);
}

TEST_P(LoopTest, ReadsAnEventfd) {
  Fd event(::eventfd(0, EFD_CLOEXEC));
  uint64_t value = 0;
  Recorded read;
  loop_->read(&read, event.get(), &value, sizeof(value));
  loop_->runOnce(0ms);
  EXPECT_FALSE(read.result());
  const uint64_t seven = 7;
  ASSERT_EQ(::write(event.get(), &seven, sizeof(seven)), 8);
  runUntil(read);
  EXPECT_EQ(read.result(), 8);
  EXPECT_EQ(value, 7u);
}

TEST_P(LoopTest, AMultishotAcceptHandsOverEachConnectionUntilCancelled) {
  Fd listener;
  sockaddr_in address;
  ASSERT_NO_FATAL_FAILURE(tcpListener(&listener, &address));
  Recorded accepted;
  loop_->accept(&accepted, listener.get());
  std::vector<Fd> clients;
  for (int i = 0; i < 3; ++i) {
    clients.emplace_back(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(
        ::connect(clients.back().get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  }
  runUntil(accepted, 3);
  ASSERT_EQ(accepted.results.size(), 3u);
  for (int32_t fd : accepted.results) {
    ASSERT_GE(fd, 0);
    EXPECT_TRUE(::fcntl(fd, F_GETFL) & O_NONBLOCK);
    EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC);
    ::close(fd);
  }
  EXPECT_TRUE(accepted.last_flags & kFlagMore);
  loop_->cancel(&accepted);
  runUntil(accepted, 4);
  EXPECT_EQ(accepted.result(), -ECANCELED);
  EXPECT_FALSE(accepted.last_flags & kFlagMore);
}

TEST_P(LoopTest, AConnectCompletesWithItsResult) {
  Fd a, b;
  tcpPair(&a, &b);
  sockaddr_in address{};
  socklen_t length = sizeof(address);
  ASSERT_EQ(::getsockname(b.get(), reinterpret_cast<sockaddr*>(&address), &length), 0);
  // b's port is the listener's, which tcpPair closed: refused.
  Fd socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  Recorded connected;
  loop_->connect(&connected, socket.get(), reinterpret_cast<sockaddr*>(&address), length);
  runUntil(connected);
  EXPECT_EQ(connected.result(), -ECONNREFUSED);
}

TEST_P(LoopTest, ADescriptorClosedAndItsNumberReusedIsWatchedAnew) {
  // A receive waits on one socket; it is cancelled and the socket closed; a new socket gets
  // the same number, and a receive on it must complete: the engine must not take the old
  // registration for the new socket's.
  Fd a, b;
  tcpPair(&a, &b);
  char buffer[8];
  Recorded first;
  loop_->recv(&first, b.get(), buffer, sizeof(buffer));
  loop_->runOnce(0ms);
  loop_->cancelFd(b.get());
  runUntil(first);
  const int number = b.get();
  b.reset();
  a.reset();
  Fd c, d;
  tcpPair(&c, &d);
  if (c.get() == number) std::swap(c, d);
  if (d.get() != number) {
    ASSERT_EQ(::dup2(d.get(), number), number);
    d = Fd(number);  // closes the socket's first number
  }
  Recorded second;
  loop_->recv(&second, d.get(), buffer, sizeof(buffer));
  loop_->runOnce(0ms);
  ASSERT_EQ(::send(c.get(), "y", 1, 0), 1);
  runUntil(second);
  EXPECT_EQ(second.result(), 1);
}

INSTANTIATE_ON_BOTH_ENGINES(LoopTest);

// What epoll cannot watch (a regular file) fails the poll with epoll_ctl's reason; io_uring
// polls such a file as always ready.
TEST(EpollEngine, APollOfWhatEpollCannotWatchEndsWithTheReason) {
  auto loop = Loop::create(Engine::kEpoll, 8);
  ASSERT_TRUE(loop) << loop.error();
  Fd file(::open("/proc/self/stat", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(file.valid());
  Recorded polled;
  (*loop)->poll(&polled, file.get(), POLLIN);
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (!polled.result() && std::chrono::steady_clock::now() < deadline) {
    (*loop)->runOnce(10ms);
  }
  EXPECT_EQ(polled.result(), -EPERM);
}

TEST(IoUringEngine, ProbesEveryFeatureSpindleUsesOnThisKernel) {
  // Linux 6.1 here: everything is there, so auto picks io_uring.
  EXPECT_TRUE(probeIoUring());
  auto choice = chooseEngine(EngineSetting::kAuto);
  ASSERT_TRUE(choice);
  EXPECT_EQ(choice->engine, Engine::kIoUring);
  EXPECT_EQ(choice->fallback_reason, "");
  auto epoll = chooseEngine(EngineSetting::kEpoll);
  ASSERT_TRUE(epoll);
  EXPECT_EQ(epoll->engine, Engine::kEpoll);
}

TEST(IoUringEngine, ARingCarriesOnlyTheOperationsSpindleUses) {
  auto loop = UringLoop::create(8);
  ASSERT_TRUE(loop) << loop.error();
  io_uring* ring = (*loop)->ring();
  auto submit = [ring](io_uring_sqe* sqe) {
    io_uring_sqe_set_data64(sqe, 1);
    io_uring_submit_and_wait(ring, 1);
    io_uring_cqe* cqe = nullptr;
    io_uring_wait_cqe(ring, &cqe);
    const int32_t res = cqe->res;
    io_uring_cqe_seen(ring, cqe);
    return res;
  };
  io_uring_sqe* nop = io_uring_get_sqe(ring);
  io_uring_prep_nop(nop);
  EXPECT_EQ(submit(nop), 0);
  // Opening a file is not one of them: what seccomp refuses the proxy (openat for writing)
  // must not come back through its rings.
  io_uring_sqe* open = io_uring_get_sqe(ring);
  io_uring_prep_openat(open, AT_FDCWD, "/tmp/spindle-loop-test", O_WRONLY | O_CREAT, 0600);
  EXPECT_EQ(submit(open), -EACCES);
  // Nor a flag it does not use.
  io_uring_sqe* async = io_uring_get_sqe(ring);
  io_uring_prep_nop(async);
  async->flags |= IOSQE_ASYNC;
  EXPECT_EQ(submit(async), -EACCES);
}

}  // namespace
}  // namespace spindle::loop
