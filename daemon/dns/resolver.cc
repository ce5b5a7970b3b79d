#include "dns/resolver.h"

#include <arpa/nameser.h>
#include <fmt/core.h>
#include <poll.h>

#include <algorithm>
#include <cstring>

#include "util/log.h"

namespace spindle::dns {
namespace {

// How often c-ares is asked to act on its timeouts while queries are outstanding. Its own
// timeout is 1 s, so this is fine enough and costs nothing when idle.
constexpr auto kTick = std::chrono::milliseconds(100);
// Room for the records of one answer; a headless Service of a few thousand Pods fits.
constexpr int kMaxRecords = 4096;

struct Pending {
  CaresResolver::Callback callback;
  RecordType type;
  std::string name;
  int* outstanding;
};

Answer parse(RecordType type, int status, const unsigned char* data, int length) {
  Answer answer;
  if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
    answer.outcome = Outcome::kEmpty;
    answer.error = status == ARES_ENOTFOUND ? "NXDOMAIN" : "no records";
    return answer;
  }
  if (status != ARES_SUCCESS) {
    answer.outcome = Outcome::kFailure;
    answer.error = ares_strerror(status);
    return answer;
  }
  int count = kMaxRecords;
  int rc = ARES_SUCCESS;
  uint32_t ttl = UINT32_MAX;
  if (type == RecordType::kA) {
    std::vector<ares_addrttl> records(kMaxRecords);
    rc = ares_parse_a_reply(data, length, nullptr, records.data(), &count);
    for (int i = 0; rc == ARES_SUCCESS && i < count; ++i) {
      sockaddr_in sin{};
      sin.sin_family = AF_INET;
      sin.sin_addr = records[static_cast<size_t>(i)].ipaddr;
      answer.addresses.push_back(
          net::SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sin), sizeof(sin)));
      ttl = std::min(ttl, static_cast<uint32_t>(std::max(0, records[static_cast<size_t>(i)].ttl)));
    }
  } else {
    std::vector<ares_addr6ttl> records(kMaxRecords);
    rc = ares_parse_aaaa_reply(data, length, nullptr, records.data(), &count);
    for (int i = 0; rc == ARES_SUCCESS && i < count; ++i) {
      sockaddr_in6 sin6{};
      sin6.sin6_family = AF_INET6;
      std::memcpy(&sin6.sin6_addr, &records[static_cast<size_t>(i)].ip6addr, 16);
      answer.addresses.push_back(
          net::SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&sin6), sizeof(sin6)));
      ttl = std::min(ttl, static_cast<uint32_t>(std::max(0, records[static_cast<size_t>(i)].ttl)));
    }
  }
  if (rc == ARES_ENODATA || (rc == ARES_SUCCESS && answer.addresses.empty())) {
    answer.outcome = Outcome::kEmpty;
    answer.error = "no records";
    answer.addresses.clear();
    return answer;
  }
  if (rc != ARES_SUCCESS) {
    answer.outcome = Outcome::kFailure;
    answer.error = fmt::format("bad answer: {}", ares_strerror(rc));
    answer.addresses.clear();
    return answer;
  }
  answer.outcome = Outcome::kRecords;
  answer.ttl = std::chrono::seconds(ttl);
  return answer;
}

}  // namespace

// One poll of one c-ares socket. c-ares may close a socket and open another with the same
// number while a poll is in flight, so a poll that was replaced or removed is only marked
// stale, and frees itself when its completion (or its cancellation) arrives.
class CaresResolver::SocketPoll final : public loop::Completion {
 public:
  SocketPoll(CaresResolver& resolver, int fd) : resolver_(resolver), fd_(fd) {}
  void arm(bool readable, bool writable) {
    readable_ = readable;
    writable_ = writable;
    unsigned mask = (readable ? POLLIN : 0u) | (writable ? POLLOUT : 0u);
    resolver_.loop_.poll(this, fd_, mask);
  }
  void retire() {
    stale_ = true;
    resolver_.loop_.cancelPoll(this);
  }
  void complete(int32_t res, uint32_t /*flags*/) override {
    if (stale_) {
      delete this;
      return;
    }
    const bool readable = res > 0 && (res & (POLLIN | POLLERR | POLLHUP)) != 0;
    const bool writable = res > 0 && (res & (POLLOUT | POLLERR | POLLHUP)) != 0;
    // Re-arm first: c-ares may tell us to stop watching while it processes.
    arm(readable_, writable_);
    resolver_.onReadiness(fd_, readable, writable);
  }

