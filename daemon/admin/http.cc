#include "admin/http.h"

#include <fmt/core.h>

#include <algorithm>
#include <charconv>
#include <optional>

namespace spindle::admin {
namespace {

ParseResult failure(int status, std::string reason) {
  ParseResult result;
  result.kind = ParseResult::Kind::kError;
  result.status = status;
  result.reason = std::move(reason);
  return result;
}

// RFC 9110 section 5.6.2.
bool isTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~': return true;
    default: return false;
  }
}

bool isToken(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), isTokenChar);
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

bool startsWithIgnoreCase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && equalsIgnoreCase(text.substr(0, prefix.size()), prefix);
}

std::string_view trimWhitespace(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

bool isControl(char c) {
  const auto byte = static_cast<unsigned char>(c);
  return (byte < 0x20 && c != '\t') || byte == 0x7f;
}

// The visible ASCII characters a request-target may hold (RFC 3986 is stricter still, but
// these are all the parser needs to stay safe: no whitespace, controls or non-ASCII bytes).
bool isTargetChar(char c) {
  const auto byte = static_cast<unsigned char>(c);
  return byte > 0x20 && byte < 0x7f;
}

// Fills path and query from an origin-form ("/p?q") or absolute-form ("http://h/p?q") target.
bool parseTarget(std::string_view target, HttpRequest& request) {
  if (!std::all_of(target.begin(), target.end(), isTargetChar)) return false;
  if (target.find('#') != std::string_view::npos) return false;
  std::string_view path = target;
  if (target.front() != '/') {
    // A server must accept the absolute form (RFC 9112 section 3.2.2); the authority is
    // ignored, as the Host header is.
    size_t scheme = 0;
    if (startsWithIgnoreCase(target, "http://")) {
      scheme = 7;
    } else if (startsWithIgnoreCase(target, "https://")) {
      scheme = 8;
    } else {
      return false;
    }
    const size_t start = target.find_first_of("/?", scheme);
    if (start == scheme) return false;  // no authority
    path = start == std::string_view::npos ? std::string_view() : target.substr(start);
  }
  const size_t question = path.find('?');
  std::string_view query;
  if (question != std::string_view::npos) {
    query = path.substr(question + 1);
    path = path.substr(0, question);
  }
  // "http://host" and "http://host?q" mean the root.
  request.path = path.empty() ? std::string(1, '/') : std::string(path);
  request.query = std::string(query);
  return true;
}

// The whole head: lines end in CRLF (checked while scanning), the last line is empty.
ParseResult parseHead(std::string_view head, size_t consumed) {
  ParseResult result;
  HttpRequest& request = result.request;

  size_t end = head.find("\r\n");
  const std::string_view line = head.substr(0, end);
  head.remove_prefix(end + 2);

  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return failure(400, "malformed request line");
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (method.empty() || target.empty() || version.empty()) {
    return failure(400, "malformed request line");
  }
  if (version.size() != 8 || !version.starts_with("HTTP/") || version[5] < '0' ||
      version[5] > '9' || version[6] != '.' || version[7] < '0' || version[7] > '9') {
    return failure(400, "malformed HTTP version");
  }
  if (version[5] != '1' || (version[7] != '0' && version[7] != '1')) {
    return failure(505, fmt::format("HTTP version {} is not supported", version));
  }
  request.minor_version = version[7] - '0';
  if (!isToken(method)) return failure(400, "malformed method");
  if (!parseTarget(target, request)) return failure(400, "malformed request target");

  size_t hosts = 0;
  std::optional<uint64_t> content_length;
  bool transfer_encoding = false;
  bool close = false;
  bool keep_alive = false;
  while (!head.empty()) {
    end = head.find("\r\n");
    const std::string_view field = head.substr(0, end);
    head.remove_prefix(end + 2);
    if (field.empty()) break;  // the blank line that ends the head
    if (field.front() == ' ' || field.front() == '\t') {
      return failure(400, "obsolete line folding");
    }
    const size_t colon = field.find(':');
    if (colon == std::string_view::npos) return failure(400, "header field without a colon");
    const std::string_view name = field.substr(0, colon);
    // Whitespace before the colon fails here too, as RFC 9112 section 5.1 requires.
    if (!isToken(name)) return failure(400, "malformed header field name");
    const std::string_view value = trimWhitespace(field.substr(colon + 1));
    if (equalsIgnoreCase(name, "host")) {
      ++hosts;
    } else if (equalsIgnoreCase(name, "content-length")) {
      if (value.empty() ||
          !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return failure(400, "malformed Content-Length");
      }
      uint64_t length = 0;
      auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
      if (ec != std::errc()) return failure(413, "request bodies are not accepted");
      if (content_length && *content_length != length) {
        return failure(400, "conflicting Content-Length");
      }
      content_length = length;
    } else if (equalsIgnoreCase(name, "transfer-encoding")) {
      transfer_encoding = true;
    } else if (equalsIgnoreCase(name, "connection")) {
      std::string_view options = value;
      while (!options.empty()) {
        const size_t comma = options.find(',');
        const std::string_view option = trimWhitespace(options.substr(0, comma));
        if (equalsIgnoreCase(option, "close")) close = true;
        if (equalsIgnoreCase(option, "keep-alive")) keep_alive = true;
        if (comma == std::string_view::npos) break;
        options.remove_prefix(comma + 1);
      }
    }
  }

  if (method == "GET") {
    request.method = Method::kGet;
  } else if (method == "HEAD") {
    request.method = Method::kHead;
  } else {
    return failure(405, fmt::format("method {} is not allowed", method));
  }
  // RFC 9112 section 3.2: exactly one Host in HTTP/1.1, at most one before.
  if (request.minor_version == 1 ? hosts != 1 : hosts > 1) {
    return failure(400, hosts == 0 ? "no Host header field" : "more than one Host header field");
  }
  if (transfer_encoding) return failure(400, "request bodies are not accepted (Transfer-Encoding)");
  if (content_length.value_or(0) > 0) return failure(413, "request bodies are not accepted");

  request.keep_alive = !close && (request.minor_version == 1 || keep_alive);
  result.kind = ParseResult::Kind::kComplete;
  result.consumed = consumed;
  return result;
}

}  // namespace

