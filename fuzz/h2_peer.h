// What the h2 fuzz targets share: a Listener that acts as the proxy does with its sessions
// (answers requests, streams bodies with trailers, gives window back later, refuses and
// resets some streams), and checks the promises h2::Session makes to its listener.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "fuzz.h"
#include "h2/session.h"

namespace spindle::fuzz {

// The fuzz input's first byte: how the bytes after it are fed.
struct Mode {
  bool preface = false;  // prepend a valid preface (server: magic + SETTINGS; client: SETTINGS)
  size_t chunk = 0;      // receive() this many bytes at a time (0 = all at once)
  bool goaway = false;   // our side sends GOAWAY halfway through
  bool late_consume = false;  // give window back only at the end, not after every chunk

  static Mode of(uint8_t byte) {
    static constexpr size_t kChunks[] = {0, 1, 2, 3, 7, 9, 16, 100};
    Mode mode;
    mode.preface = (byte & 1) != 0;
    mode.chunk = kChunks[(byte >> 1) & 7];
    mode.goaway = (byte & 0x10) != 0;
    mode.late_consume = (byte & 0x20) != 0;
    return mode;
  }
};

class Peer final : public h2::Listener {
 public:
  Peer(h2::Role role, const h2::Settings& settings) : role_(role), settings_(settings) {}

  void attach(h2::Session* session) { session_ = session; }

  bool onStreamBegin(int32_t stream_id) override {
    FUZZ_REQUIRE(role_ == h2::Role::kServer);
    FUZZ_REQUIRE(closed_.count(stream_id) == 0);
    if (stream_id % 5 == 0) return false;  // refused, as a proxy over its limits would
    streams_[stream_id];
    return true;
  }

  void onHeaders(int32_t stream_id, h2::HeadersKind kind, h2::HeaderBlock&& headers,
                 bool /*end_stream*/) override {
    FUZZ_REQUIRE(closed_.count(stream_id) == 0);
    // The session resets a stream whose block passes its caps rather than hand it on.
    FUZZ_REQUIRE(headers.count() <= settings_.max_header_count);
    FUZZ_REQUIRE(headers.listSize() <= settings_.max_header_list_hard);
    for (size_t i = 0; i < headers.count(); ++i) {
      (void)headers.name(i);
      (void)headers.value(i);
    }
    (void)headers.nv();
    if (role_ == h2::Role::kClient) {
      // Only answers to our own requests: pushes are off, and nghttp2 drops the rest.
      FUZZ_REQUIRE(kind != h2::HeadersKind::kRequest);
      FUZZ_REQUIRE(streams_.count(stream_id) == 1);
      return;
    }
    // Server: answer as the proxy would, in one of a few shapes chosen by the stream id.
    if (kind != h2::HeadersKind::kRequest) return;
    FUZZ_REQUIRE(streams_.count(stream_id) == 1);
    if (stream_id % 7 == 0) {
      session_->resetStream(stream_id, NGHTTP2_CANCEL);
      return;
    }
    Stream& stream = streams_[stream_id];
    stream.body_left = static_cast<size_t>(stream_id) * 37 % 300;
    stream.trailers = stream_id % 3 != 0;
    h2::HeaderBlock response;
    response.add(":status", "200");
    response.add("content-type", "application/grpc");
    if (stream_id % 11 == 0) {
      // A trailers-only answer.
      response.add("grpc-status", "14");
      session_->submitResponse(stream_id, response, /*has_body=*/false);
      return;
    }
    if (session_->submitResponse(stream_id, response, /*has_body=*/true) != 0) {
      session_->resetStream(stream_id, NGHTTP2_INTERNAL_ERROR);
    }
  }

  void onData(int32_t stream_id, const uint8_t* data, size_t length) override {
    FUZZ_REQUIRE(closed_.count(stream_id) == 0);
    FUZZ_REQUIRE(data != nullptr || length == 0);
    uint8_t sum = 0;
    for (size_t i = 0; i < length; ++i) sum = static_cast<uint8_t>(sum + data[i]);  // ASan reads
    (void)sum;
    unconsumed_.emplace_back(stream_id, length);
  }

  void onEndOfData(int32_t stream_id) override { FUZZ_REQUIRE(closed_.count(stream_id) == 0); }

  void onStreamClose(int32_t stream_id, uint32_t /*error_code*/) override {
    FUZZ_REQUIRE(closed_.insert(stream_id).second);  // once per stream
    streams_.erase(stream_id);
    deferred_.erase(stream_id);
  }

