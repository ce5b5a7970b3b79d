// The app in the Pod: an HTTP/2 client (nghttp2) on a connection the harness hands to the
// proxy as a redirected one. It starts gRPC-shaped calls and records what came back; like
// a gRPC client it resets a call with CANCEL when the call's deadline passes.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "h2_socket.h"
#include "harness.h"

namespace spindle::component {

struct ClientOptions {
  // Off: PINGs go unanswered (a client that is slow, or gone).
  bool answer_pings = true;
  // Off: the client reads every frame but never sends WINDOW_UPDATE, so the proxy may send
  // it no more than its initial windows (a client that holds its streams open, unread).
  bool grant_window = true;
};

struct CallOptions {
  std::optional<std::chrono::milliseconds> timeout;  // sent as grpc-timeout
  // As a gRPC client does: reset the stream (CANCEL) when the timeout has passed.
  bool reset_at_deadline = true;
};

class TestClient final : public Peer {
 public:
  struct Call {
    Fields headers;   // the response's first block (":status" and all)
    Fields trailers;  // or, for a trailers-only answer, empty and grpc-status in headers
    std::string body;
    bool closed = false;
    uint32_t close_code = 0;       // the stream's error code (RST_STREAM), NGHTTP2_NO_ERROR if none
    bool deadline_passed = false;  // we reset it at its deadline, as gRPC does

    // The grpc-status the app sees: from the trailers, or the trailers-only headers.
    std::string grpcStatus() const;
    std::string grpcMessageHeader() const;
    std::string message() const { return grpcMessage(body); }
  };

  struct Goaway {
    int32_t last_stream_id;
    uint32_t error_code;
  };

  explicit TestClient(ProxyHarness& harness, ClientOptions options = {});
  ~TestClient();

  // A unary call to /echo.Echo/Say with this request message. Returns the stream id.
  int32_t startCall(const std::string& message = "hello", const CallOptions& options = {});
  // Starts a call and runs the proxy until it is closed; the call as it ended.
  const Call& call(const std::string& message = "hello");
  const Call& result(int32_t stream_id) const { return calls_.at(stream_id); }
  bool done(int32_t stream_id) const { return calls_.at(stream_id).closed; }

  void setReading(bool reading) { socket_.setReading(reading); }
  void poll() override;

  bool closed() const { return !socket_.open(); }
  const std::vector<Goaway>& goaways() const { return goaways_; }
  // DATA bytes of requests the session has framed for sending (flow control allowing).
  size_t requestBytesSent() const { return request_bytes_sent_; }
  nghttp2_session* session() const { return socket_.session(); }

 private:
  struct Pending {
    std::string body;
    size_t sent = 0;
    std::optional<std::chrono::steady_clock::time_point> deadline;
  };
  static const nghttp2_session_callbacks* callbacks();
  static nghttp2_session* makeSession(TestClient* self, const ClientOptions& options);

  ProxyHarness& harness_;
  H2Socket socket_;
  std::map<int32_t, Call> calls_;
  std::map<int32_t, Pending> pending_;  // request bodies and deadlines, by stream
  std::vector<Goaway> goaways_;
  size_t request_bytes_sent_ = 0;
};

}  // namespace spindle::component
