#include "h2/early_frames.h"

#include <cstring>

#include "h2/session.h"
#include "util/event_clock.h"

namespace spindle::h2 {

namespace {
constexpr std::string_view kClientMagic{NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN};
constexpr size_t kFrameHeaderLength = 9;
constexpr uint32_t kMaxWindow = 0x7fffffff;
constexpr int32_t kLastStreamId = 0x7fffffff;  // a GOAWAY that refuses nothing yet

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

void appendGoaway(std::string& out, int32_t last_stream_id, uint32_t error_code,
                  std::string_view reason) {
  appendFrameHeader(out, 8 + reason.size(), NGHTTP2_GOAWAY, NGHTTP2_FLAG_NONE, 0);
  appendU32(out, static_cast<uint32_t>(last_stream_id));
  appendU32(out, error_code);
  out.append(reason);
}

// A value nghttp2 accepts for a setting it knows (RFC 9113 6.5.2, RFC 8441, RFC 9218).
bool validSetting(uint16_t id, uint32_t value) {
  switch (id) {
    case NGHTTP2_SETTINGS_ENABLE_PUSH:
    case NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL:
    case NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES: return value <= 1;
    case NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE: return value <= kMaxWindow;
    case NGHTTP2_SETTINGS_MAX_FRAME_SIZE: return value >= (1u << 14) && value < (1u << 24);
    default: return true;
  }
}
}  // namespace

// A server must not send ENABLE_PUSH.
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

// Above what both control-frame budgets let through in one read (see Session's options()).
size_t maxAcksOwed(const Settings& settings) {
  return 2 * static_cast<size_t>(settings.max_control_frames) + 1;
}

std::string EarlyFrames::handshake(const Settings& settings) {
  nghttp2_settings_entry entries[kMaxLocalSettings];
  std::string out;
  appendSettings(out, entries, localSettings(Role::kServer, settings, entries));
  if (settings.connection_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE) {
    appendWindowUpdate(out, settings.connection_window - NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE);
  }
  return out;
}

void EarlyFrames::start(const Settings& settings) { out_ = handshake(settings); }

EarlyFrames::Taken EarlyFrames::receive(const uint8_t* data, size_t length,
                                        const Settings& settings, Budgets& budgets,
                                        Listener& listener) {
  // No stream can begin after our final GOAWAY: nothing to read.
  if (final_goaway_) return {length, Violation::kNone};
  size_t at = 0;
  if (!preface_seen_) {
    // A preface split across reads, or a wrong one: nghttp2 waits for it or refuses it.
    if (length < kClientMagic.size() ||
        std::memcmp(data, kClientMagic.data(), kClientMagic.size()) != 0) {
      return {0, Violation::kNone};
    }
    preface_seen_ = true;
    at = kClientMagic.size();
  }
  // Whole frames only: one split across reads goes to the session, which reassembles it.
  while (length - at >= kFrameHeaderLength) {
    const uint8_t* header = data + at;
    const size_t frame_length =
        (size_t{header[0]} << 16) | (size_t{header[1]} << 8) | size_t{header[2]};
    if (length - at - kFrameHeaderLength < frame_length) break;
    Violation flood = Violation::kNone;
    const Frame frame = take(header, frame_length, settings, budgets, listener, &flood);
    if (frame == Frame::kNeedsSession) break;
    if (frame == Frame::kFlood) return {length, flood};
    at += kFrameHeaderLength + frame_length;
  }
  return {at, Violation::kNone};
}

EarlyFrames::Frame EarlyFrames::take(const uint8_t* header, size_t length, const Settings& settings,
                                     Budgets& budgets, Listener& listener, Violation* flood) {
  const uint8_t type = header[3];
  const bool ack = (header[4] & NGHTTP2_FLAG_ACK) != 0;
  const uint32_t stream_id = readU32(header + 5) & 0x7fffffff;
  const uint8_t* payload = header + kFrameHeaderLength;
  // The first frame must be a SETTINGS (RFC 9113 3.4): nghttp2 refuses anything else.
  if (stream_id != 0 || (!settings_seen_ && (type != NGHTTP2_SETTINGS || ack))) {
    return Frame::kNeedsSession;
  }
  switch (type) {
    case NGHTTP2_SETTINGS:
      if (!ack) return takeSettings(payload, length, settings, budgets, listener, flood);
      if (length != 0 || settings_acked_) return Frame::kNeedsSession;
      settings_acked_ = true;
      return Frame::kTaken;
    case NGHTTP2_PING:
      if (length != 8) return Frame::kNeedsSession;
      if (ack) {
        listener.onPingAck();
        return Frame::kTaken;
      }
      if (!budgets.pings.take(EventClock::now())) {
        *flood = Violation::kPingFlood;
        return Frame::kFlood;
      }
      appendFrameHeader(out_, 8, NGHTTP2_PING, NGHTTP2_FLAG_ACK, 0);
      out_.append(reinterpret_cast<const char*>(payload), 8);
      return ackQueued(settings, flood);
    case NGHTTP2_WINDOW_UPDATE: {
      if (length != 4) return Frame::kNeedsSession;
      // A zero increment, or a window past 2^31-1, is an error nghttp2 answers.
      const uint32_t increment = readU32(payload) & kMaxWindow;
      if (increment == 0 ||
          increment > kMaxWindow - NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE - window_increment_) {
        return Frame::kNeedsSession;
      }
      if (!budgets.window_updates.take(EventClock::now())) {
        *flood = Violation::kWindowUpdateFlood;
        return Frame::kFlood;
      }
      window_increment_ += increment;
      return Frame::kTaken;
    }
    default: return Frame::kNeedsSession;
  }
}

EarlyFrames::Frame EarlyFrames::takeSettings(const uint8_t* payload, size_t length,
                                             const Settings& settings, Budgets& budgets,
                                             Listener& listener, Violation* flood) {
  if (length % 6 != 0 || length / 6 > kMaxSettingsPerFrame) return Frame::kNeedsSession;
  // Checked whole before anything is applied: a frame is taken, or left to the session.
  std::array<uint32_t, kKnownSettings> values = settings_;
  uint16_t set = settings_set_;
  for (size_t at = 0; at < length; at += 6) {
    const auto id = static_cast<uint16_t>((payload[at] << 8) | payload[at + 1]);
    const uint32_t value = readU32(payload + at + 2);
    if (id == 0 || id >= kKnownSettings) continue;  // unknown: ignored (RFC 9113 6.5.2)
    // A changed value can mean more than its new value (a smaller HPACK table must be
    // signalled; some may not change at all): nghttp2 knows.
    if (!validSetting(id, value) || (((set >> id) & 1) != 0 && values[id] != value)) {
      return Frame::kNeedsSession;
    }
    values[id] = value;
    set = static_cast<uint16_t>(set | (1u << id));
  }
  if (!budgets.settings_frames.take(EventClock::now())) {
    *flood = Violation::kSettingsFlood;
    return Frame::kFlood;
  }
  settings_ = values;
  settings_set_ = set;
  settings_seen_ = true;
  listener.onRemoteSettings();
  appendFrameHeader(out_, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0);
  return ackQueued(settings, flood);
}

EarlyFrames::Frame EarlyFrames::ackQueued(const Settings& settings, Violation* flood) {
  if (++acks_owed_ <= maxAcksOwed(settings)) return Frame::kTaken;
  *flood = Violation::kAckFlood;
  return Frame::kFlood;
}

void EarlyFrames::goaway(uint32_t error_code, std::string_view reason) {
  if (final_goaway_) return;
  appendGoaway(out_, 0, error_code, reason);
  final_goaway_ = true;
}

void EarlyFrames::shutdownNotice() {
  if (!final_goaway_) appendGoaway(out_, kLastStreamId, NGHTTP2_NO_ERROR, {});
  appendFrameHeader(out_, 8, NGHTTP2_PING, NGHTTP2_FLAG_NONE, 0);
  out_.append(8, '\0');
}

void EarlyFrames::produce(std::string& out) {
  if (out_.empty()) return;
  out += out_;
  std::string().swap(out_);  // an idle connection keeps no buffer
  acks_owed_ = 0;
}

std::string EarlyFrames::agreed() const {
  std::string out;
  if (preface_seen_) out = kClientMagic;
  if (settings_seen_) {
    nghttp2_settings_entry entries[kKnownSettings];
    size_t count = 0;
    for (uint16_t id = 1; id < kKnownSettings; ++id) {
      if (((settings_set_ >> id) & 1) != 0) entries[count++] = {id, settings_[id]};
    }
    appendSettings(out, entries, count);
  }
  if (settings_acked_) appendFrameHeader(out, 0, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0);
  if (window_increment_ > 0) appendWindowUpdate(out, window_increment_);
  return out;
}

}  // namespace spindle::h2
