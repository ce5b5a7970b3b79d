// h2::Session joined back to back in memory: a client Session and a server Session, each
// with a Listener that records what it is told, and a pump that moves bytes between them.
// Where a peer has to do what a well-behaved nghttp2 never does (exceed a limit the other
// side set, send a 1xx), a RawPeer writes the frames by hand.
#include "h2/session.h"

#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "h2/headers.h"
#include "h2_wire.h"

namespace spindle::h2 {

// Failure messages name the kind (internal linkage: no clash with other test files).
[[maybe_unused]] static void PrintTo(HeadersKind kind, std::ostream* os) {
  switch (kind) {
    case HeadersKind::kRequest: *os << "kRequest"; return;
    case HeadersKind::kResponse: *os << "kResponse"; return;
    case HeadersKind::kTrailers: *os << "kTrailers"; return;
  }
  *os << "HeadersKind(" << static_cast<int>(kind) << ")";
}

namespace {

using namespace wire;  // the frames these tests write and read

using Fields = std::vector<std::pair<std::string, std::string>>;

HeaderBlock blockOf(const Fields& fields) {
  HeaderBlock block;
  for (const auto& [name, value] : fields) block.add(name, value);
  return block;
}

Fields fieldsOf(const HeaderBlock& block) {
  Fields fields;
  for (size_t i = 0; i < block.count(); ++i) {
    fields.emplace_back(std::string(block.name(i)), std::string(block.value(i)));
  }
  return fields;
}

Fields grpcRequest(std::string path = "/echo.Echo/Say") {
  return {{":method", "POST"},
          {":scheme", "http"},
          {":path", std::move(path)},
          {":authority", "echo.default.svc:50051"},
          {"content-type", "application/grpc"},
          {"te", "trailers"}};
}

Fields grpcResponse() { return {{":status", "200"}, {"content-type", "application/grpc"}}; }

Fields grpcTrailers() { return {{"grpc-status", "0"}, {"grpc-message", "ok"}}; }

// Bytes that are not text: a body that a copy or a length mistake would change.
std::string patternedBytes(size_t size, uint32_t seed = 1) {
  std::string out(size, '\0');
  uint32_t x = seed;
  for (char& c : out) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(static_cast<uint8_t>(x >> 16));
  }
  return out;
}

std::string base64(const std::string& in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint32_t{static_cast<uint8_t>(in[i])} << 16) |
                       (uint32_t{static_cast<uint8_t>(in[i + 1])} << 8) |
                       uint32_t{static_cast<uint8_t>(in[i + 2])};
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t v = uint32_t{static_cast<uint8_t>(in[i])} << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
  } else if (i + 2 == in.size()) {
    const uint32_t v = (uint32_t{static_cast<uint8_t>(in[i])} << 16) |
                       (uint32_t{static_cast<uint8_t>(in[i + 1])} << 8);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
  }
  return out;  // gRPC sends -bin values unpadded
}

// --- Frames on the wire ---------------------------------------------------------------------

// One end of a connection written by hand, for what nghttp2 would never send. Header blocks
// go through one HPACK deflater, as the connection's only encoder in that direction.
class RawPeer {
 public:
  RawPeer() { nghttp2_hd_deflate_new(&deflater_, 4096); }
  ~RawPeer() { nghttp2_hd_deflate_del(deflater_); }
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  std::string headers(int32_t stream_id, const Fields& fields, bool end_stream) {
    HeaderBlock block = blockOf(fields);
    const auto& nv = block.nv();
    std::string buffer(nghttp2_hd_deflate_bound(deflater_, nv.data(), nv.size()), '\0');
    const ssize_t n = nghttp2_hd_deflate_hd(deflater_, reinterpret_cast<uint8_t*>(buffer.data()),
                                            buffer.size(), nv.data(), nv.size());
    EXPECT_GE(n, 0);
    buffer.resize(static_cast<size_t>(std::max<ssize_t>(n, 0)));
    const auto flags =
        static_cast<uint8_t>(NGHTTP2_FLAG_END_HEADERS | (end_stream ? NGHTTP2_FLAG_END_STREAM : 0));
    return encodeFrame(NGHTTP2_HEADERS, flags, stream_id, buffer);
  }
  static std::string settings() { return encodeFrame(NGHTTP2_SETTINGS, 0, 0, {}); }
  static std::string settingsAck() {
    return encodeFrame(NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, {});
  }
  static std::string data(int32_t stream_id, std::string_view bytes, bool end_stream) {
    return encodeFrame(NGHTTP2_DATA, end_stream ? NGHTTP2_FLAG_END_STREAM : 0, stream_id, bytes);
  }

 private:
  nghttp2_hd_deflater* deflater_ = nullptr;
};

// --- The recording Listener -----------------------------------------------------------------

struct Block {
  HeadersKind kind;
  Fields fields;
  bool end_stream;
};

struct StreamLog {
  std::vector<Block> blocks;
  std::string data;
  size_t data_chunks = 0;
  size_t unconsumed = 0;  // received and not yet given back with consume()
  bool end_of_data = false;
  bool closed = false;
  uint32_t close_code = 0xffffffffu;
};

// What readBody hands out for one stream.
struct BodySource {
  std::string data;
  size_t offset = 0;
  bool complete = true;            // no more than `data`: end once it is all read
  std::optional<Fields> trailers;  // end without END_STREAM and submit these in readBody
  size_t calls = 0;
  size_t deferrals = 0;
};

class Recorder final : public Listener {
 public:
  explicit Recorder(const char* name) : name_(name) {}

  void attach(Session& session) { session_ = &session; }

  bool onStreamBegin(int32_t stream_id) override {
    log.push_back("begin " + std::to_string(stream_id));
    begun.push_back(stream_id);
    return refuse.count(stream_id) == 0;
  }
  void onHeaders(int32_t stream_id, HeadersKind kind, HeaderBlock&& headers,
                 bool end_stream) override {
    log.push_back("headers " + std::to_string(stream_id) + " " + kindName(kind) +
                  (end_stream ? " end" : ""));
    streams[stream_id].blocks.push_back(Block{kind, fieldsOf(headers), end_stream});
  }
  void onData(int32_t stream_id, const uint8_t* data, size_t length) override {
    StreamLog& s = streams[stream_id];
    if (s.data_chunks == 0) log.push_back("data " + std::to_string(stream_id));
    s.data.append(reinterpret_cast<const char*>(data), length);
    ++s.data_chunks;
    s.unconsumed += length;
  }
  void onEndOfData(int32_t stream_id) override {
    log.push_back("end " + std::to_string(stream_id));
    streams[stream_id].end_of_data = true;
  }
  void onStreamClose(int32_t stream_id, uint32_t error_code) override {
    log.push_back("close " + std::to_string(stream_id) + " " + std::to_string(error_code));
    StreamLog& s = streams[stream_id];
    s.closed = true;
    s.close_code = error_code;
  }
  void onGoaway(int32_t last_stream_id, uint32_t error_code) override {
    log.push_back("goaway " + std::to_string(last_stream_id));
    goaways.emplace_back(last_stream_id, error_code);
  }
  void onPingAck() override {
    ++ping_acks;
    // As the proxy does once a drain notice's PING comes back.
    if (goaway_on_ping_ack) session_->goaway(NGHTTP2_NO_ERROR);
  }
  void onRemoteSettings() override {
    log.push_back("settings");
    ++remote_settings;
  }
  size_t readBody(int32_t stream_id, uint8_t* buffer, size_t length, bool* end,
                  bool* trailers_follow) override {
    auto it = bodies.find(stream_id);
    if (it == bodies.end()) {
      *end = true;
      return 0;
    }
    BodySource& body = it->second;
    ++body.calls;
    const size_t n = std::min(length, body.data.size() - body.offset);
    std::memcpy(buffer, body.data.data() + body.offset, n);
    body.offset += n;
    if (body.offset == body.data.size() && body.complete) {
      *end = true;
      if (body.trailers) {
        *trailers_follow = true;
        EXPECT_EQ(session_->submitTrailers(stream_id, blockOf(*body.trailers)), 0) << name_;
      }
    } else if (n == 0) {
      ++body.deferrals;
    }
    return n;
  }

  // Gives back every byte received so far, as the proxy does once the bytes moved on.
  void consumeAll() {
    for (auto& [stream_id, s] : streams) {
      session_->consume(stream_id, s.unconsumed);
      s.unconsumed = 0;
    }
  }
  size_t dataReceived() const {
    size_t total = 0;
    for (const auto& [stream_id, s] : streams) total += s.data.size();
    return total;
  }
  const StreamLog& stream(int32_t stream_id) { return streams[stream_id]; }

  static std::string kindName(HeadersKind kind) {
    switch (kind) {
      case HeadersKind::kRequest: return "request";
      case HeadersKind::kResponse: return "response";
      case HeadersKind::kTrailers: return "trailers";
    }
    return "?";
  }

  std::vector<std::string> log;
  std::vector<int32_t> begun;
  std::map<int32_t, StreamLog> streams;
  std::map<int32_t, BodySource> bodies;
  std::vector<std::pair<int32_t, uint32_t>> goaways;
  std::set<int32_t> refuse;  // onStreamBegin says no to these
  int remote_settings = 0;
  int ping_acks = 0;
  bool auto_consume = false;  // consume() after each receive, like a proxy that keeps up
  bool goaway_on_ping_ack = false;

 private:
  const char* name_;
  Session* session_ = nullptr;
};

// --- Two sessions back to back --------------------------------------------------------------

// Session::create, which fails only when nghttp2 is out of memory: the failure says why, and
// value() then throws, which ends the test.
std::unique_ptr<Session> createSession(Role role, const Settings& settings, Listener& listener) {
  auto session = Session::create(role, settings, listener);
  if (!session) ADD_FAILURE() << session.error();
  return std::move(session).value();
}

constexpr size_t kProduceLimit = 64 * 1024;

struct Pair {
  explicit Pair(Settings client_settings = upstreamSettings(),
                Settings server_settings = downstreamSettings())
      : client_events("client"), server_events("server") {
    client = createSession(Role::kClient, client_settings, client_events);
    server = createSession(Role::kServer, server_settings, server_events);
    client_events.attach(*client);
    server_events.attach(*server);
  }

  // Moves bytes both ways until neither side has anything to send. Returns false when it
  // did not go quiet (a test that loops forever should fail, not hang).
  bool pump(int max_rounds = 1000) {
    for (int round = 0; round < max_rounds; ++round) {
      std::string to_server;
      client->produce(to_server, kProduceLimit);
      if (!to_server.empty()) deliverToServer(to_server);
      std::string to_client;
      server->produce(to_client, kProduceLimit);
      if (!to_client.empty()) deliverToClient(to_client);
      if (to_server.empty() && to_client.empty()) return true;
    }
    return false;
  }

  void deliverToServer(const std::string& bytes) {
    server_bytes_in += bytes;
    Status status = server->receive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    if (!status) server_errors.push_back(status.error());
    if (server_events.auto_consume) server_events.consumeAll();
  }
  void deliverToClient(const std::string& bytes) {
    client_bytes_in += bytes;
    Status status = client->receive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    if (!status) client_errors.push_back(status.error());
    if (client_events.auto_consume) client_events.consumeAll();
  }

