// /config is built from the config struct (config::toJson): it must carry every key the parser
// takes, in the YAML's own forms, so that the page reads back as the same config; and the
// reference (docs/configuration.md) must name every key.
#include "config/config_json.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace spindle::config {
namespace {

// Every section set, one service with DNS endpoints and one with static ones.
constexpr const char* kEverything = R"(
proxy:
  listen: ["10.0.0.1:15001", "[fd00::1]:15001"]
  workers: 3
  service_ports: 8
  uid: 1000
  gid: 1001
  io_engine: epoll
admin:
  listen: "10.0.0.1:9901"
  pages: [endpoints, config, status]
  socket: /run/spindle/admin.sock
metrics:
  by_source: true
  series_grace: 90s
redirect:
  cgroup: /sys/fs/cgroup/kubepods
  host_netns: true
  heartbeat_timeout: 1500ms
  pin_path: /sys/fs/bpf/test
upstream:
  source: node
  idle_timeout: 0s
  max_connections: 77
dns:
  servers: ["10.96.0.10:53"]
  refresh: {min: 2s, max: 1m}
  empty_confirmations: 4
shutdown:
  drain: 45s
limits:
  max_connections: 12
  idle_timeout: 1h
  header_timeout: 3s
  send_timeout: 4s
  max_premature_resets: 50
  max_glitches: 60
  max_control_frames: 70
log:
  level: warn
  format: json
services:
  - name: echo
    intercept: ["echo.default.svc.cluster.local:50051", "10.96.0.20:50051"]
    endpoints: {dns: echo-headless.default.svc.cluster.local}
    port: 50052
    balance: peak_ewma
    outlier: {consecutive_failures: 3, base_ejection: 2s, max_ejection: 20s, max_ejected_percent: 30}
    retries: {max: 2, budget_percent: 10}
    peak_ewma: {decay: 5s}
    slow_start: 30s
  - name: fixed
    intercept: ["10.96.0.21:8080"]
    endpoints: {static: ["10.1.0.1:8080", "10.1.0.2:8080"]}
)";

Config mustParse(const std::string& text) {
  auto parsed = parse(text, "test.yaml", [](std::string_view) { return std::nullopt; });
  EXPECT_TRUE(parsed) << parsed.error();
  return parsed ? *parsed : Config{};
}

// The objects of `root` a section of knownKeys() names: one per service for "services[]".
std::vector<const nlohmann::json*> objectsAt(const nlohmann::json& root, std::string_view section) {
  std::vector<const nlohmann::json*> at{&root};
  std::string path(section);
  for (size_t start = 0; start < path.size() && !path.empty();) {
    const size_t dot = path.find('.', start);
    std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool each = part.ends_with("[]");
    if (each) part.resize(part.size() - 2);
    std::vector<const nlohmann::json*> next;
    for (const nlohmann::json* j : at) {
      if (!j->contains(part)) continue;
      const nlohmann::json& child = (*j)[part];
      if (each) {
        for (const nlohmann::json& element : child) next.push_back(&element);
      } else {
        next.push_back(&child);
      }
    }
    at = std::move(next);
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return at;
}

TEST(ConfigJson, CarriesEveryKeyTheParserTakes) {
  const nlohmann::json j = toJson(mustParse(kEverything));
  for (const KeySection& section : knownKeys()) {
    const auto objects = objectsAt(j, section.section);
    ASSERT_FALSE(objects.empty()) << "no object for section '" << section.section << "'";
    for (std::string_view key : section.keys) {
      bool found = false;
      for (const nlohmann::json* object : objects) found = found || object->contains(key);
      EXPECT_TRUE(found) << "/config lacks " << section.section << " " << key;
    }
  }
}

TEST(ConfigJson, ReadsBackAsTheSameConfig) {
  const nlohmann::json first = toJson(mustParse(kEverything));
  // JSON is YAML: the page is a config spindle takes.
  const nlohmann::json second = toJson(mustParse(first.dump()));
  EXPECT_EQ(first, second) << first.dump(2) << "\n---\n" << second.dump(2);
  EXPECT_EQ(first["limits"]["idle_timeout"], "1h");
  EXPECT_EQ(first["redirect"]["heartbeat_timeout"], "1500ms");
  EXPECT_EQ(first["upstream"]["idle_timeout"], "0s");
  EXPECT_EQ(first["services"][0]["peak_ewma"]["decay"], "5s");
  EXPECT_EQ(first["services"][1]["endpoints"]["static"][1], "10.1.0.2:8080");
  EXPECT_EQ(first["proxy"]["listen"][1], "[fd00::1]:15001");
  EXPECT_EQ(first["log"]["format"], "json");
}

TEST(ConfigJson, DurationsAreWrittenInTheLargestWholeUnit) {
  EXPECT_EQ(durationText(Duration{0}), "0s");
  EXPECT_EQ(durationText(Duration{250}), "250ms");
  EXPECT_EQ(durationText(Duration{1500}), "1500ms");
  EXPECT_EQ(durationText(Duration{30000}), "30s");
  EXPECT_EQ(durationText(Duration{120000}), "2m");
  EXPECT_EQ(durationText(Duration{7200000}), "2h");
}

TEST(ConfigReference, NamesEveryKey) {
  std::ifstream in("docs/configuration.md");
  ASSERT_TRUE(in) << "docs/configuration.md (tests run from the repository's root)";
  std::stringstream text;
  text << in.rdbuf();
  // Each key is a row: | `section.key` | ...; services' keys as `services[].key`.
  for (const KeySection& section : knownKeys()) {
    for (std::string_view key : section.keys) {
      const std::string name = section.section.empty()
                                   ? std::string(key)
                                   : std::string(section.section) + "." + std::string(key);
      EXPECT_NE(text.str().find("| `" + name + "` |"), std::string::npos)
          << "docs/configuration.md has no row for " << name;
    }
  }
}

}  // namespace
}  // namespace spindle::config
