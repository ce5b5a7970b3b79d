// The upstream session (client side): raw bytes as an endpoint Pod's server would send them,
// after the session has sent requests on streams 1, 3 and 5. The first input byte picks how
// they are fed (fuzz/h2_peer.h); with its low bit set, a valid SETTINGS frame comes first.
#include <cstddef>
#include <cstdint>
#include <string>

#include "h2_peer.h"

using namespace spindle;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const fuzz::Mode mode = fuzz::Mode::of(data[0]);
  const h2::Settings settings = h2::upstreamSettings();
  fuzz::Peer peer(h2::Role::kClient, settings);
  auto session = fuzz::makeSession(h2::Role::kClient, settings, peer);
  if (session == nullptr) return 0;
  peer.submitRequests(3);
  std::string out;
  session->produce(out, 64 * 1024);  // preface, SETTINGS and the requests go out first

  std::string prefix;
  if (mode.preface) prefix = std::string("\x00\x00\x00\x04\x00\x00\x00\x00\x00", 9);
  fuzz::drive(*session, peer, mode, prefix, data + 1, size - 1);
  return 0;
}
