// The grpc-timeout header (gRPC over HTTP/2): "TimeoutValue TimeoutUnit", the value 1 to 8
// ASCII digits, the unit one of H (hours), M (minutes), S, m (milliseconds), u, n. Pure
// arithmetic: the proxy reads the app's deadline and sends the time left upstream.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace spindle::proxy {

// The timeout in nanoseconds; nullopt when the value is not valid (no digits, more than 8,
// a sign, spaces, an unknown unit). "0S" is valid: a deadline already passed. Values beyond
// what nanoseconds hold (above 2562047H, 292 years) saturate to nanoseconds::max().
std::optional<std::chrono::nanoseconds> parseGrpcTimeout(std::string_view value);

// The header value for `remaining`; nullopt when nothing remains (<= 0): the deadline has
// passed and the call should end with DEADLINE_EXCEEDED rather than go upstream.
//
// The value is the shortest exact one when there is one (2000ms is "2S"). Otherwise it is
// rounded DOWN in the finest unit that fits in 8 digits: the upstream must never be given
// more time than the app has left, or it would keep working for an app that gave up. A
// value only moves to a coarser unit when it needs more than 8 digits in the finer one, so
// it is then at least 100,000 units and the loss, under one unit, is below 0.001%.
// Every nanoseconds value > 0 has a form (nanoseconds::max() is "2562047H").
std::optional<std::string> formatGrpcTimeout(std::chrono::nanoseconds remaining);

}  // namespace spindle::proxy
