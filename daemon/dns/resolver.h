// The daemon's DnsResolver: c-ares bound to the main event loop. Its sockets are polled
// through io_uring, its timeouts driven by one timer; no blocking call and no thread of its own.
#pragma once

#include <ares.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "dns/dns_resolver.h"
#include "dns/policy.h"
#include "loop/loop.h"
#include "net/address.h"
#include "util/result.h"

namespace spindle::dns {

class CaresResolver final : public DnsResolver {
 public:
  // servers: empty = /etc/resolv.conf. Timeout 1 s and 2 tries: the library's defaults take
  // over a minute to give up on a dead server.
  static Result<std::unique_ptr<CaresResolver>> create(
      loop::Loop& loop, const std::vector<net::SocketAddress>& servers);
  ~CaresResolver() override;
  CaresResolver(const CaresResolver&) = delete;
  CaresResolver& operator=(const CaresResolver&) = delete;

  // Asks for one record type of `name` (made fully qualified with a trailing dot, so that no
  // search list multiplies the queries).
  void query(const std::string& name, RecordType type, Callback callback) override;

 private:
  class SocketPoll;
  CaresResolver(loop::Loop& loop) : loop_(loop), tick_(loop, [this] { onTick(); }) {}

  static void onSocketState(void* data, ares_socket_t fd, int readable, int writable);
  static void onAnswer(void* arg, int status, int timeouts, unsigned char* answer, int length);
  void watch(int fd, bool readable, bool writable);
  void onReadiness(int fd, bool readable, bool writable);
  void onTick();
  void armTick();

  loop::Loop& loop_;
  ares_channel channel_ = nullptr;
  std::unordered_map<int, SocketPoll*> polls_;
  loop::Timer tick_;
  int outstanding_ = 0;
};

}  // namespace spindle::dns
