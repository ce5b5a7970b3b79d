// The downstream session (server side): raw bytes as a Pod's client would send them. The
// first input byte picks how they are fed (fuzz/h2_peer.h); with its low bit set, a valid
// client preface and SETTINGS come first, so that the fuzzer spends its time past them.
#include <cstddef>
#include <cstdint>
#include <string>

#include "h2_peer.h"

using namespace spindle;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const fuzz::Mode mode = fuzz::Mode::of(data[0]);
  const h2::Settings settings = h2::downstreamSettings();
  fuzz::Peer peer(h2::Role::kServer, settings);
  auto session = fuzz::makeSession(h2::Role::kServer, settings, peer);
  if (session == nullptr) return 0;

  std::string prefix;
  if (mode.preface) {
    prefix = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    prefix += std::string("\x00\x00\x00\x04\x00\x00\x00\x00\x00", 9);  // empty SETTINGS
  }
  fuzz::drive(*session, peer, mode, prefix, data + 1, size - 1);
  return 0;
}
