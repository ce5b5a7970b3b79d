#include "h2/session.h"

#include <fmt/core.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "util/log.h"

namespace spindle::h2 {

Settings downstreamSettings() { return Settings{}; }

std::string_view violationName(Violation violation) {
  // In the order of the enum: these are the metric's label values.
  static constexpr std::string_view kNames[kViolationCount] = {
      "none",           "rapid_reset",         "glitch",         "continuation_flood",
      "settings_flood", "ping_flood",          "window_update_flood", "priority_flood",
      "empty_frames",   "ack_flood",           "header_timeout", "send_timeout",
      "protocol_error",
  };
  return kNames[static_cast<size_t>(violation)];
}

namespace {
// Abuse is answered with ENHANCE_YOUR_CALM; what nghttp2 found malformed, PROTOCOL_ERROR.
uint32_t goawayCode(Violation violation) {
  return violation == Violation::kProtocolError ? NGHTTP2_PROTOCOL_ERROR
                                                : NGHTTP2_ENHANCE_YOUR_CALM;
}

constexpr std::string_view kClientMagic{NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN};
constexpr size_t kFrameHeaderLength = 9;
constexpr uint32_t kMaxWindow = 0x7fffffff;
constexpr uint32_t kLastStreamId = 0x7fffffff;  // a GOAWAY that refuses nothing yet
constexpr size_t kMaxSettingsPerFrame = 32;     // nghttp2_option_set_max_settings, below

uint32_t readU32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

void appendU32(std::string& out, uint32_t v) {
  const char bytes[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                         static_cast<char>(v >> 8), static_cast<char>(v)};
  out.append(bytes, 4);
}

void appendFrameHeader(std::string& out, size_t length, uint8_t type, uint8_t flags,
                       int32_t stream_id) {
  const char bytes[5] = {static_cast<char>(length >> 16), static_cast<char>(length >> 8),
                         static_cast<char>(length), static_cast<char>(type),
                         static_cast<char>(flags)};
  out.append(bytes, 5);
  appendU32(out, static_cast<uint32_t>(stream_id));
}

void appendSettings(std::string& out, const nghttp2_settings_entry* entries, size_t count) {
  appendFrameHeader(out, 6 * count, NGHTTP2_SETTINGS, NGHTTP2_FLAG_NONE, 0);
  for (size_t i = 0; i < count; ++i) {
    out += static_cast<char>(entries[i].settings_id >> 8);
    out += static_cast<char>(entries[i].settings_id);
    appendU32(out, entries[i].value);
  }
}

void appendWindowUpdate(std::string& out, uint32_t increment) {
  appendFrameHeader(out, 4, NGHTTP2_WINDOW_UPDATE, NGHTTP2_FLAG_NONE, 0);
  appendU32(out, increment);
}

// The SETTINGS we send. A server must not send ENABLE_PUSH.
constexpr size_t kMaxLocalSettings = 5;
size_t localSettings(Role role, const Settings& settings, nghttp2_settings_entry* entries) {
  size_t n = 0;
  entries[n++] = {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, settings.max_concurrent_streams};
  entries[n++] = {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, settings.stream_window};
  entries[n++] = {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, settings.max_header_list_advertised};
  if (role == Role::kClient) entries[n++] = {NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
  // RFC 9218: no RFC 7540 priority tree to build, nor to abuse.
  entries[n++] = {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1};
  return n;
}

// What a session sends first, byte for byte as nghttp2 writes it: our SETTINGS, then the
// connection window raised from its initial 65,535.
std::string handshakeFrames(Role role, const Settings& settings) {
  nghttp2_settings_entry entries[kMaxLocalSettings];
  std::string out;
  appendSettings(out, entries, localSettings(role, settings, entries));
  if (settings.connection_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE) {
    appendWindowUpdate(out, settings.connection_window - NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE);
  }
  return out;
}

// A value nghttp2 accepts for a setting it knows (RFC 9113 6.5.2, RFC 8441, RFC 9218).
bool validSetting(uint16_t id, uint32_t value) {
  switch (id) {
    case NGHTTP2_SETTINGS_ENABLE_PUSH:
    case NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL:
    case NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES:
      return value <= 1;
    case NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE:
      return value <= kMaxWindow;
    case NGHTTP2_SETTINGS_MAX_FRAME_SIZE:
      return value >= (1u << 14) && value < (1u << 24);
    default:
      return true;
  }
}
}  // namespace

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
    s.pending_open_ = true;
    s.pending_since_ = EventClock::now();
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      ++s.streams_opened_;
      s.window_updates_.giveBack(2);  // each stream may update its window
      if (!s.listener_.onStreamBegin(frame->hd.stream_id)) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets the stream
      }
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
      s.pending_open_ = false;  // the rest of the block is skipped, not waited for
      s.onGlitch();
      if (s.violation_ != Violation::kNone) return NGHTTP2_ERR_CALLBACK_FAILURE;
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
    if (s.replaying_) return 0;  // taken once already, before the session
    const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    const bool ack = (frame->hd.flags & NGHTTP2_FLAG_ACK) != 0;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS: {
        s.pending_open_ = false;
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
        // Frames that carry nothing cost us work and the peer nothing.
        if (!end_stream && frame->hd.length <= frame->data.padlen &&
            !s.empty_frames_.take(EventClock::now())) {
          return s.giveUpInCallback(Violation::kEmptyFrames);
        }
        if (end_stream) s.listener_.onEndOfData(frame->hd.stream_id);
        return 0;
      case NGHTTP2_RST_STREAM:
        // Rapid Reset: a stream the client resets before we answered cost us a call upstream
        // and the client nothing. Clients cancel too, so only a connection where such resets
        // are many, and most of its streams, is closed.
        if (nghttp2_session_check_server_session(s.session_) != 0 &&
            nghttp2_session_get_stream_user_data(s.session_, frame->hd.stream_id) == nullptr) {
          ++s.premature_resets_;
          if (s.premature_resets_ >= s.settings_.max_premature_resets &&
              s.premature_resets_ * 2 > s.streams_opened_) {
            return s.giveUpInCallback(Violation::kRapidReset);
          }
        }
        return 0;
      case NGHTTP2_WINDOW_UPDATE:
        if (!s.window_updates_.take(EventClock::now())) {
          return s.giveUpInCallback(Violation::kWindowUpdateFlood);
        }
        return 0;
      case NGHTTP2_GOAWAY:
        s.goaway_last_stream_id_ = frame->goaway.last_stream_id;
        s.listener_.onGoaway(frame->goaway.last_stream_id, frame->goaway.error_code);
        return 0;
      case NGHTTP2_PING:
        if (ack) {
          s.listener_.onPingAck();
        } else if (!s.pings_.take(EventClock::now())) {
          return s.giveUpInCallback(Violation::kPingFlood);
        }
        return 0;
      case NGHTTP2_SETTINGS:
        if (!ack) {
          s.remote_settings_seen_ = true;
          if (!s.settings_frames_.take(EventClock::now())) {
            return s.giveUpInCallback(Violation::kSettingsFlood);
          }
          s.listener_.onRemoteSettings();
        }
        return 0;
      default:
        return 0;
    }
  }

  // A frame nghttp2 refused at the stream level (malformed headers, a bad state): the stream
  // is reset, which costs us work; the peer gets a budget of those.
  static int onInvalidFrame(nghttp2_session*, const nghttp2_frame* /*frame*/,
                            int /*lib_error_code*/, void* user_data) noexcept {
    Session& s = self(user_data);
    s.onGlitch();
    return s.violation_ != Violation::kNone ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
  }

  static int onFrameSend(nghttp2_session*, const nghttp2_frame* frame, void* user_data) noexcept {
    Session& s = self(user_data);
    if (frame->hd.type == NGHTTP2_DATA) {
      // Our DATA is what legitimately draws WINDOW_UPDATEs back: up to 10 for each DATA
      // frame (Envoy's max_inbound_window_update_frames_per_data_frame_sent), and the PINGs
      // of clients that measure bandwidth (gRPC's BDP probe).
      s.window_updates_.giveBack(10);
      s.pings_.giveBack(1);
    } else if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR &&
               s.violation_ == Violation::kNone) {
      // nghttp2 closed the connection on its own (a connection error in the peer's frames).
      s.violation_ = Violation::kProtocolError;
    }
    return 0;
  }

  // PRIORITY frames never reach onFrameRecv: RFC 7540 priorities are off
  // (SETTINGS_NO_RFC7540_PRIORITIES) and nghttp2 skips them. Each still costs a read.
  static int onBeginFrame(nghttp2_session*, const nghttp2_frame_hd* hd, void* user_data) noexcept {
    Session& s = self(user_data);
    if (s.replaying_) return 0;
    if (hd->type == NGHTTP2_PRIORITY && !s.priorities_.take(EventClock::now())) {
      return s.giveUpInCallback(Violation::kPriorityFlood);
    }
    return 0;
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

  // Why nghttp2 closed a connection, when it says (for the debug log).
  static int onError(nghttp2_session*, int lib_error_code, const char* message, size_t length,
                     void*) noexcept {
    log::debug("HTTP/2: {} ({})", std::string_view(message, length),
               nghttp2_strerror(lib_error_code));
    return 0;
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
      nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, onInvalidFrame);
      nghttp2_session_callbacks_set_on_frame_send_callback(cb, onFrameSend);
      nghttp2_session_callbacks_set_on_begin_frame_callback(cb, onBeginFrame);
      nghttp2_session_callbacks_set_error_callback2(cb, onError);
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
    // nghttp2's own floods checks: a header block in at most 8 CONTINUATIONs, 32 entries per
    // SETTINGS, and (server) a RST_STREAM bucket of 1000 refilled at 33/s under our
    // premature-reset rule. nghttp2 queues a PING or SETTINGS ACK before our budget sees the
    // frame, so its cap on ACKs owed sits above what both budgets let through in one read:
    // a flood is then named by its kind, and only a peer that does not read its ACKs, over
    // several reads, hits the ACK cap.
    nghttp2_option_set_max_continuations(option, 8);
    nghttp2_option_set_max_outbound_ack(option,
                                        2 * static_cast<size_t>(settings.max_control_frames) + 1);
    nghttp2_option_set_max_settings(option, 32);
    nghttp2_option_set_stream_reset_rate_limit(option, 1000, 33);
    return option;
  }

  // A session with our SETTINGS and connection window queued; nullptr when out of memory.
  static nghttp2_session* make(Role role, const Settings& settings, Session* owner) {
    nghttp2_session* session = nullptr;
    nghttp2_option* option = options(role, settings);
    const int rc = role == Role::kServer
                       ? nghttp2_session_server_new2(&session, table(), owner, option)
                       : nghttp2_session_client_new2(&session, table(), owner, option);
    nghttp2_option_del(option);
    if (rc != 0) return nullptr;
    nghttp2_settings_entry entries[kMaxLocalSettings];
    nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, entries,
                            localSettings(role, settings, entries));
    nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0,
                                          static_cast<int32_t>(settings.connection_window));
    return session;
  }
};

