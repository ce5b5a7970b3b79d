#include "h2/session.h"

#include <fmt/core.h>

#include <utility>

namespace spindle::h2 {

Settings downstreamSettings() { return Settings{}; }

Settings upstreamSettings() {
  Settings settings;
  settings.stream_window = 1024 * 1024;
  settings.connection_window = 8 * 1024 * 1024;
  return settings;
}

// The C callbacks: captureless, noexcept, forwarding to the Session and its Listener.
struct Callbacks {
  static Session& self(void* user_data) { return *static_cast<Session*>(user_data); }

  static int onBeginHeaders(nghttp2_session*, const nghttp2_frame* frame,
                            void* user_data) noexcept {
    Session& s = self(user_data);
    s.pending_headers_.clear();
    s.pending_stream_ = frame->hd.stream_id;
    s.pending_too_large_ = false;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST &&
        !s.listener_.onStreamBegin(frame->hd.stream_id)) {
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets the stream
    }
    return 0;
  }

  static int onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t name_length, const uint8_t* value, size_t value_length,
                      uint8_t /*flags*/, void* user_data) noexcept {
    Session& s = self(user_data);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    const size_t size = name_length + value_length + 32;
    // nghttp2 1.52 does not enforce a header list limit on what it receives: past the hard
    // cap or the field count, the stream is reset rather than the block kept growing.
    if (s.pending_headers_.listSize() + size > s.settings_.max_header_list_hard ||
        s.pending_headers_.count() >= s.settings_.max_header_count) {
      s.pending_too_large_ = true;
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    s.pending_headers_.add(
        std::string_view(reinterpret_cast<const char*>(name), name_length),
        std::string_view(reinterpret_cast<const char*>(value), value_length));
    return 0;
  }

  static int onFrameRecv(nghttp2_session*, const nghttp2_frame* frame,
                         void* user_data) noexcept {
    Session& s = self(user_data);
    const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS: {
        if (s.pending_too_large_ || frame->hd.stream_id != s.pending_stream_) return 0;
        HeadersKind kind = HeadersKind::kTrailers;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
          kind = HeadersKind::kRequest;
        } else if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE ||
                   !s.pending_headers_.find(":status").empty()) {
          // After a 1xx, nghttp2 files the next response under NGHTTP2_HCAT_HEADERS; it is
          // still a response (trailers cannot carry pseudo-headers: nghttp2 rejects them).
          // Informational (1xx) responses are not passed on: gRPC has none to pass.
          const std::string_view status = s.pending_headers_.find(":status");
          if (!status.empty() && status[0] == '1') return 0;
          kind = HeadersKind::kResponse;
        }
        s.listener_.onHeaders(frame->hd.stream_id, kind, std::move(s.pending_headers_),
                              end_stream);
        s.pending_headers_.clear();
        return 0;
      }
      case NGHTTP2_DATA:
        if (end_stream) s.listener_.onEndOfData(frame->hd.stream_id);
        return 0;
      case NGHTTP2_GOAWAY:
        s.goaway_last_stream_id_ = frame->goaway.last_stream_id;
        s.listener_.onGoaway(frame->goaway.last_stream_id, frame->goaway.error_code);
        return 0;
      case NGHTTP2_PING:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) != 0) s.listener_.onPingAck();
        return 0;
      case NGHTTP2_SETTINGS:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) == 0) s.listener_.onRemoteSettings();
        return 0;
      default:
        return 0;
    }
  }

  static int onDataChunk(nghttp2_session*, uint8_t /*flags*/, int32_t stream_id,
                         const uint8_t* data, size_t length, void* user_data) noexcept {
    self(user_data).listener_.onData(stream_id, data, length);
    return 0;
  }

  // Never fails: a fatal error here would take the whole connection down for one stream.
  static int onStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code,
                           void* user_data) noexcept {
    self(user_data).listener_.onStreamClose(stream_id, error_code);
    return 0;
  }

  static ssize_t readBody(nghttp2_session*, int32_t stream_id, uint8_t* buffer, size_t length,
                          uint32_t* data_flags, nghttp2_data_source*, void* user_data) noexcept {
    Session& s = self(user_data);
    bool end = false;
    bool trailers_follow = false;
    const size_t n = s.listener_.readBody(stream_id, buffer, length, &end, &trailers_follow);
    if (end) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      if (trailers_follow) *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      return static_cast<ssize_t>(n);
    }
    if (n == 0) return NGHTTP2_ERR_DEFERRED;
    return static_cast<ssize_t>(n);
  }

  static const nghttp2_session_callbacks* table() {
    static nghttp2_session_callbacks* callbacks = [] {
      nghttp2_session_callbacks* cb = nullptr;
      nghttp2_session_callbacks_new(&cb);
      nghttp2_session_callbacks_set_on_begin_headers_callback(cb, onBeginHeaders);
      nghttp2_session_callbacks_set_on_header_callback(cb, onHeader);
      nghttp2_session_callbacks_set_on_frame_recv_callback(cb, onFrameRecv);
      nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, onDataChunk);
      nghttp2_session_callbacks_set_on_stream_close_callback(cb, onStreamClose);
      return cb;
    }();
    return callbacks;
  }

  static nghttp2_option* options(Role role, const Settings& settings) {
    nghttp2_option* option = nullptr;
    nghttp2_option_new(&option);
    // Window is given back only once the other side has taken the bytes.
    nghttp2_option_set_no_auto_window_update(option, 1);
    if (role == Role::kClient) {
      // Until the peer's SETTINGS arrive, assume what a gRPC server usually allows.
      nghttp2_option_set_peer_max_concurrent_streams(option, settings.max_concurrent_streams);
    }
    nghttp2_option_set_max_send_header_block_length(option, settings.max_header_list_hard);
    // gRPC implementations accept metadata values with leading or trailing spaces, which
    // RFC 9113 calls malformed: a transparent proxy passes on what both ends accept.
    nghttp2_option_set_no_rfc9113_leading_and_trailing_ws_validation(option, 1);
    return option;
  }
};

