#include "util/intrusive_list.h"

#include <gtest/gtest.h>

#include <vector>

namespace spindle {
namespace {

struct Item : ListNode<Item> {
  explicit Item(int v) : value(v) {}
  int value;
};

std::vector<int> values(const IntrusiveList<Item>& list) {
  std::vector<int> out;
  list.forEach([&](Item& item) { out.push_back(item.value); });
  return out;
}

TEST(IntrusiveListTest, IntrusiveList_NewestFirstAndRemovalFromAnywhere) {
  Item a(1), b(2), c(3);
  IntrusiveList<Item> list;
  EXPECT_TRUE(list.empty());
  list.pushFront(&a);
  list.pushFront(&b);
  list.pushFront(&c);
  EXPECT_EQ(values(list), (std::vector<int>{3, 2, 1}));
  list.remove(&b);  // middle
  EXPECT_EQ(values(list), (std::vector<int>{3, 1}));
  list.remove(&c);  // head
  EXPECT_EQ(values(list), (std::vector<int>{1}));
  list.pushFront(&b);  // a removed element can join again
  EXPECT_EQ(values(list), (std::vector<int>{2, 1}));
  list.remove(&a);  // tail
  list.remove(&b);
  EXPECT_TRUE(list.empty());
}

TEST(IntrusiveListTest, IntrusiveList_ForEachToleratesRemovalsOfOthers) {
  Item a(1), b(2), c(3);
  IntrusiveList<Item> list;
  list.pushFront(&a);
  list.pushFront(&b);
  list.pushFront(&c);
  // Closing one connection can close another: the walk still visits each element once.
  std::vector<int> seen;
  list.forEach([&](Item& item) {
    seen.push_back(item.value);
    if (item.value == 3) list.remove(&b);
    list.remove(&item);
  });
  EXPECT_EQ(seen, (std::vector<int>{3, 2, 1}));
  EXPECT_TRUE(list.empty());
}

TEST(IntrusiveListTest, IntrusiveList_AnyOf) {
  Item a(1), b(2);
  IntrusiveList<Item> list;
  EXPECT_FALSE(list.anyOf([](const Item&) { return true; }));
  list.pushFront(&a);
  list.pushFront(&b);
  EXPECT_TRUE(list.anyOf([](const Item& i) { return i.value == 1; }));
  EXPECT_FALSE(list.anyOf([](const Item& i) { return i.value == 5; }));
}

}  // namespace
}  // namespace spindle
