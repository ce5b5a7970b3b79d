#include "proxy/protocol_detector.h"

#include <nghttp2/nghttp2.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "proxy/downstream.h"
#include "proxy/h2_connection.h"
#include "proxy/passthrough.h"
#include "proxy/worker_parts.h"
#include "util/log.h"

namespace spindle::proxy {
namespace {
constexpr std::string_view kPreface(NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN);
static_assert(kPreface.size() == 24);
}  // namespace

ProtocolDetector::ProtocolDetector(WorkerParts& worker, Fd fd, net::SocketAddress peer,
                                   net::SocketAddress destination, size_t service_index,
                                   const Caller& caller, std::shared_ptr<const std::string> source)
    : worker_(worker),
      fd_(std::move(fd)),
      peer_(peer),
      destination_(destination),
      service_index_(service_index),
      source_(std::move(source)),
      caller_(caller) {
  worker_.metrics.detectorStarted();
}

ProtocolDetector::~ProtocolDetector() { worker_.metrics.detectorEnded(); }

void ProtocolDetector::start() {
  // Each receive waits at most kWaitNanos (a linked timeout); a preface split over several
  // segments is rare and each piece gets the same bound.
  wait_ts_.tv_sec = kWaitNanos / 1'000'000'000;
  wait_ts_.tv_nsec = kWaitNanos % 1'000'000'000;
  receive();
}

void ProtocolDetector::receive() {
  const loop::Deadline deadline{&wait_, &wait_ts_};
  worker_.loop.recv(&recv_, fd_.get(), buffer_ + received_, sizeof(buffer_) - received_, &deadline);
  pending_ops_ += 2;
}

void ProtocolDetector::onWaitEnded(int32_t /*res*/, uint32_t /*flags*/) {
  pending_ops_--;
  opDone();
}

void ProtocolDetector::onReceived(int32_t res, uint32_t /*flags*/) {
  pending_ops_--;
  detect(res);
  opDone();
}

void ProtocolDetector::detect(int32_t res) {
  if (done_) return;
  if (res == -ECANCELED) {
    handOver(false);  // the client waits for the server to speak first
    return;
  }
  if (res == 0) {
    // A FIN, maybe after a short message: pass both on; the server may still answer.
    handOver(false);
    return;
  }
  if (res < 0) {
    done_ = true;  // a reset: nothing to forward
    return;
  }
  received_ += static_cast<size_t>(res);
  const std::string_view seen(buffer_, received_);
  if (seen != kPreface.substr(0, received_)) {
    handOver(false);
  } else if (received_ == kPreface.size()) {
    handOver(true);
  } else {
    receive();
  }
}

void ProtocolDetector::handOver(bool http2) {
  done_ = true;
  std::string received(buffer_, received_);
  if (http2) {
    auto* downstream = new H2Downstream(worker_, std::move(fd_), peer_, service_index_, caller_,
                                        std::move(source_));
    worker_.connections.add(downstream);
    if (Status s = downstream->start(received); !s) downstream->abort();
    return;
  }
  auto* passthrough = new Passthrough(worker_, std::move(fd_), peer_, destination_, caller_,
                                      std::move(source_), std::move(received));
  worker_.connections.add(passthrough);
  passthrough->start();
}

void ProtocolDetector::abort() {
  done_ = true;
  if (pending_ops_ > 0 && fd_.valid()) {
    worker_.loop.cancelFd(fd_.get());
  }
  opDone();
}

void ProtocolDetector::opDone() {
  if (!done_ || pending_ops_ > 0) return;
  pending_ops_ = -1;  // once
  worker_.connections.remove(this);
}

}  // namespace spindle::proxy
