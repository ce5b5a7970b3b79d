// grpc_backend: the gRPC server Pod of bench/grpc_bench.py. It speaks h2c (HTTP/2 with prior
// knowledge, as gRPC does without TLS) and answers every request, once the client has ended
// its stream, with a valid unary gRPC response: ":status: 200", "content-type:
// application/grpc", one 5-byte-framed message, then the trailer "grpc-status: 0". The
// request body is read and dropped, so any method and message will do.
//
// Two optional request headers shape the answer, so that one server covers every bench
// workload: "bench-reply-bytes: N" (the message size, instead of --reply-bytes) and
// "bench-reply-messages: N" (N messages, as a server-streaming call answers).
//
// One thread, one epoll, nghttp2 driven by bytes (mem_recv / mem_send): cheap enough per
// call that h2load, not this server, sets the pace (the bench prints its CPU per call to
// show it).
//
// Build (Debian packages g++ and libnghttp2-dev):
//   g++ -std=c++20 -O2 -Wall -Wextra -Werror bench/grpc_backend.cc -lnghttp2 -o build/bin/grpc_backend
//   run:   grpc_backend [--port 50051] [--reply-bytes 100]
//
// It prints "grpc_backend: listening on port N" once it accepts connections and
// "grpc_backend: calls N messages N" (calls answered so far, and the messages in them) on
// SIGUSR1 and at exit (SIGTERM, SIGINT).

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

constexpr size_t kReadBuffer = 64 * 1024;
constexpr size_t kOutputHighWater = 64 * 1024;  // stop pulling frames from nghttp2 above this
constexpr int kMaxEvents = 64;

size_t g_reply_bytes = 100;  // message size when the call does not ask for one
uint64_t g_calls = 0;        // responses whose trailers went out
uint64_t g_messages = 0;     // messages in those responses
constexpr size_t kMaxReplyBytes = 16 << 20;
constexpr size_t kMaxReplyMessages = 1 << 20;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "grpc_backend: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

nghttp2_nv header(std::string_view name, std::string_view value) {
  // nghttp2 takes non-const pointers but with NO_COPY flags never writes through them.
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
}

// The gRPC length-prefixed message of `size` bytes (built once per size): compressed flag 0,
// 4-byte big-endian length, then a protobuf message whose field 1 (bytes) fills the size (a
// tag byte, the varint length, the 'x's), so that a generated client would decode it too.
// Where the varint grows by a byte the message comes out one byte short.
const std::vector<uint8_t>& frameOf(size_t size) {
  static std::map<size_t, std::vector<uint8_t>> frames;
  auto [it, added] = frames.try_emplace(size);
  if (!added) return it->second;
  auto varintSize = [](size_t v) {
    size_t n = 1;
    for (; v >= 0x80; v >>= 7) ++n;
    return n;
  };
  std::vector<uint8_t> message{0x0a};
  size_t payload = size - 2;
  while (1 + varintSize(payload) + payload > size) --payload;
  for (size_t v = payload;; v >>= 7) {
    message.push_back(static_cast<uint8_t>((v & 0x7f) | (v >= 0x80 ? 0x80 : 0)));
    if (v < 0x80) break;
  }
  message.insert(message.end(), payload, 'x');
  const auto len = static_cast<uint32_t>(message.size());
  it->second = {0, static_cast<uint8_t>(len >> 24), static_cast<uint8_t>(len >> 16),
                static_cast<uint8_t>(len >> 8), static_cast<uint8_t>(len)};
  it->second.insert(it->second.end(), message.begin(), message.end());
  return it->second;
}

// A header's decimal value within [lo, hi], or `fallback` when absent or malformed.
size_t headerNumber(const uint8_t* value, size_t len, size_t lo, size_t hi, size_t fallback) {
  size_t v = 0;
  if (len == 0 || len > 9) return fallback;
  for (size_t i = 0; i < len; ++i) {
    if (value[i] < '0' || value[i] > '9') return fallback;
    v = v * 10 + (value[i] - '0');
  }
  return v < lo || v > hi ? fallback : v;
}