  // A request whose body (if any) the client's readBody hands out.
  int32_t request(const Fields& headers, std::optional<BodySource> body = std::nullopt) {
    const int32_t id = client->submitRequest(blockOf(headers), body.has_value());
    EXPECT_GT(id, 0);
    if (body) client_events.bodies[id] = std::move(*body);
    return id;
  }
  void respond(int32_t stream_id, const Fields& headers,
               std::optional<BodySource> body = std::nullopt) {
    if (body) server_events.bodies[stream_id] = std::move(*body);
    EXPECT_EQ(server->submitResponse(stream_id, blockOf(headers), body.has_value()), 0);
  }

  Recorder client_events;
  Recorder server_events;
  std::unique_ptr<Session> client;
  std::unique_ptr<Session> server;
  std::string server_bytes_in;  // everything the client sent
  std::string client_bytes_in;  // everything the server sent
  std::vector<std::string> server_errors;
  std::vector<std::string> client_errors;
};

// --- Header blocks --------------------------------------------------------------------------

TEST(H2Session, Request_HeadersArriveByteExactAndInOrder) {
  Pair pair;
  std::string all_octets;
  for (int i = 0; i < 256; ++i) all_octets += static_cast<char>(i);

  Fields request = grpcRequest();
  request.emplace_back("grpc-timeout", "5S");
  request.emplace_back("x-request-id", "0f8fad5b-d9cb-4a7c-8b1b-3f0e0e1a6f7b");
  request.emplace_back("trace-bin", base64(all_octets));  // gRPC's wire form of binary metadata
  request.emplace_back("x-padded", "  leading and trailing  ");
  request.emplace_back("x-tab", "\tvalue\t");
  request.emplace_back("x-empty", "");
  request.emplace_back("x-dup", "first");
  request.emplace_back("x-dup", "second");  // repeated names keep their order
  for (int i = 0; i < 80; ++i) {
    request.emplace_back("x-field-" + std::to_string(i), "value-" + std::to_string(i * 7919));
  }
  const int32_t id = pair.request(request);
  ASSERT_TRUE(pair.pump());

  EXPECT_TRUE(pair.server_errors.empty());
  const StreamLog& s = pair.server_events.stream(id);
  ASSERT_EQ(s.blocks.size(), 1u);
  EXPECT_EQ(s.blocks[0].kind, HeadersKind::kRequest);
  EXPECT_TRUE(s.blocks[0].end_stream);
  EXPECT_EQ(s.blocks[0].fields, request);
  EXPECT_EQ(pair.server_events.begun, std::vector<int32_t>{id});
}

// Binary metadata values need not be base64 on the wire: obs-text octets (0x80-0xff) and
// HTAB are field-value characters, and gRPC peers accept them.
TEST(H2Session, Request_BinaryMetadataWithObsTextOctetsArrivesByteExact) {
  Pair pair;
  std::string octets = "\t";
  for (int i = 0x20; i < 0x7f; ++i) octets += static_cast<char>(i);
  for (int i = 0x80; i < 0x100; ++i) octets += static_cast<char>(i);
  Fields request = grpcRequest();
  request.emplace_back("blob-bin", octets);
  const int32_t id = pair.request(request);
  ASSERT_TRUE(pair.pump());

  const StreamLog& s = pair.server_events.stream(id);
  ASSERT_EQ(s.blocks.size(), 1u);
  EXPECT_EQ(s.blocks[0].fields, request);
}

// NUL, CR and LF are never valid in a field value (RFC 9113 8.2.1): nghttp2 resets the stream
// with PROTOCOL_ERROR rather than pass on a value it would have to change.
TEST(H2Session, Request_HeaderValueWithNulCrOrLfResetsTheStream) {
  for (const std::string& bad :
       {std::string("a\0b", 3), std::string("a\rb"), std::string("a\nb")}) {
    Pair pair;
    Fields request = grpcRequest();
    request.emplace_back("blob-bin", bad);
    const int32_t id = pair.request(request);
    ASSERT_TRUE(pair.pump());

    EXPECT_TRUE(pair.server_events.stream(id).blocks.empty());
    EXPECT_TRUE(pair.client_events.stream(id).closed);
    EXPECT_EQ(pair.client_events.stream(id).close_code, uint32_t{NGHTTP2_PROTOCOL_ERROR});
    EXPECT_TRUE(pair.server_errors.empty());  // a stream error, not a connection error
  }
}

TEST(H2Session, Response_HeadersBodyAndTrailersArriveByteExactAndInOrder) {
  Pair pair;
  pair.client_events.auto_consume = true;
  const int32_t id = pair.request(grpcRequest());
  ASSERT_TRUE(pair.pump());

  Fields response = grpcResponse();
  response.emplace_back("x-served-by", " pod-a ");
  response.emplace_back("server-bin", base64(patternedBytes(100)));
  Fields trailers = grpcTrailers();
  trailers.emplace_back("grpc-status-details-bin", base64(patternedBytes(300, 9)));
  trailers.emplace_back("x-cost", "12ms");
  BodySource body;
  body.data = patternedBytes(1000);
  body.trailers = trailers;
  pair.respond(id, response, body);
  ASSERT_TRUE(pair.pump());

  const StreamLog& s = pair.client_events.stream(id);
  ASSERT_EQ(s.blocks.size(), 2u);
  EXPECT_EQ(s.blocks[0].kind, HeadersKind::kResponse);
  EXPECT_FALSE(s.blocks[0].end_stream);
  EXPECT_EQ(s.blocks[0].fields, response);
  EXPECT_EQ(s.blocks[1].kind, HeadersKind::kTrailers);
  EXPECT_TRUE(s.blocks[1].end_stream);
  EXPECT_EQ(s.blocks[1].fields, trailers);
  EXPECT_EQ(s.data, patternedBytes(1000));
  EXPECT_FALSE(s.end_of_data);  // the stream ended on the trailers, not on DATA
  EXPECT_EQ(pair.client_events.log,
            (std::vector<std::string>{"settings", "headers 1 response", "data 1",
                                      "headers 1 trailers end", "close 1 0"}));
}

TEST(H2Session, Response_TrailersOnlyArrivesAsResponseWithEndStream) {
  Pair pair;
  const int32_t id = pair.request(grpcRequest());
  ASSERT_TRUE(pair.pump());

  const Fields trailers_only = {{":status", "200"},
                                {"content-type", "application/grpc"},
                                {"grpc-status", "14"},
                                {"grpc-message", "spindle: service echo: no endpoint"}};
  pair.respond(id, trailers_only);
  ASSERT_TRUE(pair.pump());

  const StreamLog& s = pair.client_events.stream(id);
  ASSERT_EQ(s.blocks.size(), 1u);
  EXPECT_EQ(s.blocks[0].kind, HeadersKind::kResponse);
  EXPECT_TRUE(s.blocks[0].end_stream);
  EXPECT_EQ(s.blocks[0].fields, trailers_only);
  EXPECT_TRUE(s.data.empty());
  EXPECT_FALSE(s.end_of_data);
  EXPECT_TRUE(s.closed);
  EXPECT_EQ(s.close_code, uint32_t{NGHTTP2_NO_ERROR});
}

// Informational responses are not passed on, and the final response after them is still a
// response (nghttp2 files a HEADERS after a 1xx under NGHTTP2_HCAT_HEADERS, not _RESPONSE).
TEST(H2Session, Response_FinalResponseAfterInformationalArrivesAsResponse) {
  Recorder events("client");
  auto client = createSession(Role::kClient, upstreamSettings(), events);
  events.attach(*client);
  const int32_t id = client->submitRequest(blockOf(grpcRequest()), false);
  ASSERT_EQ(id, 1);
  std::string out;
  client->produce(out, kProduceLimit);

  RawPeer server;
  const std::string body = patternedBytes(10);
  const std::string bytes = RawPeer::settings() + RawPeer::settingsAck() +
                            server.headers(id, {{":status", "100"}}, false) +
                            server.headers(id, {{":status", "103"}, {"link", "</a>"}}, false) +
                            server.headers(id, grpcResponse(), false) +
                            RawPeer::data(id, body, false) +
                            server.headers(id, grpcTrailers(), true);
  ASSERT_TRUE(client->receive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));

  const StreamLog& s = events.stream(id);
  ASSERT_EQ(s.blocks.size(), 2u);
  EXPECT_EQ(s.blocks[0].kind, HeadersKind::kResponse);
  EXPECT_FALSE(s.blocks[0].end_stream);
  EXPECT_EQ(s.blocks[0].fields, grpcResponse());
  EXPECT_EQ(s.blocks[1].kind, HeadersKind::kTrailers);
  EXPECT_EQ(s.blocks[1].fields, grpcTrailers());
  EXPECT_EQ(s.data, body);
  EXPECT_TRUE(s.closed);
}

