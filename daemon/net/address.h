// Socket addresses: parsing "ip:port" / "[ip6]:port", and the 16-byte v4-mapped form that the
// BPF maps use for both families.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "util/result.h"

namespace spindle::net {

using MappedBytes = std::array<uint8_t, 16>;

// "host:port" or "[host]:port" split without resolving anything. The port must be 1..65535.
struct HostPort {
  std::string host;
  uint16_t port = 0;
};
Result<HostPort> splitHostPort(std::string_view text);

class SocketAddress {
 public:
  SocketAddress();  // IPv4 0.0.0.0:0

  // A literal IPv4 or IPv6 address with a port: "198.18.0.1:15001", "[2001:2::1]:15001".
  static Result<SocketAddress> parse(std::string_view text);
  // A literal IP without a port.
  static Result<SocketAddress> parseIp(std::string_view ip, uint16_t port);
  static SocketAddress fromSockaddr(const sockaddr* sa, socklen_t len);
  // From the BPF form; a v4-mapped address comes back as AF_INET.
  static SocketAddress fromMapped(const MappedBytes& addr, uint16_t port_network_order);

  int family() const { return storage_.sa.sa_family; }
  bool isV4() const { return family() == AF_INET; }
  const ::sockaddr* asSockaddr() const { return reinterpret_cast<const ::sockaddr*>(&storage_); }
  socklen_t length() const;
  uint16_t port() const;  // host order
  void setPort(uint16_t port);

  // IPv4 as ::ffff:a.b.c.d, IPv6 as is.
  MappedBytes mapped() const;
  std::string ipString() const;
  std::string toString() const;  // "1.2.3.4:80", "[::1]:80"

  bool operator==(const SocketAddress& other) const;

 private:
  // Either family in 28 bytes, not sockaddr_storage's 128: every connection holds one.
  union Storage {
    ::sockaddr sa;
    sockaddr_in in4;
    sockaddr_in6 in6;
  };
  Storage storage_;
};

}  // namespace spindle::net
