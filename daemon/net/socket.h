// Socket set-up: listeners, options, the netns cookie. Blocking calls here are fine: they
// run at start-up or once per accepted connection and never wait on the network.
#pragma once

#include <cstdint>

#include "net/address.h"
#include "util/fd.h"
#include "util/result.h"

namespace spindle::net {

// A non-blocking TCP listener. With reuse_port, every worker binds its own socket to the same
// address and the kernel spreads connections across them.
Result<Fd> listenTcp(const SocketAddress& address, bool reuse_port, int backlog = 4096);

// Whether a socket already listens on `address`, even one that SO_REUSEPORT would let a new
// listener share. An error when the address cannot be bound at all.
Result<bool> isListenedOn(const SocketAddress& address);
// A non-blocking listener on a Unix socket at path (a stale socket file there is replaced),
// readable and writable by its owner only.
Result<Fd> listenUnix(const std::string& path, int backlog = 64);

// A non-blocking TCP socket for an outgoing connection, carrying `mark` (0 = none).
Result<Fd> connectingSocket(int family, uint32_t mark);

void setNoDelay(int fd);
Result<SocketAddress> peerAddress(int fd);

// The cookie of the calling thread's network namespace, as bpf_get_netns_cookie() sees it.
Result<uint64_t> networkNamespaceCookie();

}  // namespace spindle::net
