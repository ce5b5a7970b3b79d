#include "loop/epoll_loop.h"

#include <fmt/core.h>

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "loop/buffer_pool.h"
#include "util/event_clock.h"

namespace spindle::loop {
namespace {

// What a socket's edge-triggered registration reports.
constexpr uint32_t kSocketEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;

int64_t monotonicNanos() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

int64_t nanos(const __kernel_timespec& ts) { return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec; }

bool wouldBlock(int32_t res) { return res == -EAGAIN || res == -EWOULDBLOCK; }

void setNonBlocking(int fd) {
  int on = 1;
  ::ioctl(fd, FIONBIO, &on);  // on a socket this cannot fail; if it did, accept would say so
}

}  // namespace

Result<std::unique_ptr<EpollLoop>> EpollLoop::create() {
  std::unique_ptr<EpollLoop> loop(new EpollLoop());
  loop->epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!loop->epoll_.valid()) {
    return makeError(fmt::format("epoll_create1: {}", std::strerror(errno)));
  }
  return loop;
}

uint32_t EpollLoop::start(Kind kind, Completion* completion, int fd, uint32_t events) {
  uint32_t index = free_;
  if (index != kNone) {
    free_ = ops_[index].next;
  } else {
    index = static_cast<uint32_t>(ops_.size());
    ops_.emplace_back();
  }
  Op& op = ops_[index];
  op = Op{};
  op.kind = kind;
  op.completion = completion;
  op.fd = fd;
  op.events = events;
  // A completion has one operation in flight at a time (cancel finds the latest).
  if (completion != nullptr) completion->epoll_op = index;
  if (fd >= 0) {
    FdState& state = stateOf(fd);
    op.next = state.first;
    state.first = index;
  }
  return index;
}

EpollLoop::FdState& EpollLoop::stateOf(int fd) {
  const auto slot = static_cast<size_t>(fd);
  if (slot >= fds_.size()) fds_.resize(std::max(slot + 1, fds_.size() * 2));
  return fds_[slot];
}

void EpollLoop::addDeadline(uint32_t index, const Deadline* deadline) {
  if (deadline == nullptr) return;
  ops_[index].deadline_op = deadline->op;
  ops_[index].due_ns = monotonicNanos() + nanos(*deadline->after);
  heapPush(index);
}

void EpollLoop::proceed(uint32_t index, bool try_now) {
  const int fd = ops_[index].fd;
  if (!edgeTriggered(ops_[index].kind)) {
    markDirty(fd);  // one-shot registration before the next wait
    return;
  }
  if (!watchSocket(fd)) return;
  FdState& state = stateOf(fd);
  const bool ready = (ops_[index].events & EPOLLIN) != 0 ? state.readable : state.writable;
  if (try_now || ready) attempt(index);
}

bool EpollLoop::edgeTriggered(Kind kind) { return kind != Kind::kRead && kind != Kind::kPoll; }

bool EpollLoop::watchSocket(int fd) {
  FdState& state = stateOf(fd);
  const uint32_t closes = fd_closes::of(fd);
  if (state.watched && fd_closes::tracked(fd) && state.closes == closes) return true;
  epoll_event event{};
  event.events = kSocketEvents;
  event.data.fd = fd;
  // EEXIST: the same socket, registered before (a number past fd_closes' table, or one
  // polled before): made edge-triggered for what sockets wait for.
  int rc = ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event);
  if (rc < 0 && errno == EEXIST) rc = ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &event);
  if (rc < 0) {
    const int error = errno;
    while (state.first != kNone) finish(state.first, -error);
    return false;
  }
  state.watched = true;
  state.closes = closes;
  state.peer_closed = false;
  // Not known yet: the first attempt (or the event the registration reports) tells.
  state.readable = true;
  state.writable = true;
  return true;
}

void EpollLoop::accept(Completion* op, int listener) {
  setNonBlocking(listener);
  proceed(start(Kind::kAccept, op, listener, EPOLLIN), true);
}

void EpollLoop::connect(Completion* op, int fd, const sockaddr* address, socklen_t length,
                        const Deadline* deadline) {
  const uint32_t index = start(Kind::kConnect, op, fd, EPOLLOUT);
  addDeadline(index, deadline);
  setNonBlocking(fd);
  const int error = ::connect(fd, address, length) == 0 ? 0 : errno;
  if (error != EINPROGRESS) {
    finish(index, -error);
    return;
  }
  // Watched only now: an unconnected socket reports itself writable and hung up. Done when
  // writable; SO_ERROR says how.
  if (watchSocket(fd)) stateOf(fd).writable = false;
}