// What lets a HEADERS block with :status count as a response: trailers with a pseudo-header
// never reach the listener (nghttp2 resets the stream with PROTOCOL_ERROR).
TEST(H2Session, Response_TrailersWithPseudoHeaderResetTheStream) {
  Recorder events("client");
  auto client = createSession(Role::kClient, upstreamSettings(), events);
  events.attach(*client);
  const int32_t id = client->submitRequest(blockOf(grpcRequest()), false);
  std::string out;
  client->produce(out, kProduceLimit);

  RawPeer server;
  const std::string bytes = RawPeer::settings() + RawPeer::settingsAck() +
                            server.headers(id, grpcResponse(), false) +
                            RawPeer::data(id, "body", false) +
                            server.headers(id, {{":status", "200"}, {"grpc-status", "0"}}, true);
  ASSERT_TRUE(client->receive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  out.clear();
  client->produce(out, kProduceLimit);

  const StreamLog& s = events.stream(id);
  ASSERT_EQ(s.blocks.size(), 1u);
  EXPECT_EQ(s.blocks[0].kind, HeadersKind::kResponse);
  EXPECT_TRUE(s.closed);
  EXPECT_EQ(s.close_code, uint32_t{NGHTTP2_PROTOCOL_ERROR});
  const auto rst = framesOfType(out, NGHTTP2_RST_STREAM);
  ASSERT_EQ(rst.size(), 1u);
  EXPECT_EQ(rst[0].errorCode(), uint32_t{NGHTTP2_PROTOCOL_ERROR});
}

// --- Bodies ---------------------------------------------------------------------------------

TEST(H2Session, Request_BodyLargerThanTheWindowsArrivesIntactAndEndsWithEndOfData) {
  Pair pair;
  pair.server_events.auto_consume = true;
  BodySource body;
  body.data = patternedBytes(3 * 1024 * 1024 + 123);  // > stream (64 KiB) and connection (1 MiB)
  const int32_t id = pair.request(grpcRequest(), body);
  ASSERT_TRUE(pair.pump());

  const StreamLog& s = pair.server_events.stream(id);
  ASSERT_EQ(s.blocks.size(), 1u);
  EXPECT_FALSE(s.blocks[0].end_stream);
  EXPECT_EQ(s.data.size(), body.data.size());
  EXPECT_TRUE(s.data == body.data);
  EXPECT_TRUE(s.end_of_data);
  // At most 16 KiB per DATA frame (SETTINGS_MAX_FRAME_SIZE default): many frames.
  const auto data_frames = framesOfType(pair.server_bytes_in, NGHTTP2_DATA);
  EXPECT_GE(data_frames.size(), body.data.size() / 16384);
  ASSERT_FALSE(data_frames.empty());
  for (size_t i = 0; i + 1 < data_frames.size(); ++i) {
    EXPECT_EQ(data_frames[i].flags & NGHTTP2_FLAG_END_STREAM, 0) << "frame " << i;
  }
  EXPECT_NE(data_frames.back().flags & NGHTTP2_FLAG_END_STREAM, 0);
  EXPECT_EQ(pair.server_events.log.back(), "end 1");
}

TEST(H2Session, Response_BodyLargerThanTheWindowsArrivesIntactAndEndsWithEndOfData) {
  Pair pair(upstreamSettings(), downstreamSettings());
  pair.client_events.auto_consume = true;
  const int32_t id = pair.request(grpcRequest());
  ASSERT_TRUE(pair.pump());
  BodySource body;
  body.data = patternedBytes(20 * 1024 * 1024 + 7, 3);  // > upstream connection window (8 MiB)
  pair.respond(id, grpcResponse(), body);
  ASSERT_TRUE(pair.pump(10000));

  const StreamLog& s = pair.client_events.stream(id);
  ASSERT_EQ(s.blocks.size(), 1u);
  EXPECT_EQ(s.data.size(), body.data.size());
  EXPECT_TRUE(s.data == body.data);
  EXPECT_TRUE(s.end_of_data);
  EXPECT_TRUE(s.closed);
  EXPECT_EQ(s.close_code, uint32_t{NGHTTP2_NO_ERROR});
  EXPECT_GT(s.data_chunks, 1u);
}

TEST(H2Session, ReadBody_ZeroWithoutEndDefersUntilResume) {
  Pair pair;
  pair.server_events.auto_consume = true;
  BodySource body;
  body.complete = false;  // nothing yet, more to come
  const int32_t id = pair.request(grpcRequest(), body);
  ASSERT_TRUE(pair.pump());

  const BodySource& source = pair.client_events.bodies[id];
  EXPECT_GE(source.deferrals, 1u);
  {
    const StreamLog& s = pair.server_events.stream(id);
    ASSERT_EQ(s.blocks.size(), 1u);
    EXPECT_FALSE(s.blocks[0].end_stream);
    EXPECT_TRUE(s.data.empty());
    EXPECT_FALSE(s.end_of_data);
  }
  // Deferred: pumping again does not ask for the body, nor send anything.
  const size_t calls = source.calls;
  ASSERT_TRUE(pair.pump());
  EXPECT_EQ(pair.client_events.bodies[id].calls, calls);
  EXPECT_FALSE(pair.client->wantsToWrite());

  pair.client_events.bodies[id].data = "first part, ";
  pair.client->resume(id);
  ASSERT_TRUE(pair.pump());
  EXPECT_EQ(pair.server_events.stream(id).data, "first part, ");
  EXPECT_FALSE(pair.server_events.stream(id).end_of_data);

  pair.client_events.bodies[id].data += "and the rest";
  pair.client->resume(id);
  ASSERT_TRUE(pair.pump());
  EXPECT_EQ(pair.server_events.stream(id).data, "first part, and the rest");
  EXPECT_FALSE(pair.server_events.stream(id).end_of_data);

  // The end comes with no more bytes: 0 with *end sends an empty DATA with END_STREAM.
  pair.client_events.bodies[id].complete = true;
  pair.client->resume(id);
  ASSERT_TRUE(pair.pump());
  EXPECT_EQ(pair.server_events.stream(id).data, "first part, and the rest");
  EXPECT_TRUE(pair.server_events.stream(id).end_of_data);
  const auto data_frames = framesOfType(pair.server_bytes_in, NGHTTP2_DATA);
  ASSERT_EQ(data_frames.size(), 3u);
  EXPECT_TRUE(data_frames[2].payload.empty());
  EXPECT_NE(data_frames[2].flags & NGHTTP2_FLAG_END_STREAM, 0);
}

TEST(H2Session, ReadBody_TrailersFollowEndsBodyWithoutEndStreamThenSendsTrailers) {
  Pair pair;
  pair.client_events.auto_consume = true;
  const int32_t id = pair.request(grpcRequest());
  ASSERT_TRUE(pair.pump());

  BodySource body;
  body.data = patternedBytes(40000, 5);
  body.trailers = grpcTrailers();
  pair.respond(id, grpcResponse(), body);
  ASSERT_TRUE(pair.pump());

  const auto frames = parseFrames(pair.client_bytes_in);
  std::vector<uint8_t> types;
  for (const Frame& f : frames) {
    if (f.stream_id == id) types.push_back(f.type);
  }
  // HEADERS, DATA..., HEADERS(trailers): END_STREAM only on the trailers.
  ASSERT_GE(types.size(), 3u);
  EXPECT_EQ(types.front(), NGHTTP2_HEADERS);
  EXPECT_EQ(types.back(), NGHTTP2_HEADERS);
  for (const Frame& f : frames) {
    if (f.stream_id != id) continue;
    if (f.type == NGHTTP2_DATA) {
      EXPECT_EQ(f.flags & NGHTTP2_FLAG_END_STREAM, 0);
    }
  }
  const Frame& last = [&]() -> const Frame& {
    for (auto it = frames.rbegin(); it != frames.rend(); ++it) {
      if (it->stream_id == id) return *it;
    }
    return frames.back();
  }();
  EXPECT_NE(last.flags & NGHTTP2_FLAG_END_STREAM, 0);

  const StreamLog& s = pair.client_events.stream(id);
  EXPECT_EQ(s.data, body.data);
  EXPECT_FALSE(s.end_of_data);
  ASSERT_EQ(s.blocks.size(), 2u);
  EXPECT_EQ(s.blocks[1].kind, HeadersKind::kTrailers);
  EXPECT_TRUE(s.blocks[1].end_stream);
  EXPECT_EQ(s.blocks[1].fields, grpcTrailers());
  EXPECT_EQ(s.close_code, uint32_t{NGHTTP2_NO_ERROR});
}

// HTTP/2 allows request trailers (gRPC sends none): they end the request, with no
// onEndOfData before them.
TEST(H2Session, Request_TrailersAfterBodyArriveAsTrailersWithEndStream) {
  Pair pair;
  pair.server_events.auto_consume = true;
  BodySource body;
  body.data = "request body";
  body.trailers = Fields{{"x-checksum", "abc123"}};
  const int32_t id = pair.request(grpcRequest(), body);
  ASSERT_TRUE(pair.pump());

  const StreamLog& s = pair.server_events.stream(id);
  EXPECT_EQ(s.data, "request body");
  EXPECT_FALSE(s.end_of_data);
  ASSERT_EQ(s.blocks.size(), 2u);
  EXPECT_EQ(s.blocks[1].kind, HeadersKind::kTrailers);
  EXPECT_TRUE(s.blocks[1].end_stream);
  EXPECT_EQ(s.blocks[1].fields, (Fields{{"x-checksum", "abc123"}}));
}

// onStreamBegin returning false resets that stream (nghttp2: RST_STREAM INTERNAL_ERROR), and
// only that one.
TEST(H2Session, StreamBegin_RefusedStreamIsResetAndOthersServed) {
  Pair pair;
  pair.server_events.refuse.insert(3);
  const int32_t first = pair.request(grpcRequest("/first"));
  const int32_t refused = pair.request(grpcRequest("/refused"));
  const int32_t third = pair.request(grpcRequest("/third"));
  ASSERT_EQ(refused, 3);
  ASSERT_TRUE(pair.pump());

  EXPECT_TRUE(pair.server_events.stream(refused).blocks.empty());
  EXPECT_EQ(pair.client_events.stream(refused).close_code, uint32_t{NGHTTP2_INTERNAL_ERROR});
  ASSERT_EQ(pair.server_events.stream(first).blocks.size(), 1u);
  ASSERT_EQ(pair.server_events.stream(third).blocks.size(), 1u);
  EXPECT_EQ(pair.server_events.stream(third).blocks[0].fields, grpcRequest("/third"));
}

// --- RST_STREAM -----------------------------------------------------------------------------

TEST(H2Session, ResetStream_ClientCancelIsSeenByServerAsCancel) {
  Pair pair;
  BodySource body;
  body.complete = false;  // the call is still streaming
  const int32_t id = pair.request(grpcRequest(), body);
  ASSERT_TRUE(pair.pump());
  ASSERT_EQ(pair.server_events.stream(id).blocks.size(), 1u);
  ASSERT_FALSE(pair.server_events.stream(id).closed);

  pair.client->resetStream(id, NGHTTP2_CANCEL);
  ASSERT_TRUE(pair.pump());

  EXPECT_TRUE(pair.server_events.stream(id).closed);
  EXPECT_EQ(pair.server_events.stream(id).close_code, uint32_t{NGHTTP2_CANCEL});
  EXPECT_TRUE(pair.client_events.stream(id).closed);
  EXPECT_EQ(pair.client_events.stream(id).close_code, uint32_t{NGHTTP2_CANCEL});
  const auto rst = framesOfType(pair.server_bytes_in, NGHTTP2_RST_STREAM);
  ASSERT_EQ(rst.size(), 1u);
  EXPECT_EQ(rst[0].errorCode(), uint32_t{NGHTTP2_CANCEL});
}

TEST(H2Session, ResetStream_ServerCodeIsSeenByClient) {
  Pair pair;
  const int32_t id = pair.request(grpcRequest());
  ASSERT_TRUE(pair.pump());
  BodySource body;
  body.data = "x";
  body.complete = false;
  pair.respond(id, grpcResponse(), body);
  ASSERT_TRUE(pair.pump());
  ASSERT_EQ(pair.client_events.stream(id).blocks.size(), 1u);

  pair.server->resetStream(id, NGHTTP2_ENHANCE_YOUR_CALM);
  ASSERT_TRUE(pair.pump());

  EXPECT_TRUE(pair.client_events.stream(id).closed);
  EXPECT_EQ(pair.client_events.stream(id).close_code, uint32_t{NGHTTP2_ENHANCE_YOUR_CALM});
  EXPECT_EQ(pair.server_events.stream(id).close_code, uint32_t{NGHTTP2_ENHANCE_YOUR_CALM});
}

// --- Drain (SIGTERM) -------------------------------------------------------------------------

TEST(H2Session, Drain_NoticeThenFinalGoawayLetTheOpenCallFinish) {
  Pair pair;
  const int32_t id = pair.request(grpcRequest());
  ASSERT_TRUE(pair.pump());

  // The notice refuses nothing (last-stream-id 2^31-1); its PING comes back a round trip later.
  pair.server->shutdownNotice();
  ASSERT_TRUE(pair.pump());
  ASSERT_EQ(pair.client_events.goaways.size(), 1u);
  EXPECT_EQ(pair.client_events.goaways[0].first, 0x7fffffff);
  EXPECT_EQ(pair.server_events.ping_acks, 1);
  EXPECT_TRUE(pair.server->wantsToRead());

  // The final GOAWAY names the open call as the last one processed; it still completes.
  pair.server->goaway(NGHTTP2_NO_ERROR);
  ASSERT_TRUE(pair.pump());
  ASSERT_EQ(pair.client_events.goaways.size(), 2u);
  EXPECT_EQ(pair.client_events.goaways[1].first, id);
  EXPECT_EQ(pair.client_events.goaways[1].second, uint32_t{NGHTTP2_NO_ERROR});
  EXPECT_TRUE(pair.server->wantsToRead()) << "the open call must still be read";

  BodySource body;
  body.data = "done";
  body.trailers = grpcTrailers();
  pair.respond(id, grpcResponse(), body);
  ASSERT_TRUE(pair.pump());
  EXPECT_TRUE(pair.client_events.stream(id).closed);
  EXPECT_EQ(pair.client_events.stream(id).close_code, uint32_t{NGHTTP2_NO_ERROR});
  // Nothing left: the connection may close.
  EXPECT_FALSE(pair.server->wantsToRead());
  EXPECT_FALSE(pair.server->wantsToWrite());
}

// --- Flow control ---------------------------------------------------------------------------

TEST(H2Session, FlowControl_StreamWindowHoldsUnconsumedBodyUntilConsume) {
  Pair pair;  // the server never consumes unless told
  const uint32_t window = downstreamSettings().stream_window;
  ASSERT_EQ(window, 64u * 1024);
  BodySource body;
  body.data = patternedBytes(1024 * 1024);
  const int32_t id = pair.request(grpcRequest(), body);
  ASSERT_TRUE(pair.pump());

  EXPECT_EQ(pair.server_events.stream(id).data.size(), window);
  EXPECT_FALSE(pair.server_events.stream(id).end_of_data);
  // Quiet, not stuck mid-frame: the client waits for window.
  EXPECT_FALSE(pair.client->wantsToWrite());

  pair.server_events.consumeAll();
  ASSERT_TRUE(pair.pump());
  EXPECT_EQ(pair.server_events.stream(id).data.size(), 2 * size_t{window});

  // Window comes back only in WINDOW_UPDATE frames once half the window was consumed.
  pair.server->consume(id, window / 2 - 1);
  pair.server_events.streams[id].unconsumed -= window / 2 - 1;
  ASSERT_TRUE(pair.pump());
  EXPECT_EQ(pair.server_events.stream(id).data.size(), 2 * size_t{window});

  pair.server_events.auto_consume = true;
  pair.server_events.consumeAll();
  ASSERT_TRUE(pair.pump());
  EXPECT_TRUE(pair.server_events.stream(id).data == body.data);
  EXPECT_TRUE(pair.server_events.stream(id).end_of_data);
}

TEST(H2Session, FlowControl_ConnectionWindowHoldsUnconsumedBodiesAcrossStreams) {
  Pair pair;
  const Settings settings = downstreamSettings();
  const size_t streams = settings.connection_window / settings.stream_window + 4;  // 20
  std::vector<int32_t> ids;
  for (size_t i = 0; i < streams; ++i) {
    BodySource body;
    body.data = patternedBytes(2 * settings.stream_window, static_cast<uint32_t>(i));
    ids.push_back(pair.request(grpcRequest(), body));
  }
  ASSERT_TRUE(pair.pump());

  // Every stream got at most its window, and all of them together at most the connection's.
  size_t total = 0;
  for (int32_t id : ids) {
    EXPECT_LE(pair.server_events.stream(id).data.size(), settings.stream_window);
    total += pair.server_events.stream(id).data.size();
  }
  EXPECT_EQ(total, settings.connection_window);
  EXPECT_EQ(pair.server_events.dataReceived(), settings.connection_window);

  pair.server_events.consumeAll();
  ASSERT_TRUE(pair.pump());
  EXPECT_GT(pair.server_events.dataReceived(), settings.connection_window);

  pair.server_events.auto_consume = true;
  pair.server_events.consumeAll();
  ASSERT_TRUE(pair.pump());
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_TRUE(pair.server_events.stream(ids[i]).end_of_data) << "stream " << ids[i];
    EXPECT_EQ(pair.server_events.stream(ids[i]).data.size(), 2 * size_t{settings.stream_window});
  }
}