std::unique_ptr<Session> Session::create(Role role, const Settings& settings,
                                         Listener& listener) {
  std::unique_ptr<Session> s(new Session(settings, listener));
  if (role == Role::kServer) {
    s->early_out_ = handshakeFrames(role, settings);  // the session comes later
    return s;
  }
  s->session_ = Callbacks::make(role, settings, s.get());
  if (s->session_ == nullptr) return nullptr;
  return s;
}

Session::~Session() { nghttp2_session_del(session_); }

bool Session::Budget::take(Clock::time_point now) {
  const double seconds = std::chrono::duration<double>(now - last_).count();
  last_ = now;
  tokens_ = static_cast<float>(std::min<double>(burst_, tokens_ + seconds * burst_ / 10));
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

void Session::giveUp(Violation violation, uint32_t error_code) {
  if (violation_ != Violation::kNone) return;
  violation_ = violation;
  if (session_ == nullptr) {
    queueEarlyGoaway(0, error_code, {});
  } else {
    nghttp2_session_terminate_session(session_, error_code);
  }
}

Status Session::errorStatus() const { return makeError(std::string(violationName(violation_))); }

int Session::giveUpInCallback(Violation violation) {
  giveUp(violation, goawayCode(violation));
  return NGHTTP2_ERR_CALLBACK_FAILURE;  // stop reading: the connection is done
}

void Session::onGlitch() {
  if (!glitches_.take(EventClock::now())) {
    giveUp(Violation::kGlitch, goawayCode(Violation::kGlitch));
  }
}

void Session::fail(Violation violation) { giveUp(violation, goawayCode(violation)); }

bool Session::headersOverdue(Clock::time_point now, std::chrono::nanoseconds timeout) const {
  if (!remote_settings_seen_ && now - created_ > timeout) return true;
  return pending_open_ && now - pending_since_ > timeout;
}

Status Session::receive(const uint8_t* data, size_t length) {
  if (session_ == nullptr) {
    size_t used = 0;
    if (Status status = receiveEarly(data, length, &used); !status) return status;
    // Nothing begins after our final GOAWAY (a PING's ACK can bring it, mid-read).
    if (used == length || early_final_goaway_) return {};
    if (Status status = startSession(); !status) return status;
    data += used;
    length -= used;
  }
  const ssize_t rc = nghttp2_session_mem_recv(session_, data, length);
  if (rc < 0) {
    // nghttp2 rejects some peers without queueing a GOAWAY (a bad client preface, which RFC
    // 9113 3.4 answers with one, and its flood checks): queue it here, for our callers flush
    // before closing. A violation of our own rules queued its GOAWAY already.
    Violation violation = Violation::kProtocolError;
    if (rc == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS) violation = Violation::kContinuationFlood;
    if (rc == NGHTTP2_ERR_FLOODED) violation = Violation::kAckFlood;
    if (rc == NGHTTP2_ERR_TOO_MANY_SETTINGS) violation = Violation::kSettingsFlood;
    giveUp(violation, goawayCode(violation));
    if (violation_ != Violation::kProtocolError) return errorStatus();
    return makeError(nghttp2_strerror(static_cast<int>(rc)));
  }
  return {};
}

void Session::produce(std::string& out, size_t limit) {
  if (!early_out_.empty()) {
    out += early_out_;
    std::string().swap(early_out_);  // an idle connection keeps no buffer
    early_acks_owed_ = 0;
  }
  if (session_ == nullptr) return;
  while (out.size() < limit) {
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n <= 0) break;  // nothing to send, or an out-of-memory error we cannot act on
    out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
}

bool Session::wantsToRead() const {
  if (session_ == nullptr) return !early_final_goaway_;
  return nghttp2_session_want_read(session_) != 0;
}

bool Session::wantsToWrite() const {
  return !early_out_.empty() || (session_ != nullptr && nghttp2_session_want_write(session_) != 0);
}

int32_t Session::submitRequest(const HeaderBlock& headers, bool has_body) {
  nghttp2_data_provider provider{};
  provider.read_callback = Callbacks::readBody;
  const auto& nv = headers.nv();
  return nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(),
                                has_body ? &provider : nullptr, nullptr);
}

