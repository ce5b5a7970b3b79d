// Signals as completions of a loop: a signalfd read kept armed. The signals must be blocked in
// every thread first (before any thread starts), or they are delivered the usual way instead.
#pragma once

#include <signal.h>
#include <sys/signalfd.h>

#include <functional>
#include <memory>

#include "loop/loop.h"
#include "util/fd.h"
#include "util/result.h"

namespace spindle::loop {

class SignalReader final : public Completion {
 public:
  static Result<std::unique_ptr<SignalReader>> create(Loop& loop, const sigset_t& signals,
                                                      std::function<void(int)> on_signal);
  SignalReader(const SignalReader&) = delete;
  SignalReader& operator=(const SignalReader&) = delete;

  void arm();
  void complete(int32_t res, uint32_t flags) override;

 private:
  SignalReader(Loop& loop, Fd fd, std::function<void(int)> on_signal)
      : loop_(loop), fd_(std::move(fd)), on_signal_(std::move(on_signal)) {}

  Loop& loop_;
  Fd fd_;
  std::function<void(int)> on_signal_;
  signalfd_siginfo info_{};
};

}  // namespace spindle::loop
