// L4 passthrough: bytes from the downstream Pod to the original destination and back.
//
// Each direction owns one fixed buffer and has at most one operation in flight: it receives,
// sends all it received, then receives again. So a slow reader on one side stops reads on the
// other (backpressure), and what spindle holds per connection is bounded by two buffers.
// EOF in one direction becomes shutdown(SHUT_WR) on the other side (half-close); an error on
// either side closes both.
#pragma once

#include <cstdint>
#include <memory>

#include "loop/loop.h"
#include "net/address.h"
#include "net/fd.h"

namespace spindle::proxy {

class Passthrough;

// Told when a connection is gone, so its owner can unlink it.
class PassthroughOwner {
 public:
  virtual void onClosed(Passthrough* connection) = 0;

 protected:
  ~PassthroughOwner() = default;
};

class Passthrough final : public loop::Deferred {
 public:
  static constexpr uint32_t kBufferSize = 32 * 1024;
  static constexpr int64_t kConnectTimeoutNanos = 1'000'000'000;

  Passthrough(loop::Loop& loop, PassthroughOwner& owner, net::Fd downstream,
              net::SocketAddress downstream_peer, net::SocketAddress destination, uint32_t mark);

  // Connects upstream; on success both directions start.
  void start();
  // Closes both sides now (e.g. at shutdown).
  void abort();

  // Intrusive list of a worker's connections.
  Passthrough* prev = nullptr;
  Passthrough* next = nullptr;

 private:
  // One direction: receive from `from`, send everything to `to`.
  class Direction final : public loop::Completion {
   public:
    Direction(Passthrough& conn, const char* name) : conn_(conn), name_(name) {}
    void setFds(int from, int to) {
      from_ = from;
      to_ = to;
    }
    void receive();
    void complete(int32_t res, uint32_t flags) override;
    bool done() const { return state_ == State::kDone; }

   private:
    enum class State { kIdle, kReceiving, kSending, kDone };
    void send();
    Passthrough& conn_;
    const char* name_;
    int from_ = -1;
    int to_ = -1;
    State state_ = State::kIdle;
    uint32_t length_ = 0;
    uint32_t sent_ = 0;
    std::unique_ptr<char[]> buffer_;
  };

  class Connect final : public loop::Completion {
   public:
    explicit Connect(Passthrough& conn) : conn_(conn) {}
    void complete(int32_t res, uint32_t flags) override;

   private:
    Passthrough& conn_;
  };

  // The connect's linked timeout; its completion only settles the count of pending ops.
  class ConnectTimeout final : public loop::Completion {
   public:
    explicit ConnectTimeout(Passthrough& conn) : conn_(conn) {}
    void complete(int32_t res, uint32_t flags) override;

   private:
    Passthrough& conn_;
  };

  void onConnected(int32_t res);
  void onDirectionDone();
  void close(const char* why);
  void opDone();

  loop::Loop& loop_;
  PassthroughOwner& owner_;
  net::Fd downstream_;
  net::Fd upstream_;
  net::SocketAddress downstream_peer_;
  net::SocketAddress destination_;
  uint32_t mark_;
  Direction to_upstream_{*this, "downstream->upstream"};
  Direction to_downstream_{*this, "upstream->downstream"};
  Connect connect_{*this};
  ConnectTimeout connect_timeout_{*this};
  __kernel_timespec connect_deadline_{};
  int pending_ops_ = 0;
  bool closing_ = false;
};

}  // namespace spindle::proxy
