// StreamMap: the per-connection stream table, checked against std::unordered_map.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <unordered_map>

#include "proxy/stream_map.h"

namespace spindle::proxy {
namespace {

TEST(StreamMap, FindsWhatWasInsertedAndForgetsWhatWasTaken) {
  StreamMap<int*> map;
  int a = 1;
  int b = 2;
  EXPECT_EQ(map.find(1), nullptr);
  EXPECT_EQ(map.take(1), nullptr);
  map.insert(1, &a);
  map.insert(3, &b);
  ASSERT_NE(map.find(1), nullptr);
  EXPECT_EQ(*map.find(1), &a);
  EXPECT_EQ(*map.find(3), &b);
  EXPECT_EQ(map.find(5), nullptr);
  EXPECT_EQ(map.size(), 2u);
  EXPECT_EQ(map.take(1), &a);
  EXPECT_EQ(map.find(1), nullptr);
  EXPECT_EQ(*map.find(3), &b);
  EXPECT_EQ(map.take(3), &b);
  EXPECT_TRUE(map.empty());
}

TEST(StreamMap, OwnsUniquePointersItHolds) {
  StreamMap<std::unique_ptr<int>> map;
  map.insert(7, std::make_unique<int>(70));
  map.insert(9, std::make_unique<int>(90));
  std::unique_ptr<int> seven = map.take(7);
  ASSERT_NE(seven, nullptr);
  EXPECT_EQ(*seven, 70);
  EXPECT_EQ(map.take(7), nullptr);
  EXPECT_EQ(**map.find(9), 90);
}

TEST(StreamMap, AFullTableSurvivesATakeAnywhere) {
  // 8 streams in the first 16-slot table: probe runs form; take each one in turn from a
  // fresh table, and in every order of two, and the others must all still be found.
  const int32_t ids[] = {1, 3, 5, 7, 9, 11, 13, 101};
  for (int32_t first : ids) {
    for (int32_t second : ids) {
      StreamMap<int> map;
      for (int32_t id : ids) map.insert(id, id * 10);
      EXPECT_EQ(map.take(first), first * 10);
      if (second != first) {
        EXPECT_EQ(map.take(second), second * 10);
      }
      for (int32_t id : ids) {
        const int* found = map.find(id);
        if (id == first || id == second) {
          EXPECT_EQ(found, nullptr) << id;
        } else {
          ASSERT_NE(found, nullptr) << first << " " << second << " " << id;
          EXPECT_EQ(*found, id * 10);
        }
      }
    }
  }
}

TEST(StreamMap, ForEachVisitsEveryStreamOnce) {
  StreamMap<int> map;
  for (int32_t id = 1; id < 200; id += 2) map.insert(id, id);
  for (int32_t id = 1; id < 200; id += 6) map.take(id);
  std::map<int32_t, int> seen;
  map.forEach([&](int32_t id, int value) { seen[id] += value; });
  EXPECT_EQ(seen.size(), map.size());
  for (const auto& [id, value] : seen) {
    EXPECT_EQ(value, id);
    EXPECT_NE((id - 1) % 6, 0);
  }
}

TEST(StreamMap, MatchesAStandardMapOverALongLivedConnection) {
  // Streams open in id order and close in any order, some staying open for long, as on a
  // connection that carries calls for hours: the table neither loses nor invents a stream.
  std::mt19937 rng(12345);
  StreamMap<int32_t> map;
  std::unordered_map<int32_t, int32_t> model;
  int32_t next_id = 1;
  for (int step = 0; step < 200000; ++step) {
    const bool open = model.empty() || (rng() % 100) < (model.size() < 300 ? 55u : 45u);
    if (open) {
      map.insert(next_id, next_id * 3);
      model.emplace(next_id, next_id * 3);
      next_id += 2;
    } else {
      // Mostly a recent stream, sometimes an old one.
      const int32_t back = static_cast<int32_t>(rng() % (rng() % 8 == 0 ? 4000 : 600)) * 2;
      const int32_t id = next_id - 2 - back;
      const auto it = model.find(id);
      const int32_t got = map.take(id);
      if (it == model.end()) {
        ASSERT_EQ(got, 0) << id;
      } else {
        ASSERT_EQ(got, it->second) << id;
        model.erase(it);
      }
    }
    ASSERT_EQ(map.size(), model.size());
    if (step % 997 == 0) {
      for (const auto& [id, value] : model) {
        const int32_t* found = map.find(id);
        ASSERT_NE(found, nullptr) << id;
        ASSERT_EQ(*found, value) << id;
      }
    }
  }
}

}  // namespace
}  // namespace spindle::proxy
