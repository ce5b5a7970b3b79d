// What the test client and the test backend share: an nghttp2 session on a non-blocking
// loopback socket, pumped by poll() from the test's thread, and the gRPC message framing.
// The peers use nghttp2 itself, not spindle's h2::Session: they must not share the proxy's
// mistakes.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/fd.h"

namespace spindle::component {

using Fields = std::vector<std::pair<std::string, std::string>>;

// nghttp2_nv entries pointing into `fields` (which must outlive them).
std::vector<nghttp2_nv> nvOf(const Fields& fields);
// The first value of `name` in `fields`, or empty.
std::string_view find(const Fields& fields, std::string_view name);

// A gRPC length-prefixed message (uncompressed), and the payload of the first one in `body`.
std::string grpcFrame(std::string_view message);
std::string grpcMessage(std::string_view body);
// `size` bytes of a pattern that shows a lost, repeated or reordered chunk.
std::string patterned(size_t size);

class H2Socket {
 public:
  // Takes the session (made with the owner as user_data) and the connected socket.
  H2Socket(Fd fd, nghttp2_session* session);
  ~H2Socket();
  H2Socket(const H2Socket&) = delete;
  H2Socket& operator=(const H2Socket&) = delete;

  nghttp2_session* session() const { return session_; }
  // Reads what arrived (unless paused) into the session, then writes what it has. A peer
  // that closed, an error, or a session with nothing left to do closes the socket.
  void poll();
  // A reader that stops reading: the kernel's buffers fill, then HTTP/2 flow control holds
  // the other side.
  void setReading(bool reading) { reading_ = reading; }
  bool open() const { return fd_.valid(); }
  void close() { fd_.reset(); }

 private:
  void write();

  Fd fd_;
  nghttp2_session* session_;
  std::string pending_;  // produced by the session, not yet taken by the socket
  bool reading_ = true;
};

}  // namespace spindle::component
