// h2::EarlyFrames on its own: the bytes a server's connection answers before it has an
// nghttp2 session, the budgets those frames spend, and what it hands over to the session.
// Where it must agree with nghttp2 (what we send first, what the session is told), a real
// nghttp2 server session is the judge.
#include "h2/early_frames.h"

#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <string>
#include <vector>

#include "h2/session.h"
#include "h2_wire.h"
#include "util/event_clock.h"

namespace spindle::h2 {
namespace {

using namespace wire;  // the frames these tests write and read

// Counts what the early frames may tell; anything about streams is a bug.
class Events final : public Listener {
 public:
  bool onStreamBegin(int32_t) override { return unexpected("onStreamBegin"); }
  void onHeaders(int32_t, HeadersKind, HeaderBlock&&, bool) override { unexpected("onHeaders"); }
  void onData(int32_t, const uint8_t*, size_t) override { unexpected("onData"); }
  void onEndOfData(int32_t) override { unexpected("onEndOfData"); }
  void onStreamClose(int32_t, uint32_t) override { unexpected("onStreamClose"); }
  void onGoaway(int32_t, uint32_t) override { unexpected("onGoaway"); }
  void onPingAck() override { ++ping_acks; }
  void onRemoteSettings() override { ++remote_settings; }
  size_t readBody(int32_t, uint8_t*, size_t, bool*, bool*) override {
    unexpected("readBody");
    return 0;
  }

  int ping_acks = 0;
  int remote_settings = 0;

 private:
  static bool unexpected(const char* what) {
    ADD_FAILURE() << what << " before the session";
    return false;
  }
};

// A server connection before its session: its settings, budgets and listener, as a Session
// holds them, with our handshake already sent.
struct Early {
  explicit Early(Settings s = downstreamSettings())
      : settings(s), budgets(s.max_glitches, s.max_control_frames) {
    frames.start(settings);
    frames.produce(handshake_sent);
  }

  EarlyFrames::Taken feed(const std::string& bytes) {
    return frames.receive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), settings,
                          budgets, events);
  }
  std::string sent() {
    std::string out;
    frames.produce(out);
    return out;
  }

  Settings settings;
  Budgets budgets;
  Events events;
  EarlyFrames frames;
  std::string handshake_sent;
};

const std::string kSettingsAck = encodeFrame(NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, {});
const std::string kEmptySettings = settingsWith({});

std::string pingAck(uint64_t n) {
  return encodeFrame(NGHTTP2_PING, NGHTTP2_FLAG_ACK, 0,
                     u32(static_cast<uint32_t>(n >> 32)) + u32(static_cast<uint32_t>(n)));
}

// The client's side of a handshake: preface and an empty SETTINGS.
std::string hello() { return std::string(kClientPreface) + kEmptySettings; }

// A real nghttp2 server session with our SETTINGS and connection window submitted, as
// Session makes it.
class Nghttp2Server {
 public:
  explicit Nghttp2Server(const Settings& settings) {
    nghttp2_session_callbacks_new(&callbacks_);
    EXPECT_EQ(nghttp2_session_server_new(&session_, callbacks_, nullptr), 0);
    nghttp2_settings_entry entries[kMaxLocalSettings];
    EXPECT_EQ(nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, entries,
                                      localSettings(Role::kServer, settings, entries)),
              0);
    EXPECT_EQ(nghttp2_session_set_local_window_size(
                  session_, NGHTTP2_FLAG_NONE, 0, static_cast<int32_t>(settings.connection_window)),
              0);
  }
  ~Nghttp2Server() {
    nghttp2_session_del(session_);
    nghttp2_session_callbacks_del(callbacks_);
  }
  Nghttp2Server(const Nghttp2Server&) = delete;
  Nghttp2Server& operator=(const Nghttp2Server&) = delete;

  std::string send() {
    std::string out;
    const uint8_t* bytes = nullptr;
    for (ssize_t n; (n = nghttp2_session_mem_send(session_, &bytes)) > 0;) {
      out.append(reinterpret_cast<const char*>(bytes), static_cast<size_t>(n));
    }
    return out;
  }
  ssize_t receive(const std::string& bytes) {
    return nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(bytes.data()),
                                    bytes.size());
  }
  nghttp2_session* get() { return session_; }

 private:
  nghttp2_session_callbacks* callbacks_ = nullptr;
  nghttp2_session* session_ = nullptr;
};