// What the proxy does (Call): the connection window back as bytes arrive, each stream's only
// once its bytes moved on. A stream then holds its own window and nothing the others need.
TEST(H2Session, FlowControl_ConsumeConnectionReopensOnlyTheConnectionWindow) {
  Pair pair;
  const Settings settings = downstreamSettings();
  const size_t streams = settings.connection_window / settings.stream_window + 4;  // 20
  std::vector<int32_t> ids;
  for (size_t i = 0; i < streams; ++i) {
    BodySource body;
    body.data = patternedBytes(2 * settings.stream_window, static_cast<uint32_t>(i));
    ids.push_back(pair.request(grpcRequest(), body));
  }
  ASSERT_TRUE(pair.pump());
  ASSERT_EQ(pair.server_events.dataReceived(), settings.connection_window);

  size_t connection_given = 0;
  auto giveConnection = [&] {
    pair.server->consumeConnection(pair.server_events.dataReceived() - connection_given);
    connection_given = pair.server_events.dataReceived();
  };
  for (int round = 0; round < 4; ++round) {
    giveConnection();
    ASSERT_TRUE(pair.pump());
  }
  // Past the connection window, and every stream at exactly its own.
  for (int32_t id : ids) {
    EXPECT_EQ(pair.server_events.stream(id).data.size(), settings.stream_window) << id;
  }

  // Then the streams' windows as their bytes move on: every body arrives whole.
  for (int round = 0; round < 64; ++round) {
    giveConnection();
    for (auto& [id, s] : pair.server_events.streams) {
      pair.server->consumeStream(id, s.unconsumed);
      s.unconsumed = 0;
    }
    ASSERT_TRUE(pair.pump());
  }
  for (int32_t id : ids) {
    EXPECT_TRUE(pair.server_events.stream(id).end_of_data) << "stream " << id;
    EXPECT_EQ(pair.server_events.stream(id).data.size(), 2 * size_t{settings.stream_window});
  }
}

// A connection window smaller than the stream's: the connection's is the one that holds.
TEST(H2Session, FlowControl_ConnectionWindowHoldsASingleStream) {
  Settings server_settings = downstreamSettings();
  server_settings.stream_window = 1024 * 1024;
  server_settings.connection_window = 128 * 1024;
  Pair pair(upstreamSettings(), server_settings);
  BodySource body;
  body.data = patternedBytes(512 * 1024);
  const int32_t id = pair.request(grpcRequest(), body);
  ASSERT_TRUE(pair.pump());
  EXPECT_EQ(pair.server_events.stream(id).data.size(), server_settings.connection_window);

  pair.server_events.consumeAll();
  ASSERT_TRUE(pair.pump());
  EXPECT_EQ(pair.server_events.stream(id).data.size(),
            2 * size_t{server_settings.connection_window});
}

// Bytes of a stream that is gone still count against the connection window: consume() on a
// closed stream must give them back, or the connection stalls.
TEST(H2Session, FlowControl_ConsumeAfterStreamClosedGivesConnectionWindowBack) {
  Settings server_settings = downstreamSettings();
  server_settings.connection_window = 128 * 1024;
  Pair pair(upstreamSettings(), server_settings);
  BodySource body;
  body.data = patternedBytes(64 * 1024);
  const int32_t first = pair.request(grpcRequest(), body);
  BodySource body2 = body;
  const int32_t second = pair.request(grpcRequest(), body2);
  ASSERT_TRUE(pair.pump());
  ASSERT_EQ(pair.server_events.dataReceived(), 128u * 1024);

  // Both streams end (server answers, client body done), then the bytes are consumed.
  pair.respond(first, grpcResponse());
  pair.respond(second, grpcResponse());
  ASSERT_TRUE(pair.pump());
  ASSERT_TRUE(pair.server_events.stream(first).closed);
  ASSERT_TRUE(pair.server_events.stream(second).closed);
  pair.server_events.consumeAll();

  BodySource body3;
  body3.data = patternedBytes(100 * 1024, 7);
  const int32_t third = pair.request(grpcRequest(), body3);
  ASSERT_TRUE(pair.pump());
  EXPECT_EQ(pair.server_events.stream(third).data.size(), 64u * 1024);  // its stream window
}

// --- Header limits --------------------------------------------------------------------------

// The client here would refuse to send a block over its own limit: lift it.
Settings bigSendLimit() {
  Settings settings = upstreamSettings();
  settings.max_header_list_hard = 1024 * 1024;
  return settings;
}

Fields withBigFields(size_t count, size_t value_size) {
  Fields fields = grpcRequest();
  for (size_t i = 0; i < count; ++i) {
    fields.emplace_back("x-big-" + std::to_string(i),
                        std::string(value_size, static_cast<char>('a' + i % 26)));
  }
  return fields;
}

size_t listSize(const Fields& fields) { return blockOf(fields).listSize(); }

TEST(H2Session, HeaderLimits_ListAboveHardLimitResetsOnlyThatStream) {
  Pair pair(bigSendLimit(), downstreamSettings());
  const Fields big = withBigFields(40, 2000);
  ASSERT_GT(listSize(big), downstreamSettings().max_header_list_hard);
  ASSERT_LE(big.size(), downstreamSettings().max_header_count);
  const int32_t before = pair.request(grpcRequest("/before"));
  const int32_t too_big = pair.request(big);
  const int32_t after = pair.request(grpcRequest("/after"));
  ASSERT_TRUE(pair.pump());

  EXPECT_TRUE(pair.server_errors.empty());
  EXPECT_TRUE(pair.server_events.stream(too_big).blocks.empty());
  EXPECT_TRUE(pair.client_events.stream(too_big).closed);
  EXPECT_EQ(pair.client_events.stream(too_big).close_code, uint32_t{NGHTTP2_INTERNAL_ERROR});
  ASSERT_EQ(pair.server_events.stream(before).blocks.size(), 1u);
  ASSERT_EQ(pair.server_events.stream(after).blocks.size(), 1u);
  // HPACK state stayed in step: the next block decodes to what was sent.
  EXPECT_EQ(pair.server_events.stream(after).blocks[0].fields, grpcRequest("/after"));

  // And the connection keeps serving: a new stream completes.
  pair.respond(after, {{":status", "200"}, {"grpc-status", "0"}});
  const int32_t later = pair.request(grpcRequest("/later"));
  ASSERT_TRUE(pair.pump());
  EXPECT_EQ(pair.client_events.stream(after).close_code, uint32_t{NGHTTP2_NO_ERROR});
  ASSERT_EQ(pair.server_events.stream(later).blocks.size(), 1u);
  EXPECT_EQ(pair.server_events.stream(later).blocks[0].fields, grpcRequest("/later"));
}

// Past what the server advertises (16 KiB) but within the hard cap: passed on, since gRPC
// clients do not all honour SETTINGS_MAX_HEADER_LIST_SIZE.
TEST(H2Session, HeaderLimits_ListBetweenAdvertisedAndHardLimitIsAccepted) {
  Pair pair(bigSendLimit(), downstreamSettings());
  const Fields big = withBigFields(30, 2000);
  ASSERT_GT(listSize(big), downstreamSettings().max_header_list_advertised);
  ASSERT_LE(listSize(big), downstreamSettings().max_header_list_hard);
  const int32_t id = pair.request(big);
  ASSERT_TRUE(pair.pump());

  ASSERT_EQ(pair.server_events.stream(id).blocks.size(), 1u);
  EXPECT_EQ(pair.server_events.stream(id).blocks[0].fields, big);
}

// The limit is inclusive: a block of exactly max_header_list_hard bytes (RFC 9113 counting,
// name + value + 32 per field) passes, one byte more is reset.
TEST(H2Session, HeaderLimits_HardLimitIsExact) {
  Pair pair(bigSendLimit(), downstreamSettings());
  const size_t hard = downstreamSettings().max_header_list_hard;
  Fields at_limit = withBigFields(30, 2000);
  const std::string filler_name = "x-fill";
  const size_t room = hard - listSize(at_limit) - filler_name.size() - 32;
  at_limit.emplace_back(filler_name, std::string(room, 'f'));
  ASSERT_EQ(listSize(at_limit), hard);
  Fields over_limit = at_limit;
  over_limit.back().second += 'f';
  const int32_t ok = pair.request(at_limit);
  const int32_t over = pair.request(over_limit);
  ASSERT_TRUE(pair.pump());

  ASSERT_EQ(pair.server_events.stream(ok).blocks.size(), 1u);
  EXPECT_EQ(pair.server_events.stream(ok).blocks[0].fields, at_limit);
  EXPECT_TRUE(pair.server_events.stream(over).blocks.empty());
  EXPECT_TRUE(pair.client_events.stream(over).closed);
}

