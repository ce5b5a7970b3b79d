#include "net/address.h"

#include <arpa/inet.h>
#include <fmt/core.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace spindle::net {
namespace {

constexpr uint8_t kV4MappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

Result<uint16_t> parsePort(std::string_view text, std::string_view whole) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value == 0 ||
      value > 65535) {
    return makeError(fmt::format("'{}': port must be a number from 1 to 65535", whole));
  }
  return static_cast<uint16_t>(value);
}

}  // namespace

Result<HostPort> splitHostPort(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return makeError(fmt::format("'{}': expected [ipv6]:port", text));
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return makeError(fmt::format("'{}': expected host:port", text));
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return makeError(fmt::format("'{}': an IPv6 address needs brackets: [addr]:port", text));
    }
  }
  if (host.empty()) return makeError(fmt::format("'{}': the host is empty", text));
  auto parsed = parsePort(port, text);
  if (!parsed) return Error{parsed.error()};
  return HostPort{std::string(host), *parsed};
}

SocketAddress::SocketAddress() {
  std::memset(&storage_, 0, sizeof(storage_));
  storage_.sa.sa_family = AF_INET;
}

Result<SocketAddress> SocketAddress::parse(std::string_view text) {
  auto hp = splitHostPort(text);
  if (!hp) return Error{hp.error()};
  auto addr = parseIp(hp->host, hp->port);
  if (!addr) return makeError(fmt::format("'{}': '{}' is not an IP address", text, hp->host));
  // Brackets are the IPv6 spelling only, so that each address has one way to be written.
  if (text.front() == '[' && addr->isV4()) {
    return makeError(fmt::format("'{}': brackets are only for IPv6 addresses", text));
  }
  return addr;
}

Result<SocketAddress> SocketAddress::parseIp(std::string_view ip, uint16_t port) {
  // inet_pton reads up to a NUL; text hidden after one must not be dropped silently.
  if (ip.find('\0') != std::string_view::npos) {
    return makeError(fmt::format("'{}' is not an IP address", ip));
  }
  std::string text(ip);
  SocketAddress out;
  auto* in4 = reinterpret_cast<sockaddr_in*>(&out.storage_);
  if (inet_pton(AF_INET, text.c_str(), &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    in4->sin_port = htons(port);
    return out;
  }
  std::memset(&out.storage_, 0, sizeof(out.storage_));
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.storage_);
  if (inet_pton(AF_INET6, text.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    return out;
  }
  return makeError(fmt::format("'{}' is not an IP address", ip));
}

SocketAddress SocketAddress::fromSockaddr(const ::sockaddr* sa, socklen_t len) {
  SocketAddress out;
  std::memcpy(&out.storage_, sa, std::min<size_t>(len, sizeof(out.storage_)));
  if (out.family() == AF_INET6) {
    // A v4 peer on a dual-stack socket: keep the AF_INET form, one spelling per address.
    // Read the copy, not `sa`: a short `len` must not make us read past the caller's buffer.
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&out.storage_);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      MappedBytes bytes;
      std::memcpy(bytes.data(), &in6->sin6_addr, 16);
      return fromMapped(bytes, in6->sin6_port);
    }
  }
  return out;
}

SocketAddress SocketAddress::fromMapped(const MappedBytes& addr, uint16_t port_network_order) {
  SocketAddress out;
  if (std::memcmp(addr.data(), kV4MappedPrefix, sizeof(kV4MappedPrefix)) == 0) {
    auto* in4 = reinterpret_cast<sockaddr_in*>(&out.storage_);
    in4->sin_family = AF_INET;
    std::memcpy(&in4->sin_addr, addr.data() + 12, 4);
    in4->sin_port = port_network_order;
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.storage_);
    in6->sin6_family = AF_INET6;
    std::memcpy(&in6->sin6_addr, addr.data(), 16);
    in6->sin6_port = port_network_order;
  }
  return out;
}

socklen_t SocketAddress::length() const {
  return isV4() ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
}

uint16_t SocketAddress::port() const {
  if (isV4()) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
}

void SocketAddress::setPort(uint16_t port) {
  if (isV4()) {
    reinterpret_cast<sockaddr_in*>(&storage_)->sin_port = htons(port);
  } else {
    reinterpret_cast<sockaddr_in6*>(&storage_)->sin6_port = htons(port);
  }
}

MappedBytes SocketAddress::mapped() const {
  MappedBytes out{};
  if (isV4()) {
    std::memcpy(out.data(), kV4MappedPrefix, sizeof(kV4MappedPrefix));
    std::memcpy(out.data() + 12, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, 4);
  } else {
    std::memcpy(out.data(), &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, 16);
  }
  return out;
}

std::string SocketAddress::ipString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (isV4()) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf,
              sizeof(buf));
  } else {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf,
              sizeof(buf));
  }
  return buf;
}

std::string SocketAddress::toString() const {
  if (isV4()) return fmt::format("{}:{}", ipString(), port());
  return fmt::format("[{}]:{}", ipString(), port());
}

bool SocketAddress::operator==(const SocketAddress& other) const {
  return family() == other.family() && port() == other.port() && mapped() == other.mapped();
}

}  // namespace spindle::net