int Session::submitResponse(int32_t stream_id, const HeaderBlock& headers, bool has_body) {
  if (session_ == nullptr) return NGHTTP2_ERR_INVALID_STATE;
  nghttp2_data_provider provider{};
  provider.read_callback = Callbacks::readBody;
  const auto& nv = headers.nv();
  // Marks the stream answered: a reset from now on is not premature.
  nghttp2_session_set_stream_user_data(session_, stream_id, this);
  return nghttp2_submit_response(session_, stream_id, nv.data(), nv.size(),
                                 has_body ? &provider : nullptr);
}

int Session::submitTrailers(int32_t stream_id, const HeaderBlock& trailers) {
  if (session_ == nullptr) return NGHTTP2_ERR_INVALID_STATE;
  const auto& nv = trailers.nv();
  return nghttp2_submit_trailer(session_, stream_id, nv.data(), nv.size());
}

// Streams exist only once the session does: the methods below that name one check for it
// only so that a caller's mistake is a no-op rather than a crash.
void Session::resetStream(int32_t stream_id, uint32_t error_code) {
  if (session_ == nullptr) return;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error_code);
}

void Session::resume(int32_t stream_id) {
  if (session_ != nullptr) nghttp2_session_resume_data(session_, stream_id);
}

void Session::consume(int32_t stream_id, size_t length) {
  if (length == 0 || session_ == nullptr) return;
  // A stream that is already closed still counts against the connection window.
  if (nghttp2_session_consume(session_, stream_id, length) != 0) {
    nghttp2_session_consume_connection(session_, length);
  }
}

