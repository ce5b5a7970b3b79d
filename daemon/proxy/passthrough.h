// L4 passthrough: bytes from the downstream Pod to the original destination and back.
//
// Each direction receives into buffers of the worker's pool and sends them on in order. It
// holds at most kMaxHeldBuffers at a time: one can be received while the previous is being
// sent, and a slow reader on one side stops reads on the other (backpressure), so what spindle
// holds per connection is bounded. An idle connection holds no buffer. EOF in one direction
// becomes shutdown(SHUT_WR) on the other side (half-close); an error on either side closes
// both.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "loop/buffer_pool.h"
#include "loop/loop.h"
#include "net/address.h"
#include "proxy/connection.h"
#include "proxy/upstream_sockets.h"
#include "util/fd.h"

namespace spindle::proxy {

struct WorkerParts;

class Passthrough final : public Connection {
 public:
  static constexpr size_t kMaxHeldBuffers = 2;  // per direction
  static constexpr int64_t kConnectTimeoutNanos = 1'000'000'000;

  // `received`: bytes already read from downstream (while detecting the protocol); they go
  // upstream first. source: the calling Pod's label, for the log.
  Passthrough(WorkerParts& worker, Fd downstream, net::SocketAddress downstream_peer,
              net::SocketAddress destination, const Caller& caller,
              std::shared_ptr<const std::string> source, std::string received = {});

  ~Passthrough() override;

  // Connects upstream; on success both directions start.
  void start();
  // Closes both sides now (e.g. at shutdown).
  void abort() override;

 private:
  // One direction: receive from `from`, send everything to `to`, in order.
  class Direction final : private loop::BufferWaiter {
   public:
    Direction(Passthrough& conn, const char* name)
        : conn_(conn), name_(name), recv_op_(*this), send_op_(*this) {}
    void start(int from, int to);
    bool done() const { return done_; }
    void stopWaiting();
    void releaseBuffers();

   private:
    struct Chunk {
      uint16_t buffer_id;
      uint32_t length;
    };
    void pump();
    void onReceived(int32_t res, uint32_t flags);
    void onSent(int32_t res, uint32_t flags);
    void onBufferAvailable() override;

    Passthrough& conn_;
    const char* name_;
    int from_ = -1;
    int to_ = -1;
    loop::MemberCompletion<Direction, &Direction::onReceived> recv_op_;
    loop::MemberCompletion<Direction, &Direction::onSent> send_op_;
    std::array<Chunk, kMaxHeldBuffers> held_{};  // FIFO of received, not yet sent buffers
    size_t head_ = 0;
    size_t count_ = 0;
    uint32_t sent_ = 0;  // bytes of the head chunk already sent
    bool receiving_ = false;
    bool sending_ = false;
    bool waiting_ = false;  // for a buffer of the pool
    bool eof_ = false;
    bool done_ = false;
  };

  void onConnected(int32_t res, uint32_t flags);
  // The connect's linked timeout: its completion only settles the count of pending ops.
  void onConnectTimeout(int32_t res, uint32_t flags);
  // Sends the bytes received before the passthrough started, then starts that direction.
  void sendInitial();
  void onInitialSent(int32_t res, uint32_t flags);
  void onDirectionDone();
  void close(const char* why);
  void opDone();

  WorkerParts& worker_;
  loop::Loop& loop_;
  loop::BufferPool& pool_;
  Fd downstream_;
  Fd upstream_;
  net::SocketAddress downstream_peer_;
  net::SocketAddress destination_;
  Caller caller_;
  std::shared_ptr<const std::string> source_;
  std::string initial_;
  size_t initial_sent_ = 0;
  Direction to_upstream_{*this, "downstream->upstream"};
  Direction to_downstream_{*this, "upstream->downstream"};
  loop::MemberCompletion<Passthrough, &Passthrough::onConnected> connect_{*this};
  loop::MemberCompletion<Passthrough, &Passthrough::onConnectTimeout> connect_timeout_{*this};
  loop::MemberCompletion<Passthrough, &Passthrough::onInitialSent> initial_send_{*this};
  __kernel_timespec connect_deadline_{};
  int pending_ops_ = 0;
  bool closing_ = false;
};

}  // namespace spindle::proxy
