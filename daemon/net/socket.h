// Socket set-up: listeners, options, the netns cookie. Blocking calls here are fine: they
// run at start-up or once per accepted connection and never wait on the network.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

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
// The port a socket is bound to (host order); 0 when unknown.
uint16_t localPort(int fd);

// Keep the SYN of each connection a listener accepts (TCP_SAVE_SYN), for savedSynSequence().
Status saveSyns(int listener);
// The initial sequence number of the client, from the SYN the listener kept for this accepted
// connection; the kernel frees the SYN on this read. nullopt when none was kept (a SYN cookie
// made the connection).
std::optional<uint32_t> savedSynSequence(int fd);
// The sequence number of a SYN as TCP_SAVED_SYN gives it: the IPv4 or IPv6 header, then TCP.
std::optional<uint32_t> synSequence(const uint8_t* headers, size_t len);

// The cookie of the calling thread's network namespace, as bpf_get_netns_cookie() sees it.
Result<uint64_t> networkNamespaceCookie();

}  // namespace spindle::net
