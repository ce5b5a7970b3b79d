// CPU per call end of the metrics the data path writes (the three lookups and updates of
// WorkerMetrics::callEnded, on warm series: 64 endpoints, 4 statuses, 32 calling Pods), and of
// a worker's once-a-second expiry pass over full families. One thread, no I/O; the median of
// 9 runs. `make metrics-bench`.
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "metrics/registry.h"
#include "metrics/text_format.h"

namespace {

using spindle::metrics::FamilyId;
using spindle::metrics::Registry;
using spindle::metrics::Type;
#ifndef SPINDLE_BENCH_NO_EXPIRY  // defined to measure a build from before series expired
using spindle::metrics::Clock;
using spindle::metrics::TimePoint;
#endif
using BenchClock = std::chrono::steady_clock;

template <typename F>
double medianNanos(size_t per_run, F&& run) {
  std::vector<double> runs;
  for (int i = 0; i < 9; ++i) {
    const auto start = BenchClock::now();
    run();
    const std::chrono::duration<double, std::nano> took = BenchClock::now() - start;
    runs.push_back(took.count() / static_cast<double>(per_run));
  }
  std::sort(runs.begin(), runs.end());
  return runs[runs.size() / 2];
}

}  // namespace

int main() {
  Registry registry;
  const FamilyId requests = *registry.add({"spindle_requests_total",
                                           "",
                                           Type::kCounter,
                                           {"service", "endpoint", "grpc_status"},
                                           {},
                                           4096});
  const FamilyId duration = *registry.add(
      {"spindle_request_duration_seconds",
       "",
       Type::kHistogram,
       {"service"},
       {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60},
       256});
  const FamilyId sources = *registry.add(
      {"spindle_source_requests_total", "", Type::kCounter, {"source", "service"}, {}, 1024});
  auto shard = registry.makeShard();

  const std::string service = "echo";
  std::vector<std::string> endpoints;
  for (int i = 0; i < 64; ++i) endpoints.push_back(fmt::format("10.0.{}.1:50051", i));
  std::vector<std::string> pods;
  for (int i = 0; i < 32; ++i) pods.push_back(fmt::format("{:08x}-0000-4000-8000-000000000000", i));
  const std::string_view statuses[] = {"0", "14", "4", "13"};

  constexpr size_t kCalls = 1'000'000;
  auto calls = [&] {
    for (size_t i = 0; i < kCalls; ++i) {
      const std::string& endpoint = endpoints[i % endpoints.size()];
      const std::string& pod = pods[(i * 7) % pods.size()];
      shard->counter(requests, {service, endpoint, statuses[(i / 64) % 4]}).inc();
      shard->counter(sources, {pod, service}).inc();
      shard->histogram(duration, {service}).observe(0.0001 * static_cast<double>(i % 100));
    }
  };
  calls();  // every series exists: warm
  fmt::print("call end (3 lookups and updates, warm): {:.1f} ns\n", medianNanos(kCalls, calls));

#ifndef SPINDLE_BENCH_NO_EXPIRY
  // The expiry pass of a worker whose families are full: every series asked about (the
  // endpoints by binary search over the table's pairs, as WorkerMetrics::expire does), none
  // retired, then a sweep.
  Registry full_registry;
  const FamilyId full = *full_registry.add({"spindle_requests_total",
                                            "",
                                            Type::kCounter,
                                            {"service", "endpoint", "grpc_status"},
                                            {},
                                            4096});
  auto full_shard = full_registry.makeShard();
  using Pair = std::pair<std::string_view, std::string_view>;
  std::vector<std::string> labels;
  for (int i = 0; i < 4096; ++i)
    labels.push_back(fmt::format("10.1.{}.{}:50051", i / 256, i % 256));
  std::vector<Pair> present;
  for (const std::string& label : labels) {
    full_shard->counter(full, {service, label, "0"}).inc();
    present.emplace_back(service, label);
  }
  std::sort(present.begin(), present.end());
  const TimePoint now = Clock::now();
  auto pass = [&] {
    full_shard->reconcile(full, now, [&present](std::span<const std::string> values) {
      return std::binary_search(present.begin(), present.end(), Pair(values[0], values[1]));
    });
    full_shard->sweep(now);
  };
  fmt::print("expiry pass over 4096 series: {:.1f} us\n", medianNanos(1, pass) / 1000);
#endif
  return 0;
}