// --- What we send first ---------------------------------------------------------------------

TEST(H2EarlyFrames, Handshake_IsWhatNghttp2QueuesFirst) {
  Settings small_window = downstreamSettings();
  small_window.connection_window = NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE;  // no WINDOW_UPDATE
  for (const Settings& settings : {downstreamSettings(), upstreamSettings(), small_window}) {
    Nghttp2Server nghttp2(settings);
    EXPECT_EQ(EarlyFrames::handshake(settings), nghttp2.send());
  }
  const auto frames = parseFrames(EarlyFrames::handshake(downstreamSettings()));
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].payload.size(), 4 * 6u);  // no ENABLE_PUSH from a server
  EXPECT_EQ(frames[1].readU32(0), downstreamSettings().connection_window - 65535);
}

TEST(H2EarlyFrames, Start_QueuesTheHandshakeAndProduceKeepsNothing) {
  EarlyFrames frames;
  EXPECT_FALSE(frames.wantsToWrite());
  frames.start(downstreamSettings());
  EXPECT_TRUE(frames.wantsToWrite());
  std::string out = "before";
  frames.produce(out);
  EXPECT_EQ(out, "before" + EarlyFrames::handshake(downstreamSettings()));
  EXPECT_FALSE(frames.wantsToWrite());
  frames.produce(out);  // nothing more
  EXPECT_EQ(out, "before" + EarlyFrames::handshake(downstreamSettings()));
}

// --- Frames answered without a session ------------------------------------------------------

TEST(H2EarlyFrames, Receive_AnswersTheHandshakeAndIdleFramesByteForByte) {
  Early e;
  const std::string bytes = std::string(kClientPreface) + settingsWith({{4, 1 << 20}}) +
                            kSettingsAck + windowUpdate(0, 1000) + ping(42) + pingAck(0) +
                            settingsWith({{3, 10}});
  const EarlyFrames::Taken taken = e.feed(bytes);
  EXPECT_EQ(taken.used, bytes.size());
  EXPECT_EQ(taken.violation, Violation::kNone);
  EXPECT_EQ(e.sent(), kSettingsAck + pingAck(42) + kSettingsAck);
  EXPECT_EQ(e.events.remote_settings, 2);
  EXPECT_EQ(e.events.ping_acks, 1);
  EXPECT_TRUE(e.frames.settingsReceived());
  EXPECT_FALSE(e.frames.finalGoawayQueued());
}

TEST(H2EarlyFrames, Receive_TakesFramesOneReadAfterAnother) {
  Early e;
  EXPECT_EQ(e.feed(std::string(kClientPreface)).used, kClientPreface.size());
  EXPECT_FALSE(e.frames.settingsReceived());
  EXPECT_EQ(e.feed(kEmptySettings).used, kEmptySettings.size());
  EXPECT_TRUE(e.frames.settingsReceived());
  EXPECT_EQ(e.feed(ping(7)).used, ping(7).size());
  EXPECT_EQ(e.sent(), kSettingsAck + pingAck(7));
}

TEST(H2EarlyFrames, Receive_APrefaceSplitOrWrongIsLeftToTheSession) {
  Early e;
  EXPECT_EQ(e.feed(std::string(kClientPreface.substr(0, 10))).used, 0u);
  EXPECT_EQ(e.feed("GET / HTTP/1.1\r\nHost: example\r\n\r\n").used, 0u);
  EXPECT_EQ(e.sent(), "");
  EXPECT_EQ(e.frames.agreed(), "");  // nothing was taken
}

// Until the client's SETTINGS, nothing else is taken (RFC 9113 3.4): nghttp2 judges it.
TEST(H2EarlyFrames, Receive_TheFirstFrameMustBeSettings) {
  for (const std::string& first : {ping(1), kSettingsAck, windowUpdate(0, 10)}) {
    Early e;
    const EarlyFrames::Taken taken = e.feed(std::string(kClientPreface) + first);
    EXPECT_EQ(taken.used, kClientPreface.size());
    EXPECT_EQ(taken.violation, Violation::kNone);
    EXPECT_EQ(e.sent(), "");
    EXPECT_FALSE(e.frames.settingsReceived());
  }
}