TEST(H2Session, HeaderLimits_MoreFieldsThanMaxCountResetsOnlyThatStream) {
  Pair pair(bigSendLimit(), downstreamSettings());
  const size_t max_count = downstreamSettings().max_header_count;
  const Fields at_limit = withBigFields(max_count - grpcRequest().size(), 1);
  const Fields over_limit = withBigFields(max_count - grpcRequest().size() + 1, 1);
  ASSERT_EQ(at_limit.size(), max_count);
  ASSERT_EQ(over_limit.size(), max_count + 1);
  const int32_t ok = pair.request(at_limit);
  const int32_t too_many = pair.request(over_limit);
  const int32_t after = pair.request(grpcRequest("/after"));
  ASSERT_TRUE(pair.pump());

  EXPECT_TRUE(pair.server_errors.empty());
  ASSERT_EQ(pair.server_events.stream(ok).blocks.size(), 1u);
  EXPECT_EQ(pair.server_events.stream(ok).blocks[0].fields, at_limit);
  EXPECT_TRUE(pair.server_events.stream(too_many).blocks.empty());
  EXPECT_TRUE(pair.client_events.stream(too_many).closed);
  EXPECT_NE(pair.client_events.stream(too_many).close_code, uint32_t{NGHTTP2_NO_ERROR});
  ASSERT_EQ(pair.server_events.stream(after).blocks.size(), 1u);
  EXPECT_EQ(pair.server_events.stream(after).blocks[0].fields, grpcRequest("/after"));
}

// --- GOAWAY ---------------------------------------------------------------------------------

TEST(H2Session, Goaway_StreamAboveLastStreamIdIsRefusedAndTheOtherCompletes) {
  Pair pair;
  const int32_t first = pair.request(grpcRequest("/first"));
  ASSERT_TRUE(pair.pump());
  ASSERT_EQ(pair.server_events.begun, std::vector<int32_t>{first});

  // The second request is on the wire when the server says GOAWAY.
  const int32_t second = pair.request(grpcRequest("/second"));
  std::string in_flight;
  pair.client->produce(in_flight, kProduceLimit);
  ASSERT_FALSE(in_flight.empty());
  pair.server->goaway(NGHTTP2_NO_ERROR);
  std::string goaway;
  pair.server->produce(goaway, kProduceLimit);
  const auto goaways = framesOfType(goaway, NGHTTP2_GOAWAY);
  ASSERT_EQ(goaways.size(), 1u);
  EXPECT_EQ(goaways[0].goawayLastStreamId(), first);  // the last stream the server saw
  pair.deliverToServer(in_flight);
  pair.deliverToClient(goaway);

  ASSERT_EQ(pair.client_events.goaways.size(), 1u);
  EXPECT_EQ(pair.client_events.goaways[0].first, first);
  EXPECT_EQ(pair.client_events.goaways[0].second, uint32_t{NGHTTP2_NO_ERROR});
  EXPECT_EQ(pair.client->goawayLastStreamId(), first);
  EXPECT_TRUE(pair.client_events.stream(second).closed);
  EXPECT_EQ(pair.client_events.stream(second).close_code, uint32_t{NGHTTP2_REFUSED_STREAM});
  // The server ignores the stream it never accepted.
  EXPECT_EQ(pair.server_events.begun, std::vector<int32_t>{first});

  pair.respond(first, {{":status", "200"}, {"grpc-status", "0"}});
  ASSERT_TRUE(pair.pump());
  EXPECT_EQ(pair.client_events.stream(first).blocks.size(), 1u);
  EXPECT_EQ(pair.client_events.stream(first).close_code, uint32_t{NGHTTP2_NO_ERROR});
  EXPECT_TRUE(pair.server_errors.empty());
  EXPECT_TRUE(pair.client_errors.empty());
}

// A request submitted before the GOAWAY arrived but not yet sent, and one submitted after:
// submitRequest() still hands out ids, and nghttp2 closes both unsent streams with
// REFUSED_STREAM when it comes to send them, so the proxy's calls go elsewhere.
TEST(H2Session, Goaway_UnsentRequestsAreClosedAsRefused) {
  Pair pair;
  const int32_t first = pair.request(grpcRequest("/first"));
  ASSERT_TRUE(pair.pump());
  const int32_t queued = pair.request(grpcRequest("/queued"));  // not produced yet
  pair.server->goaway(NGHTTP2_NO_ERROR);
  std::string goaway;
  pair.server->produce(goaway, kProduceLimit);
  pair.deliverToClient(goaway);
  ASSERT_EQ(pair.client_events.goaways.size(), 1u);
  const int32_t late = pair.client->submitRequest(blockOf(grpcRequest("/late")), false);
  ASSERT_TRUE(pair.pump());

  EXPECT_EQ(pair.server_events.begun, std::vector<int32_t>{first});
  EXPECT_TRUE(pair.client_events.stream(queued).closed);
  EXPECT_EQ(pair.client_events.stream(queued).close_code, uint32_t{NGHTTP2_REFUSED_STREAM});
  EXPECT_GT(late, 0);
  EXPECT_TRUE(pair.client_events.stream(late).closed);
  EXPECT_EQ(pair.client_events.stream(late).close_code, uint32_t{NGHTTP2_REFUSED_STREAM});
  EXPECT_FALSE(pair.client_events.stream(first).closed);
}

// goaway() uses the last stream id the server received (nghttp2's last_proc_stream_id): every
// request that reached it before the call is kept, whether or not it was answered yet.
TEST(H2Session, Goaway_KeepsEveryStreamTheServerAlreadyReceived) {
  Pair pair;
  const int32_t first = pair.request(grpcRequest("/first"));
  const int32_t second = pair.request(grpcRequest("/second"));
  ASSERT_TRUE(pair.pump());
  pair.server->goaway(NGHTTP2_NO_ERROR);
  ASSERT_TRUE(pair.pump());

  ASSERT_EQ(pair.client_events.goaways.size(), 1u);
  EXPECT_EQ(pair.client_events.goaways[0].first, second);
  EXPECT_FALSE(pair.client_events.stream(first).closed);
  EXPECT_FALSE(pair.client_events.stream(second).closed);
  pair.respond(first, {{":status", "200"}, {"grpc-status", "0"}});
  pair.respond(second, {{":status", "200"}, {"grpc-status", "0"}});
  ASSERT_TRUE(pair.pump());
  EXPECT_EQ(pair.client_events.stream(first).close_code, uint32_t{NGHTTP2_NO_ERROR});
  EXPECT_EQ(pair.client_events.stream(second).close_code, uint32_t{NGHTTP2_NO_ERROR});
  EXPECT_FALSE(pair.client->wantsToRead() && pair.client->wantsToWrite());
}

// --- SETTINGS -------------------------------------------------------------------------------

TEST(H2Session, Settings_ClientSeesServersMaxConcurrentStreams) {
  Pair pair;
  EXPECT_EQ(pair.client_events.remote_settings, 0);
  ASSERT_TRUE(pair.pump());
  EXPECT_EQ(pair.client_events.remote_settings, 1);  // the ACK is not reported
  EXPECT_EQ(pair.server_events.remote_settings, 1);
  EXPECT_EQ(pair.client->remoteMaxConcurrentStreams(), 100u);

  // Until told, the client assumes its own max_concurrent_streams; a server saying 7 shows.
  Settings client_settings = upstreamSettings();
  client_settings.max_concurrent_streams = 10;
  Settings server_settings = downstreamSettings();
  server_settings.max_concurrent_streams = 7;
  Pair small(client_settings, server_settings);
  EXPECT_EQ(small.client->remoteMaxConcurrentStreams(), 10u);
  ASSERT_TRUE(small.pump());
  EXPECT_EQ(small.client->remoteMaxConcurrentStreams(), 7u);
}

// An nghttp2 client holds requests beyond the server's limit and sends them as streams close.
TEST(H2Session, Settings_ClientQueuesRequestsBeyondServersLimit) {
  Settings server_settings = downstreamSettings();
  server_settings.max_concurrent_streams = 2;
  Pair pair(upstreamSettings(), server_settings);
  ASSERT_TRUE(pair.pump());  // SETTINGS exchanged and acknowledged
  std::vector<int32_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(pair.request(grpcRequest()));
  ASSERT_TRUE(pair.pump());
  EXPECT_EQ(pair.server_events.begun.size(), 2u);

  pair.respond(pair.server_events.begun[0], {{":status", "200"}, {"grpc-status", "0"}});
  ASSERT_TRUE(pair.pump());
  EXPECT_EQ(pair.server_events.begun.size(), 3u);
  for (int32_t id : ids)
    EXPECT_NE(pair.client_events.stream(id).close_code, uint32_t{NGHTTP2_REFUSED_STREAM});
}

// Before the client acknowledged the server's SETTINGS, streams over the new limit are
// refused one by one (REFUSED_STREAM): the proxy sends those calls again.
TEST(H2Session, Settings_StreamsBeyondLimitBeforeAckAreRefused) {
  Settings server_settings = downstreamSettings();
  server_settings.max_concurrent_streams = 2;
  Pair pair(upstreamSettings(), server_settings);
  std::vector<int32_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(pair.request(grpcRequest()));
  ASSERT_TRUE(pair.pump());

  EXPECT_EQ(pair.server_events.begun, (std::vector<int32_t>{ids[0], ids[1]}));
  EXPECT_FALSE(pair.client_events.stream(ids[0]).closed);
  EXPECT_FALSE(pair.client_events.stream(ids[1]).closed);
  EXPECT_EQ(pair.client_events.stream(ids[2]).close_code, uint32_t{NGHTTP2_REFUSED_STREAM});
  EXPECT_EQ(pair.client_events.stream(ids[3]).close_code, uint32_t{NGHTTP2_REFUSED_STREAM});
  EXPECT_TRUE(pair.server_errors.empty());
  EXPECT_TRUE(pair.client_events.goaways.empty());
}

