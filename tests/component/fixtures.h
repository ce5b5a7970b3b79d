// The set-ups most tests share: a harness whose service balances over one backend, or over
// two. Each test makes its own clients (some need options).
#pragma once

#include <gtest/gtest.h>

#include "backend.h"
#include "harness.h"

namespace spindle::component {

class OneBackendTest : public ::testing::Test {
 protected:
  OneBackendTest() { h_.setService(echoService({backend_.address()})); }

  ProxyHarness h_{echoService({})};
  Backend backend_{h_, "a"};
};

class TwoBackendsTest : public ::testing::Test {
 protected:
  TwoBackendsTest() { h_.setService(echoService({a_.address(), b_.address()})); }

  ProxyHarness h_{echoService({})};
  Backend a_{h_, "a"};
  Backend b_{h_, "b"};
};

}  // namespace spindle::component
