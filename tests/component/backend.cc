#include "backend.h"

#include <sys/socket.h>

#include <algorithm>
#include <map>
#include <optional>

#include "proxy/grpc_timeout.h"

namespace spindle::component {

struct Backend::Stream {
  Fields headers;
  std::string body;
  bool held = false;
  std::optional<std::chrono::steady_clock::time_point> deadline;  // when honoured
  std::string response;                                           // the DATA to send, gRPC-framed
  size_t response_sent = 0;
};

class Backend::Connection {
 public:
  Connection(Backend& backend, Fd fd, size_t index);

  void poll() { socket_.poll(); }
  bool open() const { return socket_.open(); }
  void setReading(bool reading) { socket_.setReading(reading); }
  void close() { socket_.close(); }
  nghttp2_session* session() const { return socket_.session(); }
  Backend& backend() { return backend_; }
  ConnectionLog& log() { return backend_.logs_[index_]; }
  size_t index() const { return index_; }
  std::map<int32_t, Stream>& streams() { return streams_; }

 private:
  static const nghttp2_session_callbacks* callbacks();
  static nghttp2_session* makeSession(Connection* self);
  static Connection& self(void* user_data) { return *static_cast<Connection*>(user_data); }
  Stream* streamOf(int32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : &it->second;
  }

  Backend& backend_;
  size_t index_;
  std::map<int32_t, Stream> streams_;
  H2Socket socket_;
};

Backend::Connection::Connection(Backend& backend, Fd fd, size_t index)
    : backend_(backend), index_(index), socket_(std::move(fd), makeSession(this)) {}

nghttp2_session* Backend::Connection::makeSession(Connection* self) {
  nghttp2_session* session = nullptr;
  nghttp2_session_server_new(&session, callbacks(), self);
  // nghttp2's defaults otherwise: windows of 65,535 bytes, as a gRPC server starts with.
  const nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
  nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, settings, 1);
  return session;
}