void Session::goaway(uint32_t error_code, std::string_view reason) {
  if (session_ == nullptr) {
    queueEarlyGoaway(0, error_code, reason);
    return;
  }
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), error_code,
                        reinterpret_cast<const uint8_t*>(reason.data()), reason.size());
}

void Session::shutdownNotice() {
  if (session_ == nullptr) {
    queueEarlyGoaway(kLastStreamId, NGHTTP2_NO_ERROR, {});
    appendFrameHeader(early_out_, 8, NGHTTP2_PING, NGHTTP2_FLAG_NONE, 0);
    early_out_.append(8, '\0');
    return;
  }
  nghttp2_submit_shutdown_notice(session_);
  nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr);
}

uint32_t Session::remoteMaxConcurrentStreams() const {
  if (session_ == nullptr) return 0;
  return nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}


// --- A server before its nghttp2 session ----------------------------------------------------

Status Session::receiveEarly(const uint8_t* data, size_t length, size_t* used) {
  *used = 0;
  if (violation_ != Violation::kNone) return errorStatus();
  if (early_final_goaway_) {
    *used = length;  // no stream can begin after our final GOAWAY: nothing to read
    return {};
  }
  size_t at = 0;
  if (!early_preface_seen_) {
    // A preface split across reads, or a wrong one: nghttp2 waits for it or refuses it.
    if (length < kClientMagic.size() ||
        std::memcmp(data, kClientMagic.data(), kClientMagic.size()) != 0) {
      return {};
    }
    early_preface_seen_ = true;
    at = kClientMagic.size();
    *used = at;
  }
  // Whole frames only: one split across reads goes to the session, which reassembles it.
  while (length - at >= kFrameHeaderLength) {
    const uint8_t* frame = data + at;
    const size_t frame_length =
        (size_t{frame[0]} << 16) | (size_t{frame[1]} << 8) | size_t{frame[2]};
    if (length - at - kFrameHeaderLength < frame_length) return {};
    const auto stream_id = static_cast<int32_t>(readU32(frame + 5) & 0x7fffffff);
    switch (takeEarlyFrame(frame[3], frame[4], stream_id, frame + kFrameHeaderLength,
                           frame_length)) {
      case EarlyFrame::kTaken:
        at += kFrameHeaderLength + frame_length;
        *used = at;
        break;
      case EarlyFrame::kNeedsSession:
        return {};
      case EarlyFrame::kViolation:
        *used = length;
        return errorStatus();
    }
  }
  return {};
}