class Connection {
 public:
  explicit Connection(int fd) : fd_(fd) {
    nghttp2_session_server_new(&session_, callbacks(), this);
    // Room for h2load's -m and for a proxy's pooled upstream connections.
    const nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1024},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
    };
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings,
                            sizeof(settings) / sizeof(settings[0]));
  }
  ~Connection() {
    nghttp2_session_del(session_);
    close(fd_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int fd() const { return fd_; }
  bool wantsWrite() const { return out_off_ < out_.size(); }

  // False: close the connection (peer gone, protocol error, nothing more to do).
  bool onReadable() {
    static uint8_t buf[kReadBuffer];
    for (int i = 0; i < 16; ++i) {  // bounded, so one busy client cannot starve the others
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n == 0) return false;
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        return false;
      }
      if (nghttp2_session_mem_recv(session_, buf, static_cast<size_t>(n)) < 0) return false;
      if (static_cast<size_t>(n) < sizeof(buf)) break;
    }
    return flush();
  }

  // Writes what is queued, then pulls frames from nghttp2 until it has none or the socket is
  // full. False: close.
  bool flush() {
    for (;;) {
      while (out_off_ < out_.size()) {
        const ssize_t n = send(fd_, out_.data() + out_off_, out_.size() - out_off_, MSG_NOSIGNAL);
        if (n < 0) {
          if (errno == EINTR) continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK) return true;  // EPOLLOUT resumes
          return false;
        }
        out_off_ += static_cast<size_t>(n);
      }
      out_.clear();
      out_off_ = 0;
      while (out_.size() < kOutputHighWater) {
        const uint8_t* data = nullptr;
        const ssize_t n = nghttp2_session_mem_send(session_, &data);
        if (n < 0) return false;
        if (n == 0) break;
        out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
      }
      if (out_.empty()) {
        return nghttp2_session_want_read(session_) != 0 ||
               nghttp2_session_want_write(session_) != 0;
      }
    }
  }

 private:
  static const nghttp2_session_callbacks* callbacks() {
    static nghttp2_session_callbacks* table = [] {
      nghttp2_session_callbacks* cb = nullptr;
      nghttp2_session_callbacks_new(&cb);
      nghttp2_session_callbacks_set_on_frame_recv_callback(
          cb, [](nghttp2_session*, const nghttp2_frame* frame, void* self) noexcept {
            return static_cast<Connection*>(self)->onFrameRecv(frame);
          });
      nghttp2_session_callbacks_set_on_header_callback(
          cb, [](nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                 const uint8_t* value, size_t valuelen, uint8_t, void* self) noexcept {
            const std::string_view n(reinterpret_cast<const char*>(name), namelen);
            if (n.size() < 6 || n.substr(0, 6) != "bench-") return 0;
            Reply& r = static_cast<Connection*>(self)->replies_[frame->hd.stream_id];
            if (n == "bench-reply-bytes") {
              r.bytes = headerNumber(value, valuelen, 2, kMaxReplyBytes, r.bytes);
            } else if (n == "bench-reply-messages") {
              r.messages = headerNumber(value, valuelen, 1, kMaxReplyMessages, r.messages);
            }
            return 0;
          });
      nghttp2_session_callbacks_set_on_frame_send_callback(
          cb, [](nghttp2_session*, const nghttp2_frame* frame, void* self) noexcept {
            // Trailers are the last frame of a call: count it answered.
            if (frame->hd.type == NGHTTP2_HEADERS && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
              ++g_calls;
              auto& replies = static_cast<Connection*>(self)->replies_;
              if (auto it = replies.find(frame->hd.stream_id); it != replies.end())
                g_messages += it->second.messages;
            }
            return 0;
          });
      nghttp2_session_callbacks_set_on_stream_close_callback(
          cb, [](nghttp2_session*, int32_t stream_id, uint32_t, void* self) noexcept {
            static_cast<Connection*>(self)->replies_.erase(stream_id);
            return 0;
          });
      return cb;
    }();
    return table;
  }

  int onFrameRecv(const nghttp2_frame* frame) {
    const bool request_ended =
        (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (!request_ended) return 0;
    const int32_t id = frame->hd.stream_id;
    static nghttp2_nv response[] = {header(":status", "200"),
                                    header("content-type", "application/grpc")};
    nghttp2_data_provider body{};
    body.read_callback = [](nghttp2_session* session, int32_t stream_id, uint8_t* buf,
                            size_t length, uint32_t* flags, nghttp2_data_source*,
                            void* self) noexcept -> ssize_t {
      return static_cast<Connection*>(self)->readBody(session, stream_id, buf, length, flags);
    };
    Reply& r = replies_[id];
    r.frame = &frameOf(r.bytes);
    if (nghttp2_submit_response(session_, id, response, 2, &body) != 0) {
      nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
    }
    return 0;
  }

  // The reply frames back to back (cut where the window or frame size says), then the
  // trailers.
  ssize_t readBody(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                   uint32_t* flags) {
    Reply& r = replies_[stream_id];
    const std::vector<uint8_t>& frame = *r.frame;
    const size_t total = frame.size() * r.messages;
    size_t n = 0;
    while (n < length && r.sent < total) {
      const size_t off = r.sent % frame.size();
      const size_t k = std::min(length - n, frame.size() - off);
      std::memcpy(buf + n, frame.data() + off, k);
      n += k;
      r.sent += k;
    }
    if (r.sent == total) {
      *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      static nghttp2_nv trailers[] = {header("grpc-status", "0")};
      if (nghttp2_submit_trailer(session, stream_id, trailers, 1) != 0) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets the stream
      }
    }
    return static_cast<ssize_t>(n);
  }

  int fd_;
  nghttp2_session* session_ = nullptr;
  std::string out_;
  size_t out_off_ = 0;
  struct Reply {
    size_t bytes = g_reply_bytes;
    size_t messages = 1;
    const std::vector<uint8_t>* frame = nullptr;
    size_t sent = 0;  // bytes of the whole answer sent so far
  };
  std::unordered_map<int32_t, Reply> replies_;  // per open stream
};