std::unique_ptr<Session> Session::create(Role role, const Settings& settings,
                                         Listener& listener) {
  std::unique_ptr<Session> s(new Session(settings, listener));
  nghttp2_option* option = Callbacks::options(role, settings);
  int rc = role == Role::kServer
               ? nghttp2_session_server_new2(&s->session_, Callbacks::table(), s.get(), option)
               : nghttp2_session_client_new2(&s->session_, Callbacks::table(), s.get(), option);
  nghttp2_option_del(option);
  if (rc != 0) return nullptr;

  nghttp2_settings_entry entries[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, settings.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, settings.stream_window},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, settings.max_header_list_advertised},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      // RFC 9218: no RFC 7540 priority tree to build, nor to abuse.
      {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
  };
  // A server must not send ENABLE_PUSH: leave it out there.
  const size_t count = sizeof(entries) / sizeof(entries[0]);
  nghttp2_settings_entry server_entries[count - 1] = {entries[0], entries[1], entries[2],
                                                      entries[4]};
  if (role == Role::kServer) {
    nghttp2_submit_settings(s->session_, NGHTTP2_FLAG_NONE, server_entries, count - 1);
  } else {
    nghttp2_submit_settings(s->session_, NGHTTP2_FLAG_NONE, entries, count);
  }
  nghttp2_session_set_local_window_size(s->session_, NGHTTP2_FLAG_NONE, 0,
                                        static_cast<int32_t>(settings.connection_window));
  return s;
}

Session::~Session() { nghttp2_session_del(session_); }

Status Session::receive(const uint8_t* data, size_t length) {
  const ssize_t rc = nghttp2_session_mem_recv(session_, data, length);
  if (rc < 0) {
    // nghttp2 rejects a bad client preface without queueing the GOAWAY that RFC 9113 3.4
    // asks for (and that our callers flush before closing): queue it here.
    if (rc == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
      nghttp2_session_terminate_session(session_, NGHTTP2_PROTOCOL_ERROR);
    }
    return makeError(nghttp2_strerror(static_cast<int>(rc)));
  }
  return {};
}

void Session::produce(std::string& out, size_t limit) {
  while (out.size() < limit) {
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n <= 0) break;  // nothing to send, or an out-of-memory error we cannot act on
    out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
}

bool Session::wantsToRead() const { return nghttp2_session_want_read(session_) != 0; }
bool Session::wantsToWrite() const { return nghttp2_session_want_write(session_) != 0; }

int32_t Session::submitRequest(const HeaderBlock& headers, bool has_body) {
  nghttp2_data_provider provider{};
  provider.read_callback = Callbacks::readBody;
  const auto& nv = headers.nv();
  return nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(),
                                has_body ? &provider : nullptr, nullptr);
}

int Session::submitResponse(int32_t stream_id, const HeaderBlock& headers, bool has_body) {
  nghttp2_data_provider provider{};
  provider.read_callback = Callbacks::readBody;
  const auto& nv = headers.nv();
  return nghttp2_submit_response(session_, stream_id, nv.data(), nv.size(),
                                 has_body ? &provider : nullptr);
}

int Session::submitTrailers(int32_t stream_id, const HeaderBlock& trailers) {
  const auto& nv = trailers.nv();
  return nghttp2_submit_trailer(session_, stream_id, nv.data(), nv.size());
}

void Session::resetStream(int32_t stream_id, uint32_t error_code) {
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error_code);
}

void Session::resume(int32_t stream_id) { nghttp2_session_resume_data(session_, stream_id); }

void Session::consume(int32_t stream_id, size_t length) {
  if (length == 0) return;
  // A stream that is already closed still counts against the connection window.
  if (nghttp2_session_consume(session_, stream_id, length) != 0) {
    nghttp2_session_consume_connection(session_, length);
  }
}

void Session::goaway(uint32_t error_code, std::string_view reason) {
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), error_code,
                        reinterpret_cast<const uint8_t*>(reason.data()), reason.size());
}

void Session::shutdownNotice() {
  nghttp2_submit_shutdown_notice(session_);
  nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr);
}

uint32_t Session::remoteMaxConcurrentStreams() const {
  return nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}


}  // namespace spindle::h2
