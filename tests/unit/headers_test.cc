// HeaderBlock: the arena-backed header list the proxy passes between sessions.
#include <gtest/gtest.h>

#include <string>

#include "h2/headers.h"

namespace spindle::h2 {
namespace {

HeaderBlock request() {
  HeaderBlock block;
  block.add(":method", "POST");
  block.add(":path", "/echo.Echo/Unary");
  block.add("grpc-timeout", "100m");
  block.add("x-id", "7");
  return block;
}

TEST(HeaderBlock, SetReplacesTheValueInPlaceAndKeepsTheOrder) {
  HeaderBlock block = request();
  const size_t size = block.listSize();
  block.set("grpc-timeout", "99m");
  ASSERT_EQ(block.count(), 4u);
  EXPECT_EQ(block.name(2), "grpc-timeout");
  EXPECT_EQ(block.value(2), "99m");
  EXPECT_EQ(block.value(3), "7");
  EXPECT_EQ(block.listSize(), size - 1);
  const auto& nv = block.nv();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(nv[2].value), nv[2].valuelen), "99m");
}

TEST(HeaderBlock, SetAddsAFieldThatIsMissing) {
  HeaderBlock block = request();
  block.set("grpc-encoding", "gzip");
  ASSERT_EQ(block.count(), 5u);
  EXPECT_EQ(block.find("grpc-encoding"), "gzip");
}

TEST(HeaderBlock, SetAcceptsAValueFromTheBlockItself) {
  HeaderBlock block = request();
  for (int i = 0; i < 100; ++i) block.set("x-id", block.find(":path"));  // arena grows
  EXPECT_EQ(block.find("x-id"), "/echo.Echo/Unary");
  EXPECT_EQ(block.find(":path"), "/echo.Echo/Unary");
}

}  // namespace
}  // namespace spindle::h2