// After the ACK, a peer that opens more streams than allowed breaks the protocol: nghttp2
// 1.52 ends the connection with GOAWAY(PROTOCOL_ERROR), not REFUSED_STREAM.
TEST(H2Session, Settings_StreamsBeyondLimitAfterAckEndTheConnection) {
  Settings server_settings = downstreamSettings();
  server_settings.max_concurrent_streams = 2;
  Recorder events("server");
  auto server = createSession(Role::kServer, server_settings, events);
  events.attach(*server);
  std::string server_settings_bytes;
  server->produce(server_settings_bytes, kProduceLimit);

  RawPeer client;
  std::string bytes = std::string(kClientPreface) + RawPeer::settings() + RawPeer::settingsAck();
  ASSERT_TRUE(server->receive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  std::string out;
  server->produce(out, kProduceLimit);

  std::string requests;
  for (int32_t id : {1, 3, 5}) requests += client.headers(id, grpcRequest(), false);
  Status status =
      server->receive(reinterpret_cast<const uint8_t*>(requests.data()), requests.size());
  out.clear();
  server->produce(out, kProduceLimit);

  EXPECT_EQ(events.begun, (std::vector<int32_t>{1, 3}));
  const auto goaways = framesOfType(out, NGHTTP2_GOAWAY);
  ASSERT_EQ(goaways.size(), 1u);
  EXPECT_EQ(goaways[0].errorCode(), uint32_t{NGHTTP2_PROTOCOL_ERROR});
  EXPECT_TRUE(framesOfType(out, NGHTTP2_RST_STREAM).empty());
  EXPECT_TRUE(status.ok());  // the session is ending, but receive() did not fail
}

// --- Garbage --------------------------------------------------------------------------------

TEST(H2Session, Receive_GarbageInsteadOfPrefaceFailsAndQueuesGoaway) {
  Recorder events("server");
  auto server = createSession(Role::kServer, downstreamSettings(), events);
  events.attach(*server);
  const std::string garbage = "GET / HTTP/1.1\r\nHost: example\r\n\r\n";
  Status status = server->receive(reinterpret_cast<const uint8_t*>(garbage.data()), garbage.size());
  EXPECT_FALSE(status.ok());

  std::string out;
  server->produce(out, kProduceLimit);
  const auto frames = parseFrames(out);
  ASSERT_FALSE(frames.empty());
  const auto goaways = framesOfType(out, NGHTTP2_GOAWAY);
  ASSERT_EQ(goaways.size(), 1u);
  EXPECT_EQ(goaways[0].errorCode(), uint32_t{NGHTTP2_PROTOCOL_ERROR});
  EXPECT_TRUE(events.begun.empty());
  EXPECT_FALSE(server->wantsToRead());
}

// A protocol error inside a frame is different: nghttp2 queues GOAWAY itself and receive()
// succeeds; the session then wants neither to read nor, once the GOAWAY is out, to write,
// which is how the connection learns to close.
TEST(H2Session, Receive_BadFrameAfterPrefaceQueuesGoawayAndEndsTheSession) {
  Recorder events("server");
  auto server = createSession(Role::kServer, downstreamSettings(), events);
  events.attach(*server);
  const std::string bytes = std::string(kClientPreface) + RawPeer::settings() +
                            RawPeer::data(0, "stream zero", false);  // DATA on stream 0
  Status status = server->receive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  EXPECT_TRUE(status.ok());

  std::string out;
  server->produce(out, kProduceLimit);
  const auto goaways = framesOfType(out, NGHTTP2_GOAWAY);
  ASSERT_EQ(goaways.size(), 1u);
  EXPECT_EQ(goaways[0].errorCode(), uint32_t{NGHTTP2_PROTOCOL_ERROR});
  EXPECT_FALSE(server->wantsToRead());
  EXPECT_FALSE(server->wantsToWrite());
}

// --- Abuse: each rule ends only the offending connection, with a GOAWAY ---------------------

std::string rstStream(int32_t stream_id, uint32_t code) {
  return encodeFrame(NGHTTP2_RST_STREAM, 0, stream_id, u32(code));
}
std::string priority(int32_t stream_id) {
  return encodeFrame(NGHTTP2_PRIORITY, 0, stream_id, u32(0) + std::string(1, '\x10'));
}

// A server Session fed by a hand-written client.
struct RawClient {
  explicit RawClient(Settings settings = downstreamSettings()) : events("server") {
    server = createSession(Role::kServer, settings, events);
    events.attach(*server);
    feed(std::string(kClientPreface) + RawPeer::settings() + RawPeer::settingsAck());
    EXPECT_TRUE(errors.empty());
    drain();
  }
  // Feeds bytes one frame-sized piece at a time is not needed: nghttp2 stops at the first
  // fatal error.
  void feed(const std::string& bytes) {
    Status status = server->receive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    if (!status) errors.push_back(status.error());
  }
  std::string drain() {
    std::string out;
    server->produce(out, 16 * 1024 * 1024);
    return out;
  }
  // The one GOAWAY the server sent, or none.
  std::optional<uint32_t> goawayCode() {
    const auto goaways = framesOfType(drain(), NGHTTP2_GOAWAY);
    if (goaways.empty()) return std::nullopt;
    EXPECT_EQ(goaways.size(), 1u);
    return goaways[0].errorCode();
  }

  Recorder events;
  std::unique_ptr<Session> server;
  RawPeer peer;
  std::vector<std::string> errors;
};

Settings withBudgets(uint32_t premature_resets, uint32_t glitches, uint32_t control_frames) {
  Settings settings = downstreamSettings();
  settings.max_premature_resets = premature_resets;
  settings.max_glitches = glitches;
  settings.max_control_frames = control_frames;
  return settings;
}

// --- A server before its nghttp2 session ----------------------------------------------------

// The handshake, and the frames of a connection that stays idle, are answered with no nghttp2
// session (it is ~12 KiB): by hand, as nghttp2 would.
TEST(H2Session, Early_HandshakeAndIdleFramesAreAnsweredWithoutASession) {
  Recorder events("server");
  auto server = createSession(Role::kServer, downstreamSettings(), events);
  events.attach(*server);
  std::string out;
  server->produce(out, kProduceLimit);
  const auto first = parseFrames(out);
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].type, NGHTTP2_SETTINGS);
  EXPECT_EQ(first[0].payload.size(), 4 * 6u);  // no ENABLE_PUSH from a server
  EXPECT_EQ(first[1].type, NGHTTP2_WINDOW_UPDATE);
  EXPECT_EQ(first[1].readU32(0), downstreamSettings().connection_window - 65535);

  const std::string hello = std::string(kClientPreface) + settingsWith({{4, 1 << 20}}) +
                            RawPeer::settingsAck() + windowUpdate(0, 1000) + ping(42) +
                            encodeFrame(NGHTTP2_PING, NGHTTP2_FLAG_ACK, 0, u32(0) + u32(0)) +
                            settingsWith({{3, 10}});
  ASSERT_TRUE(server->receive(reinterpret_cast<const uint8_t*>(hello.data()), hello.size()));
  EXPECT_FALSE(server->started());
  EXPECT_EQ(events.remote_settings, 2);
  EXPECT_EQ(events.ping_acks, 1);
  EXPECT_TRUE(server->wantsToRead());
  EXPECT_TRUE(server->wantsToWrite());
  out.clear();
  server->produce(out, kProduceLimit);
  const auto answers = parseFrames(out);
  ASSERT_EQ(answers.size(), 3u);
  EXPECT_EQ(answers[0].type, NGHTTP2_SETTINGS);
  EXPECT_EQ(answers[0].flags, NGHTTP2_FLAG_ACK);
  EXPECT_EQ(answers[1].type, NGHTTP2_PING);
  EXPECT_EQ(answers[1].flags, NGHTTP2_FLAG_ACK);
  EXPECT_EQ(answers[1].readU32(4), 42u);  // the PING's own payload
  EXPECT_EQ(answers[2].type, NGHTTP2_SETTINGS);
  EXPECT_EQ(answers[2].flags, NGHTTP2_FLAG_ACK);
  EXPECT_FALSE(server->wantsToWrite());
}

