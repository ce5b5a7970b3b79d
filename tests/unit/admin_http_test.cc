#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "admin/admin_server.h"
#include "admin/http.h"
#include "admin/process_metrics.h"
#include "engines.h"
#include "loop/loop.h"
#include "metrics/registry.h"
#include "metrics/text_format.h"
#include "net/address.h"

namespace spindle::admin {
namespace {

using namespace std::chrono_literals;
using Kind = ParseResult::Kind;

// ---- HttpRequestParser ----

ParseResult parseAll(std::string_view text) {
  HttpRequestParser parser;
  return parser.parse(text);
}

int statusOf(std::string_view text) {
  const ParseResult result = parseAll(text);
  EXPECT_EQ(result.kind, Kind::kError) << text;
  return result.status;
}

TEST(HttpParser, CompleteGetWithQuery) {
  const std::string text = "GET /metrics?name=a&x HTTP/1.1\r\nHost: node\r\nAccept: */*\r\n\r\n";
  const ParseResult result = parseAll(text);
  ASSERT_EQ(result.kind, Kind::kComplete) << result.reason;
  EXPECT_EQ(result.request.method, Method::kGet);
  EXPECT_EQ(result.request.path, "/metrics");
  EXPECT_EQ(result.request.query, "name=a&x");
  EXPECT_EQ(result.request.minor_version, 1);
  EXPECT_TRUE(result.request.keep_alive);
  EXPECT_EQ(result.consumed, text.size());
}

TEST(HttpParser, HeadAndHttp10AndConnectionOptions) {
  ParseResult head = parseAll("HEAD / HTTP/1.0\r\n\r\n");
  ASSERT_EQ(head.kind, Kind::kComplete) << head.reason;
  EXPECT_EQ(head.request.method, Method::kHead);
  EXPECT_EQ(head.request.minor_version, 0);
  EXPECT_FALSE(head.request.keep_alive);  // HTTP/1.0 closes by default

  ParseResult ten = parseAll("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
  ASSERT_EQ(ten.kind, Kind::kComplete);
  EXPECT_TRUE(ten.request.keep_alive);

  ParseResult close = parseAll("GET / HTTP/1.1\r\nHost: a\r\nConnection: TE, close\r\n\r\n");
  ASSERT_EQ(close.kind, Kind::kComplete);
  EXPECT_FALSE(close.request.keep_alive);
}

TEST(HttpParser, AbsoluteFormTargetIsReducedToItsPath) {
  ParseResult result = parseAll("GET http://node:9901/ready?verbose HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_EQ(result.kind, Kind::kComplete) << result.reason;
  EXPECT_EQ(result.request.path, "/ready");
  EXPECT_EQ(result.request.query, "verbose");
  result = parseAll("GET HTTPS://node HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_EQ(result.kind, Kind::kComplete) << result.reason;
  EXPECT_EQ(result.request.path, "/");
  result = parseAll("GET http://node?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_EQ(result.kind, Kind::kComplete) << result.reason;
  EXPECT_EQ(result.request.path, "/");
  EXPECT_EQ(result.request.query, "x=1");
  EXPECT_EQ(statusOf("GET http:///x HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET ftp://node/x HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
}

TEST(HttpParser, ByteByByteNeedsMoreUntilTheBlankLine) {
  const std::string text = "GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n";
  HttpRequestParser parser;
  for (size_t i = 1; i < text.size(); ++i) {
    const ParseResult partial = parser.parse(std::string_view(text).substr(0, i));
    ASSERT_EQ(partial.kind, Kind::kNeedMore) << "after " << i << " bytes: " << partial.reason;
  }
  const ParseResult result = parser.parse(text);
  ASSERT_EQ(result.kind, Kind::kComplete) << result.reason;
  EXPECT_EQ(result.request.path, "/healthz");
  EXPECT_EQ(result.consumed, text.size());
}

TEST(HttpParser, PipelinedRequestsParseOneAfterTheOther) {
  const std::string first = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string second = "HEAD /b?q HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  const std::string third_partial = "GET /c HTTP/1.1\r\nHo";
  const std::string all = first + second + third_partial;
  HttpRequestParser parser;
  ParseResult one = parser.parse(all);
  ASSERT_EQ(one.kind, Kind::kComplete);
  EXPECT_EQ(one.request.path, "/a");
  EXPECT_EQ(one.consumed, first.size());
  parser.reset();
  std::string_view rest = std::string_view(all).substr(one.consumed);
  ParseResult two = parser.parse(rest);
  ASSERT_EQ(two.kind, Kind::kComplete);
  EXPECT_EQ(two.request.path, "/b");
  EXPECT_EQ(two.request.method, Method::kHead);
  EXPECT_FALSE(two.request.keep_alive);
  EXPECT_EQ(two.consumed, second.size());
  parser.reset();
  EXPECT_EQ(parser.parse(rest.substr(two.consumed)).kind, Kind::kNeedMore);
}

TEST(HttpParser, EmptyLinesBeforeTheRequestLineAreSkipped) {
  const std::string text = "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
  const ParseResult result = parseAll(text);
  ASSERT_EQ(result.kind, Kind::kComplete) << result.reason;
  EXPECT_EQ(result.consumed, text.size());
}

TEST(HttpParser, MethodsOtherThanGetAndHeadAre405) {
  for (const char* method : {"POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "get"}) {
    EXPECT_EQ(statusOf(std::string(method) + " / HTTP/1.1\r\nHost: x\r\n\r\n"), 405) << method;
  }
}

TEST(HttpParser, OnlyHttp10And11) {
  EXPECT_EQ(statusOf("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
  EXPECT_EQ(statusOf("GET / HTTP/1.2\r\nHost: x\r\n\r\n"), 505);
  EXPECT_EQ(statusOf("GET / HTTP/0.9\r\nHost: x\r\n\r\n"), 505);
  EXPECT_EQ(statusOf("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);  // the HTTP/2 preface
  EXPECT_EQ(statusOf("GET / HTTP/1\r\nHost: x\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / http/1.1\r\nHost: x\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.10\r\nHost: x\r\n\r\n"), 400);
}

TEST(HttpParser, MalformedRequestLinesAre400) {
  for (const char* line : {
           "GET /",                      // two parts
           "GET  / HTTP/1.1",            // two spaces
           " GET / HTTP/1.1",            // leading space
           "GET / HTTP/1.1 ",            // trailing space
           "GET / HTTP/1.1 extra",       // four parts
           "GET noslash HTTP/1.1",       // not origin-form
           "GET * HTTP/1.1",             // asterisk-form
           "GET /a#frag HTTP/1.1",       // fragments are never sent
           "G@T / HTTP/1.1",             // not a token
           "GET /\x7f HTTP/1.1",         // DEL
           "GET /caf\xc3\xa9 HTTP/1.1",  // non-ASCII target
           "GET\t/ HTTP/1.1",            // tab as separator
       }) {
    EXPECT_EQ(statusOf(std::string(line) + "\r\nHost: x\r\n\r\n"), 400) << line;
  }
}

TEST(HttpParser, BareLfOrCrIs400EvenAcrossReads) {
  EXPECT_EQ(statusOf("GET / HTTP/1.1\nHost: x\n\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: x\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\rHost: x\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("\n"), 400);
  // The CR ends one read, the byte after it starts the next.
  HttpRequestParser parser;
  const std::string text = "GET / HTTP/1.1\rX";
  EXPECT_EQ(parser.parse(std::string_view(text).substr(0, text.size() - 1)).kind, Kind::kNeedMore);
  const ParseResult result = parser.parse(text);
  EXPECT_EQ(result.kind, Kind::kError);
  EXPECT_EQ(result.status, 400);
}

TEST(HttpParser, NulAndControlBytesAre400) {
  using namespace std::string_literals;
  EXPECT_EQ(statusOf("GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n"s), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: x\0y\r\n\r\n"s), 400);
  EXPECT_EQ(statusOf("\0"s), 400);  // at once, not after the head limit
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: x\x01y\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: x\x1b[31m\r\n\r\n"), 400);
  // A tab in a field value is fine, and so are obs-text bytes.
  EXPECT_EQ(parseAll("GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: a\tb \xe9\r\n\r\n").kind,
            Kind::kComplete);
}

TEST(HttpParser, HeaderFieldSyntax) {
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), 400);  // space before colon
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: x\r\n: empty name\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: x\r\nX(y): 1\r\n\r\n"), 400);
  EXPECT_EQ(parseAll("GET / HTTP/1.1\r\nhOsT:x\r\nX-Empty:\r\n\r\n").kind, Kind::kComplete);
}

TEST(HttpParser, HostIsRequiredOnceInHttp11) {
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
  EXPECT_EQ(parseAll("GET / HTTP/1.0\r\n\r\n").kind, Kind::kComplete);
}

TEST(HttpParser, RequestBodiesAreRefused) {
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"), 413);
  EXPECT_EQ(
      statusOf("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
      413);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n"), 400);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\n"),
            400);
  EXPECT_EQ(parseAll("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").kind,
            Kind::kComplete);
}

TEST(HttpParser, HeadLimits) {
  // Exactly at the limit is fine; one byte more is not.
  const std::string prefix = "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ";
  const std::string suffix = "\r\n\r\n";
  const std::string at_limit =
      prefix + std::string(kMaxHeadBytes - prefix.size() - suffix.size(), 'a') + suffix;
  ASSERT_EQ(at_limit.size(), kMaxHeadBytes);
  EXPECT_EQ(parseAll(at_limit).kind, Kind::kComplete);
  const std::string over =
      prefix + std::string(kMaxHeadBytes + 1 - prefix.size() - suffix.size(), 'a') + suffix;
  EXPECT_EQ(statusOf(over), 431);
  // A request line that never ends.
  EXPECT_EQ(statusOf("GET /" + std::string(kMaxHeadBytes, 'a')), 414);
  // 64 fields are fine, 65 are not.
  std::string fields;
  for (size_t i = 0; i < kMaxHeaderFields - 1; ++i) fields += "X-" + std::to_string(i) + ": 1\r\n";
  EXPECT_EQ(parseAll("GET / HTTP/1.1\r\nHost: x\r\n" + fields + "\r\n").kind, Kind::kComplete);
  EXPECT_EQ(statusOf("GET / HTTP/1.1\r\nHost: x\r\n" + fields + "X-Last: 1\r\n\r\n"), 431);
}

TEST(HttpParser, RandomBytesNeverCrashOrHang) {
  std::mt19937 random(7);
  for (int round = 0; round < 2000; ++round) {
    std::string text(random() % 200, '\0');
    for (char& c : text) c = static_cast<char>(random() % 256);
    if (round % 2 == 0) text = "GET / HTTP/1.1\r\n" + text;  // garbage in the fields
    HttpRequestParser parser;
    for (size_t end = 0; end <= text.size(); end += 1 + random() % 16) {
      const ParseResult result = parser.parse(std::string_view(text).substr(0, end));
      if (result.kind != Kind::kNeedMore) break;
    }
  }
  SUCCEED();
}

TEST(HttpResponse, SerializesStatusHeadersAndBody) {
  const HttpResponse ok{200, "text/plain; version=0.0.4; charset=utf-8", "up 1\n"};
  EXPECT_EQ(serializeResponse(ok, /*head_only=*/false, /*keep_alive=*/true),
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: 5\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: keep-alive\r\n"
            "\r\n"
            "up 1\n");
  EXPECT_EQ(serializeResponse(ok, /*head_only=*/true, /*keep_alive=*/false),
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: 5\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n"
            "\r\n");
  EXPECT_EQ(serializeResponse(errorResponse(405), false, false),
            "HTTP/1.1 405 Method Not Allowed\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 23\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n"
            "Allow: GET, HEAD\r\n"
            "\r\n"
            "405 Method Not Allowed\n");
}

// ---- AdminServer on a real loop, clients on loopback ----

// Blocking client socket to the server, with timeouts so that no test can hang.
int connectTo(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval timeout{3, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool sendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Everything until the server closes (or a 3 s silence, or 8 MiB).
std::string readToEnd(int fd) {
  std::string out;
  char chunk[65536];
  while (out.size() < (8u << 20)) {
    const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) break;
    out.append(chunk, static_cast<size_t>(n));
  }
  return out;
}

// One response on a kept-alive connection, framed by its Content-Length.
std::string readOneResponse(int fd, bool head_request = false) {
  std::string out;
  char chunk[4096];
  size_t head_end = std::string::npos;
  while (out.size() < (1u << 20)) {
    head_end = out.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      const size_t at = out.find("Content-Length: ");
      const size_t length = head_request || at == std::string::npos
                                ? 0
                                : std::stoul(out.substr(at + 16, out.find("\r\n", at) - at - 16));
      if (out.size() >= head_end + 4 + length) {
        out.resize(head_end + 4 + length);
        return out;
      }
    }
    const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) break;
    out.append(chunk, static_cast<size_t>(n));
  }
  return out;
}

int statusCode(const std::string& response) {
  if (response.size() < 12 || response.compare(0, 9, "HTTP/1.1 ") != 0) return 0;
  return std::stoi(response.substr(9, 3));
}

std::string bodyOf(const std::string& response) {
  const size_t end = response.find("\r\n\r\n");
  return end == std::string::npos ? "" : response.substr(end + 4);
}

// Whether the server closed the connection (EOF or reset) before `limit`.
bool closedWithin(int fd, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  char byte;
  while (std::chrono::steady_clock::now() < deadline) {
    const ssize_t n = ::recv(fd, &byte, 1, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

class AdminServerTest : public ::testing::TestWithParam<loop::Engine> {
 protected:
  void SetUp() override { start(AdminOptions{}); }

  void start(AdminOptions options) {
    auto loop = loop::Loop::create(GetParam(), 256);
    ASSERT_TRUE(loop.ok()) << loop.error();
    loop_ = std::move(*loop);
    auto address = net::SocketAddress::parseIp("127.0.0.1", 0);  // an ephemeral port
    ASSERT_TRUE(address.ok());
    auto server = AdminServer::create(*loop_, *address, options);
    ASSERT_TRUE(server.ok()) << server.error();
    server_ = std::move(*server);
    ASSERT_NE(server_->address().port(), 0);
    server_->handle("/hello", [](const HttpRequest& request) {
      return HttpResponse{200, "text/plain; charset=utf-8", "hello " + request.query + "\n"};
    });
    server_->handle("/big", [](const HttpRequest&) {
      return HttpResponse{200, "text/plain; charset=utf-8", std::string(3 << 20, 'x')};
    });
    server_->handle("/throw", [](const HttpRequest&) -> HttpResponse {
      throw std::runtime_error("handler bug");
    });
    server_->start();
  }

  void TearDown() override {
    if (!server_) return;
    server_->stop();
    const auto deadline = std::chrono::steady_clock::now() + 2s;
    while (!server_->idle() && std::chrono::steady_clock::now() < deadline) {
      loop_->runOnce(10ms);
    }
    EXPECT_TRUE(server_->idle());
    server_.reset();
    loop_.reset();
  }

  uint16_t port() const { return server_->address().port(); }

  // Runs `client` on a second thread while this one drives the loop. Bounded: the client's
  // sockets time out after 3 s of silence, and the loop is driven for at most `limit`.
  void withClient(const std::function<void()>& client, std::chrono::seconds limit = 15s) {
    std::atomic<bool> done{false};
    std::thread thread([&] {
      client();
      done.store(true);
    });
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done.load() && std::chrono::steady_clock::now() < deadline) {
      loop_->runOnce(5ms);
      open_.store(server_->openConnections());
    }
    thread.join();
    EXPECT_TRUE(done.load()) << "the client did not finish in time";
  }

  // One request on a new connection, everything the server sends back.
  std::string exchange(std::string_view request) {
    std::string response;
    withClient([&] {
      const int fd = connectTo(port());
      if (fd < 0) return;
      if (sendAll(fd, request)) response = readToEnd(fd);
      ::close(fd);
    });
    return response;
  }

  void expectServing() {
    const std::string response =
        exchange("GET /hello?still HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(statusCode(response), 200) << response;
    EXPECT_EQ(bodyOf(response), "hello still\n");
  }

  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<AdminServer> server_;
  std::atomic<size_t> open_{0};  // the server's open connections, as the client thread sees
};

TEST_P(AdminServerTest, AnswersARegisteredPath) {
  const std::string response =
      exchange("GET /hello?who=me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(response,
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 13\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n"
            "\r\n"
            "hello who=me\n");
  EXPECT_EQ(server_->stats().responses, 1u);
}

TEST_P(AdminServerTest, HeadSendsTheHeadersOnly) {
  const std::string response = exchange("HEAD /hello HTTP/1.0\r\n\r\n");
  EXPECT_EQ(statusCode(response), 200);
  EXPECT_NE(response.find("Content-Length: 7\r\n"), std::string::npos) << response;
  EXPECT_EQ(bodyOf(response), "");
}

TEST_P(AdminServerTest, UnknownPathIs404) {
  const std::string response =
      exchange("GET /nothing/here HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(statusCode(response), 404) << response;
  EXPECT_EQ(bodyOf(response), "404 Not Found\n");
  // The query is not part of the path, and paths match exactly.
  EXPECT_EQ(statusCode(exchange("GET /hello/ HTTP/1.0\r\n\r\n")), 404);
  expectServing();
}

TEST_P(AdminServerTest, BadRequestsGetTheirStatusAndTheServerGoesOn) {
  using namespace std::string_literals;
  struct Case {
    std::string request;
    int status;
  };
  const std::vector<Case> cases = {
      {"GARBAGE\r\n\r\n", 400},
      {"GET / HTTP/1.1\nHost: x\n\n", 400},
      {"GET /\0 HTTP/1.1\r\n\r\n"s, 400},
      {"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody", 405},
      {"GET /hello HTTP/2.0\r\n\r\n", 505},
      {"GET /hello HTTP/1.1\r\n\r\n", 400},  // no Host
      {"GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789", 413},
      {"GET /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
      {"GET /" + std::string(20000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
      {"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'b') + "\r\n\r\n", 431},
  };
  for (const Case& c : cases) {
    const std::string response = exchange(c.request);
    EXPECT_EQ(statusCode(response), c.status) << c.request.substr(0, 60) << "\n" << response;
    EXPECT_NE(response.find("Connection: close\r\n"), std::string::npos);
    if (c.status == 405) {
      EXPECT_NE(response.find("Allow: GET, HEAD\r\n"), std::string::npos);
    }
    expectServing();
  }
  EXPECT_EQ(server_->stats().errors, cases.size());
}

// The server answers after 8 KiB, while the client still sends megabytes: closing at once
// would reset the connection under the client's send, and it would never see the 431.
TEST_P(AdminServerTest, AnOversizedRequestIsAnsweredWhileTheClientStillSends) {
  bool sent = false;
  std::string response;
  withClient([&] {
    const int fd = connectTo(port());
    if (fd < 0) return;
    sent = sendAll(fd, "GET / HTTP/1.1\r\nHost: x\r\nX-Huge: " + std::string(4 << 20, 'h'));
    response = readToEnd(fd);
    ::close(fd);
  });
  EXPECT_TRUE(sent);
  EXPECT_EQ(statusCode(response), 431) << response.substr(0, 200);
  expectServing();
}

TEST_P(AdminServerTest, RandomBytesNeverStopTheServer) {
  std::mt19937 random(11);
  for (int round = 0; round < 20; ++round) {
    std::string junk(1 + random() % 3000, '\0');
    for (char& c : junk) c = static_cast<char>(random() % 256);
    const std::string response = exchange(junk);
    // Either an error status or, for bytes that never end a head, a close at the deadline.
    if (!response.empty()) {
      EXPECT_GE(statusCode(response), 400) << response;
    }
  }
  expectServing();
}

TEST_P(AdminServerTest, AThrowingHandlerGives500) {
  EXPECT_EQ(statusCode(exchange("GET /throw HTTP/1.0\r\n\r\n")), 500);
  expectServing();
}

TEST_P(AdminServerTest, KeepAliveAnswersPipelinedRequestsInOrder) {
  const std::string response = exchange(
      "GET /hello?1 HTTP/1.1\r\nHost: x\r\n\r\n"
      "HEAD /hello?2 HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /hello?4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const std::string ok1 =
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 8\r\n"
      "Cache-Control: no-store\r\nConnection: keep-alive\r\n\r\nhello 1\n";
  const std::string head2 =
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 8\r\n"
      "Cache-Control: no-store\r\nConnection: keep-alive\r\n\r\n";
  const std::string missing3 =
      "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 14\r\n"
      "Cache-Control: no-store\r\nConnection: keep-alive\r\n\r\n404 Not Found\n";
  const std::string ok4 =
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 8\r\n"
      "Cache-Control: no-store\r\nConnection: close\r\n\r\nhello 4\n";
  EXPECT_EQ(response, ok1 + head2 + missing3 + ok4);
}

TEST_P(AdminServerTest, KeepAliveServesSequentialRequestsOnOneConnection) {
  std::vector<std::string> responses;
  withClient([&] {
    const int fd = connectTo(port());
    if (fd < 0) return;
    for (int i = 0; i < 5; ++i) {
      if (!sendAll(fd, "GET /hello?" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\n\r\n")) break;
      responses.push_back(readOneResponse(fd));
    }
    ::close(fd);
  });
  ASSERT_EQ(responses.size(), 5u);
  for (size_t i = 0; i < responses.size(); ++i) {
    EXPECT_EQ(statusCode(responses[i]), 200);
    EXPECT_EQ(bodyOf(responses[i]), "hello " + std::to_string(i) + "\n");
  }
  EXPECT_EQ(server_->stats().accepted, 1u);
}

TEST_P(AdminServerTest, ALargeBodyArrivesWhole) {
  const std::string response = exchange("GET /big HTTP/1.0\r\n\r\n");
  EXPECT_EQ(statusCode(response), 200);
  EXPECT_EQ(bodyOf(response).size(), size_t{3} << 20);
}

TEST_P(AdminServerTest, ManyConnectionsAtOnceAreAllAnswered) {
  constexpr int kClients = 60;
  int answered = 0;
  withClient([&] {
    std::vector<int> fds;
    for (int i = 0; i < kClients; ++i) fds.push_back(connectTo(port()));
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i] >= 0) {
        sendAll(fds[i], "GET /hello?" + std::to_string(i) +
                            " HTTP/1.1\r\nHost: x\r\n"
                            "Connection: close\r\n\r\n");
      }
    }
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i] < 0) continue;
      const std::string response = readToEnd(fds[i]);
      if (statusCode(response) == 200 && bodyOf(response) == "hello " + std::to_string(i) + "\n") {
        ++answered;
      }
      ::close(fds[i]);
    }
  });
  EXPECT_EQ(answered, kClients);
}

// Idle connections must not lock a health probe out: at the limit, the oldest connection
// still waiting for a request makes room for the new one.
TEST_P(AdminServerTest, AtTheConnectionLimitTheOldestIdleConnectionMakesRoom) {
  const size_t limit = AdminOptions{}.max_connections;
  bool reached = false;
  std::string probe_response;
  std::string oldest_sees;
  withClient([&] {
    std::vector<int> idle;
    for (size_t i = 0; i < limit; ++i) {
      idle.push_back(connectTo(port()));
      // One at a time, so that the first is the oldest the server holds.
      const auto deadline = std::chrono::steady_clock::now() + 3s;
      while (open_.load() < i + 1 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
      }
    }
    reached = open_.load() == limit;
    const int probe = connectTo(port());
    if (probe >= 0) {
      sendAll(probe, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      probe_response = readToEnd(probe);
      ::close(probe);
    }
    if (idle.front() >= 0) oldest_sees = readToEnd(idle.front());  // EOF: it was closed
    for (int fd : idle) {
      if (fd >= 0) ::close(fd);
    }
  });
  EXPECT_TRUE(reached);
  EXPECT_NE(probe_response.find("200 OK"), std::string::npos) << probe_response;
  EXPECT_EQ(oldest_sees, "");
  EXPECT_GE(server_->stats().evicted, 1u);
  EXPECT_EQ(server_->stats().refused, 0u);
  expectServing();
}

class AdminServerDeadlineTest : public AdminServerTest {
 protected:
  void SetUp() override {
    AdminOptions options;
    options.request_timeout = 1000ms;
    start(options);
  }
};

TEST_P(AdminServerDeadlineTest, ASlowlorisIsClosedAtTheDeadline) {
  const std::string request = "GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: " + std::string(100, 'z');
  bool closed = false;
  std::string received;
  std::chrono::milliseconds took{0};
  withClient([&] {
    const int fd = connectTo(port());
    if (fd < 0) return;
    const auto start = std::chrono::steady_clock::now();
    // One byte per 100 ms, for at most 4 s (4x the deadline).
    for (size_t i = 0; i < 40 && i < request.size(); ++i) {
      if (::send(fd, &request[i], 1, MSG_NOSIGNAL) != 1 || closedWithin(fd, 100ms)) {
        closed = true;
        break;
      }
    }
    took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start);
    received = readToEnd(fd);
    ::close(fd);
  });
  EXPECT_TRUE(closed);
  EXPECT_GE(took, 900ms);
  EXPECT_LT(took, 2500ms);
  EXPECT_EQ(received, "");
  EXPECT_EQ(server_->stats().timed_out, 1u);
  expectServing();
}

TEST_P(AdminServerDeadlineTest, AnIdleKeptAliveConnectionIsClosedAtTheDeadline) {
  std::string first;
  bool closed = false;
  withClient([&] {
    const int fd = connectTo(port());
    if (fd < 0) return;
    sendAll(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    first = readOneResponse(fd);
    closed = closedWithin(fd, 2500ms);
    ::close(fd);
  });
  EXPECT_EQ(statusCode(first), 200);
  EXPECT_TRUE(closed);
}

TEST_P(AdminServerTest, AClientThatLeavesMidRequestDoesNotHurt) {
  withClient([&] {
    for (int i = 0; i < 10; ++i) {
      const int fd = connectTo(port());
      if (fd < 0) continue;
      sendAll(fd, "GET /hel");
      ::close(fd);
    }
  });
  expectServing();
  // And one that resets the connection while its response is on the way.
  withClient([&] {
    const int fd = connectTo(port());
    if (fd < 0) return;
    sendAll(fd, "GET /big HTTP/1.0\r\n\r\n");
    linger reset{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
    ::close(fd);
  });
  expectServing();
}

TEST_P(AdminServerTest, StopClosesOpenConnectionsAndGoesIdle) {
  bool closed = false;
  std::atomic<bool> connected{false};
  std::atomic<bool> stopped{false};
  std::thread client([&] {
    const int fd = connectTo(port());
    if (fd < 0) return;
    sendAll(fd, "GET /hello HTTP/1.1\r\n");  // unfinished
    connected.store(true);
    const auto deadline = std::chrono::steady_clock::now() + 3s;
    while (!stopped.load() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    closed = closedWithin(fd, 2000ms);
    ::close(fd);
  });
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  while ((!connected.load() || server_->openConnections() == 0) &&
         std::chrono::steady_clock::now() < deadline) {
    loop_->runOnce(5ms);
  }
  EXPECT_EQ(server_->openConnections(), 1u);
  server_->stop();
  stopped.store(true);
  const auto idle_deadline = std::chrono::steady_clock::now() + 2s;
  while (!server_->idle() && std::chrono::steady_clock::now() < idle_deadline) {
    loop_->runOnce(5ms);
  }
  client.join();
  EXPECT_TRUE(server_->idle());
  EXPECT_TRUE(closed);
  // Nothing listens any more.
  const int fd = connectTo(port());
  EXPECT_LT(fd, 0);
  if (fd >= 0) ::close(fd);
}

TEST_P(AdminServerTest, DestroyedWithWorkInFlightWhileTheLoopRunsOn) {
  std::atomic<bool> connected{false};
  std::atomic<bool> destroyed{false};
  std::thread client([&] {
    const int fd = connectTo(port());
    if (fd < 0) return;
    sendAll(fd, "GET /hello HTTP/1.1\r\n");
    connected.store(true);
    const auto deadline = std::chrono::steady_clock::now() + 3s;
    while (!destroyed.load() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    closedWithin(fd, 1000ms);
    ::close(fd);
  });
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  while ((!connected.load() || server_->openConnections() == 0) &&
         std::chrono::steady_clock::now() < deadline) {
    loop_->runOnce(5ms);
  }
  server_.reset();  // the accept, the sweep timer and the connection are still in flight
  destroyed.store(true);
  // Their completions arrive after the server is gone; they must free themselves cleanly.
  for (int i = 0; i < 50; ++i) loop_->runOnce(5ms);
  client.join();
}

TEST_P(AdminServerTest, ServesMetricsFromShardsAndTheProcess) {
  metrics::Registry registry;
  auto calls =
      registry.add({"spindle_calls_total", "Calls.", metrics::Type::kCounter, {"service"}, {}, 16});
  ASSERT_TRUE(calls.ok());
  auto shard = registry.makeShard();
  shard->counter(*calls, {"echo"}).inc(3);
  server_->handle("/metrics", [&](const HttpRequest&) {
    std::vector<const metrics::Shard*> shards = {shard.get()};
    return HttpResponse{200, std::string(metrics::kContentType),
                        metrics::render(registry, shards) + renderProcessMetrics()};
  });
  const std::string response = exchange("GET /metrics HTTP/1.0\r\n\r\n");
  EXPECT_EQ(statusCode(response), 200);
  EXPECT_NE(response.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            std::string::npos);
  const std::string body = bodyOf(response);
  EXPECT_EQ(body.rfind("# HELP spindle_calls_total Calls.\n# TYPE spindle_calls_total counter\n"
                       "spindle_calls_total{service=\"echo\"} 3\n",
                       0),
            0u)
      << body;
  EXPECT_NE(body.find("\nprocess_resident_memory_bytes "), std::string::npos) << body;
  EXPECT_NE(body.find("\nprocess_open_fds "), std::string::npos) << body;
}

TEST(ProcessMetricsReader, ReadsPlausibleValuesForThisProcess) {
  const metrics::ProcessMetrics process = readProcessMetrics();
  ASSERT_TRUE(process.resident_memory_bytes.has_value());
  EXPECT_GT(*process.resident_memory_bytes, 1 << 20);
  ASSERT_TRUE(process.cpu_seconds.has_value());
  EXPECT_GE(*process.cpu_seconds, 0);
  ASSERT_TRUE(process.open_fds.has_value());
  EXPECT_GE(*process.open_fds, 3);  // stdin, stdout, stderr at least
  ASSERT_TRUE(process.max_fds.has_value());
  EXPECT_GE(*process.max_fds, *process.open_fds);
  ASSERT_TRUE(process.start_time_seconds.has_value());
  const double now = static_cast<double>(std::chrono::duration_cast<std::chrono::seconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
  EXPECT_LE(*process.start_time_seconds, now + 2);
  EXPECT_GT(*process.start_time_seconds, now - 24 * 3600.0);

  // An fd opened now is counted.
  const int extra = ::dup(0);
  const metrics::ProcessMetrics more = readProcessMetrics();
  if (extra >= 0) ::close(extra);
  ASSERT_TRUE(more.open_fds.has_value());
  EXPECT_EQ(*more.open_fds, *process.open_fds + 1);
}

INSTANTIATE_ON_BOTH_ENGINES(AdminServerTest);
INSTANTIATE_ON_BOTH_ENGINES(AdminServerDeadlineTest);

}  // namespace
}  // namespace spindle::admin
