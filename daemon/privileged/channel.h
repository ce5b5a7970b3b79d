// The one way the proxy process reaches the privileged part: requests and replies over a Unix
// SOCK_SEQPACKET socket pair, file descriptors attached with SCM_RIGHTS. The proxy asks, the
// privileged part answers; it never asks the proxy anything (signals tell the proxy to reload
// or stop). Every message is a fixed header and plain fixed-width structs: nothing to parse
// but sizes, checked on receipt.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/fd.h"
#include "util/result.h"

namespace spindle::privileged {

enum class Op : uint16_t {
  kStart = 1,   // -> StartReply, the config text after it; fds: see StartReply
  kConfigText,  // -> the config file's text as it is now (a reload)
  kServices,    // ServiceAddress[] -> ServicePort[] (each service's proxy port)
  kAttach,      // -> attach the programs: connects are redirected from now on
  kDetach,      // -> destroy the links: every connect goes direct
  kHeartbeat,   // -> connects may be redirected for another redirect.heartbeat_timeout
  kCounters,    // -> RedirectState
  kTakeOrigin,  // TakeOrigin -> Origin, or status kNotFound
  kSocket,      // SocketRequest -> a socket (fd), or an error with SocketError
  kHold,        // Caller: keep the caller's namespace open until kRelease
  kRelease,     // Caller
};

enum Answer : int32_t {
  kOk = 0,
  kFailed = 1,    // the payload is the error's text
  kNotFound = 2,  // kTakeOrigin: no record of that connection
};

struct Header {
  uint16_t op = 0;
  uint16_t more = 0;  // another part of this message follows
  uint32_t seq = 0;   // a reply carries its request's
  int32_t status = kOk;
  uint32_t size = 0;  // payload bytes in this part
};
static_assert(sizeof(Header) == 16);

// A whole message: its parts put together.
struct Message {
  Op op{};
  uint32_t seq = 0;
  int32_t status = kOk;
  std::vector<uint8_t> payload;
  std::vector<Fd> fds;

  std::string_view text() const {
    return {reinterpret_cast<const char*>(payload.data()), payload.size()};
  }
};

// One end of a channel. Blocking sends and receives, a receive bounded by a timeout: each
// side waits for the other only as long as a healthy peer could take.
class Channel {
 public:
  Channel() = default;
  explicit Channel(Fd fd) : fd_(std::move(fd)) {}
  // A connected pair; both ends close on exec.
  static Result<std::pair<Channel, Channel>> pair();

  bool valid() const { return fd_.valid(); }
  int fd() const { return fd_.get(); }
  Fd release() { return Fd(fd_.release()); }

  Status send(Op op, uint32_t seq, int32_t status, std::span<const uint8_t> payload,
              std::span<const int> fds = {});
  // The next whole message. An error: the peer is gone (EOF), the timeout passed, or a part
  // did not fit (the channel is then useless: the caller closes it).
  Status receive(Message& out, std::chrono::milliseconds timeout);

 private:
  Fd fd_;
};

template <typename T>
std::span<const uint8_t> bytesOf(const T& value) {
  return {reinterpret_cast<const uint8_t*>(&value), sizeof(T)};
}
template <typename T>
std::span<const uint8_t> bytesOf(const std::vector<T>& values) {
  return {reinterpret_cast<const uint8_t*>(values.data()), values.size() * sizeof(T)};
}
inline std::span<const uint8_t> bytesOf(std::string_view text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

// The payload as one T, or as Ts; false when its size does not match.
template <typename T>
bool readPayload(const Message& message, T* out) {
  if (message.payload.size() != sizeof(T)) return false;
  std::memcpy(out, message.payload.data(), sizeof(T));
  return true;
}
template <typename T>
bool readPayload(const Message& message, std::vector<T>* out) {
  if (message.payload.size() % sizeof(T) != 0) return false;
  out->resize(message.payload.size() / sizeof(T));
  std::memcpy(out->data(), message.payload.data(), message.payload.size());
  return true;
}

// The payloads.

struct StartReply {
  uint32_t workers = 0;
  uint32_t listeners_per_worker = 0;
  uint8_t admin_tcp = 0;   // an admin.listen listener is the first fd
  uint8_t admin_unix = 0;  // an admin.socket listener is the next
  uint8_t pad[6] = {};
  uint64_t netns_cookie = 0;  // the node's network namespace
  // Then the fds: the admin listeners, one channel per worker, and the workers' listeners,
  // worker after worker. The config text follows this struct in the payload.
};

struct ServiceAddress {
  uint8_t addr[16] = {};  // IPv6, or IPv4 mapped
  uint16_t port = 0;      // host order
  uint16_t pad = 0;
  uint32_t service_id = 0;
};

struct ServicePort {
  uint32_t service_id = 0;
  uint16_t port = 0;  // host order
  uint16_t pad = 0;
};

struct RedirectState {
  uint64_t counters[16] = {};  // by SPINDLE_REASON_*
  int64_t records = 0;         // in orig_by_peer
};

struct TakeOrigin {
  uint8_t peer[16] = {};  // the client's address, IPv4 mapped
  uint16_t peer_port = 0;
  uint16_t proxy_port = 0;
  uint32_t isn = 0;
  uint8_t has_isn = 0;
  uint8_t pad[7] = {};
};

struct Origin {
  uint8_t addr[16] = {};
  uint16_t port = 0;
  uint16_t pad = 0;
  uint32_t service_id = 0;
  uint64_t cgroup_id = 0;
  uint64_t netns_cookie = 0;
  uint32_t pid = 0;
  uint32_t pad2 = 0;
};

struct CallerKey {
  uint64_t netns_cookie = 0;
  uint32_t pid = 0;
  uint32_t pad = 0;
};

struct SocketRequest {
  CallerKey caller;
  int32_t family = 0;
  uint32_t pad = 0;
};

// A failed kSocket's payload: this, then the error's text.
struct SocketError {
  uint8_t why = 0;  // proxy::SocketFailure
  uint8_t pad[7] = {};
};

}  // namespace spindle::privileged
