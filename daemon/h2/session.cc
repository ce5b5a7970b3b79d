#include "h2/session.h"

#include <fmt/core.h>

#include <utility>

#include "util/log.h"
#include "util/rate_limit.h"

namespace spindle::h2 {

// An idle server connection is mostly its Session (its nghttp2 session comes with the first
// call): keep it from growing unnoticed.
static_assert(sizeof(Session) <= 384);

Settings downstreamSettings() { return Settings{}; }

std::string_view violationName(Violation violation) {
  // In the order of the enum: these are the metric's label values.
  static constexpr std::string_view kNames[kViolationCount] = {
      "none",
      "rapid_reset",
      "glitch",
      "continuation_flood",
      "settings_flood",
      "ping_flood",
      "window_update_flood",
      "priority_flood",
      "empty_frames",
      "ack_flood",
      "header_timeout",
      "send_timeout",
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
      s.budgets_.window_updates.giveBack(2);  // each stream may update its window
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
    s.pending_headers_.add(std::string_view(reinterpret_cast<const char*>(name), name_length),
                           std::string_view(reinterpret_cast<const char*>(value), value_length));
    return 0;
  }

  static int onFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) noexcept {
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
        s.listener_.onHeaders(frame->hd.stream_id, kind, std::move(s.pending_headers_), end_stream);
        s.pending_headers_.clear();
        return 0;
      }
      case NGHTTP2_DATA:
        // Frames that carry nothing cost us work and the peer nothing.
        if (!end_stream && frame->hd.length <= frame->data.padlen &&
            !s.budgets_.empty_frames.take(EventClock::now())) {
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
        if (!s.budgets_.window_updates.take(EventClock::now())) {
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
        } else if (!s.budgets_.pings.take(EventClock::now())) {
          return s.giveUpInCallback(Violation::kPingFlood);
        }
        return 0;
      case NGHTTP2_SETTINGS:
        if (!ack) {
          s.remote_settings_seen_ = true;
          if (!s.budgets_.settings_frames.take(EventClock::now())) {
            return s.giveUpInCallback(Violation::kSettingsFlood);
          }
          s.listener_.onRemoteSettings();
        }
        return 0;
      default: return 0;
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
      s.budgets_.window_updates.giveBack(10);
      s.budgets_.pings.giveBack(1);
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
    if (hd->type == NGHTTP2_PRIORITY && !s.budgets_.priorities.take(EventClock::now())) {
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

  // nullptr when out of memory.
  static nghttp2_option* options(Role role, const Settings& settings) {
    nghttp2_option* option = nullptr;
    if (nghttp2_option_new(&option) != 0) return nullptr;
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
    nghttp2_option_set_max_outbound_ack(option, maxAcksOwed(settings));
    nghttp2_option_set_max_settings(option, kMaxSettingsPerFrame);
    nghttp2_option_set_stream_reset_rate_limit(option, 1000, 33);
    return option;
  }

  // A session with our SETTINGS and connection window queued, or why nghttp2 could not make
  // one (it is out of memory).
  static Result<nghttp2_session*> make(Role role, Session& owner) {
    nghttp2_option* option = options(role, owner.settings_);
    if (option == nullptr) return failed(NGHTTP2_ERR_NOMEM);
    nghttp2_session* session = nullptr;
    int rc = role == Role::kServer
                 ? nghttp2_session_server_new3(&session, table(), &owner, option, owner.mem_)
                 : nghttp2_session_client_new3(&session, table(), &owner, option, owner.mem_);
    nghttp2_option_del(option);
    if (rc == 0) {
      nghttp2_settings_entry entries[kMaxLocalSettings];
      rc = nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, entries,
                                   localSettings(role, owner.settings_, entries));
    }
    if (rc == 0) {
      rc = nghttp2_session_set_local_window_size(
          session, NGHTTP2_FLAG_NONE, 0, static_cast<int32_t>(owner.settings_.connection_window));
    }
    if (rc == 0) return session;
    nghttp2_session_del(session);
    return failed(rc);
  }

  static Error failed(int rc) {
    return makeError(fmt::format("no HTTP/2 session: {}", nghttp2_strerror(rc)));
  }
};

Result<std::unique_ptr<Session>> Session::create(Role role, const Settings& settings,
                                                 Listener& listener, nghttp2_mem* mem) {
  std::unique_ptr<Session> s(new Session(settings, listener, mem));
  if (role == Role::kServer) {
    s->early_.start(settings);  // the nghttp2 session comes later
    return s;
  }
  Result<nghttp2_session*> session = Callbacks::make(role, *s);
  if (!session) return makeError(session.error());
  s->session_ = *session;
  return s;
}

Session::~Session() { nghttp2_session_del(session_); }

void Session::giveUp(Violation violation, uint32_t error_code) {
  if (violation_ != Violation::kNone) return;
  violation_ = violation;
  if (session_ == nullptr) {
    early_.goaway(error_code);
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
  if (!budgets_.glitches.take(EventClock::now())) {
    giveUp(Violation::kGlitch, goawayCode(Violation::kGlitch));
  }
}

void Session::fail(Violation violation) { giveUp(violation, goawayCode(violation)); }

bool Session::headersOverdue(Clock::time_point now, std::chrono::nanoseconds timeout) const {
  const bool settings_seen = remote_settings_seen_ || early_.settingsReceived();
  if (!settings_seen && now - created_ > timeout) return true;
  return pending_open_ && now - pending_since_ > timeout;
}

Status Session::receive(const uint8_t* data, size_t length) {
  if (session_ == nullptr) {
    if (violation_ != Violation::kNone) return errorStatus();
    const EarlyFrames::Taken taken = early_.receive(data, length, settings_, budgets_, listener_);
    if (taken.violation != Violation::kNone) giveUp(taken.violation, goawayCode(taken.violation));
    if (violation_ != Violation::kNone) return errorStatus();
    // Nothing begins after our final GOAWAY (a PING's ACK can bring it, mid-read).
    if (taken.used == length || early_.finalGoawayQueued()) return {};
    if (Status status = startSession(); !status) return status;
    data += taken.used;
    length -= taken.used;
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
  early_.produce(out);  // sent before anything of the session's
  if (session_ == nullptr) return;
  while (out.size() < limit) {
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n <= 0) break;  // nothing to send, or an out-of-memory error we cannot act on
    out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
}

bool Session::wantsToRead() const {
  if (session_ == nullptr) return !early_.finalGoawayQueued();
  return nghttp2_session_want_read(session_) != 0;
}

bool Session::wantsToWrite() const {
  return early_.wantsToWrite() ||
         (session_ != nullptr && nghttp2_session_want_write(session_) != 0);
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

void Session::consumeConnection(size_t length) {
  if (length == 0 || session_ == nullptr) return;
  nghttp2_session_consume_connection(session_, length);
}

void Session::consumeStream(int32_t stream_id, size_t length) {
  if (length == 0 || session_ == nullptr) return;
  nghttp2_session_consume_stream(session_, stream_id, length);  // a closed stream: nothing
}

void Session::goaway(uint32_t error_code, std::string_view reason) {
  if (session_ == nullptr) {
    early_.goaway(error_code, reason);
    return;
  }
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), error_code,
                        reinterpret_cast<const uint8_t*>(reason.data()), reason.size());
}

void Session::shutdownNotice() {
  if (session_ == nullptr) {
    early_.shutdownNotice();
    return;
  }
  nghttp2_submit_shutdown_notice(session_);
  nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr);
}

uint32_t Session::remoteMaxConcurrentStreams() const {
  if (session_ == nullptr) return 0;
  return nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

Status Session::startSession() {
  Result<nghttp2_session*> made = Callbacks::make(Role::kServer, *this);
  if (made) session_ = *made;
  // What the new session queued first, we sent already: it must be what we wrote.
  std::string queued;
  if (session_ != nullptr) {
    const uint8_t* bytes = nullptr;
    for (ssize_t n; (n = nghttp2_session_mem_send(session_, &bytes)) > 0;) {
      queued.append(reinterpret_cast<const char*>(bytes), static_cast<size_t>(n));
    }
  }
  bool ok = session_ != nullptr && queued == EarlyFrames::handshake(settings_);
  if (ok) {
    // Then it learns, in one go, what the peer sent so far.
    const std::string agreed = early_.agreed();
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
  // Only an allocation failure or a bug of ours gets here: not the peer's fault. The
  // connection ends, and the process goes on.
  nghttp2_session_del(session_);
  session_ = nullptr;
  early_.goaway(NGHTTP2_INTERNAL_ERROR);
  Status error = made ? makeError("no HTTP/2 session: it could not take over the early frames")
                      : makeError(made.error());
  static thread_local RateLimit log_limit{std::chrono::seconds(1)};  // one per worker
  uint64_t suppressed = 0;
  if (log_limit.allow(&suppressed)) {
    log::warn("closing an HTTP/2 connection: {} ({} more not logged)", error.error(), suppressed);
  }
  return error;
}

}  // namespace spindle::h2
