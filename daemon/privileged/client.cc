#include "privileged/client.h"

#include <arpa/inet.h>
#include <fmt/core.h>

#include <cstring>

#include "util/log.h"

namespace spindle::privileged {
namespace {

// Longer than any answer of a healthy privileged part takes (microseconds; a services map of
// thousands of addresses, milliseconds), short enough that a worker waiting on a hung one
// is still counted alive by the heartbeat.
constexpr auto kAnswerTimeout = std::chrono::milliseconds(500);

}  // namespace

Result<const Message*> Client::call(Op op, std::span<const uint8_t> payload) {
  const uint32_t seq = ++seq_;
  if (Status s = channel_.send(op, seq, kOk, payload); !s) {
    return makeError(fmt::format("the privileged part: {}", s.error()));
  }
  // An answer to an earlier request that timed out may come first: it is skipped.
  do {
    if (Status s = channel_.receive(reply_, kAnswerTimeout); !s) {
      return makeError(fmt::format("the privileged part: {}", s.error()));
    }
  } while (reply_.seq != seq);
  // A failed kSocket says whose failure it is before its text: socket() reads both.
  if (reply_.status == kFailed && op != Op::kSocket) return makeError(std::string(reply_.text()));
  return &reply_;
}

Result<Start> Client::start() {
  auto reply = call(Op::kStart);
  if (!reply) return Error{reply.error()};
  Start start;
  if ((*reply)->payload.size() < sizeof(StartReply)) return makeError("a malformed start");
  std::memcpy(&start.info, (*reply)->payload.data(), sizeof(StartReply));
  start.config_text.assign((*reply)->text().substr(sizeof(StartReply)));
  start.fds = std::move(reply_.fds);
  const size_t expected = start.info.admin_tcp + start.info.admin_unix + start.info.workers +
                          size_t{start.info.workers} * start.info.listeners_per_worker;
  if (start.fds.size() != expected) {
    return makeError(
        fmt::format("the privileged part sent {} fds, not {}", start.fds.size(), expected));
  }
  return start;
}

Result<std::string> Client::configText() {
  auto reply = call(Op::kConfigText);
  if (!reply) return Error{reply.error()};
  return std::string((*reply)->text());
}

Status Client::setServiceAddresses(
    const std::vector<std::pair<net::SocketAddress, uint32_t>>& addresses) {
  std::vector<ServiceAddress> entries;
  entries.reserve(addresses.size());
  for (const auto& [address, id] : addresses) {
    ServiceAddress entry;
    const net::MappedBytes bytes = address.mapped();
    std::memcpy(entry.addr, bytes.data(), sizeof(entry.addr));
    entry.port = address.port();
    entry.service_id = id;
    entries.push_back(entry);
  }
  auto reply = call(Op::kServices, bytesOf(entries));
  if (!reply) return Error{reply.error()};
  std::vector<ServicePort> ports;
  if (!readPayload(**reply, &ports)) return makeError("the privileged part: a malformed answer");
  service_ports_.clear();
  for (const ServicePort& port : ports) service_ports_[port.service_id] = port.port;
  return {};
}

uint16_t Client::servicePort(uint32_t service_id) const {
  auto it = service_ports_.find(service_id);
  return it == service_ports_.end() ? 0 : it->second;
}

Status Client::attach() {
  auto reply = call(Op::kAttach);
  if (!reply) return Error{reply.error()};
  return {};
}

Status Client::detach() {
  auto reply = call(Op::kDetach);
  if (!reply) return Error{reply.error()};
  return {};
}

Status Client::heartbeat() {
  auto reply = call(Op::kHeartbeat);
  if (!reply) return Error{reply.error()};
  return {};
}

Result<RedirectState> Client::redirectState() {
  auto reply = call(Op::kCounters);
  if (!reply) return Error{reply.error()};
  RedirectState state;
  if (!readPayload(**reply, &state)) return makeError("the privileged part: a malformed answer");
  return state;
}

std::optional<redirect::OriginalDst> Client::takeOrigin(const net::SocketAddress& peer,
                                                        uint16_t proxy_port,
                                                        std::optional<uint32_t> isn) {
  TakeOrigin take;
  const net::MappedBytes bytes = peer.mapped();
  std::memcpy(take.peer, bytes.data(), sizeof(take.peer));
  take.peer_port = peer.port();
  take.proxy_port = proxy_port;
  take.isn = isn.value_or(0);
  take.has_isn = isn.has_value();
  auto reply = call(Op::kTakeOrigin, bytesOf(take));
  Origin origin;
  // No answer: the connection is refused like one spindle did not redirect (the client
  // retries, and goes direct once the heartbeat is stale).
  if (!reply || (*reply)->status != kOk || !readPayload(**reply, &origin)) return std::nullopt;
  net::MappedBytes dst;
  std::memcpy(dst.data(), origin.addr, dst.size());
  return redirect::OriginalDst{net::SocketAddress::fromMapped(dst, htons(origin.port)),
                               origin.service_id, origin.cgroup_id, origin.netns_cookie,
                               origin.pid};
}

Result<Fd> Client::socket(const proxy::Caller& caller, int family, proxy::SocketFailure* why) {
  *why = proxy::SocketFailure::kLocal;
  SocketRequest want;
  want.caller = {caller.netns_cookie, caller.pid, 0};
  want.family = family;
  const auto asked = std::chrono::steady_clock::now();
  auto reply = call(Op::kSocket, bytesOf(want));
  if (!reply) return Error{reply.error()};
  const Message& message = **reply;
  if (message.status == kOk && message.fds.size() == 1) {
    log::debug("upstream socket from the privileged part in {} us",
               std::chrono::duration_cast<std::chrono::microseconds>(
                   std::chrono::steady_clock::now() - asked)
                   .count());
    return std::move(reply_.fds.front());
  }
  SocketError error;
  if (message.status != kFailed || message.payload.size() < sizeof(error)) {
    return makeError("the privileged part: a malformed answer");
  }
  std::memcpy(&error, message.payload.data(), sizeof(error));
  *why = error.why == static_cast<uint8_t>(proxy::SocketFailure::kCallerNamespace)
             ? proxy::SocketFailure::kCallerNamespace
             : proxy::SocketFailure::kLocal;
  return makeError(std::string(message.text().substr(sizeof(error))));
}

void Client::setHeld(bool held, const proxy::Caller& caller) {
  const CallerKey key{caller.netns_cookie, caller.pid, 0};
  (void)call(held ? Op::kHold : Op::kRelease,
             bytesOf(key));  // no answer: the namespace is found anew per socket
}

}  // namespace spindle::privileged
