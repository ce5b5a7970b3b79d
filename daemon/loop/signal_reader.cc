#include "loop/signal_reader.h"

#include <fmt/core.h>

#include <cerrno>
#include <cstring>

namespace spindle::loop {

Result<std::unique_ptr<SignalReader>> SignalReader::create(Loop& loop, const sigset_t& signals,
                                                           std::function<void(int)> on_signal) {
  Fd fd(::signalfd(-1, &signals, SFD_CLOEXEC));
  if (!fd.valid()) return makeError(fmt::format("signalfd: {}", std::strerror(errno)));
  return std::unique_ptr<SignalReader>(new SignalReader(loop, std::move(fd), std::move(on_signal)));
}

void SignalReader::arm() { loop_.read(this, fd_.get(), &info_, sizeof(info_)); }

void SignalReader::complete(int32_t res, uint32_t /*flags*/) {
  if (res == -ECANCELED) return;
  if (res == static_cast<int32_t>(sizeof(info_))) on_signal_(static_cast<int>(info_.ssi_signo));
  arm();
}

}  // namespace spindle::loop
