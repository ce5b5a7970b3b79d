#include "net/socket.h"

#include <arpa/inet.h>
#include <fmt/core.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace spindle::net {
namespace {
std::string errnoText(int err) { return std::strerror(err); }
}  // namespace

Result<Fd> listenTcp(const SocketAddress& address, bool reuse_port, int backlog) {
  Fd fd(::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    return makeError(fmt::format("socket for {}: {}", address.toString(), errnoText(errno)));
  }
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (reuse_port && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    return makeError(fmt::format("SO_REUSEPORT on {}: {}", address.toString(), errnoText(errno)));
  }
  if (address.family() == AF_INET6) {
    // One listener per family: the v4 listener takes v4 and v4-mapped connects.
    ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  }
  if (::bind(fd.get(), address.asSockaddr(), address.length()) != 0) {
    return makeError(fmt::format("cannot bind {}: {}", address.toString(), errnoText(errno)));
  }
  if (::listen(fd.get(), backlog) != 0) {
    return makeError(fmt::format("cannot listen on {}: {}", address.toString(), errnoText(errno)));
  }
  return fd;
}

Result<Fd> listenUnix(const std::string& path, int backlog) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return makeError(
        fmt::format("'{}': a socket path must be 1 to {} bytes", path, sizeof(addr.sun_path) - 1));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return makeError(fmt::format("socket for {}: {}", path, errnoText(errno)));
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return makeError(fmt::format("cannot bind {}: {}", path, errnoText(errno)));
  }
  ::chmod(path.c_str(), 0600);
  if (::listen(fd.get(), backlog) != 0) {
    return makeError(fmt::format("cannot listen on {}: {}", path, errnoText(errno)));
  }
  return fd;
}

Result<bool> isListenedOn(const SocketAddress& address) {
  Fd fd(::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    return makeError(fmt::format("socket for {}: {}", address.toString(), errnoText(errno)));
  }
  // SO_REUSEADDR without SO_REUSEPORT: connections in TIME_WAIT do not count, a listener does.
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (address.family() == AF_INET6) {
    ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  }
  if (::bind(fd.get(), address.asSockaddr(), address.length()) == 0) return false;
  if (errno == EADDRINUSE) return true;
  return makeError(fmt::format("cannot bind {}: {}", address.toString(), errnoText(errno)));
}

Result<Fd> connectingSocket(int family, uint32_t mark) {
  Fd fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return makeError(fmt::format("socket: {}", errnoText(errno)));
  if (mark != 0 && ::setsockopt(fd.get(), SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
    return makeError(fmt::format("SO_MARK: {}", errnoText(errno)));
  }
  setNoDelay(fd.get());
  return fd;
}

void setNoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

Result<SocketAddress> peerAddress(int fd) {
  sockaddr_storage storage{};
  socklen_t len = sizeof(storage);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&storage), &len) != 0) {
    return makeError(fmt::format("getpeername: {}", errnoText(errno)));
  }
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&storage), len);
}

uint16_t localPort(int fd) {
  sockaddr_storage storage{};
  socklen_t len = sizeof(storage);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &len) != 0) return 0;
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&storage), len).port();
}

Status saveSyns(int listener) {
  int one = 1;
  if (::setsockopt(listener, IPPROTO_TCP, TCP_SAVE_SYN, &one, sizeof(one)) != 0) {
    return makeError(fmt::format("TCP_SAVE_SYN: {}", errnoText(errno)));
  }
  return {};
}

std::optional<uint32_t> savedSynSequence(int fd) {
  // An IPv6 header with extension headers and a TCP header with every option fit in 256.
  uint8_t headers[256];
  socklen_t len = sizeof(headers);
  if (::getsockopt(fd, IPPROTO_TCP, TCP_SAVED_SYN, headers, &len) != 0) return std::nullopt;
  return synSequence(headers, len);
}

std::optional<uint32_t> synSequence(const uint8_t* headers, size_t len) {
  if (len < 1) return std::nullopt;
  size_t tcp = 0;
  const unsigned version = headers[0] >> 4;
  if (version == 4) {
    tcp = size_t{headers[0] & 0x0fu} * 4;
    if (tcp < 20 || len < 20 || headers[9] != IPPROTO_TCP) return std::nullopt;
  } else if (version == 6) {
    // The fixed header, then any extension headers up to TCP.
    if (len < 40) return std::nullopt;
    uint8_t next = headers[6];
    tcp = 40;
    while (next != IPPROTO_TCP) {
      if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS) {
        return std::nullopt;
      }
      if (len < tcp + 2) return std::nullopt;
      next = headers[tcp];
      tcp += (size_t{headers[tcp + 1]} + 1) * 8;
    }
  } else {
    return std::nullopt;
  }
  if (len < tcp + 20) return std::nullopt;
  uint32_t sequence = 0;
  std::memcpy(&sequence, headers + tcp + 4, sizeof(sequence));
  return ntohl(sequence);
}

Result<uint64_t> networkNamespaceCookie() {
  Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return makeError(fmt::format("socket: {}", errnoText(errno)));
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0) {
    return makeError(fmt::format("SO_NETNS_COOKIE (Linux 5.14 or later): {}", errnoText(errno)));
  }
  return cookie;
}

}  // namespace spindle::net