void EpollLoop::recv(Completion* op, int fd, void* buffer, size_t length,
                     const Deadline* deadline) {
  const uint32_t index = start(Kind::kRecv, op, fd, EPOLLIN);
  ops_[index].buffer = buffer;
  ops_[index].length = length;
  addDeadline(index, deadline);
  proceed(index, false);
}

void EpollLoop::recv(Completion* op, int fd, BufferPool& pool) {
  const uint32_t index = start(Kind::kRecvPooled, op, fd, EPOLLIN);
  ops_[index].pool = &pool;
  ops_[index].length = pool.bufferSize();
  proceed(index, false);
}

void EpollLoop::send(Completion* op, int fd, const void* data, size_t length, int flags) {
  const uint32_t index = start(Kind::kSend, op, fd, EPOLLOUT);
  ops_[index].buffer = const_cast<void*>(data);
  ops_[index].length = length;
  ops_[index].flags = flags;
  proceed(index, true);
}

void EpollLoop::read(Completion* op, int fd, void* buffer, size_t length) {
  // Not tried at once: the descriptor may block (an eventfd, a signalfd).
  const uint32_t index = start(Kind::kRead, op, fd, EPOLLIN);
  ops_[index].buffer = buffer;
  ops_[index].length = length;
  proceed(index, false);
}

void EpollLoop::poll(Completion* op, int fd, uint32_t events) {
  proceed(start(Kind::kPoll, op, fd, events), false);
}

void EpollLoop::timeout(Completion* op, const __kernel_timespec* after) {
  const uint32_t index = start(Kind::kTimeout, op, -1, 0);
  ops_[index].due_ns = monotonicNanos() + nanos(*after);
  heapPush(index);
}

void EpollLoop::cancel(Completion* op) {
  const uint32_t index = op->epoll_op;
  if (index == kNone || ops_[index].completion != op) return;
  finish(index, -ECANCELED);
}

void EpollLoop::cancelFd(int fd) {
  if (fd < 0 || static_cast<size_t>(fd) >= fds_.size()) return;
  while (fds_[static_cast<size_t>(fd)].first != kNone) {
    finish(fds_[static_cast<size_t>(fd)].first, -ECANCELED);
  }
}

void EpollLoop::noteReceived(int fd, int32_t res, size_t length) {
  // A short read emptied the socket: the next receive waits for the edge new data brings.
  // A full one may have left more, which no edge would announce. Once the peer closed (or
  // the socket failed), its end of file or error is still to be read, and no edge will come
  // for it: the socket stays readable.
  FdState& state = stateOf(fd);
  if (res > 0 && static_cast<size_t>(res) < length && !state.peer_closed) state.readable = false;
}

