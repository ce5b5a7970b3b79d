// Which engine runs a process's loops: chosen once at start, from proxy.io_engine.
#pragma once

#include <cstdint>
#include <string>

#include "util/result.h"

namespace spindle::loop {

enum class Engine : uint8_t { kIoUring, kEpoll };
const char* engineName(Engine engine);

enum class EngineSetting : uint8_t { kAuto, kIoUring, kEpoll };

// Whether io_uring runs here with every operation and feature spindle uses: if not, what is
// missing, in one line ("io_uring_setup: Operation not permitted (seccomp or
// kernel.io_uring_disabled)", "no multishot accept (Linux 5.19)").
Status probeIoUring();

// The engine a process runs: `auto` is io_uring when probeIoUring() passes and epoll
// otherwise, with the reason in `fallback_reason`; io_uring asked for and refused is an error.
struct EngineChoice {
  Engine engine;
  std::string fallback_reason;
};
Result<EngineChoice> chooseEngine(EngineSetting setting);

}  // namespace spindle::loop
