#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "metrics/process.h"
#include "metrics/registry.h"
#include "metrics/text_format.h"

namespace spindle::metrics {
namespace {

FamilyId addFamily(Registry& registry, FamilySpec spec) {
  auto id = registry.add(std::move(spec));
  EXPECT_TRUE(id.ok()) << id.error();
  return id.ok() ? *id : 0;
}

std::string renderShards(const Registry& registry, const std::vector<const Shard*>& shards) {
  return render(registry, std::span<const Shard* const>(shards));
}

size_t countOccurrences(const std::string& text, const std::string& needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

TEST(MetricsRender, CounterWithoutLabels) {
  Registry registry;
  const FamilyId id = addFamily(
      registry, {"spindle_reloads_total", "Config reloads.", Type::kCounter, {}, {}, 256});
  auto shard = registry.makeShard();
  shard->counter(id).inc();
  shard->counter(id).inc(4);
  EXPECT_EQ(renderShards(registry, {shard.get()}),
            "# HELP spindle_reloads_total Config reloads.\n"
            "# TYPE spindle_reloads_total counter\n"
            "spindle_reloads_total 5\n");
}

TEST(MetricsRender, UnusedLabelledFamilyHasHeaderOnly_UnlabelledOneShowsZero) {
  Registry registry;
  addFamily(registry, {"spindle_calls_total", "Calls.", Type::kCounter, {"service"}, {}, 256});
  addFamily(registry, {"spindle_up", "Up.", Type::kGauge, {}, {}, 256});
  auto shard = registry.makeShard();
  EXPECT_EQ(renderShards(registry, {shard.get()}),
            "# HELP spindle_calls_total Calls.\n"
            "# TYPE spindle_calls_total counter\n"
            "# HELP spindle_up Up.\n"
            "# TYPE spindle_up gauge\n"
            "spindle_up 0\n");
}

TEST(MetricsRender, EscapesLabelValuesAndHelp) {
  Registry registry;
  const FamilyId id = addFamily(registry, {"spindle_odd_total",
                                           "Help with a \\ backslash,\na newline and \"quotes\".",
                                           Type::kCounter,
                                           {"service", "reason"},
                                           {},
                                           256});
  auto shard = registry.makeShard();
  shard->counter(id, {"a\\b", "say \"hi\"\nbye"}).inc(2);
  EXPECT_EQ(renderShards(registry, {shard.get()}),
            "# HELP spindle_odd_total Help with a \\\\ backslash,\\na newline and \"quotes\".\n"
            "# TYPE spindle_odd_total counter\n"
            "spindle_odd_total{service=\"a\\\\b\",reason=\"say \\\"hi\\\"\\nbye\"} 2\n");
}

TEST(MetricsRender, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  Registry registry;
  const FamilyId id = addFamily(registry, {"spindle_call_duration_seconds",
                                           "Call latency.",
                                           Type::kHistogram,
                                           {"service"},
                                           {0.25, 0.5, 1},
                                           256});
  auto shard = registry.makeShard();
  Histogram histogram = shard->histogram(id, {"echo"});
  histogram.observe(0.125);
  histogram.observe(0.25);  // on a bound: counted in that bucket ("le")
  histogram.observe(0.375);
  histogram.observe(4);             // above every bound: +Inf only
  histogram.observe(std::nan(""));  // dropped
  EXPECT_EQ(renderShards(registry, {shard.get()}),
            "# HELP spindle_call_duration_seconds Call latency.\n"
            "# TYPE spindle_call_duration_seconds histogram\n"
            "spindle_call_duration_seconds_bucket{service=\"echo\",le=\"0.25\"} 2\n"
            "spindle_call_duration_seconds_bucket{service=\"echo\",le=\"0.5\"} 3\n"
            "spindle_call_duration_seconds_bucket{service=\"echo\",le=\"1\"} 3\n"
            "spindle_call_duration_seconds_bucket{service=\"echo\",le=\"+Inf\"} 4\n"
            "spindle_call_duration_seconds_sum{service=\"echo\"} 4.75\n"
            "spindle_call_duration_seconds_count{service=\"echo\"} 4\n");
}

TEST(MetricsRender, HistogramWithoutLabels) {
  Registry registry;
  const FamilyId id = addFamily(
      registry, {"spindle_scrape_seconds", "Scrape time.", Type::kHistogram, {}, {0.001}, 256});
  auto shard = registry.makeShard();
  shard->histogram(id).observe(0.5);
  EXPECT_EQ(renderShards(registry, {shard.get()}),
            "# HELP spindle_scrape_seconds Scrape time.\n"
            "# TYPE spindle_scrape_seconds histogram\n"
            "spindle_scrape_seconds_bucket{le=\"0.001\"} 0\n"
            "spindle_scrape_seconds_bucket{le=\"+Inf\"} 1\n"
            "spindle_scrape_seconds_sum 0.5\n"
            "spindle_scrape_seconds_count 1\n");
}

TEST(MetricsRender, GaugesSetAddAndGoNegative) {
  Registry registry;
  const FamilyId id =
      addFamily(registry, {"spindle_temperature", "T.", Type::kGauge, {"where"}, {}, 256});
  auto shard = registry.makeShard();
  shard->gauge(id, {"a"}).set(2.5);
  Gauge b = shard->gauge(id, {"b"});
  b.inc();
  b.dec();
  b.dec();
  shard->gauge(id, {"c"}).set(std::numeric_limits<double>::infinity());
  EXPECT_EQ(renderShards(registry, {shard.get()}),
            "# HELP spindle_temperature T.\n"
            "# TYPE spindle_temperature gauge\n"
            "spindle_temperature{where=\"a\"} 2.5\n"
            "spindle_temperature{where=\"b\"} -1\n"
            "spindle_temperature{where=\"c\"} +Inf\n");
}

TEST(MetricsRender, OneHelpAndTypePerFamilyWhateverTheSeriesCount) {
  Registry registry;
  const FamilyId calls =
      addFamily(registry, {"spindle_calls_total", "Calls.", Type::kCounter, {"service"}, {}, 256});
  const FamilyId latency = addFamily(
      registry,
      {"spindle_latency_seconds", "Latency.", Type::kHistogram, {"service"}, {0.1, 1}, 256});
  auto a = registry.makeShard();
  auto b = registry.makeShard();
  for (const char* service : {"a", "b", "c", "d"}) {
    a->counter(calls, {service}).inc();
    b->counter(calls, {service}).inc();
    a->histogram(latency, {service}).observe(0.5);
  }
  const std::string text = renderShards(registry, {a.get(), b.get()});
  EXPECT_EQ(countOccurrences(text, "# HELP spindle_calls_total "), 1u);
  EXPECT_EQ(countOccurrences(text, "# TYPE spindle_calls_total "), 1u);
  EXPECT_EQ(countOccurrences(text, "# HELP spindle_latency_seconds "), 1u);
  EXPECT_EQ(countOccurrences(text, "# TYPE spindle_latency_seconds "), 1u);
  EXPECT_EQ(countOccurrences(text, "spindle_calls_total{"), 4u);
  EXPECT_EQ(countOccurrences(text, "spindle_latency_seconds_count{"), 4u);
}

TEST(MetricsMerge, SumsTheShardsOfSeveralWorkers) {
  Registry registry;
  const FamilyId calls = addFamily(
      registry,
      {"spindle_calls_total", "Calls.", Type::kCounter, {"service", "grpc_status"}, {}, 256});
  const FamilyId active =
      addFamily(registry, {"spindle_active_streams", "Streams.", Type::kGauge, {}, {}, 256});
  const FamilyId latency = addFamily(
      registry, {"spindle_latency_seconds", "Latency.", Type::kHistogram, {"service"}, {0.5}, 256});
  std::vector<std::unique_ptr<Shard>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(registry.makeShard());
  // Every worker served echo; only worker 2 also served other.
  for (size_t i = 0; i < workers.size(); ++i) {
    workers[i]->counter(calls, {"echo", "0"}).inc(i + 1);
    workers[i]->gauge(active).set(static_cast<double>(i + 1));
    workers[i]->histogram(latency, {"echo"}).observe(0.25);
  }
  workers[2]->counter(calls, {"other", "14"}).inc(7);
  workers[1]->histogram(latency, {"echo"}).observe(1);

  std::vector<const Shard*> shards;
  for (const auto& worker : workers) shards.push_back(worker.get());
  EXPECT_EQ(renderShards(registry, shards),
            "# HELP spindle_calls_total Calls.\n"
            "# TYPE spindle_calls_total counter\n"
            "spindle_calls_total{service=\"echo\",grpc_status=\"0\"} 6\n"
            "spindle_calls_total{service=\"other\",grpc_status=\"14\"} 7\n"
            "# HELP spindle_active_streams Streams.\n"
            "# TYPE spindle_active_streams gauge\n"
            "spindle_active_streams 6\n"
            "# HELP spindle_latency_seconds Latency.\n"
            "# TYPE spindle_latency_seconds histogram\n"
            "spindle_latency_seconds_bucket{service=\"echo\",le=\"0.5\"} 3\n"
            "spindle_latency_seconds_bucket{service=\"echo\",le=\"+Inf\"} 4\n"
            "spindle_latency_seconds_sum{service=\"echo\"} 1.75\n"
            "spindle_latency_seconds_count{service=\"echo\"} 4\n");
}

TEST(MetricsMerge, OutputIsSortedWhateverTheOrderSeriesWereCreatedIn) {
  Registry registry;
  const FamilyId id = addFamily(
      registry,
      {"spindle_calls_total", "Calls.", Type::kCounter, {"service", "endpoint"}, {}, 256});
  auto forward = registry.makeShard();
  auto backward = registry.makeShard();
  const std::vector<std::pair<std::string, std::string>> labels = {
      {"b", "10.0.0.2:80"}, {"a", "10.0.0.9:80"}, {"b", "10.0.0.10:80"}, {"a", "10.0.0.1:80"}};
  for (const auto& [service, endpoint] : labels) forward->counter(id, {service, endpoint}).inc();
  for (auto it = labels.rbegin(); it != labels.rend(); ++it) {
    backward->counter(id, {it->first, it->second}).inc();
  }
  const std::string one = renderShards(registry, {forward.get()});
  EXPECT_EQ(one, renderShards(registry, {backward.get()}));
  EXPECT_EQ(one,
            "# HELP spindle_calls_total Calls.\n"
            "# TYPE spindle_calls_total counter\n"
            "spindle_calls_total{service=\"a\",endpoint=\"10.0.0.1:80\"} 1\n"
            "spindle_calls_total{service=\"a\",endpoint=\"10.0.0.9:80\"} 1\n"
            "spindle_calls_total{service=\"b\",endpoint=\"10.0.0.10:80\"} 1\n"
            "spindle_calls_total{service=\"b\",endpoint=\"10.0.0.2:80\"} 1\n");
  // Shard order does not matter either.
  EXPECT_EQ(renderShards(registry, {forward.get(), backward.get()}),
            renderShards(registry, {backward.get(), forward.get()}));
}

TEST(MetricsSeries, SameLabelValuesGiveTheSameSeries) {
  Registry registry;
  const FamilyId id =
      addFamily(registry, {"spindle_calls_total", "Calls.", Type::kCounter, {"a", "b"}, {}, 256});
  auto shard = registry.makeShard();
  shard->counter(id, {"x", "y"}).inc();
  shard->counter(id, {"x", "y"}).inc();
  // Length-prefixed keys: these must not collide with ("x", "y").
  shard->counter(id, {"xy", ""}).inc(10);
  shard->counter(id, {"", "xy"}).inc(100);
  EXPECT_EQ(shard->stats(id).series, 3u);
  EXPECT_EQ(renderShards(registry, {shard.get()}),
            "# HELP spindle_calls_total Calls.\n"
            "# TYPE spindle_calls_total counter\n"
            "spindle_calls_total{a=\"\",b=\"xy\"} 100\n"
            "spindle_calls_total{a=\"x\",b=\"y\"} 2\n"
            "spindle_calls_total{a=\"xy\",b=\"\"} 10\n");
}

TEST(MetricsSeries, ALabelBufferRewrittenInPlaceNamesANewSeries) {
  // The lookup memo keys on where label values live; the same buffer holding another value
  // (an endpoint label freed and its memory reused) must not reach the old series.
  Registry registry;
  const FamilyId id =
      addFamily(registry, {"spindle_calls_total", "Calls.", Type::kCounter, {"endpoint"}, {}, 256});
  auto shard = registry.makeShard();
  char label[] = "10.0.0.1:80";
  const std::string_view view(label);
  shard->counter(id, {view}).inc();
  shard->counter(id, {view}).inc();
  label[7] = '2';  // same address, same length, other endpoint
  shard->counter(id, {view}).inc(10);
  EXPECT_EQ(renderShards(registry, {shard.get()}),
            "# HELP spindle_calls_total Calls.\n"
            "# TYPE spindle_calls_total counter\n"
            "spindle_calls_total{endpoint=\"10.0.0.1:80\"} 2\n"
            "spindle_calls_total{endpoint=\"10.0.0.2:80\"} 10\n");
}

TEST(MetricsSeries, BeyondMaxSeriesEventsGoToTheOverflowSeriesAndAreCounted) {
  Registry registry;
  const FamilyId calls = addFamily(
      registry, {"spindle_calls_total", "Calls.", Type::kCounter, {"service", "endpoint"}, {}, 2});
  const FamilyId other =
      addFamily(registry, {"spindle_other_total", "Other.", Type::kCounter, {"x"}, {}, 8});
  auto a = registry.makeShard();
  auto b = registry.makeShard();
  a->counter(calls, {"s", "e1"}).inc();
  a->counter(calls, {"s", "e2"}).inc();
  a->counter(calls, {"s", "e3"}).inc(5);  // over the limit
  a->counter(calls, {"s", "e4"}).inc(7);  // over the limit
  a->counter(calls, {"s", "e1"}).inc();   // existing series still resolve
  b->counter(calls, {"s", "e9"}).inc();   // the limit is per shard
  b->counter(other, {"fine"}).inc();
  EXPECT_EQ(a->overflowed(calls), 2u);
  EXPECT_EQ(a->stats(calls).series, 3u);  // two series and the overflow series
  EXPECT_EQ(renderShards(registry, {a.get(), b.get()}),
            "# HELP spindle_calls_total Calls.\n"
            "# TYPE spindle_calls_total counter\n"
            "spindle_calls_total{service=\"__overflow__\",endpoint=\"__overflow__\"} 12\n"
            "spindle_calls_total{service=\"s\",endpoint=\"e1\"} 2\n"
            "spindle_calls_total{service=\"s\",endpoint=\"e2\"} 1\n"
            "spindle_calls_total{service=\"s\",endpoint=\"e9\"} 1\n"
            "# HELP spindle_other_total Other.\n"
            "# TYPE spindle_other_total counter\n"
            "spindle_other_total{x=\"fine\"} 1\n"
            "# HELP spindle_metrics_series_overflow_total Label sets that did not fit their "
            "family's series limit; their events are in the series whose labels are all "
            "__overflow__.\n"
            "# TYPE spindle_metrics_series_overflow_total counter\n"
            "spindle_metrics_series_overflow_total{family=\"spindle_calls_total\"} 2\n");
}

TEST(MetricsSeries, ManySeriesSpanSeveralStorageChunks) {
  Registry registry;
  const FamilyId id =
      addFamily(registry, {"spindle_calls_total", "Calls.", Type::kCounter, {"n"}, {}, 1000});
  auto shard = registry.makeShard();
  std::vector<Counter> counters;
  for (int i = 0; i < 1000; ++i) counters.push_back(shard->counter(id, {std::to_string(i)}));
  for (size_t i = 0; i < counters.size(); ++i) counters[i].inc(i);
  const auto merged = merge(registry, std::vector<const Shard*>{shard.get()});
  ASSERT_EQ(merged[0].series.size(), 1000u);
  uint64_t total = 0;
  for (const MergedSeries& series : merged[0].series) {
    EXPECT_EQ(series.counter, std::stoull(series.label_values[0]));
    total += series.counter;
  }
  EXPECT_EQ(total, 999u * 1000u / 2u);
  EXPECT_EQ(merged[0].overflowed, 0u);
}

TEST(MetricsSeries, DefaultHandlesAreHarmlessSinks) {
  Counter counter;
  Gauge gauge;
  Histogram histogram;
  counter.inc(3);
  gauge.set(1);
  gauge.dec();
  histogram.observe(2);
  SUCCEED();
}

TEST(MetricsSeries, ScrapeWhileAWorkerWritesSeesWholeIncreasingValues) {
  Registry registry;
  const FamilyId calls =
      addFamily(registry, {"spindle_calls_total", "Calls.", Type::kCounter, {"n"}, {}, 64});
  auto shard = registry.makeShard();
  constexpr uint64_t kEvents = 200000;
  std::atomic<bool> done{false};
  std::thread worker([&] {
    const Counter first = shard->counter(calls, {"first"});
    for (uint64_t i = 0; i < kEvents; ++i) {
      first.inc();
      // New series appear while the scraper reads.
      if (i % 4000 == 0) shard->counter(calls, {std::to_string(i)}).inc();
    }
    done.store(true);
  });
  uint64_t last = 0;
  size_t scrapes = 0;
  for (; scrapes < 100000 && !done.load(); ++scrapes) {
    const auto merged = merge(registry, std::vector<const Shard*>{shard.get()});
    for (const MergedSeries& series : merged[0].series) {
      if (series.label_values[0] != "first") continue;
      EXPECT_GE(series.counter, last);
      EXPECT_LE(series.counter, kEvents);
      last = series.counter;
    }
  }
  worker.join();
  const auto merged = merge(registry, std::vector<const Shard*>{shard.get()});
  EXPECT_EQ(merged[0].series.size(), 51u);  // "first" and 50 others
  for (const MergedSeries& series : merged[0].series) {
    EXPECT_EQ(series.counter, series.label_values[0] == "first" ? kEvents : 1u);
  }
}

// ---- series that stop existing ----

using std::chrono::seconds;

std::string callsText(const std::string& series) {
  return "# HELP spindle_calls_total Calls.\n"
         "# TYPE spindle_calls_total counter\n" +
         series;
}

FamilyId callsByEndpoint(Registry& registry, uint32_t max_series = 256) {
  return addFamily(
      registry,
      {"spindle_calls_total", "Calls.", Type::kCounter, {"service", "endpoint"}, {}, max_series});
}

// What is there: every series but those whose endpoint is listed as gone.
Shard::Present allBut(std::vector<std::string> gone) {
  return [gone = std::move(gone)](std::span<const std::string> labels) {
    return std::find(gone.begin(), gone.end(), labels[1]) == gone.end();
  };
}

TEST(MetricsExpiry, ARetiredSeriesStillCountsAndIsScrapedForItsGraceThenLeavesForGood) {
  Registry registry;
  const FamilyId calls = callsByEndpoint(registry);
  auto shard = registry.makeShard();
  shard->setSeriesGrace(seconds(60));
  const TimePoint t0 = Clock::now();
  const std::vector<const Shard*> shards{shard.get()};
  shard->counter(calls, {"s", "a"}).inc(3);
  shard->counter(calls, {"s", "b"}).inc(5);
  shard->reconcile(calls, t0, allBut({"b"}));
  EXPECT_EQ(shard->stats(calls).retired, 1u);
  shard->counter(calls, {"s", "b"}).inc();  // a call in flight on b ends
  // Retired again later: the grace still runs from the first time.
  shard->reconcile(calls, t0 + seconds(30), allBut({"b"}));
  EXPECT_EQ(render(registry, shards, t0 + seconds(59)),
            callsText("spindle_calls_total{service=\"s\",endpoint=\"a\"} 3\n"
                      "spindle_calls_total{service=\"s\",endpoint=\"b\"} 6\n"));
  EXPECT_EQ(render(registry, shards, t0 + seconds(60)),
            callsText("spindle_calls_total{service=\"s\",endpoint=\"a\"} 3\n"));
  // Held until kUnlinkSlack after the grace, then unlinked and freed (no scrape is reading).
  shard->sweep(t0 + seconds(60) + kUnlinkSlack - std::chrono::nanoseconds(1));
  EXPECT_EQ(shard->stats(calls).series, 2u);
  shard->sweep(t0 + seconds(60) + kUnlinkSlack);
  const SeriesStats stats = shard->stats(calls);
  EXPECT_EQ(stats.series, 1u);
  EXPECT_EQ(stats.retired, 0u);
  EXPECT_EQ(stats.waiting, 0u);
  // Counted again later, b is a new series: nothing of the old one is left.
  shard->counter(calls, {"s", "b"}).inc();
  EXPECT_EQ(render(registry, shards, t0 + seconds(100)),
            callsText("spindle_calls_total{service=\"s\",endpoint=\"a\"} 3\n"
                      "spindle_calls_total{service=\"s\",endpoint=\"b\"} 1\n"));
  EXPECT_EQ(shard->overflowed(calls), 0u);
}

TEST(MetricsExpiry, ASeriesThatExistsAgainWithinItsGraceKeepsItsCount) {
  Registry registry;
  const FamilyId calls = callsByEndpoint(registry);
  auto shard = registry.makeShard();
  shard->setSeriesGrace(seconds(60));
  const TimePoint t0 = Clock::now();
  shard->counter(calls, {"s", "a"}).inc(7);
  shard->reconcile(calls, t0, allBut({"a"}));
  shard->reconcile(calls, t0 + seconds(59), allBut({}));  // a is back (DNS flapped)
  EXPECT_EQ(shard->stats(calls).retired, 0u);
  shard->sweep(t0 + seconds(3600));
  shard->counter(calls, {"s", "a"}).inc();
  EXPECT_EQ(render(registry, std::vector<const Shard*>{shard.get()}, t0 + seconds(3600)),
            callsText("spindle_calls_total{service=\"s\",endpoint=\"a\"} 8\n"));
}

// Each worker retires a series on its own thread, a little apart: a scrape must show the sum
// of every shard's part or nothing, never a smaller sum (a counter reset to Prometheus).
TEST(MetricsExpiry, AScrapeShowsEveryShardsPartOfASeriesOrNone) {
  Registry registry;
  const FamilyId calls = callsByEndpoint(registry);
  auto a = registry.makeShard();
  auto b = registry.makeShard();
  a->setSeriesGrace(seconds(60));
  b->setSeriesGrace(seconds(60));
  const TimePoint t0 = Clock::now();
  a->counter(calls, {"s", "x"}).inc(3);
  b->counter(calls, {"s", "x"}).inc(4);
  a->reconcile(calls, t0, allBut({"x"}));
  b->reconcile(calls, t0 + seconds(1), allBut({"x"}));  // a sweep later
  const std::vector<const Shard*> shards{a.get(), b.get()};
  EXPECT_EQ(render(registry, shards, t0 + seconds(59)),
            callsText("spindle_calls_total{service=\"s\",endpoint=\"x\"} 7\n"));
  // a's copy is past its grace, b's not quite: neither shows.
  EXPECT_EQ(render(registry, shards, t0 + seconds(60)), callsText(""));
  // a unlinks its copy; by then b's is past its grace too.
  a->sweep(t0 + seconds(60) + kUnlinkSlack);
  EXPECT_EQ(a->stats(calls).series, 0u);
  EXPECT_EQ(b->stats(calls).series, 1u);
  EXPECT_EQ(render(registry, shards, t0 + seconds(60) + kUnlinkSlack), callsText(""));
}

// The labels a scrape is reading are freed only after it: here the scrape is a visit during
// which the owner sweeps (one thread plays both, in the order a race could take).
TEST(MetricsExpiry, LabelsAScrapeIsReadingAreFreedOnlyOnceItIsDone) {
  Registry registry;
  const FamilyId calls = callsByEndpoint(registry, 1);
  auto shard = registry.makeShard();
  shard->setSeriesGrace(seconds(60));
  const TimePoint t0 = Clock::now();
  shard->counter(calls, {"s", "old"}).inc(2);
  shard->reconcile(calls, t0, allBut({"old"}));
  const TimePoint later = t0 + seconds(60) + kUnlinkSlack;
  size_t visits = 0;
  shard->forEachSeries(calls, [&](const SeriesView& view) {
    ++visits;
    shard->sweep(later);  // unlinks "old": it waits, since this scrape may read it
    EXPECT_EQ(shard->stats(calls).waiting, 1u);
    EXPECT_EQ(shard->stats(calls).series, 0u);
    shard->counter(calls, {"s", "new"}).inc();  // takes another slot, not the waiting one
    shard->sweep(later);                        // still waits
    EXPECT_EQ(shard->stats(calls).waiting, 1u);
    ASSERT_EQ(view.label_values.size(), 2u);
    EXPECT_EQ(view.label_values[1], "old");  // still readable (ASan would say otherwise)
    EXPECT_EQ(view.cells[0].load(), 2u);
  });
  EXPECT_EQ(visits, 1u);
  shard->sweep(later);
  const SeriesStats stats = shard->stats(calls);
  EXPECT_EQ(stats.waiting, 0u);
  EXPECT_EQ(stats.series, 1u);
  EXPECT_EQ(stats.slots, 3u);  // the overflow slot (unused), "old" and "new"
  // The freed slot is the next one used: storage does not grow.
  shard->reconcile(calls, later, allBut({"new"}));
  shard->sweep(later + seconds(60) + kUnlinkSlack);
  shard->counter(calls, {"s", "newer"}).inc();
  EXPECT_EQ(shard->stats(calls).slots, 3u);
  EXPECT_EQ(shard->overflowed(calls), 0u);
}

TEST(MetricsExpiry, ChurnReusesSlotsAndNeverOverflows) {
  Registry registry;
  const FamilyId calls = callsByEndpoint(registry, 32);
  auto shard = registry.makeShard();
  shard->setSeriesGrace(seconds(10));
  TimePoint now = Clock::now();
  shard->counter(calls, {"s", "stable"}).inc();
  for (int i = 0; i < 1000; ++i) {
    const std::string endpoint = "e" + std::to_string(i);
    shard->counter(calls, {"s", endpoint}).inc();
    now += seconds(1);
    shard->reconcile(calls, now,
                     [](std::span<const std::string> labels) { return labels[1] == "stable"; });
    shard->sweep(now);
    // stable, and those retired within the last grace and slack (10 s + 10 s).
    EXPECT_LE(shard->stats(calls).series, 22u) << i;
  }
  EXPECT_EQ(shard->overflowed(calls), 0u);
  EXPECT_LE(shard->stats(calls).slots, 24u);
  const auto merged = merge(registry, std::vector<const Shard*>{shard.get()}, now);
  EXPECT_EQ(merged[0].series.front().label_values[1], "e990");  // 991..999 and stable follow
}

// Owner and scrape on two threads, the owner churning as fast as it can through a family
// small enough that slots are reused all the time (about 14 series held: the grace and
// kUnlinkSlack are 12 s). Series "e<i>" counts exactly i at once, so a scrape that mixed one
// series' labels with another's cells would show another number. The owner outruns the
// scrape by far here, so some lookups may overflow while slots wait for a scrape to end.
TEST(MetricsExpiry, ScrapesWhileTheOwnerChurnsSeeOnlyWholeSeries) {
  Registry registry;
  const FamilyId calls = callsByEndpoint(registry, 16);
  auto shard = registry.makeShard();
  shard->setSeriesGrace(seconds(2));
  constexpr int kCycles = 20000;
  std::atomic<bool> done{false};
  std::atomic<size_t> bad{0};
  std::thread scraper([&] {
    const std::vector<const Shard*> shards{shard.get()};
    while (!done.load()) {
      const auto merged = merge(registry, shards);
      for (const MergedSeries& series : merged[0].series) {
        const std::string& endpoint = series.label_values[1];
        if (endpoint == "stable" || endpoint == kOverflowLabelValue) continue;
        if (endpoint.size() < 2 || endpoint[0] != 'e') {
          ++bad;
          continue;
        }
        const uint64_t i = std::stoull(endpoint.substr(1));
        if (series.counter != 0 && series.counter != i) ++bad;
      }
    }
  });
  TimePoint now = Clock::now();
  shard->counter(calls, {"s", "stable"}).inc();
  for (int i = 1; i <= kCycles; ++i) {
    shard->counter(calls, {"s", "e" + std::to_string(i)}).inc(static_cast<uint64_t>(i));
    now += seconds(1);
    shard->reconcile(calls, now,
                     [](std::span<const std::string> labels) { return labels[1] == "stable"; });
    shard->sweep(now);
  }
  done.store(true);
  scraper.join();
  EXPECT_EQ(bad.load(), 0u);
  // Once no scrape runs, everything waiting is freed.
  shard->sweep(now + seconds(3600));
  EXPECT_EQ(shard->stats(calls).waiting, 0u);
  EXPECT_EQ(shard->stats(calls).series, 1u + (shard->overflowed(calls) > 0 ? 1u : 0u));
}

TEST(MetricsRegistry, RejectsInvalidFamilies) {
  Registry registry;
  ASSERT_TRUE(registry.add({"spindle_ok_total", "", Type::kCounter, {"service"}, {}, 4}).ok());
  const std::vector<FamilySpec> bad = {
      {"spindle_calls", "no _total", Type::kCounter, {}, {}, 4},
      {"_total", "only the suffix", Type::kCounter, {}, {}, 4},
      {"spindle_ok_total", "twice", Type::kCounter, {}, {}, 4},
      {"9starts_with_digit", "", Type::kGauge, {}, {}, 4},
      {"has-dash", "", Type::kGauge, {}, {}, 4},
      {"", "empty", Type::kGauge, {}, {}, 4},
      {"spindle_g", "", Type::kGauge, {"bad-label"}, {}, 4},
      {"spindle_g", "", Type::kGauge, {"__reserved"}, {}, 4},
      {"spindle_g", "", Type::kGauge, {"a", "a"}, {}, 4},
      {"spindle_g", "", Type::kGauge, {}, {1.0}, 4},
      {"spindle_h", "", Type::kHistogram, {"le"}, {1.0}, 4},
      {"spindle_h", "", Type::kHistogram, {}, {1.0, 1.0}, 4},
      {"spindle_h", "", Type::kHistogram, {}, {2.0, 1.0}, 4},
      {"spindle_h", "", Type::kHistogram, {}, {std::numeric_limits<double>::infinity()}, 4},
      {"spindle_h", "", Type::kHistogram, {}, {std::nan("")}, 4},
      {"spindle_g", "", Type::kGauge, {"a"}, {}, 0},
      {std::string(kOverflowFamilyName), "", Type::kCounter, {}, {}, 4},
  };
  for (const FamilySpec& spec : bad) {
    EXPECT_FALSE(registry.add(spec).ok()) << spec.name << ": " << spec.help;
  }
  auto shard = registry.makeShard();
  auto late = registry.add({"spindle_late_total", "", Type::kCounter, {}, {}, 4});
  ASSERT_FALSE(late.ok());
  EXPECT_NE(late.error().find("after the first shard"), std::string::npos);
}

TEST(MetricsRegistryDeathTest, WrongTypeOrLabelCountAborts) {
  Registry registry;
  const FamilyId id =
      addFamily(registry, {"spindle_calls_total", "", Type::kCounter, {"service"}, {}, 4});
  auto shard = registry.makeShard();
  EXPECT_DEATH(shard->gauge(id, {"x"}), "is a counter, not a gauge");
  EXPECT_DEATH(shard->counter(id, {"x", "y"}), "has 1 labels, got 2 values");
}

// ---- process metrics ----

// A real /proc/self/stat line whose command name holds spaces and parentheses.
constexpr std::string_view kProcStat =
    "1234 (spin (dle) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 3 0 5000 "
    "104857600 2560 18446744073709551615 94661140877312 94661140901417 140728193236368 0 0 0 0 "
    "0 0 0 0 0 17 0 0 0 0 0 0\n";

TEST(ProcessMetrics, ParsesProcStatPastACommandNameWithParentheses) {
  auto stat = parseProcStat(kProcStat);
  ASSERT_TRUE(stat.ok()) << stat.error();
  EXPECT_EQ(stat->utime_ticks, 250u);
  EXPECT_EQ(stat->stime_ticks, 150u);
  EXPECT_EQ(stat->start_ticks, 5000u);
  EXPECT_EQ(stat->vsize_bytes, 104857600u);
  EXPECT_EQ(stat->rss_pages, 2560u);
}

TEST(ProcessMetrics, RejectsBrokenProcStat) {
  EXPECT_FALSE(parseProcStat("").ok());
  EXPECT_FALSE(parseProcStat("1234 no parentheses S 1 2 3").ok());
  EXPECT_FALSE(parseProcStat("1234 (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 250").ok());
  EXPECT_FALSE(parseProcStat("1234 (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 2x0 150 0 0 20 0 "
                             "3 0 5000 104857600 2560")
                   .ok());
  EXPECT_FALSE(parseProcStat(") x (").ok());
}

TEST(ProcessMetrics, ParsesBootTimeAndOpenFileLimit) {
  constexpr std::string_view kStat =
      "cpu  10132153 290696 3084719 46828483 16683 0 25195 0 0 0\n"
      "cpu0 1393280 32966 572056 13343292 6130 0 17875 0 0 0\n"
      "intr 199292 2 0 0\n"
      "ctxt 1990473\n"
      "btime 1700000000\n"
      "processes 2915\n";
  auto boot = parseBootTime(kStat);
  ASSERT_TRUE(boot.ok()) << boot.error();
  EXPECT_EQ(*boot, 1700000000u);
  EXPECT_FALSE(parseBootTime("cpu 1 2 3\n").ok());

  constexpr std::string_view kLimits =
      "Limit                     Soft Limit           Hard Limit           Units     \n"
      "Max cpu time              unlimited            unlimited            seconds   \n"
      "Max open files            1024                 1048576              files     \n"
      "Max locked memory         8388608              8388608              bytes     \n";
  auto max_fds = parseMaxOpenFiles(kLimits);
  ASSERT_TRUE(max_fds.ok()) << max_fds.error();
  EXPECT_EQ(*max_fds, 1024.0);
  auto unlimited = parseMaxOpenFiles("Max open files            unlimited            unlimited");
  ASSERT_TRUE(unlimited.ok());
  EXPECT_TRUE(std::isinf(*unlimited));
  EXPECT_FALSE(parseMaxOpenFiles("Max cpu time unlimited unlimited seconds\n").ok());
  EXPECT_FALSE(parseMaxOpenFiles("Max open files   lots   files\n").ok());
}

TEST(ProcessMetrics, RendersPrometheusProcessFamilies) {
  auto stat = parseProcStat(kProcStat);
  ASSERT_TRUE(stat.ok());
  ProcessMetrics metrics;
  applyProcStat(metrics, *stat, /*ticks_per_second=*/100, /*page_size=*/4096,
                /*boot_time=*/1700000000);
  metrics.open_fds = 12;
  metrics.max_fds = 1024;
  std::string out;
  renderProcessMetrics(metrics, out);
  EXPECT_EQ(out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
            "# TYPE process_cpu_seconds_total counter\n"
            "process_cpu_seconds_total 4\n"
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
            "# TYPE process_resident_memory_bytes gauge\n"
            "process_resident_memory_bytes 10485760\n"
            "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
            "# TYPE process_virtual_memory_bytes gauge\n"
            "process_virtual_memory_bytes 104857600\n"
            "# HELP process_start_time_seconds Start time of the process since unix epoch in "
            "seconds.\n"
            "# TYPE process_start_time_seconds gauge\n"
            "process_start_time_seconds 1700000050\n"
            "# HELP process_open_fds Number of open file descriptors.\n"
            "# TYPE process_open_fds gauge\n"
            "process_open_fds 12\n"
            "# HELP process_max_fds Maximum number of open file descriptors.\n"
            "# TYPE process_max_fds gauge\n"
            "process_max_fds 1024\n");
}

TEST(ProcessMetrics, LeavesOutWhatIsUnknown) {
  ProcessMetrics metrics;
  metrics.open_fds = 3;
  std::string out;
  renderProcessMetrics(metrics, out);
  EXPECT_EQ(out,
            "# HELP process_open_fds Number of open file descriptors.\n"
            "# TYPE process_open_fds gauge\n"
            "process_open_fds 3\n");
  // Without a boot time there is no start time, and zero ticks per second gives nothing.
  ProcessMetrics no_boot;
  applyProcStat(no_boot, *parseProcStat(kProcStat), 100, 4096, std::nullopt);
  EXPECT_FALSE(no_boot.start_time_seconds.has_value());
  EXPECT_TRUE(no_boot.cpu_seconds.has_value());
  ProcessMetrics no_ticks;
  applyProcStat(no_ticks, *parseProcStat(kProcStat), 0, 4096, 1);
  EXPECT_FALSE(no_ticks.cpu_seconds.has_value());
}

// ---- the format as Prometheus itself reads it ----

// A registry like the daemon's, with odd label values, overflow and process metrics.
std::string realisticExposition() {
  Registry registry;
  const FamilyId calls = addFamily(registry, {"spindle_calls_total",
                                              "gRPC calls proxied, by final status.",
                                              Type::kCounter,
                                              {"service", "endpoint", "grpc_status"},
                                              {},
                                              2});
  const FamilyId streams = addFamily(
      registry, {"spindle_active_streams", "Streams open now.", Type::kGauge, {"service"}, {}, 64});
  const FamilyId latency = addFamily(registry, {"spindle_call_duration_seconds",
                                                "Call latency, \\ upstream\nincluded.",
                                                Type::kHistogram,
                                                {"service"},
                                                {0.001, 0.005, 0.025, 0.1, 0.5, 2.5},
                                                64});
  const FamilyId reloads = addFamily(registry, {"spindle_config_reloads_total",
                                                "Config reloads, by result.",
                                                Type::kCounter,
                                                {"reason"},
                                                {},
                                                8});
  addFamily(registry,
            {"spindle_unused_total", "Never counted.", Type::kCounter, {"reason"}, {}, 8});
  auto a = registry.makeShard();
  auto b = registry.makeShard();
  a->counter(calls, {"echo", "198.18.1.2:50051", "0"}).inc(41);
  b->counter(calls, {"echo", "[2001:db8::2]:50051", "14"}).inc(2);
  b->counter(calls, {"we\"ird\\name\nx", "198.18.1.3:50051", "0"}).inc();
  b->counter(calls, {"echo", "198.18.1.4:50051", "0"}).inc();  // overflows
  a->gauge(streams, {"echo"}).set(3);
  b->gauge(streams, {"echo"}).set(-1);
  for (double v : {0.0004, 0.002, 0.02, 0.3, 7.0}) a->histogram(latency, {"echo"}).observe(v);
  a->counter(reloads, {"ok"}).inc();
  std::string text = render(registry, std::vector<const Shard*>{a.get(), b.get()});
  ProcessMetrics process;
  applyProcStat(process, *parseProcStat(kProcStat), 100, 4096, 1700000000);
  process.open_fds = 9;
  process.max_fds = std::numeric_limits<double>::infinity();
  renderProcessMetrics(process, text);
  return text;
}

bool havePromtool() { return std::system("command -v promtool >/dev/null 2>&1") == 0; }

TEST(MetricsPromtool, RealisticExpositionPassesPromtoolCheckMetrics) {
  if (!havePromtool()) GTEST_SKIP() << "promtool not installed (Debian package prometheus)";
  char path[] = "/tmp/spindle_metrics_XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  const std::string text = realisticExposition();
  ASSERT_NE(text.find("grpc_status=\"__overflow__\"} 1\n"), std::string::npos) << text;
  ASSERT_NE(text.find("spindle_metrics_series_overflow_total{family="), std::string::npos);
  {
    std::ofstream file(path);
    file << text;
  }
  const std::string command = std::string("promtool check metrics < ") + path + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char chunk[512];
  for (int i = 0; i < 1000; ++i) {
    const size_t n = std::fread(chunk, 1, sizeof(chunk), pipe);
    if (n == 0) break;
    output.append(chunk, n);
  }
  const int status = ::pclose(pipe);
  ::unlink(path);
  ASSERT_TRUE(WIFEXITED(status));
  // promtool exits 1 for a text it cannot parse and 3 for lint problems; 0 means clean.
  EXPECT_EQ(WEXITSTATUS(status), 0) << output << "\n--- exposition ---\n" << text;
  EXPECT_EQ(output, "") << text;
}

}  // namespace
}  // namespace spindle::metrics