bool EpollLoop::attempt(uint32_t index) {
  Op& op = ops_[index];
  switch (op.kind) {
    case Kind::kAccept:
      // Until the backlog is empty (it bounds the loop): an edge comes only with a new one.
      for (;;) {
        const int fd = ::accept4(op.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
          ready_.push_back({op.completion, fd, kFlagMore});
        } else if (wouldBlock(-errno)) {
          stateOf(op.fd).readable = false;
          return false;
        } else if (errno != EINTR) {
          // As io_uring's multishot accept: an error ends it (the owner arms it again).
          const int error = errno;
          finish(index, -error);
          return true;
        }
      }
    case Kind::kConnect: {
      int error = 0;
      socklen_t length = sizeof(error);
      if (::getsockopt(op.fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0) error = errno;
      finish(index, -error);
      return true;
    }
    case Kind::kRecv: {
      ssize_t n;
      do n = ::recv(op.fd, op.buffer, op.length, MSG_DONTWAIT);
      while (n < 0 && errno == EINTR);
      const int32_t res = n >= 0 ? static_cast<int32_t>(n) : -errno;
      if (wouldBlock(res)) {
        stateOf(op.fd).readable = false;
        return false;
      }
      noteReceived(op.fd, res, op.length);
      finish(index, res);
      return true;
    }
    case Kind::kRecvPooled: {
      uint16_t id = 0;
      if (!op.pool->take(&id)) {
        finish(index, -ENOBUFS);
        return true;
      }
      ssize_t n;
      do n = ::recv(op.fd, op.pool->data(id), op.length, MSG_DONTWAIT);
      while (n < 0 && errno == EINTR);
      const int32_t res = n >= 0 ? static_cast<int32_t>(n) : -errno;
      if (wouldBlock(res)) {
        op.pool->putBack(id);
        stateOf(op.fd).readable = false;
        return false;
      }
      noteReceived(op.fd, res, op.length);
      // The buffer goes with every result, as io_uring's does with data and end of file: the
      // owner gives it back.
      finish(index, res, kFlagBuffer | (static_cast<uint32_t>(id) << kBufferIdShift));
      return true;
    }
    case Kind::kSend: {
      ssize_t n;
      do n = ::send(op.fd, op.buffer, op.length, op.flags | MSG_DONTWAIT);
      while (n < 0 && errno == EINTR);
      const int32_t res = n >= 0 ? static_cast<int32_t>(n) : -errno;
      // Short: the socket's buffer is full, and the next send would block until an edge
      // (unless the socket failed: the next send says so at once).
      FdState& state = stateOf(op.fd);
      if (wouldBlock(res) ||
          (res >= 0 && static_cast<size_t>(res) < op.length && !state.peer_closed)) {
        state.writable = false;
      }
      if (wouldBlock(res)) return false;
      finish(index, res);
      return true;
    }
    case Kind::kRead: {
      ssize_t n;
      do n = ::read(op.fd, op.buffer, op.length);
      while (n < 0 && errno == EINTR);
      const int32_t res = n >= 0 ? static_cast<int32_t>(n) : -errno;
      if (wouldBlock(res)) return false;
      finish(index, res);
      return true;
    }
    case Kind::kPoll:
    case Kind::kTimeout: break;  // completed by onEvent and expireTimers
  }
  return false;
}

void EpollLoop::finish(uint32_t index, int32_t res, uint32_t flags) {
  Op& op = ops_[index];
  ready_.push_back({op.completion, res, flags});
  if (op.deadline_op != nullptr) ready_.push_back({op.deadline_op, -ECANCELED, 0});
  if (op.heap_index != UINT32_MAX) heapRemove(index);
  unlink(index);
  release(index);
}

void EpollLoop::release(uint32_t index) {
  Op& op = ops_[index];
  if (op.completion != nullptr && op.completion->epoll_op == index) op.completion->epoll_op = 0;
  op.completion = nullptr;
  op.next = free_;
  free_ = index;
}

void EpollLoop::unlink(uint32_t index) {
  const int fd = ops_[index].fd;
  if (fd < 0) return;
  FdState& state = stateOf(fd);
  uint32_t* link = &state.first;
  while (*link != kNone && *link != index) link = &ops_[*link].next;
  if (*link == index) *link = ops_[index].next;
}

void EpollLoop::markDirty(int fd) {
  FdState& state = stateOf(fd);
  if (state.dirty) return;
  state.dirty = true;
  dirty_fds_.push_back(fd);
}

void EpollLoop::registerFd(int fd) {
  FdState& state = stateOf(fd);
  state.dirty = false;
  state.watched = false;  // one-shot now: a socket use registers it anew
  uint32_t wanted = 0;
  for (uint32_t i = state.first; i != kNone; i = ops_[i].next) wanted |= ops_[i].events;
  if (wanted == 0) return;
  epoll_event event{};
  event.events = wanted | EPOLLONESHOT;
  event.data.fd = fd;
  int rc = ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &event);
  if (rc < 0 && errno == ENOENT) rc = ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event);
  if (rc < 0) {
    // Not pollable, or not open: each operation on it ends with the reason.
    const int error = errno;
    while (state.first != kNone) finish(state.first, -error);
  }
}

void EpollLoop::onEvent(int fd, uint32_t events) {
  FdState& state = stateOf(fd);
  const bool failed = (events & (EPOLLERR | EPOLLHUP)) != 0;
  if (state.watched) {
    // A socket's edge: what it says stays true until an attempt would block.
    if (failed || (events & (EPOLLIN | EPOLLRDHUP)) != 0) state.readable = true;
    if (failed || (events & EPOLLOUT) != 0) state.writable = true;
    if (failed || (events & EPOLLRDHUP) != 0) state.peer_closed = true;
  }
  bool level = false;
  uint32_t index = state.first;
  while (index != kNone) {
    const uint32_t next = ops_[index].next;  // finishing unlinks index, never next
    const Op& op = ops_[index];
    if (op.kind == Kind::kPoll) {
      level = true;
      const uint32_t ready = events & (op.events | EPOLLERR | EPOLLHUP);
      if (ready != 0) finish(index, static_cast<int32_t>(ready));
    } else if (op.kind == Kind::kRead) {
      level = true;
      if (failed || (events & op.events) != 0) attempt(index);
    } else if ((op.events & EPOLLIN) != 0 ? stateOf(fd).readable : stateOf(fd).writable) {
      attempt(index);
    }
    index = next;
  }
  // One-shot registrations are armed again for what still waits.
  if (level && stateOf(fd).first != kNone) markDirty(fd);
}

