#include "proxy/grpc_timeout.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "lb/picker.h"

namespace spindle::proxy {
namespace {

using std::chrono::hours;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::nanoseconds;
using std::chrono::seconds;

std::optional<nanoseconds> ns(nanoseconds value) { return value; }

TEST(GrpcTimeoutTest, Parse_EveryUnit) {
  EXPECT_EQ(parseGrpcTimeout("3H"), ns(hours(3)));
  EXPECT_EQ(parseGrpcTimeout("3M"), ns(minutes(3)));
  EXPECT_EQ(parseGrpcTimeout("3S"), ns(seconds(3)));
  EXPECT_EQ(parseGrpcTimeout("3m"), ns(milliseconds(3)));
  EXPECT_EQ(parseGrpcTimeout("3u"), ns(microseconds(3)));
  EXPECT_EQ(parseGrpcTimeout("3n"), ns(nanoseconds(3)));
}

TEST(GrpcTimeoutTest, Parse_LargestValueOfEveryUnit) {
  EXPECT_EQ(parseGrpcTimeout("99999999n"), ns(nanoseconds(99'999'999)));
  EXPECT_EQ(parseGrpcTimeout("99999999u"), ns(microseconds(99'999'999)));
  EXPECT_EQ(parseGrpcTimeout("99999999m"), ns(milliseconds(99'999'999)));
  EXPECT_EQ(parseGrpcTimeout("99999999S"), ns(seconds(99'999'999)));
  EXPECT_EQ(parseGrpcTimeout("99999999M"), ns(minutes(99'999'999)));  // 5.99e18 ns: fits
  // 3.6e20 ns does not fit in int64 nanoseconds: it saturates, still a valid timeout.
  EXPECT_EQ(parseGrpcTimeout("99999999H"), ns(nanoseconds::max()));
  // The largest hour count that fits, and the first that does not.
  EXPECT_EQ(parseGrpcTimeout("2562047H"), ns(hours(2'562'047)));
  EXPECT_EQ(parseGrpcTimeout("2562048H"), ns(nanoseconds::max()));
}

TEST(GrpcTimeoutTest, Parse_ZeroAndLeadingZeros) {
  EXPECT_EQ(parseGrpcTimeout("0n"), ns(nanoseconds(0)));
  EXPECT_EQ(parseGrpcTimeout("00000001S"), ns(seconds(1)));  // 8 digits
}

TEST(GrpcTimeoutTest, Parse_RefusesWhatTheGrammarDoesNot) {
  for (const char* bad : {"", "S", "1", "123456789S", "000000001S", "1s", "1h", "1x", "1SS", "-1S",
                          "+1S", "1.5S", " 1S", "1S ", "1 S", "0x1S", "1e3m", "S1"}) {
    EXPECT_EQ(parseGrpcTimeout(bad), std::nullopt) << "'" << bad << "'";
  }
}

std::optional<std::string> text(const char* value) { return std::string(value); }

TEST(GrpcTimeoutTest, Format_ExactValuesTakeTheShortestForm) {
  EXPECT_EQ(formatGrpcTimeout(hours(2)), text("2H"));
  EXPECT_EQ(formatGrpcTimeout(minutes(120)), text("2H"));
  EXPECT_EQ(formatGrpcTimeout(seconds(120)), text("2M"));
  EXPECT_EQ(formatGrpcTimeout(seconds(90)), text("90S"));
  EXPECT_EQ(formatGrpcTimeout(milliseconds(2000)), text("2S"));
  EXPECT_EQ(formatGrpcTimeout(milliseconds(1500)), text("1500m"));
  EXPECT_EQ(formatGrpcTimeout(microseconds(250)), text("250u"));
  EXPECT_EQ(formatGrpcTimeout(nanoseconds(1)), text("1n"));
  EXPECT_EQ(formatGrpcTimeout(nanoseconds(99'999'999)), text("99999999n"));
  EXPECT_EQ(formatGrpcTimeout(nanoseconds(100'000'000)), text("100m"));
}

TEST(GrpcTimeoutTest, Format_InexactValuesRoundDownInTheFinestUnitThatFits) {
  // 100 ms + 1 ns needs 9 digits in ns: 100000 us, 1 ns lost, never gained.
  EXPECT_EQ(formatGrpcTimeout(nanoseconds(100'000'001)), text("100000u"));
  // 123.456789999 s: 9 digits even in us, so ms.
  EXPECT_EQ(formatGrpcTimeout(nanoseconds(123'456'789'999)), text("123456m"));
  EXPECT_EQ(formatGrpcTimeout(seconds(1) + nanoseconds(1)), text("1000000u"));
  EXPECT_EQ(formatGrpcTimeout(seconds(100'000'000) + seconds(59)), text("1666667M"));
}

TEST(GrpcTimeoutTest, Format_LargestValues) {
  EXPECT_EQ(formatGrpcTimeout(nanoseconds::max()), text("2562047H"));
  EXPECT_EQ(formatGrpcTimeout(hours(2'562'047)), text("2562047H"));
  EXPECT_EQ(formatGrpcTimeout(seconds(99'999'999)), text("99999999S"));
  EXPECT_EQ(formatGrpcTimeout(minutes(99'999'999)), text("99999999M"));
  EXPECT_EQ(formatGrpcTimeout(*parseGrpcTimeout("99999999H")), text("2562047H"));
}

TEST(GrpcTimeoutTest, Format_NothingLeftIsExpired) {
  EXPECT_EQ(formatGrpcTimeout(nanoseconds(0)), std::nullopt);
  EXPECT_EQ(formatGrpcTimeout(nanoseconds(-1)), std::nullopt);
  EXPECT_EQ(formatGrpcTimeout(nanoseconds::min()), std::nullopt);
}

TEST(GrpcTimeoutTest, Format_NeverGrowsLosesLittleAndParsesBack) {
  // Values spread over every magnitude from 1 ns to 292 years.
  lb::Random random(2024);
  for (int i = 0; i < 200000; ++i) {
    const int shift = static_cast<int>(random.below(63));
    const auto value = static_cast<int64_t>(random.next() >> (1 + shift));
    if (value <= 0) continue;
    const auto formatted = formatGrpcTimeout(nanoseconds(value));
    ASSERT_TRUE(formatted.has_value()) << value;
    ASSERT_LE(formatted->size(), 9u) << *formatted;
    const auto parsed = parseGrpcTimeout(*formatted);
    ASSERT_TRUE(parsed.has_value()) << *formatted;
    ASSERT_LE(parsed->count(), value) << *formatted;
    // Below 0.001% lost (< 1 unit of at least 100000 units).
    ASSERT_LT(static_cast<double>(value - parsed->count()), 1e-5 * static_cast<double>(value))
        << value << " -> " << *formatted;
  }
}

}  // namespace
}  // namespace spindle::proxy
