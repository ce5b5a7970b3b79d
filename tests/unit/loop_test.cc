#include "loop/loop.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <optional>

namespace spindle::loop {
namespace {

struct Recorded final : Completion {
  void complete(int32_t res, uint32_t /*flags*/) override { result = res; }
  std::optional<int32_t> result;
};

int32_t runOne(Loop& loop, Recorded& op) {
  for (int i = 0; i < 10 && !op.result; ++i) loop.runOnce(std::chrono::milliseconds(100));
  return op.result.value_or(1);
}

TEST(LoopRestrictions, ARingCarriesOnlyTheOperationsSpindleUses) {
  auto loop = Loop::create(8);
  ASSERT_TRUE(loop) << loop.error();
  Recorded nop;
  io_uring_prep_nop((*loop)->prepare(&nop));
  EXPECT_EQ(runOne(**loop, nop), 0);
  // Opening a file is not one of them: what seccomp refuses the proxy (openat for writing)
  // must not come back through its rings.
  Recorded open;
  io_uring_prep_openat((*loop)->prepare(&open), AT_FDCWD, "/tmp/spindle-loop-test",
                       O_WRONLY | O_CREAT, 0600);
  EXPECT_EQ(runOne(**loop, open), -EACCES);
  // Nor a flag it does not use.
  Recorded async;
  io_uring_sqe* sqe = (*loop)->prepare(&async);
  io_uring_prep_nop(sqe);
  sqe->flags |= IOSQE_ASYNC;
  EXPECT_EQ(runOne(**loop, async), -EACCES);
}

}  // namespace
}  // namespace spindle::loop
