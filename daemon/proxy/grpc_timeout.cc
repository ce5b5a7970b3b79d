#include "proxy/grpc_timeout.h"

#include <cstdint>
#include <limits>

namespace spindle::proxy {
namespace {

constexpr size_t kMaxDigits = 8;
constexpr int64_t kMaxValue = 99'999'999;

struct Unit {
  char symbol;
  int64_t ns;
};
// Coarsest first.
constexpr Unit kUnits[] = {
    {'H', 3'600'000'000'000}, {'M', 60'000'000'000}, {'S', 1'000'000'000},
    {'m', 1'000'000},         {'u', 1'000},          {'n', 1},
};

std::string render(int64_t value, char unit) {
  std::string out = std::to_string(value);
  out += unit;
  return out;
}

}  // namespace

std::optional<std::chrono::nanoseconds> parseGrpcTimeout(std::string_view value) {
  if (value.size() < 2 || value.size() > kMaxDigits + 1) return std::nullopt;
  const char symbol = value.back();
  const Unit* unit = nullptr;
  for (const Unit& candidate : kUnits) {
    if (candidate.symbol == symbol) unit = &candidate;
  }
  if (unit == nullptr) return std::nullopt;
  int64_t number = 0;
  for (char c : value.substr(0, value.size() - 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    number = number * 10 + (c - '0');  // at most 8 digits: no overflow
  }
  if (number > std::numeric_limits<int64_t>::max() / unit->ns) {
    return std::chrono::nanoseconds::max();
  }
  return std::chrono::nanoseconds(number * unit->ns);
}

std::optional<std::string> formatGrpcTimeout(std::chrono::nanoseconds remaining) {
  const int64_t ns = remaining.count();
  if (ns <= 0) return std::nullopt;
  // Exact, coarsest unit first: the shortest text.
  for (const Unit& unit : kUnits) {
    if (ns % unit.ns == 0 && ns / unit.ns <= kMaxValue) return render(ns / unit.ns, unit.symbol);
  }
  // Rounded down, finest unit first: the least time lost.
  for (auto it = std::rbegin(kUnits); it != std::rend(kUnits); ++it) {
    if (ns / it->ns <= kMaxValue) return render(ns / it->ns, it->symbol);
  }
  return std::nullopt;  // not reached: INT64_MAX ns is 2562047H
}

}  // namespace spindle::proxy
