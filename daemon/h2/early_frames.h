// A server connection before its nghttp2 session: the preface and the connection-level frames
// of a handshake or of a connection left idle (SETTINGS and their ACKs, PING, connection
// WINDOW_UPDATE) are answered here, with the SETTINGS nghttp2 would send, byte for byte. This
// state is under 100 bytes, where an nghttp2 session alone is ~12 KiB: a connection that never
// carries a call stays under 1 KiB in all.
//
// Bytes go in with receive(), which takes whole frames and stops at the first one that needs
// nghttp2 (usually the first HEADERS). The Session then makes its nghttp2 session, checks that
// what the session queues first is handshake(), and has it read agreed() before the rest.
// Anything unusual (an invalid value, a frame split across reads, a setting changed twice) is
// left to nghttp2 to judge.
#pragma once

#include <nghttp2/nghttp2.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "h2/budget.h"

namespace spindle::h2 {

// Defined in h2/session.h, whose Session holds an EarlyFrames.
enum class Role;
enum class Violation;
struct Settings;
class Listener;

// The SETTINGS we send, for nghttp2 and for the frames written here alike.
inline constexpr size_t kMaxLocalSettings = 5;
size_t localSettings(Role role, const Settings& settings, nghttp2_settings_entry* entries);
// What a peer may put in one SETTINGS frame (nghttp2_option_set_max_settings).
inline constexpr size_t kMaxSettingsPerFrame = 32;
// ACKs we may owe a peer that does not read them (nghttp2_option_set_max_outbound_ack).
size_t maxAcksOwed(const Settings& settings);

class EarlyFrames {
 public:
  // What a server session queues first, as nghttp2 writes it: our SETTINGS, then the
  // connection window raised from its initial 65,535.
  static std::string handshake(const Settings& settings);

  // Queues handshake(settings): a server sends it without waiting for the client.
  void start(const Settings& settings);

  struct Taken {
    size_t used;  // the bytes taken here; the rest, if any, is for the nghttp2 session
    // kNone, or the flood that stopped the read: the caller gives up on the peer.
    Violation violation;
  };
  // Takes the whole frames at the start of `data` that need no session: answers them, spends
  // their budgets and tells `listener` of the peer's SETTINGS and PING ACKs. After our final
  // GOAWAY every byte is taken and dropped: no stream can begin.
  Taken receive(const uint8_t* data, size_t length, const Settings& settings, Budgets& budgets,
                Listener& listener);

  // Our final GOAWAY: no stream was taken (last-stream-id 0). Queued once, the first time.
  void goaway(uint32_t error_code, std::string_view reason = {});
  // A drain notice: a GOAWAY that refuses nothing yet (RFC 9113 6.8), and a PING whose ACK
  // tells that the peer has seen it.
  void shutdownNotice();
  bool finalGoawayQueued() const { return final_goaway_; }

  // Appends what is queued to `out`; an idle connection then keeps no buffer.
  void produce(std::string& out);
  bool wantsToWrite() const { return !out_.empty(); }

  // The peer's first SETTINGS arrived (the client's handshake is done).
  bool settingsReceived() const { return settings_seen_; }
  // What the peer sent that a new session must know, as frames for it to read first: the
  // preface, one SETTINGS with every value the peer set, the ACK of ours, and the peer's
  // connection WINDOW_UPDATEs summed. Its answers to these were sent already.
  std::string agreed() const;

 private:
  enum class Frame { kTaken, kNeedsSession, kFlood };
  // One whole frame (`header` and `length` bytes of payload after it); *flood names a kFlood.
  Frame take(const uint8_t* header, size_t length, const Settings& settings, Budgets& budgets,
             Listener& listener, Violation* flood);
  Frame takeSettings(const uint8_t* payload, size_t length, const Settings& settings,
                     Budgets& budgets, Listener& listener, Violation* flood);
  // Counts the ACK just queued: a flood past nghttp2's cap on the ACKs owed to a peer that
  // does not read them.
  Frame ackQueued(const Settings& settings, Violation* flood);

  // What the peer set, by setting id (RFC 9113 6.5.2 and extensions up to
  // NO_RFC7540_PRIORITIES). Ordered for size: every idle connection holds this.
  static constexpr size_t kKnownSettings = 10;
  std::string out_;  // frames to send, before the session's
  std::array<uint32_t, kKnownSettings> settings_{};
  uint32_t window_increment_ = 0;  // the peer's connection WINDOW_UPDATEs, summed
  uint32_t acks_owed_ = 0;         // ACKs in out_
  uint16_t settings_set_ = 0;      // bit per id
  bool preface_seen_ = false;
  bool settings_seen_ = false;
  bool settings_acked_ = false;  // the peer acknowledged our SETTINGS
  bool final_goaway_ = false;    // a GOAWAY that ends the connection is queued
};

}  // namespace spindle::h2
