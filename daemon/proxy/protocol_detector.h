// The first bytes of a redirected connection decide how it is served: the HTTP/2 client
// preface means gRPC, balanced per call; anything else (TLS, HTTP/1.1, other protocols) is
// passed through at L4 to where the app meant to go. A client that sends nothing (a protocol
// where the server speaks first) is passed through after a short wait.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "loop/loop.h"
#include "net/address.h"
#include "proxy/connection.h"
#include "proxy/upstream_sockets.h"
#include "util/fd.h"

namespace spindle::proxy {

struct WorkerParts;

class ProtocolDetector final : public Connection {
 public:
  static constexpr int64_t kWaitNanos = 1'000'000'000;

  ProtocolDetector(WorkerParts& worker, Fd fd, net::SocketAddress peer,
                   net::SocketAddress destination, size_t service_index, const Caller& caller,
                   std::shared_ptr<const std::string> source);
  ~ProtocolDetector() override;
  void start();
  void abort() override;

 private:
  void receive();
  void detect(int32_t res);
  void onReceived(int32_t res, uint32_t flags);
  // The receive's linked timeout: its completion only settles the count of pending ops.
  void onWaitEnded(int32_t res, uint32_t flags);
  void handOver(bool http2);
  void opDone();

  WorkerParts& worker_;
  Fd fd_;
  net::SocketAddress peer_;
  net::SocketAddress destination_;
  size_t service_index_;
  std::shared_ptr<const std::string> source_;
  Caller caller_;
  loop::MemberCompletion<ProtocolDetector, &ProtocolDetector::onReceived> recv_{*this};
  loop::MemberCompletion<ProtocolDetector, &ProtocolDetector::onWaitEnded> wait_{*this};
  __kernel_timespec wait_ts_{};
  char buffer_[24] = {};
  size_t received_ = 0;
  int pending_ops_ = 0;
  bool done_ = false;
};

}  // namespace spindle::proxy