const nghttp2_session_callbacks* Backend::Connection::callbacks() {
  static nghttp2_session_callbacks* table = [] {
    nghttp2_session_callbacks* cb = nullptr;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(
        cb, [](nghttp2_session*, const nghttp2_frame* frame, void* user_data) -> int {
          Connection& c = self(user_data);
          if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            c.streams_[frame->hd.stream_id] = Stream{};
            ++c.log().calls;
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_header_callback(
        cb,
        [](nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t name_length,
           const uint8_t* value, size_t value_length, uint8_t, void* user_data) -> int {
          if (Stream* stream = self(user_data).streamOf(frame->hd.stream_id)) {
            stream->headers.emplace_back(
                std::string(reinterpret_cast<const char*>(name), name_length),
                std::string(reinterpret_cast<const char*>(value), value_length));
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        cb,
        [](nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data, size_t length,
           void* user_data) -> int {
          if (Stream* stream = self(user_data).streamOf(stream_id)) {
            stream->body.append(reinterpret_cast<const char*>(data), length);
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_frame_recv_callback(
        cb, [](nghttp2_session* session, const nghttp2_frame* frame, void* user_data) -> int {
          Connection& c = self(user_data);
          Backend& b = c.backend_;
          const int32_t id = frame->hd.stream_id;
          const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
          switch (frame->hd.type) {
            case NGHTTP2_HEADERS:
              if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) break;
              if (b.reaction_ == Reaction::kRefuse) {
                ++b.refused_;
                nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
                return 0;
              }
              if (b.reaction_ == Reaction::kGoaway) {
                // The stream is above the last one we take: the proxy's nghttp2 closes it as
                // REFUSED_STREAM (RFC 9113 6.8: it was not processed).
                ++b.refused_;
                nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE, std::max(0, id - 2),
                                      NGHTTP2_NO_ERROR, nullptr, 0);
                return 0;
              }
              if (end_stream) b.onRequestEnd(c, id);
              break;
            case NGHTTP2_DATA:
              if (end_stream && c.streamOf(id) != nullptr) b.onRequestEnd(c, id);
              break;
            case NGHTTP2_RST_STREAM:
              b.resets_received_.push_back(frame->rst_stream.error_code);
              break;
            case NGHTTP2_GOAWAY: ++c.log().goaways; break;
            default: break;
          }
          return 0;
        });
    nghttp2_session_callbacks_set_on_stream_close_callback(
        cb, [](nghttp2_session*, int32_t stream_id, uint32_t, void* user_data) -> int {
          self(user_data).streams_.erase(stream_id);
          return 0;
        });
    return cb;
  }();
  return table;
}

Backend::Backend(ProxyHarness& harness, std::string name)
    : harness_(harness), name_(std::move(name)) {
  listener_ = listenLoopback(&address_);
  harness_.addPeer(this);
}

Backend::~Backend() { harness_.removePeer(this); }

void Backend::accept() {
  for (;;) {
    Fd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) return;
    logs_.push_back(ConnectionLog{});
    connections_.push_back(std::make_unique<Connection>(*this, std::move(fd), logs_.size() - 1));
    connections_.back()->setReading(reading_);
  }
}

void Backend::poll() {
  accept();
  const auto now = std::chrono::steady_clock::now();
  for (auto& connection : connections_) {
    for (auto& [id, stream] : connection->streams()) {
      if (stream.held && stream.deadline && *stream.deadline <= now) {
        answer(*connection, id, stream, /*deadline_exceeded=*/true);
      }
    }
    connection->poll();
    if (!connection->open()) connection->log().closed = true;
  }
  std::erase_if(connections_, [](const auto& connection) { return !connection->open(); });
}

void Backend::setReading(bool reading) {
  reading_ = reading;
  for (auto& connection : connections_) connection->setReading(reading);
}

void Backend::closeConnections() {
  for (auto& connection : connections_) {
    connection->close();
    connection->log().closed = true;
  }
  connections_.clear();
}

void Backend::releaseHeld() {
  for (auto& connection : connections_) {
    for (auto& [id, stream] : connection->streams()) {
      if (stream.held) answer(*connection, id, stream, /*deadline_exceeded=*/false);
    }
  }
}

int Backend::calls() const {
  int calls = 0;
  for (const ConnectionLog& log : logs_) calls += log.calls;
  return calls;
}

int Backend::held() const {
  int held = 0;
  for (const auto& connection : connections_) {
    for (const auto& [id, stream] : connection->streams()) held += stream.held ? 1 : 0;
  }
  return held;
}

std::string Backend::lastRequestHeader(std::string_view name) const {
  return std::string(find(last_request_headers_, name));
}

void Backend::onRequestEnd(Connection& connection, int32_t id) {
  Stream& stream = connection.streams()[id];
  last_request_body_ = stream.body;
  last_request_headers_ = stream.headers;
  if (reaction_ == Reaction::kResetProcessed) {
    nghttp2_submit_rst_stream(connection.session(), NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
    return;
  }
  if (reaction_ == Reaction::kCancelWhileDraining || reaction_ == Reaction::kAnswerCancelled) {
    if (reaction_ == Reaction::kCancelWhileDraining) {
      ++refused_;
      nghttp2_submit_shutdown_notice(connection.session());  // sent before the answer
    } else {
      ++answered_;
    }
    const Fields headers = {{":status", "200"},
                            {"content-type", "application/grpc"},
                            {"grpc-status", "1"},
                            {"grpc-message", "CANCELLED"}};
    const auto nv = nvOf(headers);
    nghttp2_submit_response(connection.session(), id, nv.data(), nv.size(), nullptr);
    return;
  }
  if (!holding_) {
    answer(connection, id, stream, /*deadline_exceeded=*/false);
    return;
  }
  stream.held = true;
  if (honour_deadlines_) {
    if (auto timeout = proxy::parseGrpcTimeout(find(stream.headers, "grpc-timeout"))) {
      stream.deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(*timeout);
    }
  }
}

void Backend::answer(Connection& connection, int32_t stream_id, Stream& stream,
                     bool deadline_exceeded) {
  stream.held = false;
  nghttp2_session* session = connection.session();
  if (deadline_exceeded) {
    const Fields headers = {{":status", "200"},
                            {"content-type", "application/grpc"},
                            {"grpc-status", "4"},
                            {"grpc-message", "deadline exceeded"}};
    const auto nv = nvOf(headers);
    nghttp2_submit_response(session, stream_id, nv.data(), nv.size(), nullptr);
    return;
  }
  const std::string message = reply_bytes_ > 0
                                  ? patterned(reply_bytes_)
                                  : name_ + "#" + std::to_string(connection.index() + 1);
  stream.response = grpcFrame(message);
  nghttp2_data_provider provider{};
  provider.read_callback = [](nghttp2_session* s, int32_t id, uint8_t* buffer, size_t length,
                              uint32_t* flags, nghttp2_data_source*, void* user_data) -> ssize_t {
    auto& c = *static_cast<Connection*>(user_data);
    auto it = c.streams().find(id);
    if (it == c.streams().end()) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    Stream& st = it->second;
    const size_t n = std::min(length, st.response.size() - st.response_sent);
    std::copy_n(st.response.data() + st.response_sent, n, buffer);
    st.response_sent += n;
    c.backend().response_bytes_sent_ += n;
    if (st.response_sent == st.response.size()) {
      *flags = NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      const Fields trailers = {{"grpc-status", "0"}};
      const auto nv = nvOf(trailers);
      nghttp2_submit_trailer(s, id, nv.data(), nv.size());
    }
    return static_cast<ssize_t>(n);
  };
  const Fields headers = {{":status", "200"}, {"content-type", "application/grpc"}};
  const auto nv = nvOf(headers);
  nghttp2_submit_response(session, stream_id, nv.data(), nv.size(), &provider);
  ++answered_;
}

}  // namespace spindle::component