Session::EarlyFrame Session::takeEarlyFrame(uint8_t type, uint8_t flags, int32_t stream_id,
                                            const uint8_t* payload, size_t length) {
  const bool ack = (flags & NGHTTP2_FLAG_ACK) != 0;
  // The first frame must be a SETTINGS (RFC 9113 3.4): nghttp2 refuses anything else.
  if (stream_id != 0 || (!remote_settings_seen_ && (type != NGHTTP2_SETTINGS || ack))) {
    return EarlyFrame::kNeedsSession;
  }
  switch (type) {
    case NGHTTP2_SETTINGS:
      if (!ack) return takeEarlySettings(payload, length);
      if (length != 0 || early_settings_acked_) return EarlyFrame::kNeedsSession;
      early_settings_acked_ = true;
      return EarlyFrame::kTaken;
    case NGHTTP2_PING:
      if (length != 8) return EarlyFrame::kNeedsSession;
      if (ack) {
        listener_.onPingAck();
        return EarlyFrame::kTaken;
      }
      if (!pings_.take(EventClock::now())) {
        giveUp(Violation::kPingFlood, goawayCode(Violation::kPingFlood));
        return EarlyFrame::kViolation;
      }
      appendFrameHeader(early_out_, 8, NGHTTP2_PING, NGHTTP2_FLAG_ACK, 0);
      early_out_.append(reinterpret_cast<const char*>(payload), 8);
      queueEarlyAck();
      return violation_ == Violation::kNone ? EarlyFrame::kTaken : EarlyFrame::kViolation;
    case NGHTTP2_WINDOW_UPDATE: {
      if (length != 4) return EarlyFrame::kNeedsSession;
      // A zero increment, or a window past 2^31-1, is an error nghttp2 answers.
      const uint32_t increment = readU32(payload) & kMaxWindow;
      if (increment == 0 || increment > kMaxWindow - NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE -
                                             early_window_increment_) {
        return EarlyFrame::kNeedsSession;
      }
      if (!window_updates_.take(EventClock::now())) {
        giveUp(Violation::kWindowUpdateFlood, goawayCode(Violation::kWindowUpdateFlood));
        return EarlyFrame::kViolation;
      }
      early_window_increment_ += increment;
      return EarlyFrame::kTaken;
    }
    default:
      return EarlyFrame::kNeedsSession;
  }
}

