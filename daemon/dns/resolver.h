// c-ares bound to the main event loop: its sockets are polled through io_uring, its timeouts
// driven by one timer; no blocking call and no thread of its own.
#pragma once

#include <ares.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "dns/policy.h"
#include "loop/loop.h"
#include "net/address.h"
#include "util/result.h"

namespace spindle::dns {

enum class RecordType { kA, kAAAA };

class CaresResolver {
 public:
  using Callback = std::function<void(Answer)>;

  // servers: empty = /etc/resolv.conf. Timeout 1 s and 2 tries: the library's defaults take
  // over a minute to give up on a dead server.
  static Result<std::unique_ptr<CaresResolver>> create(loop::Loop& loop,
                                                       const std::vector<net::SocketAddress>& servers);
  ~CaresResolver();
  CaresResolver(const CaresResolver&) = delete;
  CaresResolver& operator=(const CaresResolver&) = delete;

  // Asks for one record type of `name` (made fully qualified with a trailing dot, so that no
  // search list multiplies the queries).
  void query(const std::string& name, RecordType type, Callback callback);

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