ParseResult HttpRequestParser::parse(std::string_view buffer) {
  const size_t end = std::min(buffer.size(), kMaxHeadBytes);
  for (size_t i = scanned_; i < end; ++i) {
    const char c = buffer[i];
    if (c == '\0') return failure(400, "NUL byte in the request head");
    // Checked on the byte after the CR, which may come in a later read.
    if (i > 0 && buffer[i - 1] == '\r' && c != '\n') return failure(400, "CR without LF");
    if (c == '\n') {
      if (i == 0 || buffer[i - 1] != '\r') return failure(400, "LF without CR");
      const bool empty = i - 1 == line_start_;
      line_start_ = i + 1;
      if (!empty) {
        if (++lines_ > kMaxHeaderFields + 1) return failure(431, "too many header fields");
        continue;
      }
      if (lines_ == 0) {
        request_start_ = i + 1;  // an empty line before the request line
        continue;
      }
      scanned_ = i + 1;
      return parseHead(buffer.substr(request_start_, i + 1 - request_start_), i + 1);
    }
    if (c != '\r' && isControl(c)) return failure(400, "control character in the request head");
  }
  scanned_ = end;
  if (buffer.size() >= kMaxHeadBytes) {
    return lines_ == 0 ? failure(414, "request line too long")
                       : failure(431, "request head too large");
  }
  return ParseResult{};
}

std::string_view reasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

std::string serializeResponse(const HttpResponse& response, bool head_only, bool keep_alive) {
  std::string out = fmt::format(
      "HTTP/1.1 {} {}\r\n"
      "Content-Type: {}\r\n"
      "Content-Length: {}\r\n"
      "Cache-Control: no-store\r\n"
      "Connection: {}\r\n",
      response.status, reasonPhrase(response.status), response.content_type, response.body.size(),
      keep_alive ? "keep-alive" : "close");
  if (response.status == 405) out += "Allow: GET, HEAD\r\n";
  out += "\r\n";
  if (!head_only) out += response.body;
  return out;
}

HttpResponse errorResponse(int status) {
  return HttpResponse{status, "text/plain; charset=utf-8",
                      fmt::format("{} {}\n", status, reasonPhrase(status))};
}

}  // namespace spindle::admin
