#include "h2_socket.h"

#include <sys/socket.h>

#include <cerrno>

namespace spindle::component {
namespace {
constexpr size_t kReadSize = 64 * 1024;
// Reads per poll: bounded, so that one busy peer cannot keep the proxy's loop from turning.
constexpr int kReadsPerPoll = 16;
// What is pulled from the session before the socket must take some.
constexpr size_t kPendingLimit = 256 * 1024;
}  // namespace

std::vector<nghttp2_nv> nvOf(const Fields& fields) {
  std::vector<nghttp2_nv> nv;
  for (const auto& [name, value] : fields) {
    // nghttp2 copies names and values (no NO_COPY flags) and never writes through them.
    nv.push_back(nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                            reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())),
                            name.size(), value.size(), NGHTTP2_NV_FLAG_NONE});
  }
  return nv;
}

std::string_view find(const Fields& fields, std::string_view name) {
  for (const auto& [field, value] : fields) {
    if (field == name) return value;
  }
  return {};
}

std::string grpcFrame(std::string_view message) {
  const auto length = static_cast<uint32_t>(message.size());
  std::string frame = {'\0', static_cast<char>(length >> 24), static_cast<char>(length >> 16),
                       static_cast<char>(length >> 8), static_cast<char>(length)};
  frame += message;
  return frame;
}

std::string grpcMessage(std::string_view body) {
  if (body.size() < 5) return {};
  const uint32_t length = (uint32_t{static_cast<uint8_t>(body[1])} << 24) |
                          (uint32_t{static_cast<uint8_t>(body[2])} << 16) |
                          (uint32_t{static_cast<uint8_t>(body[3])} << 8) |
                          uint32_t{static_cast<uint8_t>(body[4])};
  return std::string(body.substr(5, length));
}

std::string patterned(size_t size) {
  // A counter in every 8 bytes: a chunk lost or repeated shifts every counter after it.
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) {
    out[i] = static_cast<char>((i % 8 == 0) ? 'a' + (i / 8) % 26 : '0' + i % 8);
  }
  return out;
}

H2Socket::H2Socket(Fd fd, nghttp2_session* session) : fd_(std::move(fd)), session_(session) {}

H2Socket::~H2Socket() { nghttp2_session_del(session_); }

void H2Socket::poll() {
  if (!fd_.valid()) return;
  static thread_local uint8_t buffer[kReadSize];
  for (int i = 0; reading_ && i < kReadsPerPoll; ++i) {
    const ssize_t n = ::recv(fd_.get(), buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n > 0) {
      if (nghttp2_session_mem_recv(session_, buffer, static_cast<size_t>(n)) < 0) {
        close();
        return;
      }
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
    close();  // the peer closed, or reset
    return;
  }
  write();
  // Done both ways (a GOAWAY and no stream left): close, as nghttp2's own programs do.
  if (pending_.empty() && nghttp2_session_want_read(session_) == 0 &&
      nghttp2_session_want_write(session_) == 0) {
    close();
  }
}

void H2Socket::write() {
  for (;;) {
    while (pending_.size() < kPendingLimit) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n <= 0) break;
      pending_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    if (pending_.empty()) return;
    const ssize_t sent =
        ::send(fd_.get(), pending_.data(), pending_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno != EAGAIN && errno != EINTR) close();
      return;
    }
    pending_.erase(0, static_cast<size_t>(sent));
    if (!pending_.empty()) return;  // the socket is full: next poll
  }
}

}  // namespace spindle::component
