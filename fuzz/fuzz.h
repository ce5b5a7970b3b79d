// Shared by the fuzz targets.
#pragma once

#include <cstdio>
#include <cstdlib>

// A broken promise is a finding: say which, then abort so that libFuzzer keeps the input.
#define FUZZ_REQUIRE(cond)                                                            \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "%s:%d: broken promise: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)
