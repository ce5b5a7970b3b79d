#include "proxy/upstream_sockets.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <sched.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "net/socket.h"

namespace spindle::proxy {

std::string_view socketFailureName(SocketFailure failure) {
  switch (failure) {
    case SocketFailure::kLocal: return "local";
    case SocketFailure::kCallerNamespace: return "caller_namespace";
  }
  return "unknown";
}

Result<Fd> NodeSockets::open(const Caller& /*caller*/, int family, SocketFailure* why) {
  *why = SocketFailure::kLocal;
  return net::connectingSocket(family, mark_);
}

Result<std::unique_ptr<PodSockets>> PodSockets::create(uint32_t mark, uint64_t node_netns_cookie) {
  Fd own(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!own.valid()) {
    return makeError(
        fmt::format("upstream.source pod: /proc/thread-self/ns/net: {}", std::strerror(errno)));
  }
  // Entering a namespace is what every Pod's first connection needs: find out now, not at
  // the first call, whether it is allowed (entering our own changes nothing).
  if (::setns(own.get(), CLONE_NEWNET) != 0) {
    return makeError(
        fmt::format("upstream.source pod: entering a network namespace (setns): {}; it needs "
                    "CAP_SYS_ADMIN and a seccomp profile that allows setns",
                    std::strerror(errno)));
  }
  return std::unique_ptr<PodSockets>(new PodSockets(mark, node_netns_cookie, std::move(own)));
}

Result<Fd> PodSockets::open(const Caller& caller, int family, SocketFailure* why) {
  *why = SocketFailure::kLocal;
  if (caller.netns_cookie == 0 || caller.netns_cookie == node_netns_cookie_) {
    return net::connectingSocket(family, mark_);  // a caller in the node's own namespace
  }
  *why = SocketFailure::kCallerNamespace;
  auto held = held_.find(caller.netns_cookie);
  Fd transient;
  Fd* netns = held != held_.end() ? &held->second.netns : &transient;
  if (!netns->valid()) {
    const std::string path = fmt::format("/proc/{}/ns/net", caller.pid);
    netns->reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!netns->valid()) {
      return makeError(fmt::format(
          "the calling Pod's network namespace: {}: {} (the Pod is gone, or spindle does not "
          "see the host's PIDs: hostPID)",
          path, std::strerror(errno)));
    }
  }
  auto socket = socketIn(netns->get(), caller.netns_cookie, family, why);
  // A handle that no longer leads to the namespace (its pid was reused) is not kept.
  if (!socket) netns->reset();
  return socket;
}

void PodSockets::release(const Caller& caller) {
  auto held = held_.find(caller.netns_cookie);
  if (held != held_.end() && --held->second.holds == 0) held_.erase(held);
}

Result<Fd> PodSockets::socketIn(int netns, uint64_t expected_cookie, int family,
                                SocketFailure* why) {
  if (::setns(netns, CLONE_NEWNET) != 0) {
    return makeError(
        fmt::format("entering the calling Pod's network namespace: {}", std::strerror(errno)));
  }
  auto socket = net::connectingSocket(family, mark_);
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (socket && ::getsockopt(socket->get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0) {
    cookie = 0;
  }
  // Coming back cannot fail for a namespace we were in: were it to, this thread would make
  // every later socket in the Pod's namespace.
  if (::setns(own_.get(), CLONE_NEWNET) != 0) {
    fmt::print(stderr, "spindle: error: leaving a Pod's network namespace: {}\n",
               std::strerror(errno));
    std::abort();
  }
  if (!socket) {
    *why = SocketFailure::kLocal;
    return socket;
  }
  if (cookie != expected_cookie) {
    return makeError(
        "the calling Pod's process is gone (its pid leads to another namespace), or spindle "
        "does not see the host's PIDs (hostPID)");
  }
  return socket;
}

}  // namespace spindle::proxy