  void onGoaway(int32_t /*last_stream_id*/, uint32_t /*error_code*/) override {}
  void onRemoteSettings() override { (void)session_->remoteMaxConcurrentStreams(); }

  size_t readBody(int32_t stream_id, uint8_t* buffer, size_t length, bool* end,
                  bool* trailers_follow) override {
    FUZZ_REQUIRE(closed_.count(stream_id) == 0);
    auto it = streams_.find(stream_id);
    if (it == streams_.end()) {
      *end = true;
      return 0;
    }
    Stream& stream = it->second;
    // Every other call has nothing yet: the stream defers and is resumed later.
    if (stream.defer_next) {
      stream.defer_next = false;
      deferred_.insert(stream_id);
      return 0;
    }
    stream.defer_next = true;
    const size_t n = std::min({length, stream.body_left, size_t{64}});
    for (size_t i = 0; i < n; ++i) buffer[i] = static_cast<uint8_t>(i);
    stream.body_left -= n;
    if (stream.body_left == 0) {
      *end = true;
      if (stream.trailers) {
        // As the proxy does: trailers are submitted from inside the read callback.
        *trailers_follow = true;
        h2::HeaderBlock trailers;
        trailers.add("grpc-status", "0");
        session_->submitTrailers(stream_id, trailers);
      }
    }
    return n;
  }

  // What the event loop does between reads: window back for the bytes passed on, deferred
  // bodies resumed.
  void settle() {
    for (const auto& [stream_id, length] : unconsumed_) session_->consume(stream_id, length);
    unconsumed_.clear();
    for (int32_t stream_id : deferred_) session_->resume(stream_id);
    deferred_.clear();
  }

  // The client side's requests: one with a body, one without.
  void submitRequests(int count) {
    for (int i = 0; i < count; ++i) {
      h2::HeaderBlock request;
      request.add(":method", "POST");
      request.add(":scheme", "http");
      request.add(":path", "/echo.Echo/Say");
      request.add(":authority", "echo:50051");
      request.add("content-type", "application/grpc");
      request.add("te", "trailers");
      const bool has_body = i % 2 == 0;
      const int32_t stream_id = session_->submitRequest(request, has_body);
      if (stream_id > 0) {
        Stream& stream = streams_[stream_id];
        stream.body_left = has_body ? 100 : 0;
        stream.trailers = false;
      }
    }
  }

 private:
  struct Stream {
    size_t body_left = 0;
    bool trailers = false;
    bool defer_next = false;
  };

  h2::Role role_;
  h2::Settings settings_;
  h2::Session* session_ = nullptr;
  std::map<int32_t, Stream> streams_;
  std::set<int32_t> closed_;
  std::set<int32_t> deferred_;
  std::vector<std::pair<int32_t, size_t>> unconsumed_;
};

// The session under test, attached to `peer`; nullptr, said on stderr, when nghttp2 is out
// of memory, which is no finding of the input's.
inline std::unique_ptr<h2::Session> makeSession(h2::Role role, const h2::Settings& settings,
                                                Peer& peer) {
  auto session = h2::Session::create(role, settings, peer);
  if (!session) {
    std::fprintf(stderr, "h2 fuzz: %s\n", session.error().c_str());
    return nullptr;
  }
  peer.attach(session->get());
  return std::move(*session);
}

// Feeds `data` to the session as the mode says, sending what it answers in between. Stops at
// the first error, as the proxy closes the connection then.
inline void drive(h2::Session& session, Peer& peer, const Mode& mode, const std::string& prefix,
                  const uint8_t* data, size_t size) {
  std::string input = prefix;
  input.append(reinterpret_cast<const char*>(data), size);
  std::string out;
  constexpr size_t kLimit = 64 * 1024;
  size_t at = 0;
  bool goaway_sent = false;
  while (at < input.size()) {
    const size_t n = mode.chunk == 0 ? input.size() - at : std::min(mode.chunk, input.size() - at);
    const Status status = session.receive(reinterpret_cast<const uint8_t*>(input.data()) + at, n);
    at += n;
    out.clear();
    session.produce(out, kLimit);
    // produce() stops at about the limit: one more frame at most.
    FUZZ_REQUIRE(out.size() < kLimit + 32 * 1024);
    if (!status) return;
    if (!mode.late_consume) peer.settle();
    if (mode.goaway && !goaway_sent && at * 2 >= input.size()) {
      session.goaway(NGHTTP2_NO_ERROR, "draining");
      goaway_sent = true;
    }
    if (!session.wantsToRead() && !session.wantsToWrite()) return;
  }
  peer.settle();
  out.clear();
  session.produce(out, kLimit);
}

}  // namespace spindle::fuzz
