// The epoll engine: where io_uring is refused (a container runtime's default seccomp profile,
// kernel.io_uring_disabled) or lacks what spindle uses (kernels before 5.19). It keeps
// io_uring's contract, so nothing above the loop changes: an operation is started, and later
// completes once on its Completion with the system call's result, -ECANCELED when cancelled.
//
// How: a socket is registered edge-triggered (EPOLLIN | EPOLLOUT | EPOLLET) at its first
// operation and stays so; the engine keeps what the last edge or attempt said (readable,
// writable), so an operation on a ready socket is made at once and one that would block waits
// for the next edge: no epoll_ctl per operation. A socket number closed (fd_closes counts the
// closes through Fd) is registered anew at its next use, so a reused number is never taken for
// the socket it was. Reads (eventfd, signalfd, inotify, which may block) and polls wait on a
// one-shot level registration armed each time. Timeouts and deadlines are a binary heap;
// epoll_wait sleeps until the nearest. Operations live in a slab indexed from their
// Completion: no allocation per operation once the slab has grown.
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <vector>

#include "loop/loop.h"
#include "util/fd.h"

namespace spindle::loop {

class EpollLoop final : public Loop {
 public:
  static Result<std::unique_ptr<EpollLoop>> create();

  Engine engine() const override { return Engine::kEpoll; }
  void accept(Completion* op, int listener) override;
  void connect(Completion* op, int fd, const sockaddr* address, socklen_t length,
               const Deadline* deadline) override;
  void recv(Completion* op, int fd, void* buffer, size_t length, const Deadline* deadline) override;
  void recv(Completion* op, int fd, BufferPool& pool) override;
  void send(Completion* op, int fd, const void* data, size_t length, int flags) override;
  void read(Completion* op, int fd, void* buffer, size_t length) override;
  void poll(Completion* op, int fd, uint32_t events) override;
  void timeout(Completion* op, const __kernel_timespec* after) override;
  void cancel(Completion* op) override;
  void cancelFd(int fd) override;
  void cancelTimeout(Completion* op) override { cancel(op); }
  void cancelPoll(Completion* op) override { cancel(op); }
  void runOnce(std::chrono::milliseconds timeout) override;

 private:
  enum class Kind : uint8_t {
    kAccept,
    kConnect,
    kRecv,
    kRecvPooled,
    kSend,
    kRead,
    kPoll,
    kTimeout
  };
  static constexpr uint32_t kNone = 0;  // slab index 0 is never used

  struct Op {
    Kind kind = Kind::kTimeout;
    Completion* completion = nullptr;
    int fd = -1;
    uint32_t events = 0;  // what it waits for (EPOLLIN, EPOLLOUT, a poll mask)
    void* buffer = nullptr;
    size_t length = 0;
    int flags = 0;
    BufferPool* pool = nullptr;
    Completion* deadline_op = nullptr;  // a Deadline's, or nothing
    int64_t due_ns = 0;                 // a timeout's or a deadline's expiry
    uint32_t heap_index = UINT32_MAX;
    uint32_t next = kNone;  // the next operation on the same fd, or the next free record
  };

  struct FdState {
    uint32_t first = kNone;  // its operations
    // Sockets: registered edge-triggered once (while fd_closes says it is the same socket),
    // with what the last edge or attempt said of it.
    bool watched = false;
    uint32_t closes = 0;
    bool readable = false;
    bool writable = false;
    bool peer_closed = false;  // an edge said EPOLLRDHUP, HUP or ERR: no edge will follow
    bool dirty = false;        // one-shot registration (reads, polls) due before the next wait
  };

  struct Ready {
    Completion* op;
    int32_t res;
    uint32_t flags;
  };

  EpollLoop() = default;

  uint32_t start(Kind kind, Completion* completion, int fd, uint32_t events);
  void addDeadline(uint32_t index, const Deadline* deadline);
  // Tries the operation now if `try_now` or its socket is known ready, and waits for readiness
  // if it would block.
  void proceed(uint32_t index, bool try_now);
  // Socket operations wait on an edge-triggered registration kept across operations; reads
  // (eventfd, signalfd, inotify, which may block) and polls on a one-shot one armed each time.
  static bool edgeTriggered(Kind kind);
  // Registers a socket (edge-triggered) unless it already is; false (its operations ended
  // with the error) when it cannot be.
  bool watchSocket(int fd);
  void noteReceived(int fd, int32_t res, size_t length);
  FdState& stateOf(int fd);
  // Performs the operation: false when it would block.
  bool attempt(uint32_t index);
  // Ends an operation with a result (its deadline, if any, with -ECANCELED).
  void finish(uint32_t index, int32_t res, uint32_t flags = 0);
  void release(uint32_t index);
  void unlink(uint32_t index);
  void markDirty(int fd);
  void registerFd(int fd);
  void onEvent(int fd, uint32_t events);
  void expireTimers(int64_t now_ns);
  int waitMillis(std::chrono::milliseconds timeout, int64_t now_ns) const;

  void heapPush(uint32_t index);
  void heapRemove(uint32_t index);
  void heapSwap(uint32_t a, uint32_t b);
  void heapUp(uint32_t pos);
  void heapDown(uint32_t pos);

  Fd epoll_;
  std::vector<Op> ops_{1};
  uint32_t free_ = kNone;
  std::vector<FdState> fds_;
  std::vector<int> dirty_fds_;  // to (re-)register before the next wait
  std::vector<uint32_t> heap_;
  std::vector<Ready> ready_;
  std::vector<Ready> batch_;
  std::vector<epoll_event> events_ = std::vector<epoll_event>(256);
};

}  // namespace spindle::loop