// Anything but a plain connection-level frame stops the read there: that frame and all after
// it are for the session, and none of them is answered here.
TEST(H2EarlyFrames, Receive_StopsAtTheFirstFrameThatNeedsASession) {
  std::string too_many_settings;
  for (int i = 0; i < 33; ++i) too_many_settings += u32(0x00030000) + std::string(2, '\0');
  const std::vector<std::pair<const char*, std::string>> cases = {
      {"HEADERS", encodeFrame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, 1, "x")},
      {"stream WINDOW_UPDATE", windowUpdate(1, 10)},
      {"zero WINDOW_UPDATE", windowUpdate(0, 0)},
      {"window past 2^31-1", windowUpdate(0, 0x7fffffffu - 65535u + 1)},
      {"short PING", encodeFrame(NGHTTP2_PING, 0, 0, u32(1))},
      {"SETTINGS ACK with payload", encodeFrame(NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, u32(0))},
      {"SETTINGS of 7 bytes", encodeFrame(NGHTTP2_SETTINGS, 0, 0, std::string(7, '\0'))},
      {"33 settings", encodeFrame(NGHTTP2_SETTINGS, 0, 0, too_many_settings)},
      {"invalid ENABLE_PUSH", settingsWith({{NGHTTP2_SETTINGS_ENABLE_PUSH, 2}})},
      {"invalid window", settingsWith({{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0x80000000u}})},
      {"invalid frame size", settingsWith({{NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 100}})},
      {"PRIORITY", encodeFrame(NGHTTP2_PRIORITY, 0, 1, u32(0) + std::string(1, '\x10'))},
      {"GOAWAY", encodeFrame(NGHTTP2_GOAWAY, 0, 0, u32(0) + u32(0))},
      {"an extension's frame", encodeFrame(0xfa, 0, 0, "x")},
  };
  for (const auto& [name, frame] : cases) {
    Early e;
    const std::string before = hello() + ping(1);
    const EarlyFrames::Taken taken = e.feed(before + frame + ping(2));
    EXPECT_EQ(taken.used, before.size()) << name;
    EXPECT_EQ(taken.violation, Violation::kNone) << name;
    EXPECT_EQ(e.sent(), kSettingsAck + pingAck(1)) << name;
  }
}

TEST(H2EarlyFrames, Receive_AFrameSplitAcrossReadsIsLeftToTheSession) {
  Early e;
  const std::string whole = hello();
  const std::string half_a_ping = ping(3).substr(0, 12);
  EXPECT_EQ(e.feed(whole + half_a_ping).used, whole.size());
  EXPECT_EQ(e.feed(ping(3).substr(0, 5)).used, 0u);  // not even its header
}

// The same value again is taken; a changed one can mean more (a smaller HPACK table must be
// signalled), and nghttp2 knows. Settings we do not know are ignored (RFC 9113 6.5.2).
TEST(H2EarlyFrames, Receive_ASettingRepeatedIsTakenAndAChangedOneIsLeftToTheSession) {
  Early e;
  const std::string taken = std::string(kClientPreface) +
                            settingsWith({{NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 0}, {0x99, 7}}) +
                            settingsWith({{NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 0}, {0, 1}});
  const std::string changed = settingsWith({{NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 4096}});
  EXPECT_EQ(e.feed(taken + changed).used, taken.size());
  EXPECT_EQ(e.events.remote_settings, 2);
  EXPECT_EQ(e.sent(), kSettingsAck + kSettingsAck);
}

TEST(H2EarlyFrames, Receive_OurSettingsAreAcknowledgedOnce) {
  Early e;
  const std::string first = hello() + kSettingsAck;
  EXPECT_EQ(e.feed(first + kSettingsAck).used, first.size());
}

// --- Budgets --------------------------------------------------------------------------------

