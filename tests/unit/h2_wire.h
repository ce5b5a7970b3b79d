// HTTP/2 frames on the wire, for the h2 tests: written by hand where a peer must send what
// nghttp2 never would, and read back from what a session sent.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace spindle::h2::wire {

inline constexpr std::string_view kClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct Frame {
  uint8_t type = 0;
  uint8_t flags = 0;
  int32_t stream_id = 0;
  std::string payload;

  // RST_STREAM's code, or GOAWAY's.
  uint32_t errorCode() const {
    const size_t at = type == NGHTTP2_GOAWAY ? 4 : 0;
    return readU32(at);
  }
  int32_t goawayLastStreamId() const { return static_cast<int32_t>(readU32(0) & 0x7fffffffu); }
  uint32_t readU32(size_t at) const {
    if (payload.size() < at + 4) return 0xffffffffu;
    uint32_t v = 0;
    for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(payload[at + i]);
    return v;
  }
};

// Splits what a session produced into frames (a client's output starts with the preface).
inline std::vector<Frame> parseFrames(std::string_view bytes) {
  if (bytes.substr(0, kClientPreface.size()) == kClientPreface) {
    bytes.remove_prefix(kClientPreface.size());
  }
  std::vector<Frame> frames;
  while (bytes.size() >= 9) {
    const size_t length = (size_t{static_cast<uint8_t>(bytes[0])} << 16) |
                          (size_t{static_cast<uint8_t>(bytes[1])} << 8) |
                          size_t{static_cast<uint8_t>(bytes[2])};
    Frame frame;
    frame.type = static_cast<uint8_t>(bytes[3]);
    frame.flags = static_cast<uint8_t>(bytes[4]);
    uint32_t id = 0;
    for (size_t i = 5; i < 9; ++i) id = (id << 8) | static_cast<uint8_t>(bytes[i]);
    frame.stream_id = static_cast<int32_t>(id & 0x7fffffffu);
    if (bytes.size() < 9 + length) break;
    frame.payload = std::string(bytes.substr(9, length));
    frames.push_back(std::move(frame));
    bytes.remove_prefix(9 + length);
  }
  return frames;
}

inline std::vector<Frame> framesOfType(const std::string& bytes, uint8_t type) {
  std::vector<Frame> out;
  for (Frame& f : parseFrames(bytes)) {
    if (f.type == type) out.push_back(std::move(f));
  }
  return out;
}

inline std::string encodeFrame(uint8_t type, uint8_t flags, int32_t stream_id,
                               std::string_view payload) {
  std::string out;
  const size_t length = payload.size();
  out += static_cast<char>((length >> 16) & 0xff);
  out += static_cast<char>((length >> 8) & 0xff);
  out += static_cast<char>(length & 0xff);
  out += static_cast<char>(type);
  out += static_cast<char>(flags);
  const auto id = static_cast<uint32_t>(stream_id);
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((id >> shift) & 0xff);
  out += payload;
  return out;
}

inline std::string u32(uint32_t v) {
  std::string out;
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xff);
  return out;
}

inline std::string ping(uint64_t n) {
  return encodeFrame(NGHTTP2_PING, 0, 0,
                     u32(static_cast<uint32_t>(n >> 32)) + u32(static_cast<uint32_t>(n)));
}

inline std::string windowUpdate(int32_t stream_id, uint32_t increment) {
  return encodeFrame(NGHTTP2_WINDOW_UPDATE, 0, stream_id, u32(increment));
}

inline std::string settingsWith(std::initializer_list<std::pair<uint16_t, uint32_t>> entries) {
  std::string payload;
  for (const auto& [id, value] : entries) {
    payload += static_cast<char>(id >> 8);
    payload += static_cast<char>(id & 0xff);
    payload += u32(value);
  }
  return encodeFrame(NGHTTP2_SETTINGS, 0, 0, payload);
}

}  // namespace spindle::h2::wire
