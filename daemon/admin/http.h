// HTTP/1.1 for the admin listener, no I/O: a strict parser of request heads and the
// serialization of responses. The admin API is read-only, so only GET and HEAD without a body
// are accepted; anything unusual is refused with a status rather than guessed at.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace spindle::admin {

// Request line and header fields, including the blank line that ends them.
inline constexpr size_t kMaxHeadBytes = 8 * 1024;
inline constexpr size_t kMaxHeaderFields = 64;

enum class Method { kGet, kHead };

struct HttpRequest {
  Method method = Method::kGet;
  std::string path;   // starts with '/', as received (no percent-decoding)
  std::string query;  // after the '?', without it; empty when there is none
  int minor_version = 1;
  bool keep_alive = true;  // what the client asked for (HTTP/1.1 default, Connection header)
};

struct ParseResult {
  enum class Kind { kNeedMore, kComplete, kError };
  Kind kind = Kind::kNeedMore;
  HttpRequest request;  // kComplete
  size_t consumed = 0;  // kComplete: bytes of this request; the rest belongs to the next one
  int status = 0;       // kError: 400, 405, 413, 414, 431 or 505
  std::string reason;   // kError: why, for logs and tests
};

// Incremental: call parse() with every byte received for the current request so far (the
// same bytes again plus any new ones); it only scans the new bytes until the head is complete,
// so a client sending one byte at a time costs linear time. reset() before the next request.
//
// Strict by choice (RFC 9112 allows it): lines end in CRLF, a bare CR or LF, a NUL or another
// control character is a 400; so are obs-fold, whitespace before a header colon, a missing or
// repeated Host in HTTP/1.1, and a Transfer-Encoding. Content-Length above 0 is a 413. Empty
// lines before the request line are skipped (RFC 9112 section 2.2).
class HttpRequestParser {
 public:
  ParseResult parse(std::string_view buffer);
  void reset() { *this = HttpRequestParser(); }

 private:
  size_t scanned_ = 0;        // bytes already checked
  size_t request_start_ = 0;  // after skipped empty lines
  size_t line_start_ = 0;
  size_t lines_ = 0;  // complete lines of this request, the request line included
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

std::string_view reasonPhrase(int status);

// Status line, Content-Type, Content-Length, Connection (and Allow for a 405), then the body
// unless the request was a HEAD.
std::string serializeResponse(const HttpResponse& response, bool head_only, bool keep_alive);

// A plain-text response for an error status: "404 Not Found\n".
HttpResponse errorResponse(int status);

}  // namespace spindle::admin
