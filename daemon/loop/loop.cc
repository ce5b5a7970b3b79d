#include "loop/loop.h"

#include <fmt/core.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "loop/epoll_loop.h"
#include "loop/uring_loop.h"

namespace spindle::loop {

const char* engineName(Engine engine) { return engine == Engine::kIoUring ? "io_uring" : "epoll"; }

Result<std::unique_ptr<Loop>> Loop::create(Engine engine, unsigned entries) {
  if (engine == Engine::kEpoll) {
    auto loop = EpollLoop::create();
    if (!loop) return Error{loop.error()};
    return std::unique_ptr<Loop>(std::move(*loop));
  }
  auto loop = UringLoop::create(entries);
  if (!loop) return Error{loop.error()};
  return std::unique_ptr<Loop>(std::move(*loop));
}

Loop::~Loop() = default;

void Loop::endBatch() {
  if (after_batch_) after_batch_();
  deferred_.clear();
}

void Loop::adopt(std::unique_ptr<Deferred> orphan) { orphans_.push_back(std::move(orphan)); }

void Loop::disown(Deferred* orphan) {
  for (auto& kept : orphans_) {
    if (kept.get() != orphan) continue;
    deferDelete(std::move(kept));
    kept = std::move(orphans_.back());
    orphans_.pop_back();
    return;
  }
}

Result<EngineChoice> chooseEngine(EngineSetting setting) {
  if (setting == EngineSetting::kEpoll) return EngineChoice{Engine::kEpoll, ""};
  Status usable = probeIoUring();
  if (usable) return EngineChoice{Engine::kIoUring, ""};
  if (setting == EngineSetting::kIoUring) {
    return makeError(
        fmt::format("proxy.io_engine is io_uring, which cannot run here: {}", usable.error()));
  }
  return EngineChoice{Engine::kEpoll, usable.error()};
}

Timer::Timer(Loop& loop, std::function<void()> on_fire)
    : loop_(loop), on_fire_(std::move(on_fire)), op_(std::make_unique<Op>(loop, this)) {}

Timer::~Timer() {
  if (op_->in_flight == 0) return;
  op_->owner = nullptr;
  loop_.cancelTimeout(op_.get());
  loop_.adopt(std::move(op_));
}

void Timer::arm(std::chrono::nanoseconds after) {
  op_->ts.tv_sec = after.count() / 1000000000;
  op_->ts.tv_nsec = after.count() % 1000000000;
  loop_.timeout(op_.get(), &op_->ts);
  op_->in_flight++;
}

void Timer::Op::complete(int32_t res, uint32_t /*flags*/) {
  in_flight--;
  if (owner == nullptr) {
    if (in_flight == 0) loop.disown(this);
    return;
  }
  if (res == -ETIME) owner->on_fire_();
}

Waker::Waker(Loop& loop, std::function<void()> on_wake)
    : loop_(loop), on_wake_(std::move(on_wake)), fd_(::eventfd(0, EFD_CLOEXEC)) {
  if (!fd_.valid()) {
    fmt::print(stderr, "spindle: error: eventfd: {}\n", std::strerror(errno));
    std::abort();
  }
}

void Waker::arm() { loop_.read(this, fd_.get(), &value_, sizeof(value_)); }

void Waker::wake() {
  uint64_t one = 1;
  // An eventfd write only fails when the counter would overflow, which cannot happen here.
  [[maybe_unused]] ssize_t written = ::write(fd_.get(), &one, sizeof(one));
}

void Waker::complete(int32_t res, uint32_t /*flags*/) {
  if (res == -ECANCELED) return;
  arm();
  on_wake_();
}

}  // namespace spindle::loop