// The session made at the first HEADERS knows what was agreed before it: the client's stream
// window (SETTINGS) and its connection WINDOW_UPDATE decide how much body it is sent.
TEST(H2Session, Early_WhatWasAgreedHoldsOnceTheSessionStarts) {
  RawClient c;
  c.feed(settingsWith({{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1'000'000}}) +
         windowUpdate(0, 50'000));
  ASSERT_FALSE(c.server->started());
  c.drain();
  c.feed(c.peer.headers(1, grpcRequest(), true));
  ASSERT_TRUE(c.server->started());
  ASSERT_EQ(c.events.begun, std::vector<int32_t>{1});
  c.events.bodies[1] = BodySource{patternedBytes(200'000), 0, true, std::nullopt};
  ASSERT_EQ(c.server->submitResponse(1, blockOf(grpcResponse()), true), 0);
  size_t sent = 0;
  for (const Frame& f : framesOfType(c.drain(), NGHTTP2_DATA)) sent += f.payload.size();
  EXPECT_EQ(sent, 65'535u + 50'000u);  // the connection window, raised by the client
  EXPECT_TRUE(c.errors.empty());
}

// Frames split across reads, or a setting that changes, are left to nghttp2.
TEST(H2Session, Early_WhatIsNotPlainIsLeftToTheSession) {
  {
    Recorder events("server");
    auto server = createSession(Role::kServer, downstreamSettings(), events);
    events.attach(*server);
    const std::string hello = std::string(kClientPreface) + settingsWith({{3, 50}}) + ping(7);
    for (char byte : hello) {
      ASSERT_TRUE(server->receive(reinterpret_cast<const uint8_t*>(&byte), 1));
    }
    EXPECT_TRUE(server->started());
    std::string out;
    server->produce(out, kProduceLimit);
    EXPECT_EQ(framesOfType(out, NGHTTP2_PING).size(), 1u);
    EXPECT_EQ(events.remote_settings, 1);
  }
  {
    RawClient c;
    c.feed(settingsWith({{NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 0}}));
    EXPECT_FALSE(c.server->started());
    c.feed(settingsWith({{NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 4096}}));
    EXPECT_TRUE(c.server->started());
    EXPECT_EQ(c.events.remote_settings, 3);
    c.feed(c.peer.headers(1, grpcRequest(), true));
    EXPECT_EQ(c.events.begun, std::vector<int32_t>{1});
    EXPECT_TRUE(c.errors.empty());
  }
}

// A bad value is answered as nghttp2 answers it.
TEST(H2Session, Early_AnInvalidSettingEndsTheConnectionAsNghttp2Would) {
  const std::pair<uint16_t, uint32_t> cases[] = {
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0x80000000u},  // FLOW_CONTROL_ERROR
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 2},                    // PROTOCOL_ERROR
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 100},               // PROTOCOL_ERROR
  };
  for (const auto& [id, value] : cases) {
    RawClient c;
    c.feed(settingsWith({{id, value}}));
    const auto code = c.goawayCode();
    ASSERT_TRUE(code.has_value()) << id;
    EXPECT_EQ(*code, id == NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE
                         ? uint32_t{NGHTTP2_FLOW_CONTROL_ERROR}
                         : uint32_t{NGHTTP2_PROTOCOL_ERROR})
        << id;
    EXPECT_FALSE(c.server->wantsToRead()) << id;
  }
}

// A drain reaches an idle connection too: the notice and its PING, then the final GOAWAY.
TEST(H2Session, Early_DrainNoticeThenFinalGoaway) {
  RawClient c;
  c.server->shutdownNotice();
  const auto notice = parseFrames(c.drain());
  ASSERT_EQ(notice.size(), 2u);
  EXPECT_EQ(notice[0].type, NGHTTP2_GOAWAY);
  EXPECT_EQ(notice[0].goawayLastStreamId(), 0x7fffffff);
  EXPECT_EQ(notice[0].errorCode(), uint32_t{NGHTTP2_NO_ERROR});
  EXPECT_EQ(notice[1].type, NGHTTP2_PING);
  c.feed(encodeFrame(NGHTTP2_PING, NGHTTP2_FLAG_ACK, 0, notice[1].payload));
  EXPECT_EQ(c.events.ping_acks, 1);
  EXPECT_TRUE(c.server->wantsToRead());
  c.server->goaway(NGHTTP2_NO_ERROR);
  const auto goaways = framesOfType(c.drain(), NGHTTP2_GOAWAY);
  ASSERT_EQ(goaways.size(), 1u);
  EXPECT_EQ(goaways[0].goawayLastStreamId(), 0);
  EXPECT_FALSE(c.server->wantsToRead());
  EXPECT_FALSE(c.server->wantsToWrite());
  // A stream begun after the final GOAWAY is not served.
  c.feed(c.peer.headers(1, grpcRequest(), true));
  EXPECT_TRUE(c.events.begun.empty());
}

// The final GOAWAY comes with the PING's ACK; a stream behind it in the same read is not
// served either.
TEST(H2Session, Early_AStreamBehindTheAckThatEndsTheDrainIsNotServed) {
  RawClient c;
  c.events.goaway_on_ping_ack = true;
  c.server->shutdownNotice();
  const auto notice = parseFrames(c.drain());
  ASSERT_EQ(notice.size(), 2u);
  c.feed(encodeFrame(NGHTTP2_PING, NGHTTP2_FLAG_ACK, 0, notice[1].payload) +
         c.peer.headers(1, grpcRequest(), true));
  EXPECT_TRUE(c.events.begun.empty());
  EXPECT_FALSE(c.server->started());
  const auto goaways = framesOfType(c.drain(), NGHTTP2_GOAWAY);
  ASSERT_EQ(goaways.size(), 1u);
  EXPECT_EQ(goaways[0].goawayLastStreamId(), 0);
}

TEST(H2Session, Abuse_RapidResetEndsTheConnectionWithEnhanceYourCalm) {
  RawClient c(withBudgets(10, 100, 1000));
  std::string bytes;
  for (int32_t i = 0; i < 20; ++i) {
    const int32_t id = 1 + 2 * i;
    bytes += c.peer.headers(id, grpcRequest(), false) + rstStream(id, NGHTTP2_CANCEL);
  }
  c.feed(bytes);
  ASSERT_EQ(c.errors.size(), 1u);
  EXPECT_EQ(c.errors[0], "rapid_reset");
  EXPECT_EQ(c.server->violation(), Violation::kRapidReset);
  EXPECT_EQ(c.events.begun.size(), 10u);  // reading stopped at the tenth reset
  EXPECT_EQ(c.goawayCode(), uint32_t{NGHTTP2_ENHANCE_YOUR_CALM});
  EXPECT_FALSE(c.server->wantsToRead());
}

TEST(H2Session, Abuse_ResetsAfterTheResponseAreNotPremature) {
  RawClient c(withBudgets(10, 100, 1000));
  for (int32_t i = 0; i < 30; ++i) {
    const int32_t id = 1 + 2 * i;
    c.feed(c.peer.headers(id, grpcRequest(), false));
    ASSERT_EQ(c.server->submitResponse(id, blockOf(grpcResponse()), true), 0);
    c.events.bodies[id] = BodySource{"", 0, false, std::nullopt};  // never ends
    c.drain();
    c.feed(rstStream(id, NGHTTP2_CANCEL));
  }
  EXPECT_TRUE(c.errors.empty());
  EXPECT_EQ(c.server->violation(), Violation::kNone);
  EXPECT_EQ(c.goawayCode(), std::nullopt);
}

// A client that cancels some of its calls early (deadlines) is not an attacker: the rule
// needs the resets to be most of the connection's streams.
TEST(H2Session, Abuse_ACancelOfFewerThanHalfTheStreamsIsNotRapidReset) {
  RawClient c(withBudgets(10, 100, 1000));
  for (int32_t i = 0; i < 60; ++i) {
    const int32_t id = 1 + 2 * i;
    c.feed(c.peer.headers(id, grpcRequest(), true));
    if (i % 3 == 0) {
      c.feed(rstStream(id, NGHTTP2_CANCEL));  // 20 of 60
    } else {
      ASSERT_EQ(c.server->submitResponse(id, blockOf(grpcResponse()), false), 0);
    }
    c.drain();
  }
  EXPECT_TRUE(c.errors.empty());
  EXPECT_EQ(c.server->violation(), Violation::kNone);
}

TEST(H2Session, Abuse_MalformedRequestsResetStreamsThenExhaustTheGlitchBudget) {
  RawClient c(withBudgets(100, 5, 1000));
  Fields bad = grpcRequest();
  bad.emplace_back("Upper-Case", "x");  // an uppercase name is malformed in HTTP/2
  c.feed(c.peer.headers(1, bad, true));
  EXPECT_TRUE(c.errors.empty());
  const auto resets = framesOfType(c.drain(), NGHTTP2_RST_STREAM);
  ASSERT_EQ(resets.size(), 1u);  // a stream error while within the budget
  EXPECT_EQ(c.server->violation(), Violation::kNone);

  std::string bytes;
  for (int32_t i = 1; i < 20; ++i) bytes += c.peer.headers(1 + 2 * i, bad, true);
  c.feed(bytes);
  EXPECT_EQ(c.server->violation(), Violation::kGlitch);
  EXPECT_EQ(c.goawayCode(), uint32_t{NGHTTP2_ENHANCE_YOUR_CALM});
  for (const auto& [id, stream] : c.events.streams) {
    EXPECT_TRUE(stream.blocks.empty()) << id;  // none was passed on
  }
}

TEST(H2Session, Abuse_OversizedHeaderBlocksCountAsGlitches) {
  Settings settings = withBudgets(100, 3, 1000);
  RawClient c(settings);
  const Fields big = withBigFields(150, 10);  // within a frame, past the field count
  ASSERT_GT(big.size(), settings.max_header_count);
  std::string bytes;
  for (int32_t i = 0; i < 6; ++i) bytes += c.peer.headers(1 + 2 * i, big, true);
  c.feed(bytes);
  EXPECT_EQ(c.server->violation(), Violation::kGlitch);
  EXPECT_EQ(c.goawayCode(), uint32_t{NGHTTP2_ENHANCE_YOUR_CALM});
}

TEST(H2Session, Abuse_ContinuationFloodEndsTheConnection) {
  RawClient c;
  // A HEADERS frame without END_HEADERS, then CONTINUATIONs that carry nothing, past
  // nghttp2's limit of 8.
  std::string bytes = encodeFrame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_STREAM, 1, {});
  for (int i = 0; i < 20; ++i) bytes += encodeFrame(NGHTTP2_CONTINUATION, 0, 1, {});
  c.feed(bytes);
  ASSERT_EQ(c.errors.size(), 1u);
  EXPECT_EQ(c.server->violation(), Violation::kContinuationFlood);
  EXPECT_EQ(c.goawayCode(), uint32_t{NGHTTP2_ENHANCE_YOUR_CALM});
}

struct FloodCase {
  const char* name;
  std::string (*frame)(uint64_t i);
  Violation violation;
};

// The connection ended for this flood: one error, its violation, GOAWAY ENHANCE_YOUR_CALM.
void expectClosedFor(RawClient& c, const FloodCase& flood) {
  EXPECT_EQ(c.errors.size(), 1u) << flood.name;
  EXPECT_EQ(c.server->violation(), flood.violation) << flood.name;
  EXPECT_EQ(c.goawayCode(), uint32_t{NGHTTP2_ENHANCE_YOUR_CALM}) << flood.name;
}

// With `started`, the client begins a call: its connection then has its nghttp2 session.
void beginACallIf(bool started, RawClient& c) {
  if (started) c.feed(c.peer.headers(1, grpcRequest(), true));
  EXPECT_EQ(c.server->started(), started);
}

TEST(H2Session, Abuse_ControlFrameFloodsEndTheConnectionPastTheirBudget) {
  const FloodCase cases[] = {
      {"settings", [](uint64_t) { return RawPeer::settings(); }, Violation::kSettingsFlood},
      {"ping", [](uint64_t i) { return ping(i); }, Violation::kPingFlood},
      {"window_update", [](uint64_t) { return windowUpdate(0, 1); }, Violation::kWindowUpdateFlood},
      {"priority", [](uint64_t i) { return priority(static_cast<int32_t>(1001 + 2 * i)); },
       Violation::kPriorityFlood},
  };
  for (const FloodCase& flood : cases) {
    for (bool started : {false, true}) {
      SCOPED_TRACE(started ? "with a session" : "before the session");
      RawClient c(withBudgets(100, 100, 50));
      beginACallIf(started, c);
      // Within the budget (the first SETTINGS took one token): served as usual.
      std::string bytes;
      for (uint64_t i = 0; i < 40; ++i) bytes += flood.frame(i);
      c.feed(bytes);
      EXPECT_TRUE(c.errors.empty()) << flood.name;
      EXPECT_EQ(c.goawayCode(), std::nullopt) << flood.name;
      bytes.clear();
      for (uint64_t i = 40; i < 100; ++i) bytes += flood.frame(i);
      c.feed(bytes);
      expectClosedFor(c, flood);
    }
  }
}

TEST(H2Session, Abuse_AFloodInOneReadIsNamedByItsKindNotAsAckFlood) {
  // nghttp2 queues each PING's ACK before the budget sees the PING: with the default budget,
  // one read of 1500 PINGs (and SETTINGS to add their ACKs) must still be a ping flood.
  const FloodCase cases[] = {
      {"ping", [](uint64_t i) { return ping(i); }, Violation::kPingFlood},
      {"settings", [](uint64_t) { return RawPeer::settings(); }, Violation::kSettingsFlood},
  };
  for (const FloodCase& flood : cases) {
    for (bool started : {false, true}) {
      SCOPED_TRACE(started ? "with a session" : "before the session");
      RawClient c(withBudgets(100, 100, 1000));
      beginACallIf(started, c);
      std::string bytes;
      for (uint64_t i = 0; i < 990; ++i) bytes += i % 2 ? ping(i) : RawPeer::settings();
      for (uint64_t i = 0; i < 1500; ++i) bytes += flood.frame(i);
      c.feed(bytes);
      expectClosedFor(c, flood);
    }
  }
}

TEST(H2Session, Abuse_EmptyDataFramesWithoutEndStreamAreAFlood) {
  RawClient c(withBudgets(100, 100, 50));
  c.feed(c.peer.headers(1, grpcRequest(), false));
  std::string bytes;
  for (int i = 0; i < 100; ++i) bytes += RawPeer::data(1, "", false);
  c.feed(bytes);
  EXPECT_EQ(c.server->violation(), Violation::kEmptyFrames);
  EXPECT_EQ(c.goawayCode(), uint32_t{NGHTTP2_ENHANCE_YOUR_CALM});
}

TEST(H2Session, Abuse_DataWithPayloadIsNotCountedAsEmpty) {
  RawClient c(withBudgets(100, 100, 50));
  c.events.auto_consume = true;
  c.feed(c.peer.headers(1, grpcRequest(), false));
  for (int i = 0; i < 100; ++i) {
    c.feed(RawPeer::data(1, "x", false));
    c.events.consumeAll();
  }
  c.feed(RawPeer::data(1, "", true));  // an empty END_STREAM is how some clients half-close
  EXPECT_TRUE(c.errors.empty());
  EXPECT_EQ(c.server->violation(), Violation::kNone);
  EXPECT_EQ(c.events.stream(1).data.size(), 100u);
}

TEST(H2Session, Abuse_AServerPeerIsHeldToTheSameRules) {
  Settings settings = upstreamSettings();
  settings.max_control_frames = 50;
  Recorder events("client");
  auto client = createSession(Role::kClient, settings, events);
  events.attach(*client);
  std::string out;
  client->produce(out, kProduceLimit);
  std::string bytes = RawPeer::settings();
  for (uint64_t i = 0; i < 100; ++i) bytes += ping(i);
  Status status = client->receive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(client->violation(), Violation::kPingFlood);
  out.clear();
  client->produce(out, 1024 * 1024);
  const auto goaways = framesOfType(out, NGHTTP2_GOAWAY);
  ASSERT_EQ(goaways.size(), 1u);
  EXPECT_EQ(goaways[0].errorCode(), uint32_t{NGHTTP2_ENHANCE_YOUR_CALM});
}

