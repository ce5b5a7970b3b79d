// An HTTP/2 session driven by bytes in and bytes out: no sockets here. The event loop feeds
// what it received to receive() and sends what produce() returns. Events go to a Listener.
//
// Flow control is manual: the session never gives window back by itself; the owner calls
// consume() once the bytes it was handed have been taken by the other side.
//
// A server makes its nghttp2 session only when the peer sends the first frame that needs one,
// usually the first HEADERS. Until then EarlyFrames (h2/early_frames.h) answers the handshake
// and the frames of a connection left idle, at a fraction of what an nghttp2 session costs.
#pragma once

#include <nghttp2/nghttp2.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "h2/budget.h"
#include "h2/early_frames.h"
#include "h2/headers.h"
#include "util/event_clock.h"
#include "util/result.h"

namespace spindle::h2 {

enum class Role { kServer, kClient };

// What the proxy advertises and enforces; docs/architecture.md lists the defaults.
struct Settings {
  uint32_t max_concurrent_streams = 100;
  uint32_t stream_window = 64 * 1024;
  uint32_t connection_window = 1024 * 1024;
  uint32_t max_header_list_advertised = 16 * 1024;
  uint32_t max_header_list_hard = 64 * 1024;
  uint32_t max_header_count = 100;
  // Abuse budgets (config::Limits): see Violation.
  uint32_t max_premature_resets = 100;
  uint32_t max_glitches = 100;
  uint32_t max_control_frames = 1000;
};

// Why the session gave up on its peer: each is answered with a GOAWAY and counted.
enum class Violation {
  kNone,
  kRapidReset,         // streams reset before any response (CVE-2023-44487)
  kGlitch,             // too many stream errors the peer provoked
  kContinuationFlood,  // a header block split in too many CONTINUATION frames
  kSettingsFlood,
  kPingFlood,
  kWindowUpdateFlood,
  kPriorityFlood,
  kEmptyFrames,    // DATA frames with nothing in them and no END_STREAM
  kAckFlood,       // SETTINGS/PING ACKs we owe pile up: the peer does not read
  kHeaderTimeout,  // preface, SETTINGS or a header block too slow (slowloris)
  kSendTimeout,    // the peer stopped reading
  kProtocolError,  // anything else nghttp2 refused
};
inline constexpr size_t kViolationCount = 13;
std::string_view violationName(Violation violation);

Settings downstreamSettings();
Settings upstreamSettings();

// A header block that the session received.
enum class HeadersKind {
  kRequest,   // server: a new stream's request headers
  kResponse,  // client: the response's first header block (1xx are skipped)
  kTrailers,  // either: a header block after the body
};

class Listener {
 public:
  // A stream started (server: request headers are coming). Returning false refuses it.
  virtual bool onStreamBegin(int32_t stream_id) = 0;
  // A complete header block; end_stream: nothing follows on this stream from the peer.
  virtual void onHeaders(int32_t stream_id, HeadersKind kind, HeaderBlock&& headers,
                         bool end_stream) = 0;
  virtual void onData(int32_t stream_id, const uint8_t* data, size_t length) = 0;
  // The peer finished its side of the stream with a DATA frame's END_STREAM.
  virtual void onEndOfData(int32_t stream_id) = 0;
  // The stream is closed both ways; error_code is NGHTTP2_NO_ERROR or why it was reset.
  virtual void onStreamClose(int32_t stream_id, uint32_t error_code) = 0;
  virtual void onGoaway(int32_t last_stream_id, uint32_t error_code) = 0;
  // The peer answered our PING (see shutdownNotice): one round trip has passed.
  virtual void onPingAck() {}
  // The peer's SETTINGS arrived (client: how many streams it takes).
  virtual void onRemoteSettings() = 0;
  // Body of the stream to send: copy at most `length` bytes into `buffer`. Return the count;
  // 0 with *end == false defers (resume() when there is more); *end ends the body.
  // *trailers_follow: end the body without END_STREAM (the caller then submits trailers).
  virtual size_t readBody(int32_t stream_id, uint8_t* buffer, size_t length, bool* end,
                          bool* trailers_follow) = 0;