struct FloodCase {
  const char* name;
  std::string (*frame)(uint64_t i);
  Violation violation;
  // What each frame within the budget is answered with.
  std::string (*answer)(uint64_t i);
};

// Past its budget, a kind of frame stops the read and is named: its answers so far are
// queued, the frame that broke the budget gets none.
TEST(H2EarlyFrames, Budgets_AFloodIsNamedByItsKind) {
  const FloodCase cases[] = {
      {"ping", [](uint64_t i) { return ping(i); }, Violation::kPingFlood,
       [](uint64_t i) { return pingAck(i); }},
      {"settings", [](uint64_t) { return kEmptySettings; }, Violation::kSettingsFlood,
       [](uint64_t) { return kSettingsAck; }},
      {"window_update", [](uint64_t) { return windowUpdate(0, 1); }, Violation::kWindowUpdateFlood,
       [](uint64_t) { return std::string(); }},
  };
  for (const FloodCase& flood : cases) {
    Settings settings = downstreamSettings();
    settings.max_control_frames = 50;
    Early e(settings);
    std::string bytes = hello();
    std::string answers = kSettingsAck;
    // The first SETTINGS took one token of its budget.
    const uint64_t within = flood.violation == Violation::kSettingsFlood ? 49 : 50;
    for (uint64_t i = 0; i < within; ++i) {
      bytes += flood.frame(i);
      answers += flood.answer(i);
    }
    bytes += flood.frame(within);
    const EarlyFrames::Taken taken = e.feed(bytes + ping(1000));
    EXPECT_EQ(taken.violation, flood.violation) << flood.name;
    EXPECT_EQ(e.sent(), answers) << flood.name;
  }
}

// The budgets are the connection's, not the early frames': what was spent before counts
// here, and what the peer spends here is gone for the nghttp2 session too.
TEST(H2EarlyFrames, Budgets_AreTheConnectionsBudgets) {
  Settings settings = downstreamSettings();
  settings.max_control_frames = 10;  // refilled at 1 a second
  Early spent_before(settings);
  while (spent_before.budgets.pings.take(EventClock::now())) {
  }
  EXPECT_EQ(spent_before.feed(hello() + ping(1)).violation, Violation::kPingFlood);
  EXPECT_EQ(spent_before.sent(), kSettingsAck);

  Early spent_here(settings);
  std::string pings;
  for (uint64_t i = 0; i < 10; ++i) pings += ping(i);
  ASSERT_EQ(spent_here.feed(hello() + pings).violation, Violation::kNone);
  EXPECT_FALSE(spent_here.budgets.pings.take(EventClock::now()));
}

// ACKs we owe pile up when the peer does not read them: past nghttp2's cap (twice the control
// frame budget, and one) that is an ACK flood, even with budgets to spare. Sending them
// clears the debt.
TEST(H2EarlyFrames, Budgets_APeerThatDoesNotReadItsAcksFloodsThem) {
  Settings settings = downstreamSettings();
  settings.max_control_frames = 2;  // at most 5 ACKs owed
  Early e(settings);
  e.budgets = Budgets(1000, 1000);
  std::string four_pings;
  for (uint64_t i = 0; i < 4; ++i) four_pings += ping(i);
  ASSERT_EQ(e.feed(hello() + four_pings).violation, Violation::kNone);  // 5 owed
  e.sent();
  ASSERT_EQ(e.feed(four_pings + ping(4)).violation, Violation::kNone);  // 5 owed
  const EarlyFrames::Taken taken = e.feed(ping(5));
  EXPECT_EQ(taken.violation, Violation::kAckFlood);
  EXPECT_EQ(taken.used, ping(5).size());
}

// --- What we send before the session --------------------------------------------------------

