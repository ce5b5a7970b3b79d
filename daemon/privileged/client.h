// The proxy's side of its channels to the privileged part (privileged_part.h): one request at
// a time on the calling thread, its answer awaited for a bounded time. A privileged part that
// does not answer is gone or hung: the request fails, and what needed it fails with it (a
// connection is refused, a heartbeat is not written), so that the node fails open.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "net/address.h"
#include "privileged/channel.h"
#include "proxy/upstream_sockets.h"
#include "redirect/redirector.h"

namespace spindle::privileged {

// What the proxy gets at its start.
struct Start {
  StartReply info;
  std::string config_text;
  std::vector<Fd> fds;  // see StartReply
};

class Client {
 public:
  explicit Client(Channel channel) : channel_(std::move(channel)) {}

  // The proxy's first request: its listeners, channels and config.
  Result<Start> start();
  Result<std::string> configText();
  // The services map holds exactly these; each service's proxy port is kept for servicePort().
  Status setServiceAddresses(const std::vector<std::pair<net::SocketAddress, uint32_t>>& addresses);
  uint16_t servicePort(uint32_t service_id) const;
  Status attach();
  Status detach();
  Status heartbeat();
  Result<RedirectState> redirectState();

  // For a worker's channel.
  std::optional<redirect::OriginalDst> takeOrigin(const net::SocketAddress& peer,
                                                  uint16_t proxy_port, std::optional<uint32_t> isn);
  Result<Fd> socket(const proxy::Caller& caller, int family, proxy::SocketFailure* why);
  // kHold or kRelease of the caller's namespace.
  void setHeld(bool held, const proxy::Caller& caller);

 private:
  // The answer to one request; an error when there was none in time, or it said kFailed.
  Result<const Message*> call(Op op, std::span<const uint8_t> payload = {});

  Channel channel_;
  uint32_t seq_ = 0;
  Message reply_;
  std::map<uint32_t, uint16_t> service_ports_;  // service id -> proxy port
};

// A worker's channel, seen as what the worker needs of the privileged part. Used by the
// worker's thread only.
class WorkerClient final : public redirect::OriginLookup, public proxy::UpstreamSockets {
 public:
  WorkerClient(Channel channel, bool per_caller)
      : client_(std::move(channel)), per_caller_(per_caller) {}
  std::optional<redirect::OriginalDst> take(const net::SocketAddress& peer, uint16_t proxy_port,
                                            std::optional<uint32_t> isn) override {
    return client_.takeOrigin(peer, proxy_port, isn);
  }
  Result<Fd> open(const proxy::Caller& caller, int family, proxy::SocketFailure* why) override {
    return client_.socket(caller, family, why);
  }
  bool perCaller() const override { return per_caller_; }
  void hold(const proxy::Caller& caller) override {
    if (per_caller_) client_.setHeld(true, caller);
  }
  void release(const proxy::Caller& caller) override {
    if (per_caller_) client_.setHeld(false, caller);
  }

 private:
  Client client_;
  bool per_caller_;
};

}  // namespace spindle::privileged
