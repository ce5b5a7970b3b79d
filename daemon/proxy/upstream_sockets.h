// The sockets upstream connections leave from. The one narrow interface between the proxy
// and what needs privilege (a socket inside the calling Pod's network namespace), so that it
// can move out of the process that parses HTTP/2.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <unordered_map>

#include "util/fd.h"
#include "util/result.h"

namespace spindle::proxy {

// The calling Pod, as the BPF program saw its connect: its network namespace, and the process
// that made the connect (host PID namespace), through which the namespace is found.
struct Caller {
  uint64_t netns_cookie = 0;
  uint32_t pid = 0;
};

// Why no socket could be made. Neither is the endpoint's doing, and another endpoint would
// need the same socket: the call fails, it is not sent elsewhere, no endpoint is blamed.
enum class SocketFailure : uint8_t {
  kLocal,            // spindle's own trouble (out of fds or memory)
  kCallerNamespace,  // the calling Pod's namespace is gone, or entering it was refused
};
std::string_view socketFailureName(SocketFailure failure);

class UpstreamSockets {
 public:
  virtual ~UpstreamSockets() = default;
  // A non-blocking TCP socket of `family` (AF_INET, AF_INET6) that connects from `caller`, or
  // from the node, as the implementation says. On failure, *why says whose it is.
  virtual Result<Fd> open(const Caller& caller, int family, SocketFailure* why) = 0;
  // Whether connections of different callers must not be shared.
  virtual bool perCaller() const = 0;
  // Keeps what open() needs for `caller` (its namespace) until the matching release(): the
  // upstream pool holds a caller while it has connections of it. Without a hold, open()
  // finds the namespace anew and keeps nothing.
  virtual void hold(const Caller& /*caller*/) {}
  virtual void release(const Caller& /*caller*/) {}
};

// upstream.source: node. Every connection leaves from the node's own namespace and address,
// shared by every Pod of the node.
class NodeSockets final : public UpstreamSockets {
 public:
  // mark: SO_MARK of the sockets, so that the BPF programs leave them alone.
  explicit NodeSockets(uint32_t mark) : mark_(mark) {}
  Result<Fd> open(const Caller& caller, int family, SocketFailure* why) override;
  bool perCaller() const override { return false; }

 private:
  uint32_t mark_;
};

// upstream.source: pod. A connection leaves from the calling Pod's network namespace, as if
// the Pod had dialled the endpoint itself: its address, its CNI rules and policies. The
// namespace is found through /proc/<pid>/ns/net of the process that made the connect, and
// is checked by its cookie, since the process may be gone and its pid reused. One per worker
// thread: entering a namespace (setns) changes only the calling thread.
class PodSockets final : public UpstreamSockets {
 public:
  // node_netns_cookie: callers in the node's own namespace connect from the node.
  static Result<std::unique_ptr<PodSockets>> create(uint32_t mark, uint64_t node_netns_cookie);
  Result<Fd> open(const Caller& caller, int family, SocketFailure* why) override;
  bool perCaller() const override { return true; }
  void hold(const Caller& caller) override { held_[caller.netns_cookie].holds++; }
  void release(const Caller& caller) override;
  size_t namespacesHeld() const { return held_.size(); }

 private:
  PodSockets(uint32_t mark, uint64_t node_netns_cookie, Fd own)
      : mark_(mark), node_netns_cookie_(node_netns_cookie), own_(std::move(own)) {}
  Result<Fd> socketIn(int netns, uint64_t expected_cookie, int family, SocketFailure* why);

  uint32_t mark_;
  uint64_t node_netns_cookie_;
  struct Held {
    Fd netns;  // opened at the first open() after hold()
    size_t holds = 0;
  };
  Fd own_;                                   // this process's network namespace, to come back to
  std::unordered_map<uint64_t, Held> held_;  // by namespace cookie
};

}  // namespace spindle::proxy
