// Peers below HTTP/2: a client that sends exactly the bytes a test gives it (for what no
// HTTP/2 library would send), and a plain TCP server that stands for the original
// destination of a connection the proxy passes through.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "harness.h"
#include "net/address.h"
#include "util/fd.h"

namespace spindle::component {

class RawClient final : public Peer {
 public:
  explicit RawClient(ProxyHarness& harness);
  ~RawClient();

  void send(std::string_view bytes);
  void poll() override;

  const std::string& received() const { return received_; }
  bool eof() const { return eof_; }
  // The error code of the first GOAWAY received, if one was.
  std::optional<uint32_t> goawayCode() const;

 private:
  ProxyHarness& harness_;
  Fd fd_;
  std::string received_;
  bool eof_ = false;
};

// Accepts connections on 127.0.0.1, records what they send and answers each first read
// with `reply`.
class PlainServer final : public Peer {
 public:
  PlainServer(ProxyHarness& harness, std::string reply);
  ~PlainServer();

  const net::SocketAddress& address() const { return address_; }
  const std::string& received() const { return received_; }
  void poll() override;

 private:
  ProxyHarness& harness_;
  std::string reply_;
  Fd listener_;
  net::SocketAddress address_;
  Fd connection_;  // one at a time is all a test needs
  std::string received_;
};

}  // namespace spindle::component