int listenOn(uint16_t port) {
  // One dual-stack socket: IPv4 clients arrive as v4-mapped addresses.
  const int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  const int one = 1;
  const int zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) != 0) die("IPV6_V6ONLY");
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_any;
  addr.sin6_port = htons(port);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) die("bind");
  if (listen(fd, 1024) != 0) die("listen");
  return fd;
}

void printCalls() {
  std::printf("grpc_backend: calls %llu messages %llu\n", static_cast<unsigned long long>(g_calls),
              static_cast<unsigned long long>(g_messages));
  std::fflush(stdout);
}

unsigned long parseNumber(const char* text, unsigned long max, const char* what) {
  char* end = nullptr;
  errno = 0;
  const unsigned long v = std::strtoul(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v == 0 || v > max) {
    std::fprintf(stderr, "grpc_backend: bad %s '%s'\n", what, text);
    std::exit(2);
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  uint16_t port = 50051;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--port" && i + 1 < argc) {
      port = static_cast<uint16_t>(parseNumber(argv[++i], 65535, "port"));
    } else if (arg == "--reply-bytes" && i + 1 < argc) {
      g_reply_bytes = parseNumber(argv[++i], kMaxReplyBytes, "reply size");
      if (g_reply_bytes < 2) g_reply_bytes = 2;  // a tag and a length at least
    } else {
      std::fprintf(stderr, "usage: grpc_backend [--port N] [--reply-bytes N]\n");
      return 2;
    }
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGUSR1);
  if (sigprocmask(SIG_BLOCK, &signals, nullptr) != 0) die("sigprocmask");
  const int sfd = signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) die("signalfd");
  const int lfd = listenOn(port);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  // Listener and signalfd are told apart from connections by these two tokens.
  static int listener_token = 0;
  static int signal_token = 0;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &listener_token;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0) die("epoll_ctl");
  ev.data.ptr = &signal_token;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) != 0) die("epoll_ctl");

  std::unordered_map<Connection*, std::unique_ptr<Connection>> connections;
  std::printf("grpc_backend: listening on port %u\n", port);
  std::fflush(stdout);

  auto watch = [&](Connection* c, int op) {
    epoll_event e{};
    e.events = EPOLLIN | (c->wantsWrite() ? EPOLLOUT : 0u);
    e.data.ptr = c;
    return epoll_ctl(ep, op, c->fd(), &e) == 0;
  };

  bool running = true;
  epoll_event events[kMaxEvents];
  while (running) {
    const int n = epoll_wait(ep, events, kMaxEvents, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      void* tag = events[i].data.ptr;
      if (tag == &signal_token) {
        signalfd_siginfo info{};
        while (read(sfd, &info, sizeof(info)) == sizeof(info)) {
          if (info.ssi_signo == SIGUSR1) {
            printCalls();
          } else {
            running = false;
          }
        }
        continue;
      }
      if (tag == &listener_token) {
        for (int k = 0; k < 64; ++k) {
          const int cfd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (cfd < 0) break;
          const int one = 1;
          setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
          auto conn = std::make_unique<Connection>(cfd);
          Connection* c = conn.get();
          if (!c->flush() || !watch(c, EPOLL_CTL_ADD)) continue;  // unique_ptr closes it
          connections.emplace(c, std::move(conn));
        }
        continue;
      }
      auto* c = static_cast<Connection*>(tag);
      const bool had_output = c->wantsWrite();
      bool keep = true;
      if (events[i].events & (EPOLLERR | EPOLLHUP)) keep = false;
      if (keep && (events[i].events & EPOLLOUT)) keep = c->flush();
      if (keep && (events[i].events & EPOLLIN)) keep = c->onReadable();
      if (keep && had_output != c->wantsWrite()) keep = watch(c, EPOLL_CTL_MOD);
      if (!keep) connections.erase(c);  // after its last use in this batch
    }
  }
  connections.clear();
  printCalls();
  return 0;
}
