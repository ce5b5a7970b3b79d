// Tests of what runs on a loop run on both engines: the fixture takes the engine as its
// parameter (TEST_P), and INSTANTIATE_ON_BOTH_ENGINES names each run after its engine.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "loop/engine.h"

namespace spindle::test {

inline std::string engineTestName(const ::testing::TestParamInfo<loop::Engine>& info) {
  return loop::engineName(info.param);
}

}  // namespace spindle::test

#define INSTANTIATE_ON_BOTH_ENGINES(fixture)                                    \
  INSTANTIATE_TEST_SUITE_P(Engines, fixture,                                    \
                           ::testing::Values(::spindle::loop::Engine::kIoUring, \
                                             ::spindle::loop::Engine::kEpoll),  \
                           ::spindle::test::engineTestName)