 private:
  CaresResolver& resolver_;
  int fd_;
  bool readable_ = false;
  bool writable_ = false;
  bool stale_ = false;
};

Result<std::unique_ptr<CaresResolver>> CaresResolver::create(
    loop::Loop& loop, const std::vector<net::SocketAddress>& servers) {
  static const int library = ares_library_init(ARES_LIB_INIT_ALL);
  if (library != ARES_SUCCESS) {
    return makeError(fmt::format("c-ares: {}", ares_strerror(library)));
  }
  std::unique_ptr<CaresResolver> resolver(new CaresResolver(loop));
  ares_options options{};
  options.timeout = 1000;
  options.tries = 2;
  options.sock_state_cb = onSocketState;
  options.sock_state_cb_data = resolver.get();
  const int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
  if (int rc = ares_init_options(&resolver->channel_, &options, mask); rc != ARES_SUCCESS) {
    return makeError(fmt::format("c-ares: {}", ares_strerror(rc)));
  }
  if (!servers.empty()) {
    std::string csv;
    for (const net::SocketAddress& server : servers) {
      csv += (csv.empty() ? "" : ",") + server.toString();
    }
    if (int rc = ares_set_servers_ports_csv(resolver->channel_, csv.c_str()); rc != ARES_SUCCESS) {
      return makeError(fmt::format("dns.servers: {}", ares_strerror(rc)));
    }
  }
  return resolver;
}

CaresResolver::~CaresResolver() {
  // Outstanding callbacks run with ARES_EDESTRUCTION and are dropped.
  if (channel_ != nullptr) ares_destroy(channel_);
  for (auto& [fd, poll] : polls_) poll->retire();
}

void CaresResolver::query(const std::string& name, RecordType type, Callback callback) {
  const std::string fqdn = !name.empty() && name.back() == '.' ? name : name + ".";
  auto* pending = new Pending{std::move(callback), type, fqdn, &outstanding_};
  ++outstanding_;
  ares_query(channel_, fqdn.c_str(), ns_c_in, type == RecordType::kA ? ns_t_a : ns_t_aaaa, onAnswer,
             pending);
  armTick();
}

void CaresResolver::onAnswer(void* arg, int status, int /*timeouts*/, unsigned char* answer,
                             int length) {
  std::unique_ptr<Pending> pending(static_cast<Pending*>(arg));
  --*pending->outstanding;
  if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) return;
  pending->callback(parse(pending->type, status, answer, length));
}

void CaresResolver::onSocketState(void* data, ares_socket_t fd, int readable, int writable) {
  static_cast<CaresResolver*>(data)->watch(fd, readable != 0, writable != 0);
}

void CaresResolver::watch(int fd, bool readable, bool writable) {
  auto it = polls_.find(fd);
  if (it != polls_.end()) {
    it->second->retire();
    polls_.erase(it);
  }
  if (!readable && !writable) return;
  auto* poll = new SocketPoll(*this, fd);
  polls_[fd] = poll;
  poll->arm(readable, writable);
}

void CaresResolver::onReadiness(int fd, bool readable, bool writable) {
  ares_process_fd(channel_, readable ? fd : ARES_SOCKET_BAD, writable ? fd : ARES_SOCKET_BAD);
  armTick();
}

void CaresResolver::onTick() {
  ares_process_fd(channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // acts on timeouts
  armTick();
}

void CaresResolver::armTick() {
  if (outstanding_ > 0 && !tick_.armed()) tick_.arm(kTick);
}

}  // namespace spindle::dns