Session::EarlyFrame Session::takeEarlySettings(const uint8_t* payload, size_t length) {
  if (length % 6 != 0 || length / 6 > kMaxSettingsPerFrame) return EarlyFrame::kNeedsSession;
  // Checked whole before anything is applied: a frame is taken, or left to the session.
  std::array<uint32_t, kKnownSettings> values = early_settings_;
  uint16_t set = early_settings_set_;
  for (size_t at = 0; at < length; at += 6) {
    const auto id = static_cast<uint16_t>((payload[at] << 8) | payload[at + 1]);
    const uint32_t value = readU32(payload + at + 2);
    if (id == 0 || id >= kKnownSettings) continue;  // unknown: ignored (RFC 9113 6.5.2)
    // A changed value can mean more than its new value (a smaller HPACK table must be
    // signalled; some may not change at all): nghttp2 knows.
    if (!validSetting(id, value) || (((set >> id) & 1) != 0 && values[id] != value)) {
      return EarlyFrame::kNeedsSession;
    }
    values[id] = value;
    set = static_cast<uint16_t>(set | (1u << id));
  }
  if (!settings_frames_.take(EventClock::now())) {
    giveUp(Violation::kSettingsFlood, goawayCode(Violation::kSettingsFlood));
    return EarlyFrame::kViolation;
  }
  early_settings_ = values;
  early_settings_set_ = set;
  remote_settings_seen_ = true;
  listener_.onRemoteSettings();
  appendFrameHeader(early_out_, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0);
  queueEarlyAck();
  return violation_ == Violation::kNone ? EarlyFrame::kTaken : EarlyFrame::kViolation;
}

void Session::queueEarlyAck() {
  // nghttp2's cap on ACKs owed to a peer that does not read them (see options()).
  if (++early_acks_owed_ > 2 * static_cast<size_t>(settings_.max_control_frames) + 1) {
    giveUp(Violation::kAckFlood, goawayCode(Violation::kAckFlood));
  }
}

void Session::queueEarlyGoaway(int32_t last_stream_id, uint32_t error_code,
                               std::string_view reason) {
  if (early_final_goaway_) return;
  appendFrameHeader(early_out_, 8 + reason.size(), NGHTTP2_GOAWAY, NGHTTP2_FLAG_NONE, 0);
  appendU32(early_out_, static_cast<uint32_t>(last_stream_id));
  appendU32(early_out_, error_code);
  early_out_.append(reason);
  early_final_goaway_ = last_stream_id != kLastStreamId;
}

Status Session::startSession() {
  session_ = Callbacks::make(Role::kServer, settings_, this);
  // What the new session queued first, we sent already: it must be what we wrote.
  std::string queued;
  if (session_ != nullptr) {
    const uint8_t* bytes = nullptr;
    for (ssize_t n; (n = nghttp2_session_mem_send(session_, &bytes)) > 0;) {
      queued.append(reinterpret_cast<const char*>(bytes), static_cast<size_t>(n));
    }
  }
  // Then it learns, in one go, what the peer sent so far.
  std::string agreed;
  if (early_preface_seen_) agreed = kClientMagic;
  if (remote_settings_seen_) {
    nghttp2_settings_entry entries[kKnownSettings];
    size_t count = 0;
    for (uint16_t id = 1; id < kKnownSettings; ++id) {
      if (((early_settings_set_ >> id) & 1) != 0) entries[count++] = {id, early_settings_[id]};
    }
    appendSettings(agreed, entries, count);
  }
  if (early_settings_acked_) appendFrameHeader(agreed, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0);
  if (early_window_increment_ > 0) appendWindowUpdate(agreed, early_window_increment_);
  bool ok = session_ != nullptr && queued == handshakeFrames(Role::kServer, settings_);
  if (ok) {
    replaying_ = true;
    const ssize_t rc = nghttp2_session_mem_recv(
        session_, reinterpret_cast<const uint8_t*>(agreed.data()), agreed.size());
    replaying_ = false;
    ok = rc == static_cast<ssize_t>(agreed.size());
    // Its answers (the ACK of those SETTINGS) were sent already too.
    const uint8_t* bytes = nullptr;
    while (nghttp2_session_mem_send(session_, &bytes) > 0) {
    }
  }
  if (ok) return {};
  // Only a bug of ours or an allocation failure gets here: not the peer's fault.
  nghttp2_session_del(session_);
  session_ = nullptr;
  queueEarlyGoaway(0, NGHTTP2_INTERNAL_ERROR, {});
  return makeError("could not start the HTTP/2 session");
}

}  // namespace spindle::h2