void EpollLoop::expireTimers(int64_t now_ns) {
  while (!heap_.empty() && ops_[heap_.front()].due_ns <= now_ns) {
    const uint32_t index = heap_.front();
    heapRemove(index);
    Op& op = ops_[index];
    if (op.kind == Kind::kTimeout) {
      finish(index, -ETIME);
      continue;
    }
    // A deadline: the operation it bounds ends.
    ready_.push_back({op.completion, -ECANCELED, 0});
    ready_.push_back({op.deadline_op, -ETIME, 0});
    op.deadline_op = nullptr;
    unlink(index);
    release(index);
  }
}

int EpollLoop::waitMillis(std::chrono::milliseconds timeout, int64_t now_ns) const {
  if (!ready_.empty()) return 0;
  int64_t wait = timeout.count();
  if (!heap_.empty()) {
    const int64_t until = ops_[heap_.front()].due_ns - now_ns;
    // Rounded up: waking early would only spin until the deadline.
    wait = std::min(wait, until <= 0 ? 0 : (until + 999'999) / 1'000'000);
  }
  return static_cast<int>(wait);
}

void EpollLoop::runOnce(std::chrono::milliseconds timeout) {
  for (size_t i = 0; i < dirty_fds_.size(); ++i) {
    const int fd = dirty_fds_[i];
    if (stateOf(fd).dirty) registerFd(fd);
  }
  dirty_fds_.clear();
  const int n = ::epoll_wait(epoll_.get(), events_.data(), static_cast<int>(events_.size()),
                             waitMillis(timeout, monotonicNanos()));
  if (n < 0 && errno != EINTR) {
    // Cannot happen with a valid epoll descriptor; nothing sensible can go on.
    fmt::print(stderr, "spindle: error: epoll_wait: {}\n", std::strerror(errno));
    std::abort();
  }
  for (int i = 0; i < n; ++i) {
    const epoll_event& event = events_[static_cast<size_t>(i)];
    onEvent(event.data.fd, event.events);
  }
  expireTimers(monotonicNanos());

  batch_.swap(ready_);
  EventClock::Scope event_time;
  for (size_t i = 0; i < batch_.size(); ++i) {
    if (i > 0) event_time.advance();
    batch_[i].op->complete(batch_[i].res, batch_[i].flags);
  }
  batch_.clear();
  endBatch();
}

void EpollLoop::heapPush(uint32_t index) {
  ops_[index].heap_index = static_cast<uint32_t>(heap_.size());
  heap_.push_back(index);
  heapUp(ops_[index].heap_index);
}

void EpollLoop::heapRemove(uint32_t index) {
  const uint32_t pos = ops_[index].heap_index;
  const auto last = static_cast<uint32_t>(heap_.size() - 1);
  if (pos != last) {
    heapSwap(pos, last);
    heap_.pop_back();
    heapUp(pos);
    heapDown(pos);
  } else {
    heap_.pop_back();
  }
  ops_[index].heap_index = UINT32_MAX;
}

void EpollLoop::heapSwap(uint32_t a, uint32_t b) {
  std::swap(heap_[a], heap_[b]);
  ops_[heap_[a]].heap_index = a;
  ops_[heap_[b]].heap_index = b;
}

void EpollLoop::heapUp(uint32_t pos) {
  while (pos > 0) {
    const uint32_t parent = (pos - 1) / 2;
    if (ops_[heap_[parent]].due_ns <= ops_[heap_[pos]].due_ns) return;
    heapSwap(pos, parent);
    pos = parent;
  }
}

void EpollLoop::heapDown(uint32_t pos) {
  const auto size = static_cast<uint32_t>(heap_.size());
  for (;;) {
    const uint32_t left = 2 * pos + 1;
    if (left >= size) return;
    uint32_t child = left;
    if (left + 1 < size && ops_[heap_[left + 1]].due_ns < ops_[heap_[left]].due_ns) {
      child = left + 1;
    }
    if (ops_[heap_[pos]].due_ns <= ops_[heap_[child]].due_ns) return;
    heapSwap(pos, child);
    pos = child;
  }
}

}  // namespace spindle::loop