TEST(H2Session, Abuse_HeadersOverdueCoversThePrefaceAndAnUnfinishedBlock) {
  using std::chrono::seconds;
  const auto now = std::chrono::steady_clock::now();
  Recorder events("server");
  auto server = createSession(Role::kServer, downstreamSettings(), events);
  events.attach(*server);
  // Nothing yet: late only once the timeout passed.
  EXPECT_FALSE(server->headersOverdue(now, seconds(10)));
  EXPECT_TRUE(server->headersOverdue(now + seconds(11), seconds(10)));

  const std::string hello = std::string(kClientPreface) + RawPeer::settings();
  ASSERT_TRUE(server->receive(reinterpret_cast<const uint8_t*>(hello.data()), hello.size()));
  EXPECT_FALSE(server->headersOverdue(now + seconds(11), seconds(10)));

  // A header block begun and never finished (slowloris): a HEADERS frame without
  // END_HEADERS, its CONTINUATION never sent.
  RawPeer peer;
  std::string block = peer.headers(1, grpcRequest(), true);
  block[4] = static_cast<char>(NGHTTP2_FLAG_END_STREAM);  // clear END_HEADERS
  ASSERT_TRUE(server->receive(reinterpret_cast<const uint8_t*>(block.data()), block.size()));
  EXPECT_FALSE(server->headersOverdue(std::chrono::steady_clock::now(), seconds(10)));
  EXPECT_TRUE(server->headersOverdue(std::chrono::steady_clock::now() + seconds(11), seconds(10)));

  const std::string end = encodeFrame(NGHTTP2_CONTINUATION, NGHTTP2_FLAG_END_HEADERS, 1, {});
  ASSERT_TRUE(server->receive(reinterpret_cast<const uint8_t*>(end.data()), end.size()));
  EXPECT_EQ(events.stream(1).blocks.size(), 1u);
  EXPECT_FALSE(server->headersOverdue(std::chrono::steady_clock::now() + seconds(11), seconds(10)));

  server->fail(Violation::kHeaderTimeout);
  std::string out;
  server->produce(out, kProduceLimit);
  const auto goaways = framesOfType(out, NGHTTP2_GOAWAY);
  ASSERT_EQ(goaways.size(), 1u);
  EXPECT_EQ(goaways[0].errorCode(), uint32_t{NGHTTP2_ENHANCE_YOUR_CALM});
  EXPECT_EQ(server->violation(), Violation::kHeaderTimeout);
  EXPECT_EQ(violationName(server->violation()), "header_timeout");
}

TEST(H2Session, Abuse_RfcPrioritiesAreOffInBothDirections) {
  Pair pair;
  ASSERT_TRUE(pair.pump());
  for (const std::string* bytes : {&pair.server_bytes_in, &pair.client_bytes_in}) {
    const auto settings = framesOfType(*bytes, NGHTTP2_SETTINGS);
    ASSERT_FALSE(settings.empty());
    bool off = false;
    for (size_t at = 0; at + 6 <= settings[0].payload.size(); at += 6) {
      const auto id = static_cast<uint16_t>((static_cast<uint8_t>(settings[0].payload[at]) << 8) |
                                            static_cast<uint8_t>(settings[0].payload[at + 1]));
      off =
          off || (id == NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES && settings[0].readU32(at + 2) == 1);
    }
    EXPECT_TRUE(off);
  }
}

// Clients answer our DATA with WINDOW_UPDATEs (gRPC's C core sends more than one per frame):
// those are not a flood, however many calls the connection carries.
TEST(H2Session, Abuse_WindowUpdatesThatAnswerOurDataAreNotAFlood) {
  RawClient c(withBudgets(100, 100, 50));
  for (int32_t i = 0; i < 100; ++i) {
    const int32_t id = 1 + 2 * i;
    c.feed(c.peer.headers(id, grpcRequest(), true));
    c.events.bodies[id] = BodySource{"response", 0, true, std::nullopt};
    ASSERT_EQ(c.server->submitResponse(id, blockOf(grpcResponse()), true), 0);
    ASSERT_EQ(framesOfType(c.drain(), NGHTTP2_DATA).size(), 1u);
    c.feed(windowUpdate(0, 8) + windowUpdate(0, 1) + windowUpdate(0, 1) + windowUpdate(0, 1));
  }
  EXPECT_TRUE(c.errors.empty());
  EXPECT_EQ(c.server->violation(), Violation::kNone);
  EXPECT_EQ(c.goawayCode(), std::nullopt);
}

// --- nghttp2 out of memory: the connection fails, the process goes on ----------------------

// An allocator for nghttp2 that runs out: the first `budget` allocations succeed, none after.
class ScarceMemory {
 public:
  explicit ScarceMemory(size_t budget) : left_(budget) {}
  ScarceMemory(const ScarceMemory&) = delete;
  ScarceMemory& operator=(const ScarceMemory&) = delete;

  nghttp2_mem* mem() { return &mem_; }
  bool ranOut() const { return ran_out_; }

 private:
  static ScarceMemory& self(void* user_data) { return *static_cast<ScarceMemory*>(user_data); }
  bool take() {
    ran_out_ = ran_out_ || left_ == 0;
    if (ran_out_) return false;
    --left_;
    return true;
  }
  static void* allocate(size_t size, void* user_data) {
    return self(user_data).take() ? std::malloc(size) : nullptr;
  }
  static void release(void* pointer, void* /*user_data*/) { std::free(pointer); }
  static void* allocateZeroed(size_t count, size_t size, void* user_data) {
    return self(user_data).take() ? std::calloc(count, size) : nullptr;
  }
  static void* reallocate(void* pointer, size_t size, void* user_data) {
    return self(user_data).take() ? std::realloc(pointer, size) : nullptr;
  }

  size_t left_;
  bool ran_out_ = false;
  nghttp2_mem mem_{this, allocate, release, allocateZeroed, reallocate};
};

TEST(H2Session, OutOfMemory_ClientCreateFailsWithAMessage) {
  ScarceMemory memory(0);
  Recorder events("client");
  auto client = Session::create(Role::kClient, upstreamSettings(), events, memory.mem());
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.error(), "no HTTP/2 session: Out of memory");
}

// Runs `attempt` with an allocator that runs out after 0, 1, 2... allocations until one is
// enough (attempt returns true); returns how many were not.
template <typename Attempt>
size_t failuresUntilEnough(Attempt attempt) {
  for (size_t budget = 0; budget < 1000; ++budget) {
    SCOPED_TRACE(testing::Message() << "allocations allowed: " << budget);
    ScarceMemory memory(budget);
    if (attempt(memory)) return budget;
  }
  ADD_FAILURE() << "1000 allocations were never enough";
  return 1000;
}

// Each allocation that making a client session needs can fail: create() then reports it and
// leaves nothing behind (the sanitizer build checks for leaks), until there is enough.
TEST(H2Session, OutOfMemory_ClientCreateFailsCleanlyAtEveryAllocation) {
  const size_t failures = failuresUntilEnough([](ScarceMemory& memory) {
    Recorder events("client");
    auto client = Session::create(Role::kClient, upstreamSettings(), events, memory.mem());
    if (!client) {
      EXPECT_TRUE(memory.ranOut());
      return false;
    }
    // Enough: the session sends its preface and SETTINGS as usual.
    std::string out;
    (*client)->produce(out, kProduceLimit);
    EXPECT_EQ(framesOfType(out, NGHTTP2_SETTINGS).size(), 1u);
    return true;
  });
  EXPECT_GE(failures, 2u);  // the session itself, then what it queues first
}

// A server makes its nghttp2 session at the first HEADERS: when that fails, the connection
// ends with GOAWAY INTERNAL_ERROR. It is not the peer's doing: no violation is counted.
TEST(H2Session, OutOfMemory_ServerThatCannotStartItsSessionSendsGoawayInternalError) {
  ScarceMemory memory(0);
  Recorder events("server");
  auto created = Session::create(Role::kServer, downstreamSettings(), events, memory.mem());
  ASSERT_TRUE(created.ok());  // nghttp2 is not needed yet
  std::unique_ptr<Session> server = std::move(*created);
  events.attach(*server);
  const std::string hello = std::string(kClientPreface) + RawPeer::settings() + ping(1);
  ASSERT_TRUE(server->receive(reinterpret_cast<const uint8_t*>(hello.data()), hello.size()));
  std::string out;
  server->produce(out, kProduceLimit);
  EXPECT_EQ(framesOfType(out, NGHTTP2_PING).size(), 1u);  // answered without nghttp2

  RawPeer peer;
  const std::string request = peer.headers(1, grpcRequest(), true);
  Status status = server->receive(reinterpret_cast<const uint8_t*>(request.data()), request.size());
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error(), "no HTTP/2 session: Out of memory");
  EXPECT_FALSE(server->started());
  EXPECT_EQ(server->violation(), Violation::kNone);
  EXPECT_TRUE(events.begun.empty());
  EXPECT_FALSE(server->wantsToRead());
  out.clear();
  server->produce(out, kProduceLimit);
  const auto goaways = framesOfType(out, NGHTTP2_GOAWAY);
  ASSERT_EQ(goaways.size(), 1u);
  EXPECT_EQ(goaways[0].errorCode(), uint32_t{NGHTTP2_INTERNAL_ERROR});
  EXPECT_EQ(goaways[0].goawayLastStreamId(), 0);
  EXPECT_FALSE(server->wantsToWrite());
  // What the peer still sends is dropped.
  EXPECT_TRUE(server->receive(reinterpret_cast<const uint8_t*>(request.data()), request.size()));
  EXPECT_TRUE(events.begun.empty());
}

// Whichever allocation of the late start fails (the session, what it queues first, the replay
// of what was agreed), the connection ends with GOAWAY INTERNAL_ERROR and nothing leaks.
TEST(H2Session, OutOfMemory_ServerStartFailsCleanlyAtEveryAllocation) {
  size_t start_failures = 0;
  failuresUntilEnough([&](ScarceMemory& memory) {
    Recorder events("server");
    auto created = Session::create(Role::kServer, downstreamSettings(), events, memory.mem());
    EXPECT_TRUE(created.ok());  // nghttp2 is not needed yet
    std::unique_ptr<Session> server = std::move(created).value();
    events.attach(*server);
    RawPeer peer;
    const std::string bytes = std::string(kClientPreface) +
                              settingsWith({{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}}) +
                              RawPeer::settingsAck() + windowUpdate(0, 1000) +
                              peer.headers(1, grpcRequest(), true);
    Status status = server->receive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    // Started: what fails from here on is nghttp2's to report, as with any frame it reads.
    if (server->started()) return events.begun == std::vector<int32_t>{1};
    ++start_failures;
    EXPECT_FALSE(status.ok());
    EXPECT_EQ(server->violation(), Violation::kNone);
    std::string out;
    server->produce(out, kProduceLimit);
    const auto goaways = framesOfType(out, NGHTTP2_GOAWAY);
    EXPECT_EQ(goaways.size(), 1u);
    for (const Frame& goaway : goaways) {
      EXPECT_EQ(goaway.errorCode(), uint32_t{NGHTTP2_INTERNAL_ERROR});
    }
    return false;
  });
  EXPECT_GE(start_failures, 3u);  // the session, what it queues first, the replay
}

}  // namespace
}  // namespace spindle::h2
