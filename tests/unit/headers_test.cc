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

TEST(HeaderBlock, ABlockOnSpareBuffersHoldsOnlyItsOwnFields) {
  const void* spare = nullptr;
  {
    HeaderBlock old = request();
    old.add("x-padding", std::string(300, 'p'));
    spare = old.nv().data();
  }
  HeaderBlock block;
  block.add("grpc-status", "0");
  ASSERT_EQ(block.count(), 1u);
  EXPECT_EQ(block.name(0), "grpc-status");
  EXPECT_EQ(block.value(0), "0");
  EXPECT_EQ(block.find(":path"), "");
  EXPECT_EQ(block.listSize(), std::string_view("grpc-status0").size() + 32);
  const auto& nv = block.nv();
  ASSERT_EQ(nv.size(), 1u);
  // The buffers of the block that went were taken, not new ones.
  EXPECT_EQ(static_cast<const void*>(nv.data()), spare);
}

TEST(HeaderBlock, MoveAssignmentKeepsTheMovedBlockAndEmptiesTheSource) {
  HeaderBlock target;
  target.add("x-old", "1");
  HeaderBlock source = request();
  target = std::move(source);
  ASSERT_EQ(target.count(), 4u);
  EXPECT_EQ(target.find(":path"), "/echo.Echo/Unary");
  EXPECT_EQ(target.find("x-old"), "");
  EXPECT_EQ(source.count(), 0u);  // NOLINT(bugprone-use-after-move): moved-from is empty
  EXPECT_EQ(source.listSize(), 0u);
  source.add("x-new", "2");  // a moved-from block is usable again
  EXPECT_EQ(source.find("x-new"), "2");
  HeaderBlock constructed(std::move(target));
  EXPECT_EQ(constructed.find(":path"), "/echo.Echo/Unary");
  EXPECT_EQ(target.count(), 0u);  // NOLINT(bugprone-use-after-move): moved-from is empty
  EXPECT_EQ(target.listSize(), 0u);
}

}  // namespace
}  // namespace spindle::h2
