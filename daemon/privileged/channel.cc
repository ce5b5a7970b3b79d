#include "privileged/channel.h"

#include <fmt/core.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace spindle::privileged {
namespace {

// A part stays well below the socket's send buffer; a message of more is sent in parts.
constexpr size_t kMaxPartPayload = 32 * 1024;
constexpr size_t kMaxPartFds = 64;  // the kernel takes up to 253 per message

}  // namespace

Result<std::pair<Channel, Channel>> Channel::pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) {
    return makeError(fmt::format("socketpair: {}", std::strerror(errno)));
  }
  return std::pair<Channel, Channel>(Channel(Fd(fds[0])), Channel(Fd(fds[1])));
}

Status Channel::send(Op op, uint32_t seq, int32_t status, std::span<const uint8_t> payload,
                     std::span<const int> fds) {
  size_t sent_bytes = 0;
  size_t sent_fds = 0;
  do {
    const size_t bytes = std::min(kMaxPartPayload, payload.size() - sent_bytes);
    const size_t count = std::min(kMaxPartFds, fds.size() - sent_fds);
    Header header;
    header.op = static_cast<uint16_t>(op);
    header.seq = seq;
    header.status = status;
    header.size = static_cast<uint32_t>(bytes);
    header.more = sent_bytes + bytes < payload.size() || sent_fds + count < fds.size();
    iovec iov[2] = {{&header, sizeof(header)},
                    {const_cast<uint8_t*>(payload.data() + sent_bytes), bytes}};
    alignas(cmsghdr) char control[CMSG_SPACE(kMaxPartFds * sizeof(int))];
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    if (count > 0) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(count * sizeof(int));
      cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(count * sizeof(int));
      std::memcpy(CMSG_DATA(cmsg), fds.data() + sent_fds, count * sizeof(int));
    }
    ssize_t n;
    do {
      n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return makeError(fmt::format("send: {}", std::strerror(errno)));
    sent_bytes += bytes;
    sent_fds += count;
    if (!header.more) return {};
  } while (true);
}

Status Channel::receive(Message& out, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  out.payload.clear();
  out.fds.clear();
  bool first = true;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{fd_.get(), POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return makeError(fmt::format("poll: {}", std::strerror(errno)));
    if (ready == 0) return makeError("no answer in time");
    Header header;
    const size_t offset = out.payload.size();
    out.payload.resize(offset + kMaxPartPayload);
    iovec iov[2] = {{&header, sizeof(header)}, {out.payload.data() + offset, kMaxPartPayload}};
    alignas(cmsghdr) char control[CMSG_SPACE(kMaxPartFds * sizeof(int))];
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = ::recvmsg(fd_.get(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
      out.payload.resize(offset);
      continue;
    }
    if (n < 0) return makeError(fmt::format("receive: {}", std::strerror(errno)));
    if (n == 0) return makeError("the other side is gone");
    // Whatever came is owned first, so that nothing leaks on an error below.
    for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
      if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
        out.fds.emplace_back(fd);
      }
    }
    if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 ||
        static_cast<size_t>(n) < sizeof(header) ||
        header.size != static_cast<size_t>(n) - sizeof(header)) {
      return makeError("a malformed message");
    }
    if (!first && (header.op != static_cast<uint16_t>(out.op) || header.seq != out.seq)) {
      return makeError("a message interleaved with another");
    }
    out.op = static_cast<Op>(header.op);
    out.seq = header.seq;
    out.status = header.status;
    out.payload.resize(offset + header.size);
    first = false;
    if (!header.more) return {};
  }
}

}  // namespace spindle::privileged
