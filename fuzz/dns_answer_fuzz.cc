// The DNS glue: raw DNS responses, as a server (or anyone who can spoof one) sends them,
// through the resolver's answer parsing (c-ares's ares_parse_a/aaaa_reply, then our Answer),
// then A and AAAA together through combine() and the failure policy (NameState), with the
// clock moving. Checks the promises the endpoint sets rest on.
//
// Input: two bytes of policy settings, then messages: a control byte (record type, the
// status c-ares reported, seconds to move the clock), a 16-bit length, the response bytes.
#include <ares.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "fuzz.h"

// The parsing is a file-local function of the resolver: compile the resolver into this
// target to reach it (the library's copy of the resolver is then not linked in).
#include "dns/resolver.cc"

using namespace spindle;
using namespace spindle::dns;

namespace {

constexpr int kStatuses[] = {ARES_SUCCESS,   ARES_SUCCESS, ARES_SUCCESS,  ARES_SUCCESS,
                             ARES_ENOTFOUND, ARES_ENODATA, ARES_ETIMEOUT, ARES_ESERVFAIL};

void checkAnswer(const Answer& answer, RecordType type) {
  switch (answer.outcome) {
    case Outcome::kRecords:
      FUZZ_REQUIRE(!answer.addresses.empty());
      for (const net::SocketAddress& address : answer.addresses) {
        // An AAAA record may hold a v4-mapped address, which is kept in its AF_INET form.
        if (type == RecordType::kA) FUZZ_REQUIRE(address.family() == AF_INET);
        FUZZ_REQUIRE(address.port() == 0);
      }
      break;
    case Outcome::kEmpty:
    case Outcome::kFailure:
      FUZZ_REQUIRE(answer.addresses.empty());
      FUZZ_REQUIRE(!answer.error.empty());
      break;
  }
}

// Sorted and without duplicates: no two entries name the same endpoint.
void checkSet(const std::vector<net::SocketAddress>& addresses) {
  for (size_t i = 0; i < addresses.size(); ++i) {
    for (size_t j = i + 1; j < addresses.size(); ++j) {
      FUZZ_REQUIRE(!(addresses[i] == addresses[j]));
    }
    if (i > 0) FUZZ_REQUIRE(!(addresses[i].mapped() < addresses[i - 1].mapped()));
  }
}

// What Discovery does with a failed family: its last good answer stands in.
const Answer& effective(const Answer& answer, std::optional<Answer>& last_good) {
  if (answer.outcome != Outcome::kFailure) {
    last_good = answer;
    return answer;
  }
  return last_good ? *last_good : answer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  PolicySettings settings;
  settings.refresh_min = std::chrono::milliseconds(1 + 250 * (data[0] & 15));
  settings.refresh_max = settings.refresh_min * (1 + (data[0] >> 4) * 10);
  settings.empty_confirmations = 1u + data[1] % 4;
  data += 2;
  size -= 2;

  NameState state(settings);
  auto now = Clock::time_point{} + std::chrono::hours(1);
  std::optional<Answer> a, aaaa, last_good_a, last_good_aaaa;
  while (size >= 3) {
    const uint8_t control = data[0];
    const size_t length = std::min(size - 3, size_t{data[1]} << 8 | data[2]);
    const uint8_t* message = data + 3;
    data += 3 + length;
    size -= 3 + length;

    const RecordType type = (control & 1) != 0 ? RecordType::kAAAA : RecordType::kA;
    const int status = kStatuses[(control >> 1) & 7];
    // c-ares hands over the bytes only with a response; copy them so ASan sees their end.
    std::vector<unsigned char> bytes(message, message + length);
    Answer answer = parse(type, status, bytes.data(), static_cast<int>(bytes.size()));
    checkAnswer(answer, type);
    (type == RecordType::kA ? a : aaaa) = std::move(answer);
    if (!a || !aaaa) continue;

    now += std::chrono::seconds(control >> 4);
    const auto before = state.addresses();
    const Answer combined = combine(effective(*a, last_good_a), effective(*aaaa, last_good_aaaa));
    a.reset();
    aaaa.reset();
    const auto changed = state.onAnswer(combined, now);
    checkSet(state.addresses());
    if (changed) FUZZ_REQUIRE(*changed == state.addresses());
    FUZZ_REQUIRE(state.nextQuery() >= now + settings.refresh_min);
    FUZZ_REQUIRE(state.nextQuery() <= now + settings.refresh_max);
    switch (combined.outcome) {
      case Outcome::kRecords:
        FUZZ_REQUIRE(state.resolved());
        FUZZ_REQUIRE(!state.addresses().empty());
        for (const net::SocketAddress& address : combined.addresses) {
          bool found = false;
          for (const net::SocketAddress& kept : state.addresses()) found = found || kept == address;
          FUZZ_REQUIRE(found);
        }
        break;
      case Outcome::kEmpty:
        // One empty answer never empties a set, unless it takes only one to confirm.
        if (state.consecutiveEmpty() < settings.empty_confirmations) {
          FUZZ_REQUIRE(state.addresses() == before);
        }
        break;
      case Outcome::kFailure:
        FUZZ_REQUIRE(state.addresses() == before);  // a failure keeps the last good set
        break;
    }
    (void)state.staleness(now);
  }
  return 0;
}