// After our final GOAWAY no stream can begin: every byte is taken and dropped, unanswered.
TEST(H2EarlyFrames, Goaway_IsFinalAndEndsReading) {
  Early e;
  ASSERT_EQ(e.feed(hello()).violation, Violation::kNone);
  e.sent();
  e.frames.goaway(NGHTTP2_ENHANCE_YOUR_CALM, "calm");
  e.frames.goaway(NGHTTP2_NO_ERROR);  // only the first counts
  EXPECT_TRUE(e.frames.finalGoawayQueued());
  EXPECT_EQ(e.sent(),
            encodeFrame(NGHTTP2_GOAWAY, 0, 0, u32(0) + u32(NGHTTP2_ENHANCE_YOUR_CALM) + "calm"));
  const std::string after = ping(1) + settingsWith({{3, 1}}) + windowUpdate(1, 5);
  const EarlyFrames::Taken taken = e.feed(after);
  EXPECT_EQ(taken.used, after.size());
  EXPECT_EQ(e.sent(), "");
  EXPECT_EQ(e.events.remote_settings, 1);
}

// A drain notice refuses nothing yet: the connection goes on until the final GOAWAY.
TEST(H2EarlyFrames, ShutdownNotice_IsAGoawayThatRefusesNothingAndAPing) {
  Early e;
  e.frames.shutdownNotice();
  EXPECT_FALSE(e.frames.finalGoawayQueued());
  EXPECT_EQ(e.sent(), encodeFrame(NGHTTP2_GOAWAY, 0, 0, u32(0x7fffffff) + u32(NGHTTP2_NO_ERROR)) +
                          encodeFrame(NGHTTP2_PING, 0, 0, std::string(8, '\0')));
  EXPECT_EQ(e.feed(hello() + pingAck(0)).used, hello().size() + pingAck(0).size());
  EXPECT_EQ(e.events.ping_acks, 1);
  e.frames.goaway(NGHTTP2_NO_ERROR);
  EXPECT_TRUE(e.frames.finalGoawayQueued());
}

// --- The hand-over --------------------------------------------------------------------------

// What the session is told is one frame of each kind: the peer's settings merged (in id
// order), the ACK of ours, and its connection WINDOW_UPDATEs summed.
TEST(H2EarlyFrames, Agreed_IsWhatThePeerSentInOneGo) {
  Early e;
  EXPECT_EQ(e.frames.agreed(), "");
  const std::string bytes = std::string(kClientPreface) +
                            settingsWith({{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
                                          {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 10}}) +
                            windowUpdate(0, 1000) +
                            settingsWith({{NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 4096}}) +
                            kSettingsAck + windowUpdate(0, 2000) + ping(9);
  ASSERT_EQ(e.feed(bytes).used, bytes.size());
  EXPECT_EQ(e.frames.agreed(), std::string(kClientPreface) +
                                   settingsWith({{NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, 4096},
                                                 {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 10},
                                                 {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}}) +
                                   kSettingsAck + windowUpdate(0, 3000));
}

// A real nghttp2 session that reads agreed() ends up where the early frames left the
// connection: the peer's settings applied, our SETTINGS acknowledged, the window raised.
TEST(H2EarlyFrames, Agreed_BringsANghttp2SessionToTheSameState) {
  Early e;
  const std::string bytes = std::string(kClientPreface) +
                            settingsWith({{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
                                          {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 10}}) +
                            kSettingsAck + windowUpdate(0, 3000);
  ASSERT_EQ(e.feed(bytes).used, bytes.size());

  Nghttp2Server nghttp2(e.settings);
  EXPECT_EQ(nghttp2.send(), e.handshake_sent);
  const std::string agreed = e.frames.agreed();
  EXPECT_EQ(nghttp2.receive(agreed), static_cast<ssize_t>(agreed.size()));
  EXPECT_EQ(nghttp2.send(), kSettingsAck);  // the answer the early frames sent already
  EXPECT_EQ(nghttp2_session_get_remote_settings(nghttp2.get(),
                                                NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE),
            1u << 20);
  EXPECT_EQ(nghttp2_session_get_remote_settings(nghttp2.get(),
                                                NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
            10u);
  EXPECT_EQ(nghttp2_session_get_remote_window_size(nghttp2.get()), 65535 + 3000);
  // Our SETTINGS were acknowledged: the session applied them locally.
  EXPECT_EQ(nghttp2_session_get_local_settings(nghttp2.get(),
                                               NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
            e.settings.max_concurrent_streams);
}

}  // namespace
}  // namespace spindle::h2