 protected:
  ~Listener() = default;
};

class Session {
 public:
  // An error when nghttp2 cannot make its session (out of memory). A server makes its session
  // later: if that fails, receive() returns an error, with a GOAWAY INTERNAL_ERROR to send.
  // `mem`: the allocator nghttp2 uses, which must outlive the session; nullptr is malloc's.
  static Result<std::unique_ptr<Session>> create(Role role, const Settings& settings,
                                                 Listener& listener, nghttp2_mem* mem = nullptr);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Feeds received bytes. An error is fatal for the connection (a protocol violation the
  // session answered with GOAWAY: produce() still has that to send).
  Status receive(const uint8_t* data, size_t length);
  // Appends what the session wants to send to `out`, up to about `limit` bytes in `out`.
  void produce(std::string& out, size_t limit);
  bool wantsToRead() const;
  bool wantsToWrite() const;

  // Client: a new stream. Returns its id, or a negative nghttp2 error.
  int32_t submitRequest(const HeaderBlock& headers, bool has_body);
  // Server: the response headers, with or without a body to follow.
  int submitResponse(int32_t stream_id, const HeaderBlock& headers, bool has_body);
  int submitTrailers(int32_t stream_id, const HeaderBlock& trailers);
  void resetStream(int32_t stream_id, uint32_t error_code);
  // There is body to send again on a stream whose readBody deferred.
  void resume(int32_t stream_id);
  // Gives `length` bytes of window back to the peer (the bytes were passed on).
  void consume(int32_t stream_id, size_t length);
  // The same for one of the two windows only: the connection's once bytes are in a stream's
  // own buffer, the stream's once they were passed on.
  void consumeConnection(size_t length);
  void consumeStream(int32_t stream_id, size_t length);
  void goaway(uint32_t error_code, std::string_view reason = {});
  // Server: a GOAWAY that announces the end without refusing anything yet (RFC 9113 6.8),
  // and a PING whose answer tells when the peer has seen it: then send the final goaway().
  void shutdownNotice();

  uint32_t remoteMaxConcurrentStreams() const;
  // Whether the nghttp2 session exists: a server makes it at the first frame that needs it.
  bool started() const { return session_ != nullptr; }

  // The first rule the peer broke, once the session gave up on it (kNone otherwise).
  Violation violation() const { return violation_; }
  // Gives up on the peer for a reason found outside the session (a timeout): GOAWAY.
  void fail(Violation violation);
  // The peer is late: its preface/SETTINGS, or a header block it began, is older than
  // `timeout`.
  bool headersOverdue(std::chrono::steady_clock::time_point now,
                      std::chrono::nanoseconds timeout) const;
  // The last stream id the peer accepted in its GOAWAY, or -1 when none was received.
  int32_t goawayLastStreamId() const { return goaway_last_stream_id_; }

 private:
  friend struct Callbacks;
  using Clock = std::chrono::steady_clock;

  Session(const Settings& settings, Listener& listener, nghttp2_mem* mem)
      : settings_(settings),
        listener_(listener),
        mem_(mem),
        budgets_(settings.max_glitches, settings.max_control_frames),
        created_(EventClock::now()) {}
  // Records the violation and queues the GOAWAY that ends the connection.
  void giveUp(Violation violation, uint32_t error_code);
  Status errorStatus() const;
  // Server: makes the nghttp2 session and has it read what EarlyFrames agreed so far.
  Status startSession();

  // The same from inside an nghttp2 callback: returns the code that stops the receive.
  int giveUpInCallback(Violation violation);
  void onGlitch();

  // Ordered for size: every connection holds a Session.
  Settings settings_;
  Violation violation_ = Violation::kNone;
  Listener& listener_;
  nghttp2_mem* mem_;  // for nghttp2 (create()); nullptr: malloc
  nghttp2_session* session_ = nullptr;
  HeaderBlock pending_headers_;  // the block being received (one at a time per connection)
  int32_t pending_stream_ = 0;
  int32_t goaway_last_stream_id_ = -1;
  uint64_t streams_opened_ = 0;
  uint64_t premature_resets_ = 0;
  Budgets budgets_;
  Clock::time_point created_;
  Clock::time_point pending_since_{};
  EarlyFrames early_;  // a server's, before session_
  bool pending_too_large_ = false;
  bool pending_open_ = false;          // a header block has begun and not ended
  bool remote_settings_seen_ = false;  // by session_ (EarlyFrames keeps its own)
  bool replaying_ = false;  // startSession() feeds the agreed frames: no budgets, no events
};

}  // namespace spindle::h2
