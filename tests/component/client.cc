#include "client.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace spindle::component {

std::string TestClient::Call::grpcStatus() const {
  const std::string_view status = find(trailers, "grpc-status");
  return std::string(status.empty() ? find(headers, "grpc-status") : status);
}

std::string TestClient::Call::grpcMessageHeader() const {
  const std::string_view message = find(trailers, "grpc-message");
  return std::string(message.empty() ? find(headers, "grpc-message") : message);
}

const nghttp2_session_callbacks* TestClient::callbacks() {
  static nghttp2_session_callbacks* table = [] {
    nghttp2_session_callbacks* cb = nullptr;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(
        cb,
        [](nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t name_length,
           const uint8_t* value, size_t value_length, uint8_t, void* user_data) -> int {
          auto& self = *static_cast<TestClient*>(user_data);
          auto it = self.calls_.find(frame->hd.stream_id);
          if (it == self.calls_.end()) return 0;
          // The first block is the response; a later one (after headers) the trailers.
          Call& call = it->second;
          Fields& block =
              frame->headers.cat == NGHTTP2_HCAT_RESPONSE ? call.headers : call.trailers;
          block.emplace_back(std::string(reinterpret_cast<const char*>(name), name_length),
                             std::string(reinterpret_cast<const char*>(value), value_length));
          return 0;
        });
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        cb,
        [](nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data, size_t length,
           void* user_data) -> int {
          auto& self = *static_cast<TestClient*>(user_data);
          auto it = self.calls_.find(stream_id);
          if (it != self.calls_.end()) {
            it->second.body.append(reinterpret_cast<const char*>(data), length);
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_frame_recv_callback(
        cb, [](nghttp2_session*, const nghttp2_frame* frame, void* user_data) -> int {
          auto& self = *static_cast<TestClient*>(user_data);
          if (frame->hd.type == NGHTTP2_GOAWAY) {
            self.goaways_.push_back(Goaway{frame->goaway.last_stream_id, frame->goaway.error_code});
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_stream_close_callback(
        cb, [](nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user_data) -> int {
          auto& self = *static_cast<TestClient*>(user_data);
          auto it = self.calls_.find(stream_id);
          if (it != self.calls_.end()) {
            it->second.closed = true;
            it->second.close_code = error_code;
          }
          self.pending_.erase(stream_id);
          return 0;
        });
    return cb;
  }();
  return table;
}

nghttp2_session* TestClient::makeSession(TestClient* self, const ClientOptions& options) {
  nghttp2_option* option = nullptr;
  nghttp2_option_new(&option);
  if (!options.answer_pings) nghttp2_option_set_no_auto_ping_ack(option, 1);
  // nghttp2 gives window back only when told to (nghttp2_session_consume): never, here.
  if (!options.grant_window) nghttp2_option_set_no_auto_window_update(option, 1);
  nghttp2_session* session = nullptr;
  nghttp2_session_client_new2(&session, callbacks(), self, option);
  nghttp2_option_del(option);
  // The defaults: a 65,535-byte window per stream and for the connection, as gRPC starts.
  nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, nullptr, 0);
  return session;
}

TestClient::TestClient(ProxyHarness& harness, ClientOptions options)
    : harness_(harness), socket_(harness.dialProxy(), makeSession(this, options)) {
  harness_.addPeer(this);
}

TestClient::~TestClient() { harness_.removePeer(this); }

int32_t TestClient::startCall(const std::string& message, const CallOptions& options) {
  Fields headers = {{":method", "POST"},
                    {":scheme", "http"},
                    {":path", "/echo.Echo/Say"},
                    {":authority", "echo.test:50051"},
                    {"content-type", "application/grpc"},
                    {"te", "trailers"}};
  if (options.timeout) {
    headers.emplace_back("grpc-timeout", std::to_string(options.timeout->count()) + "m");
  }
  const auto nv = nvOf(headers);
  nghttp2_data_provider provider{};
  provider.read_callback = [](nghttp2_session*, int32_t id, uint8_t* buffer, size_t length,
                              uint32_t* flags, nghttp2_data_source*, void* user_data) -> ssize_t {
    auto& self = *static_cast<TestClient*>(user_data);
    Pending& pending = self.pending_.at(id);
    const size_t n = std::min(length, pending.body.size() - pending.sent);
    std::copy_n(pending.body.data() + pending.sent, n, buffer);
    pending.sent += n;
    self.request_bytes_sent_ += n;
    if (pending.sent == pending.body.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  };
  const int32_t id =
      nghttp2_submit_request(session(), nullptr, nv.data(), nv.size(), &provider, nullptr);
  EXPECT_GT(id, 0) << nghttp2_strerror(id);
  calls_[id] = Call{};
  Pending& pending = pending_[id];
  pending.body = grpcFrame(message);
  if (options.timeout && options.reset_at_deadline) {
    pending.deadline = std::chrono::steady_clock::now() + *options.timeout;
  }
  socket_.poll();  // out now, not at the next turn
  return id;
}

const TestClient::Call& TestClient::call(const std::string& message) {
  const int32_t id = startCall(message);
  EXPECT_TRUE(harness_.runUntil([&] { return done(id); })) << "call " << id << " never ended";
  return result(id);
}

void TestClient::poll() {
  const auto now = std::chrono::steady_clock::now();
  for (auto& [id, pending] : pending_) {
    if (pending.deadline && *pending.deadline <= now) {
      pending.deadline.reset();
      calls_[id].deadline_passed = true;
      nghttp2_submit_rst_stream(session(), NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    }
  }
  socket_.poll();
}

}  // namespace spindle::component
