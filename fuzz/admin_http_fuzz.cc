// The admin request parser: bytes as an HTTP client (or anyone who can reach the admin port)
// sends them, fed as the admin server does: into one buffer of kMaxHeadBytes, a read at a
// time, parsed again after each read, pipelined requests parsed after the one before. The
// first input byte picks the read size. Every read split must give the same result as the
// whole input at once, and every answer must be one the server can send.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "admin/http.h"
#include "fuzz.h"

using namespace spindle;
using admin::HttpRequestParser;
using admin::ParseResult;

namespace {

void checkResult(const ParseResult& result, std::string_view buffer) {
  switch (result.kind) {
    case ParseResult::Kind::kNeedMore: FUZZ_REQUIRE(buffer.size() < admin::kMaxHeadBytes); break;
    case ParseResult::Kind::kComplete:
      FUZZ_REQUIRE(result.consumed > 0 && result.consumed <= buffer.size());
      FUZZ_REQUIRE(result.consumed <= admin::kMaxHeadBytes);
      FUZZ_REQUIRE(buffer.substr(0, result.consumed).ends_with("\r\n\r\n"));
      FUZZ_REQUIRE(!result.request.path.empty() && result.request.path[0] == '/');
      FUZZ_REQUIRE(result.request.minor_version == 0 || result.request.minor_version == 1);
      break;
    case ParseResult::Kind::kError:
      FUZZ_REQUIRE(result.status == 400 || result.status == 405 || result.status == 413 ||
                   result.status == 414 || result.status == 431 || result.status == 505);
      FUZZ_REQUIRE(!result.reason.empty());
      // What the server sends back must be a well-formed response.
      FUZZ_REQUIRE(admin::serializeResponse(admin::errorResponse(result.status), false, false)
                       .starts_with("HTTP/1.1 " + std::to_string(result.status) + " "));
      break;
  }
}

bool sameResult(const ParseResult& a, const ParseResult& b) {
  if (a.kind != b.kind) return false;
  if (a.kind == ParseResult::Kind::kError) return a.status == b.status && a.reason == b.reason;
  if (a.kind == ParseResult::Kind::kNeedMore) return true;
  return a.consumed == b.consumed && a.request.method == b.request.method &&
         a.request.path == b.request.path && a.request.query == b.request.query &&
         a.request.minor_version == b.request.minor_version &&
         a.request.keep_alive == b.request.keep_alive;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static constexpr size_t kReads[] = {1, 2, 3, 5, 16, 100, 1000, admin::kMaxHeadBytes};
  const size_t read_size = kReads[data[0] & 7];
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  // Requests one after another on one connection, until an error or the input runs out.
  for (int requests = 0; requests < 64 && !input.empty(); ++requests) {
    // The whole of what the buffer can hold at once...
    const std::string_view whole = input.substr(0, admin::kMaxHeadBytes);
    HttpRequestParser once;
    const ParseResult expected = once.parse(whole);
    checkResult(expected, whole);

    // ...and the same bytes a read at a time, parsing after each.
    HttpRequestParser parser;
    ParseResult result;
    size_t filled = 0;
    do {
      filled = std::min(whole.size(), filled + read_size);
      result = parser.parse(whole.substr(0, filled));
      checkResult(result, whole.substr(0, filled));
    } while (result.kind == ParseResult::Kind::kNeedMore && filled < whole.size());
    FUZZ_REQUIRE(sameResult(result, expected));

    if (result.kind != ParseResult::Kind::kComplete || !result.request.keep_alive) break;
    input.remove_prefix(result.consumed);
  }
  return 0;
}
