#include "raw_peers.h"

#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>
#include <sys/socket.h>

#include <cerrno>

namespace spindle::component {
namespace {

// Appends what `fd` has to `out`, without waiting; false once the peer closed (or failed).
bool readAvailable(int fd, std::string& out) {
  char buffer[16 * 1024];
  for (;;) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n > 0) {
      out.append(buffer, static_cast<size_t>(n));
      continue;
    }
    return n < 0 && (errno == EAGAIN || errno == EINTR);
  }
}

}  // namespace

RawClient::RawClient(ProxyHarness& harness) : harness_(harness), fd_(harness.dialProxy()) {
  harness_.addPeer(this);
}

RawClient::~RawClient() { harness_.removePeer(this); }

void RawClient::send(std::string_view bytes) {
  EXPECT_EQ(::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(bytes.size()));
}

void RawClient::poll() {
  if (!eof_) eof_ = !readAvailable(fd_.get(), received_);
}

std::optional<uint32_t> RawClient::goawayCode() const {
  // Frames as RFC 9113 4.1 lays them out: 3 bytes of length, type, flags, 4 of stream id,
  // the payload; a GOAWAY's payload is the last stream id, then the error code.
  const auto byte = [&](size_t i) {
    return static_cast<uint32_t>(static_cast<uint8_t>(received_[i]));
  };
  for (size_t at = 0; at + 9 <= received_.size();) {
    const size_t length = (byte(at) << 16) | (byte(at + 1) << 8) | byte(at + 2);
    if (byte(at + 3) == NGHTTP2_GOAWAY && at + 9 + length <= received_.size()) {
      return (byte(at + 13) << 24) | (byte(at + 14) << 16) | (byte(at + 15) << 8) | byte(at + 16);
    }
    at += 9 + length;
  }
  return std::nullopt;
}

PlainServer::PlainServer(ProxyHarness& harness, std::string reply)
    : harness_(harness), reply_(std::move(reply)) {
  listener_ = listenLoopback(&address_);
  harness_.addPeer(this);
}

PlainServer::~PlainServer() { harness_.removePeer(this); }

void PlainServer::poll() {
  if (!connection_.valid()) {
    connection_.reset(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!connection_.valid()) return;
  }
  const size_t before = received_.size();
  const bool open = readAvailable(connection_.get(), received_);
  if (before == 0 && !received_.empty()) {
    ::send(connection_.get(), reply_.data(), reply_.size(), MSG_NOSIGNAL);
  }
  if (!open) connection_.reset();
}

}  // namespace spindle::component
