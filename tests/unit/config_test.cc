#include "config/config.h"

#include <fmt/core.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace spindle::config {
namespace {

// The YAML in these tests is indented to sit with the code; strip the common indent and the
// first newline so that line 1 of the text is the first line written.
std::string yaml(std::string_view text) {
  if (!text.empty() && text.front() == '\n') text.remove_prefix(1);
  std::vector<std::string_view> lines;
  size_t indent = std::string_view::npos;
  while (!text.empty()) {
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    lines.push_back(line);
    size_t first = line.find_first_not_of(' ');
    if (first != std::string_view::npos) indent = std::min(indent, first);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
  }
  std::string out;
  for (std::string_view line : lines) {
    out += line.size() > indent ? line.substr(indent) : std::string_view();
    out += '\n';
  }
  return out;
}

// Most files need nothing of the proxy section but its one required key: withProxy(rest) is
// that section on lines 1 and 2, then `rest` (indented as yaml() takes it) from line 3.
std::string withProxy(std::string_view rest) {
  return "proxy:\n  listen: \"198.18.0.1:15001\"\n" + yaml(rest);
}

// A file with one service whose last lines are `extra` (indented as service keys); the service's
// first key is on line 4.
std::string serviceWith(std::string_view extra) {
  std::string text = withProxy(R"(
    services:
      - name: echo
        intercept: "198.19.0.10:80"
        endpoints: {dns: echo-pods}
)");
  size_t start = 0;
  while (start < extra.size()) {
    size_t end = extra.find('\n', start);
    if (end == std::string_view::npos) end = extra.size();
    text += "    ";
    text += extra.substr(start, end - start);
    text += '\n';
    start = end + 1;
  }
  return text;
}

EnvLookup fakeEnv(std::map<std::string, std::string> vars = {{"NODE_IP", "10.0.0.5"},
                                                             {"NODE_IP6", "fd00::5"}}) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

Config mustParse(std::string_view text, const EnvLookup& env = fakeEnv()) {
  auto parsed = parse(yaml(text), "spindle.yaml", env);
  EXPECT_TRUE(parsed.ok()) << parsed.error();
  return parsed.ok() ? *parsed : Config{};
}

std::string errorOf(std::string_view text, const EnvLookup& env = fakeEnv()) {
  auto parsed = parse(yaml(text), "spindle.yaml", env);
  EXPECT_FALSE(parsed.ok()) << "parsed without error:\n" << yaml(text);
  return parsed.ok() ? std::string() : parsed.error();
}

net::SocketAddress addr(std::string_view text) {
  auto parsed = net::SocketAddress::parse(text);
  EXPECT_TRUE(parsed.ok()) << parsed.error();
  return parsed.ok() ? *parsed : net::SocketAddress();
}

// --- Valid files -------------------------------------------------------------------------------

TEST(Config, FullConfigRoundTripsEveryField) {
  Config c = mustParse(R"(
    proxy:
      listen: ["${NODE_IP}:15001", "[${NODE_IP6}]:15001"]
      workers: 4
    admin:
      listen: "${NODE_IP}:9901"
    redirect:
      cgroup: /sys/fs/cgroup/kubepods
      host_netns: true
      heartbeat_timeout: 1500ms
      pin_path: /sys/fs/bpf/spindle-blue
    dns:
      servers: ["10.96.0.10:53", "10.96.0.11", "[fd00::10]:5353"]
      refresh: {min: 1s, max: 30s}
      empty_confirmations: 3
    services:
      - name: echo
        intercept: ["198.19.0.10:50051", "echo.demo.svc.cluster.local:50051"]
        endpoints:
          dns: "echo-pods.demo.svc.cluster.local"
        port: 8080
        balance: peak_ewma
        outlier: {consecutive_failures: 3, base_ejection: 500ms, max_ejection: 2m,
                  max_ejected_percent: 30}
        retries: {max: 2, budget_percent: 5}
        peak_ewma: {decay: 5s}
        slow_start: 10s
      - name: greeter-2
        intercept: "[fd00:19::20]:443"
        endpoints:
          static: ["198.18.1.2:8443", "[fd00:18::3]:8443"]
    shutdown:
      drain: 45s
  )");

  ASSERT_EQ(c.proxy.listen.size(), 2u);
  EXPECT_EQ(c.proxy.listen[0], addr("10.0.0.5:15001"));
  EXPECT_EQ(c.proxy.listen[1], addr("[fd00::5]:15001"));
  EXPECT_EQ(c.proxy.workers, 4u);
  ASSERT_TRUE(c.admin.listen.has_value());
  EXPECT_EQ(*c.admin.listen, addr("10.0.0.5:9901"));
  EXPECT_EQ(c.redirect.cgroup, "/sys/fs/cgroup/kubepods");
  EXPECT_TRUE(c.redirect.host_netns);
  EXPECT_EQ(c.redirect.heartbeat_timeout, Duration(1500));
  EXPECT_EQ(c.redirect.pin_path, "/sys/fs/bpf/spindle-blue");
  EXPECT_EQ(c.shutdown.drain, Duration(45000));
  ASSERT_EQ(c.dns.servers.size(), 3u);
  EXPECT_EQ(c.dns.servers[0], addr("10.96.0.10:53"));
  EXPECT_EQ(c.dns.servers[1], addr("10.96.0.11:53"));
  EXPECT_EQ(c.dns.servers[2], addr("[fd00::10]:5353"));

  ASSERT_EQ(c.services.size(), 2u);
  const Service& echo = c.services[0];
  EXPECT_EQ(echo.name, "echo");
  ASSERT_EQ(echo.intercept.size(), 2u);
  EXPECT_EQ(echo.intercept[0].text, "198.19.0.10:50051");
  ASSERT_TRUE(echo.intercept[0].literal.has_value());
  EXPECT_EQ(*echo.intercept[0].literal, addr("198.19.0.10:50051"));
  EXPECT_EQ(echo.intercept[0].host, "");
  EXPECT_EQ(echo.intercept[0].port, 50051);
  EXPECT_EQ(echo.intercept[1].text, "echo.demo.svc.cluster.local:50051");
  EXPECT_FALSE(echo.intercept[1].literal.has_value());
  EXPECT_EQ(echo.intercept[1].host, "echo.demo.svc.cluster.local");
  EXPECT_EQ(echo.intercept[1].port, 50051);
  EXPECT_EQ(echo.endpoints.dns, "echo-pods.demo.svc.cluster.local");
  EXPECT_TRUE(echo.endpoints.statics.empty());
  EXPECT_EQ(echo.port, 8080);
  EXPECT_EQ(echo.balance, Balance::kPeakEwma);
  EXPECT_EQ(echo.outlier.consecutive_failures, 3u);
  EXPECT_EQ(echo.outlier.base_ejection, Duration(500));
  EXPECT_EQ(echo.outlier.max_ejection, Duration(120000));
  EXPECT_EQ(echo.outlier.max_ejected_percent, 30u);
  EXPECT_EQ(echo.retries.max, 2u);
  EXPECT_EQ(echo.retries.budget_percent, 5u);
  EXPECT_EQ(echo.peak_ewma.decay, Duration(5000));
  EXPECT_EQ(echo.slow_start, Duration(10000));

  const Service& greeter = c.services[1];
  EXPECT_EQ(greeter.name, "greeter-2");
  ASSERT_EQ(greeter.intercept.size(), 1u);
  ASSERT_TRUE(greeter.intercept[0].literal.has_value());
  EXPECT_EQ(*greeter.intercept[0].literal, addr("[fd00:19::20]:443"));
  EXPECT_EQ(greeter.endpoints.dns, "");
  ASSERT_EQ(greeter.endpoints.statics.size(), 2u);
  EXPECT_EQ(greeter.endpoints.statics[0], addr("198.18.1.2:8443"));
  EXPECT_EQ(greeter.endpoints.statics[1], addr("[fd00:18::3]:8443"));
  EXPECT_EQ(greeter.port, 443);  // defaults to the first intercept's port
  EXPECT_EQ(greeter.balance, Balance::kLeastRequest);
}

TEST(Config, MinimalConfigTakesDefaults) {
  Config c = mustParse(R"(
    proxy:
      listen: "198.18.0.1:15001"
  )");
  ASSERT_EQ(c.proxy.listen.size(), 1u);
  EXPECT_EQ(c.proxy.listen[0], addr("198.18.0.1:15001"));
  EXPECT_EQ(c.proxy.workers, 0u);
  EXPECT_EQ(c.proxy.service_ports, 64u);
  EXPECT_EQ(c.proxy.uid, 65534u);
  EXPECT_EQ(c.proxy.gid, 65534u);
  EXPECT_FALSE(c.admin.listen.has_value());
  EXPECT_EQ(c.redirect.cgroup, "");
  EXPECT_FALSE(c.redirect.host_netns);
  EXPECT_EQ(c.redirect.heartbeat_timeout, Duration(2000));
  EXPECT_EQ(c.redirect.pin_path, "/sys/fs/bpf/spindle");
  EXPECT_EQ(c.shutdown.drain, Duration(30000));
  EXPECT_TRUE(c.dns.servers.empty());
  EXPECT_TRUE(c.services.empty());
}

TEST(Config, PinPathEmptyTurnsSharingOffAndRelativeIsAnError) {
  Config c = mustParse(withProxy(R"(
    redirect:
      pin_path: ""
    shutdown:
      drain: 0s
  )"));
  EXPECT_EQ(c.redirect.pin_path, "");
  EXPECT_EQ(c.shutdown.drain, Duration(0));  // stop at once
  EXPECT_EQ(errorOf(withProxy(R"(
    redirect:
      pin_path: bpf/spindle
  )")),
            "spindle.yaml:4: redirect.pin_path: 'bpf/spindle' is not an absolute path");
}

// proxy.io_engine and log.format read each name of their table (config.h), which /config
// writes back with choiceName; any other value names the list.
TEST(Config, IoEngineAndLogFormatTakeTheirNamesAndListThemForAnyOther) {
  const std::string proxy = "proxy:\n  listen: \"198.18.0.1:15001\"\n  io_engine: ";
  for (const auto& choice : config::kIoEngines) {
    Config c = mustParse(proxy + std::string(choice.name) + "\n");
    EXPECT_EQ(c.proxy.io_engine, choice.value) << choice.name;
    EXPECT_EQ(config::choiceName(config::kIoEngines, c.proxy.io_engine), choice.name);
  }
  EXPECT_EQ(errorOf(proxy + "uring\n"),
            "spindle.yaml:3: proxy.io_engine: 'uring' is not one of auto, io_uring, epoll");
  for (const auto& choice : config::kLogFormats) {
    Config c = mustParse(withProxy("log: {format: " + std::string(choice.name) + "}"));
    EXPECT_EQ(c.log.format, choice.value) << choice.name;
    EXPECT_EQ(config::choiceName(config::kLogFormats, c.log.format), choice.name);
  }
  EXPECT_EQ(errorOf(withProxy("log: {format: logfmt}")),
            "spindle.yaml:3: log.format: 'logfmt' is not one of text, json");
}

TEST(Config, UpstreamSourceIsPodByDefaultNodeOnRequestAndNothingElse) {
  EXPECT_EQ(mustParse(withProxy("")).upstream.source, config::Upstream::Source::kPod);
  Config c = mustParse(withProxy(R"(
    upstream:
      source: node
  )"));
  EXPECT_EQ(c.upstream.source, config::Upstream::Source::kNode);
  EXPECT_EQ(errorOf(withProxy(R"(
    upstream:
      source: namespace
  )")),
            "spindle.yaml:4: upstream.source: 'namespace' is not one of pod, node");
  EXPECT_EQ(errorOf(withProxy(R"(
    upstream:
      sources: pod
  )"))
                .substr(0, 16),
            "spindle.yaml:4: ");
}

TEST(Config, UpstreamIdleTimeoutAndMaxConnections) {
  Config defaults = mustParse(withProxy(""));
  EXPECT_EQ(defaults.upstream.idle_timeout, Duration(60000));
  EXPECT_EQ(defaults.upstream.max_connections, 10000u);
  Config c = mustParse(withProxy(R"(
    upstream:
      idle_timeout: 0s
      max_connections: 5
  )"));
  EXPECT_EQ(c.upstream.idle_timeout, Duration(0));  // never
  EXPECT_EQ(c.upstream.max_connections, 5u);
  EXPECT_NE(errorOf(withProxy(R"(
    upstream:
      max_connections: 0
  )"))
                .find("spindle.yaml:4: upstream.max_connections"),
            std::string::npos);
}

TEST(Config, ServiceIdsComeFromNamesSoTwoProcessesAgree) {
  EXPECT_EQ(serviceId("echo"), serviceId("echo"));
  EXPECT_NE(serviceId("echo"), serviceId("echo-2"));
  EXPECT_NE(serviceId(""), 0u);  // 0 means "no service" in the BPF map
}

TEST(Config, EmptySectionsReadAsDefaults) {
  Config c = mustParse(withProxy(R"(
    admin:
    redirect: {}
    dns:
      servers: []
    services: []
  )"));
  EXPECT_FALSE(c.admin.listen.has_value());
  EXPECT_TRUE(c.dns.servers.empty());
  EXPECT_TRUE(c.services.empty());
}

TEST(Config, ListenTakesOneAddressPerFamily) {
  Config c = mustParse(R"(
    proxy:
      listen:
        - "[${NODE_IP6}]:15001"
        - "${NODE_IP}:15001"
  )");
  ASSERT_EQ(c.proxy.listen.size(), 2u);
  EXPECT_EQ(c.proxy.listen[0].family(), AF_INET6);
  EXPECT_EQ(c.proxy.listen[0].toString(), "[fd00::5]:15001");
  EXPECT_EQ(c.proxy.listen[1].family(), AF_INET);
  EXPECT_EQ(c.proxy.listen[1].toString(), "10.0.0.5:15001");
}

TEST(Config, ListenMayBeIpv6Only) {
  Config c = mustParse(R"(
    proxy:
      listen: "[::1]:15001"
  )");
  ASSERT_EQ(c.proxy.listen.size(), 1u);
  EXPECT_EQ(c.proxy.listen[0].toString(), "[::1]:15001");
}

TEST(Config, EnvExpandsEverywhereAndMoreThanOncePerValue) {
  Config c = mustParse(R"(
    proxy:
      listen: "${A}.${B}:${PORT}"
      workers: ${WORKERS}
    redirect:
      cgroup: "/sys/fs/cgroup/${POD}/x"
    services:
      - name: ${NAME}
        intercept: "${NAME}.${NS}.svc:${PORT}"
        endpoints:
          static: ["${A}.9:${PORT}"]
  )",
                       fakeEnv({{"A", "10.0.0"},
                                {"B", "7"},
                                {"PORT", "15001"},
                                {"WORKERS", "8"},
                                {"POD", "kubepods"},
                                {"NAME", "echo"},
                                {"NS", "demo"}}));
  ASSERT_EQ(c.proxy.listen.size(), 1u);
  EXPECT_EQ(c.proxy.listen[0], addr("10.0.0.7:15001"));
  EXPECT_EQ(c.proxy.workers, 8u);
  EXPECT_EQ(c.redirect.cgroup, "/sys/fs/cgroup/kubepods/x");
  ASSERT_EQ(c.services.size(), 1u);
  EXPECT_EQ(c.services[0].name, "echo");
  EXPECT_EQ(c.services[0].intercept[0].host, "echo.demo.svc");
  EXPECT_EQ(c.services[0].intercept[0].text, "echo.demo.svc:15001");
  EXPECT_EQ(c.services[0].endpoints.statics[0], addr("10.0.0.9:15001"));
}

TEST(Config, DollarWithoutBraceIsLiteral) {
  Config c = mustParse(withProxy(R"(
    redirect:
      cgroup: "/a$b/$"
  )"));
  EXPECT_EQ(c.redirect.cgroup, "/a$b/$");
}

TEST(Config, InterceptTellsNamesFromLiterals) {
  Config c = mustParse(withProxy(R"(
    services:
      - name: echo
        intercept:
          - "198.19.0.10:50051"
          - "[fd00:19::10]:50051"
          - "echo.demo.svc.cluster.local.:50051"
          - "echo:50052"
          - "10.0.0.300.example:1"
        endpoints: {dns: echo-pods}
  )"));
  ASSERT_EQ(c.services.size(), 1u);
  const auto& in = c.services[0].intercept;
  ASSERT_EQ(in.size(), 5u);
  ASSERT_TRUE(in[0].literal.has_value());
  EXPECT_EQ(in[0].literal->family(), AF_INET);
  EXPECT_EQ(in[0].host, "");
  ASSERT_TRUE(in[1].literal.has_value());
  EXPECT_EQ(in[1].literal->family(), AF_INET6);
  EXPECT_EQ(in[1].port, 50051);
  EXPECT_FALSE(in[2].literal.has_value());
  EXPECT_EQ(in[2].host, "echo.demo.svc.cluster.local.");
  EXPECT_FALSE(in[3].literal.has_value());
  EXPECT_EQ(in[3].host, "echo");
  EXPECT_EQ(in[3].port, 50052);
  EXPECT_FALSE(in[4].literal.has_value());
  EXPECT_EQ(in[4].host, "10.0.0.300.example");
}

TEST(Config, EveryBalanceSpellingParsesAndPrintsBack) {
  for (Balance b :
       {Balance::kRoundRobin, Balance::kLeastRequest, Balance::kPeakEwma, Balance::kRandom}) {
    Config c = mustParse(serviceWith(fmt::format("balance: {}", balanceName(b))));
    ASSERT_EQ(c.services.size(), 1u);
    EXPECT_EQ(c.services[0].balance, b) << balanceName(b);
  }
  EXPECT_EQ(balanceName(Balance::kRoundRobin), "round_robin");
  EXPECT_EQ(balanceName(Balance::kLeastRequest), "least_request");
  EXPECT_EQ(balanceName(Balance::kPeakEwma), "peak_ewma");
  EXPECT_EQ(balanceName(Balance::kRandom), "random");
}

TEST(Config, DurationsTakeMsSecondsMinutesHoursAndFractions) {
  const std::pair<const char*, Duration> cases[] = {
      {"500ms", Duration(500)}, {"2s", Duration(2000)},    {"1.5s", Duration(1500)},
      {"1m", Duration(60000)},  {"1h", Duration(3600000)}, {"0.25s", Duration(250)},
  };
  for (const auto& [text, want] : cases) {
    Config c = mustParse(withProxy(fmt::format("redirect:\n  heartbeat_timeout: {}\n", text)));
    EXPECT_EQ(c.redirect.heartbeat_timeout, want) << text;
  }
}

TEST(Config, WorkersAcceptUpTo256) {
  Config c = mustParse(R"(
    proxy:
      listen: "198.18.0.1:15001"
      workers: 256
  )");
  EXPECT_EQ(c.proxy.workers, 256u);
}

TEST(Config, DnsServerWithoutPortUsesPort53) {
  Config c = mustParse(withProxy(R"(
    dns:
      servers: ["10.96.0.10", "fd00::10"]
  )"));
  ASSERT_EQ(c.dns.servers.size(), 2u);
  EXPECT_EQ(c.dns.servers[0].toString(), "10.96.0.10:53");
  EXPECT_EQ(c.dns.servers[1].toString(), "[fd00::10]:53");
}

TEST(Config, TrailingDocumentMarkerIsFine) {
  Config c = mustParse(R"(
    ---
    proxy:
      listen: "198.18.0.1:15001"
    ---
  )");
  EXPECT_EQ(c.proxy.listen.size(), 1u);
}

// --- Errors: every one names the file, the line and the key -----------------------------------

TEST(Config, UnknownKeyAtTopLevelNamesKeyAndLine) {
  EXPECT_EQ(errorOf(withProxy(R"(
    services: []
    prxy:
      workers: 2
  )")),
            "spindle.yaml:4: unknown key 'prxy' at the top level");
}

TEST(Config, UnknownKeyNamesKeyAndLine) {
  EXPECT_EQ(errorOf(R"(
    # spindle
    admin:
      listen: "198.18.0.1:9901"
    redirect:
      host_netns: false
    proxy:
      listne: "198.18.0.1:15001"
  )"),
            "spindle.yaml:7: unknown key 'listne' in proxy");
}

TEST(Config, UnknownKeyInServiceNamesServiceAndLine) {
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: "198.19.0.10:80"
        endpoints: {dns: echo-pods}
      - name: other
        intercept: "198.19.0.11:80"
        endpoint: {dns: other-pods}
  )")),
            "spindle.yaml:9: unknown key 'endpoint' in services[1]");
}

TEST(Config, UnknownKeyDeepInsideNamesFullPath) {
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: "198.19.0.10:80"
        endpoints:
          dns: echo-pods
          srv: x
  )")),
            "spindle.yaml:8: unknown key 'srv' in services[0].endpoints");
  EXPECT_EQ(errorOf(withProxy(R"(
    dns:
      refresh:
        min: 1s
        maximum: 30s
  )")),
            "spindle.yaml:6: unknown key 'maximum' in dns.refresh");
}

TEST(Config, RepeatedKeyIsAnError) {
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: "198.18.0.1:15001"
      workers: 1
      workers: 2
  )"),
            "spindle.yaml:4: key 'workers' repeated in proxy (first at line 3)");
}

TEST(Config, MapWhereStringExpectedNamesKeyAndLine) {
  EXPECT_EQ(errorOf(withProxy(R"(
    redirect:
      cgroup:
        path: /sys/fs/cgroup
  )")),
            "spindle.yaml:5: redirect.cgroup: expected a string, got a map");
}

TEST(Config, WrongTypesNameKeyAndLine) {
  EXPECT_EQ(errorOf(R"(
    proxy: "198.18.0.1:15001"
  )"),
            "spindle.yaml:1: proxy: expected a map, got '198.18.0.1:15001'");
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: {ip: 198.18.0.1}
  )"),
            "spindle.yaml:2: proxy.listen: expected a string or a list, got a map");
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      name: echo
  )")),
            "spindle.yaml:4: services: expected a list, got a map");
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - echo
  )")),
            "spindle.yaml:4: services[0]: expected a map, got 'echo'");
  EXPECT_EQ(errorOf(withProxy(R"(
    redirect:
      host_netns: yes
  )")),
            "spindle.yaml:4: redirect.host_netns: 'yes' is not true or false");
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: ["198.18.0.1:15001", [1]]
  )"),
            "spindle.yaml:2: proxy.listen[1]: expected an address, got a list");
  EXPECT_EQ(errorOf(withProxy(R"(
    dns:
      servers: "10.96.0.10"
  )")),
            "spindle.yaml:4: dns.servers: expected a list, got '10.96.0.10'");
}

TEST(Config, ResilienceSectionsAreTypeChecked) {
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: "198.19.0.10:80"
        endpoints: {dns: echo-pods}
        retries: 3
  )")),
            "spindle.yaml:7: services[0].retries: expected a map, got '3'");
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: "198.19.0.10:80"
        endpoints: {dns: echo-pods}
        slow_start: 30
  )")),
            "spindle.yaml:7: services[0].slow_start: '30' needs a unit: ms, s, m or h");
  EXPECT_EQ(errorOf(withProxy(R"(
    shutdown:
      drain: soon
  )")),
            "spindle.yaml:4: shutdown.drain: 'soon' is not a duration like 500ms, 2s or 1m");
  EXPECT_EQ(errorOf(withProxy(R"(
    dns:
      empty_confirmations: -1
  )")),
            "spindle.yaml:4: dns.empty_confirmations: '-1' is not an integer from 1 to 1000");
}

// --- Outlier ejection, retries, peak EWMA, slow start -----------------------------------------

TEST(Config, ResilienceDefaultsMatchTheDesign) {
  Config c = mustParse(serviceWith(""));
  ASSERT_EQ(c.services.size(), 1u);
  const Service& s = c.services[0];
  EXPECT_EQ(s.outlier.consecutive_failures, 5u);
  EXPECT_EQ(s.outlier.base_ejection, std::chrono::seconds(1));
  EXPECT_EQ(s.outlier.max_ejection, std::chrono::seconds(60));
  EXPECT_EQ(s.outlier.max_ejected_percent, 50u);
  EXPECT_EQ(s.retries.max, 3u);
  EXPECT_EQ(s.retries.budget_percent, 20u);
  EXPECT_EQ(s.peak_ewma.decay, std::chrono::seconds(10));
  EXPECT_EQ(s.slow_start, Duration(0));
}

TEST(Config, ResilienceSectionsKeepDefaultsForKeysLeftOut) {
  Config c = mustParse(
      serviceWith("outlier: {max_ejection: 5m}\nretries: {budget_percent: 0}\npeak_ewma: {}"));
  ASSERT_EQ(c.services.size(), 1u);
  const Service& s = c.services[0];
  EXPECT_EQ(s.outlier.consecutive_failures, 5u);
  EXPECT_EQ(s.outlier.base_ejection, std::chrono::seconds(1));
  EXPECT_EQ(s.outlier.max_ejection, std::chrono::minutes(5));
  EXPECT_EQ(s.outlier.max_ejected_percent, 50u);
  EXPECT_EQ(s.retries.max, 3u);
  EXPECT_EQ(s.retries.budget_percent, 0u);
  EXPECT_EQ(s.peak_ewma.decay, std::chrono::seconds(10));
}

TEST(Config, ResilienceLimitsAreAccepted) {
  Config low = mustParse(
      serviceWith("outlier: {consecutive_failures: 1, max_ejected_percent: 0}\nretries: {max: 1, "
                  "budget_percent: 0}\nslow_start: 0s"));
  ASSERT_EQ(low.services.size(), 1u);
  EXPECT_EQ(low.services[0].outlier.consecutive_failures, 1u);
  EXPECT_EQ(low.services[0].outlier.max_ejected_percent, 0u);
  EXPECT_EQ(low.services[0].retries.max, 1u);
  EXPECT_EQ(low.services[0].retries.budget_percent, 0u);
  EXPECT_EQ(low.services[0].slow_start, Duration(0));

  Config high = mustParse(serviceWith(
      "outlier: {consecutive_failures: 1000, max_ejected_percent: 100, base_ejection: 2s, "
      "max_ejection: 2s}\nretries: {max: 10, budget_percent: 100}"));
  ASSERT_EQ(high.services.size(), 1u);
  EXPECT_EQ(high.services[0].outlier.consecutive_failures, 1000u);
  EXPECT_EQ(high.services[0].outlier.max_ejected_percent, 100u);
  EXPECT_EQ(high.services[0].outlier.base_ejection, high.services[0].outlier.max_ejection);
  EXPECT_EQ(high.services[0].retries.max, 10u);
  EXPECT_EQ(high.services[0].retries.budget_percent, 100u);
}

TEST(Config, OutOfRangeResilienceIntegersNameKeyAndLine) {
  const std::pair<const char*, const char*> cases[] = {
      {"outlier: {consecutive_failures: 0}",
       "services[0].outlier.consecutive_failures: '0' is not an integer from 1 to 1000"},
      {"outlier: {consecutive_failures: 1001}",
       "services[0].outlier.consecutive_failures: '1001' is not an integer from 1 to 1000"},
      {"outlier: {max_ejected_percent: 101}",
       "services[0].outlier.max_ejected_percent: '101' is not an integer from 0 to 100"},
      {"outlier: {max_ejected_percent: -5}",
       "services[0].outlier.max_ejected_percent: '-5' is not an integer from 0 to 100"},
      {"retries: {max: 0}", "services[0].retries.max: '0' is not an integer from 1 to 10"},
      {"retries: {max: 11}", "services[0].retries.max: '11' is not an integer from 1 to 10"},
      {"retries: {budget_percent: 101}",
       "services[0].retries.budget_percent: '101' is not an integer from 0 to 100"},
      {"retries: {budget_percent: 20%}",
       "services[0].retries.budget_percent: '20%' is not an integer from 0 to 100"},
  };
  for (const auto& [extra, message] : cases) {
    EXPECT_EQ(errorOf(serviceWith(extra)), fmt::format("spindle.yaml:7: {}", message)) << extra;
  }
}

TEST(Config, BadResilienceDurationsNameKeyAndLine) {
  const std::pair<const char*, const char*> cases[] = {
      {"outlier: {base_ejection: 0s}",
       "services[0].outlier.base_ejection: '0s': a duration must be greater than zero"},
      {"outlier: {max_ejection: 60}",
       "services[0].outlier.max_ejection: '60' needs a unit: ms, s, m or h"},
      {"peak_ewma: {decay: 0ms}",
       "services[0].peak_ewma.decay: '0ms': a duration must be greater than zero"},
      {"peak_ewma: {decay: fast}",
       "services[0].peak_ewma.decay: 'fast' is not a duration like 500ms, 2s or 1m"},
      {"slow_start: -1s", "services[0].slow_start: '-1s': a duration must be zero or more"},
      {"slow_start: 1d", "services[0].slow_start: '1d': unknown unit 'd', use ms, s, m or h"},
  };
  for (const auto& [extra, message] : cases) {
    EXPECT_EQ(errorOf(serviceWith(extra)), fmt::format("spindle.yaml:7: {}", message)) << extra;
  }
}

TEST(Config, BaseEjectionAboveMaxEjectionIsAnError) {
  // Named at the outlier section, whichever of the two was written: here only the base,
  // which is above the default max.
  EXPECT_EQ(errorOf(serviceWith("outlier:\n  base_ejection: 30s\n  max_ejection: 10s")),
            "spindle.yaml:8: services[0].outlier: base_ejection is above max_ejection");
  EXPECT_EQ(errorOf(serviceWith("outlier: {base_ejection: 2m}")),
            "spindle.yaml:7: services[0].outlier: base_ejection is above max_ejection");
}

TEST(Config, UnknownResilienceKeysNameKeyAndLine) {
  EXPECT_EQ(errorOf(serviceWith("outlier:\n  consecutive_errors: 5")),
            "spindle.yaml:8: unknown key 'consecutive_errors' in services[0].outlier");
  EXPECT_EQ(errorOf(serviceWith("retries:\n  max: 2\n  attempts: 2")),
            "spindle.yaml:9: unknown key 'attempts' in services[0].retries");
  EXPECT_EQ(errorOf(serviceWith("peak_ewma: {tau: 1s}")),
            "spindle.yaml:7: unknown key 'tau' in services[0].peak_ewma");
  EXPECT_EQ(errorOf(serviceWith("peak_ewma: 10s")),
            "spindle.yaml:7: services[0].peak_ewma: expected a map, got '10s'");
}

TEST(Config, BadServicePortNamesKeyAndLine) {
  for (const char* port : {"0", "65536", "http", "-1", "8080.5"}) {
    EXPECT_EQ(errorOf(serviceWith(fmt::format("port: {}", port))),
              fmt::format("spindle.yaml:7: services[0].port: '{}' is not an integer from 1 to "
                          "65535",
                          port));
  }
}

TEST(Config, TooManyWorkersIsAnError) {
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: "198.18.0.1:15001"
      workers: 257
  )"),
            "spindle.yaml:3: proxy.workers: '257' is not an integer from 0 to 256");
}

TEST(Config, BadListenAddressNamesKeyAndLine) {
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: "localhost:15001"
  )"),
            "spindle.yaml:2: proxy.listen: 'localhost:15001': 'localhost' is not an IP address");
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen:
        - "198.18.0.1:15001"
        - "fd00::5:15001"
  )"),
            "spindle.yaml:4: proxy.listen[1]: 'fd00::5:15001': an IPv6 address needs brackets: "
            "[addr]:port");
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: "198.18.0.1:0"
  )"),
            "spindle.yaml:2: proxy.listen: '198.18.0.1:0': port must be a number from 1 to 65535");
  EXPECT_EQ(errorOf(withProxy(R"(
    admin:
      listen: "198.18.0.1"
  )")),
            "spindle.yaml:4: admin.listen: '198.18.0.1': expected host:port");
}

TEST(Config, BadInterceptAddressNamesIndexAndLine) {
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept:
          - "198.19.0.10:50051"
          - "echo_demo:50051"
        endpoints: {dns: echo-pods}
  )")),
            "spindle.yaml:7: services[0].intercept[1]: 'echo_demo:50051': 'echo_demo' is neither "
            "an IP address nor a DNS name");
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: ["10.0.0.300:80"]
        endpoints: {dns: echo-pods}
  )")),
            "spindle.yaml:5: services[0].intercept[0]: '10.0.0.300:80': '10.0.0.300' is neither "
            "an IP address nor a DNS name");
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: "[echo.demo]:80"
        endpoints: {dns: echo-pods}
  )")),
            "spindle.yaml:5: services[0].intercept: '[echo.demo]:80': 'echo.demo' is not an IP "
            "address");
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: "echo"
        endpoints: {dns: echo-pods}
  )")),
            "spindle.yaml:5: services[0].intercept: 'echo': expected host:port");
}

TEST(Config, BadStaticEndpointNamesIndexAndLine) {
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: "198.19.0.10:80"
        endpoints:
          static:
            - "198.18.1.2:80"
            - "pod-2:80"
  )")),
            "spindle.yaml:9: services[0].endpoints.static[1]: 'pod-2:80': 'pod-2' is not an IP "
            "address");
}

TEST(Config, MissingRequiredKeysAreNamed) {
  EXPECT_EQ(errorOf(R"(
    admin:
      listen: "198.18.0.1:9901"
  )"),
            "spindle.yaml:1: missing required key 'proxy'");
  EXPECT_EQ(errorOf(R"(
    services: []
    proxy:
      workers: 2
  )"),
            "spindle.yaml:3: proxy: missing required key 'listen'");
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        endpoints: {dns: echo-pods}
  )")),
            "spindle.yaml:4: services[0]: missing required key 'intercept'");
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - intercept: "198.19.0.10:80"
        endpoints: {dns: echo-pods}
  )")),
            "spindle.yaml:4: services[0]: missing required key 'name'");
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: "198.19.0.10:80"
  )")),
            "spindle.yaml:4: services[0]: missing required key 'endpoints'");
}

TEST(Config, EmptyRequiredListsAreErrors) {
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: []
  )"),
            "spindle.yaml:2: proxy.listen: give at least one address");
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: []
        endpoints: {dns: echo-pods}
  )")),
            "spindle.yaml:5: services[0].intercept: give at least one address");
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: "198.19.0.10:80"
        endpoints:
          static:
  )")),
            "spindle.yaml:7: services[0].endpoints.static: give at least one address");
}

TEST(Config, BothDnsAndStaticIsAnError) {
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: "198.19.0.10:80"
        endpoints:
          dns: echo-pods
          static: ["198.18.1.2:80"]
  )")),
            "spindle.yaml:7: services[0].endpoints: give exactly one of 'dns' or 'static'");
}

TEST(Config, NeitherDnsNorStaticIsAnError) {
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: "198.19.0.10:80"
        endpoints: {}
  )")),
            "spindle.yaml:6: services[0].endpoints: give exactly one of 'dns' or 'static'");
}

TEST(Config, BadEndpointsDnsNameIsAnError) {
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: "198.19.0.10:80"
        endpoints: {dns: "echo pods"}
  )")),
            "spindle.yaml:6: services[0].endpoints.dns: 'echo pods' is not a DNS name");
}

TEST(Config, DuplicateServiceNamesAreAnError) {
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: "198.19.0.10:80"
        endpoints: {dns: echo-pods}
      - name: echo
        intercept: "198.19.0.11:80"
        endpoints: {dns: echo-pods}
  )")),
            "spindle.yaml:7: services[1].name: service name 'echo' is already used at line 4");
}

TEST(Config, BadServiceNamesAreErrors) {
  for (const std::string& name :
       {std::string("Echo"), std::string("-echo"), std::string("echo-"), std::string("echo.v1"),
        std::string(64, 'a'), std::string("\"\"")}) {
    std::string error = errorOf(withProxy(R"(
      services:
        - name: )" + name + R"(
          intercept: "198.19.0.10:80"
          endpoints: {dns: echo-pods}
    )"));
    EXPECT_EQ(error.rfind("spindle.yaml:4: services[0].name: '", 0), 0u) << name << ": " << error;
    EXPECT_NE(error.find("is not a valid name"), std::string::npos) << error;
  }
  // The longest label is fine.
  mustParse(withProxy(R"(
    services:
      - name: )" + std::string(63, 'a') +
                      R"(
        intercept: "198.19.0.10:80"
        endpoints: {dns: echo-pods}
  )"));
}

TEST(Config, TwoServicesClaimingOneInterceptIsAnError) {
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: ["198.19.0.10:80", "echo.demo:80"]
        endpoints: {dns: echo-pods}
      - name: other
        intercept:
          - "198.19.0.11:80"
          - "198.19.0.10:80"
        endpoints: {dns: other-pods}
  )")),
            "spindle.yaml:10: services[1].intercept[1]: '198.19.0.10:80' is already claimed by "
            "service 'echo' at line 5");
}

TEST(Config, InterceptNamesCompareWithoutCaseOrRootDot) {
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: "echo.demo:80"
        endpoints: {dns: echo-pods}
      - name: other
        intercept: "ECHO.demo.:80"
        endpoints: {dns: other-pods}
  )")),
            "spindle.yaml:8: services[1].intercept: 'ECHO.demo.:80' is already claimed by "
            "service 'echo' at line 5");
  // The same name on another port is a different intercept.
  mustParse(withProxy(R"(
    services:
      - name: echo
        intercept: "echo.demo:80"
        endpoints: {dns: echo-pods}
      - name: other
        intercept: "echo.demo:81"
        endpoints: {dns: other-pods}
  )"));
}

TEST(Config, BadDurationsNameKeyAndLine) {
  const std::pair<const char*, const char*> cases[] = {
      {"2", "'2' needs a unit: ms, s, m or h"},
      {"2d", "'2d': unknown unit 'd', use ms, s, m or h"},
      {"0s", "'0s': a duration must be greater than zero"},
      {"-1s", "'-1s': a duration must be greater than zero"},
      {"1..5s", "'1..5s' is not a duration like 500ms, 2s or 1m"},
      {"s", "'s' is not a duration like 500ms, 2s or 1m"},
      {"0.1ms", "'0.1ms' is shorter than 1ms"},
  };
  for (const auto& [text, message] : cases) {
    EXPECT_EQ(errorOf(withProxy(fmt::format("redirect:\n  heartbeat_timeout: {}\n", text))),
              fmt::format("spindle.yaml:4: redirect.heartbeat_timeout: {}", message));
  }
}

TEST(Config, UnsetEnvVarIsNamedWithLine) {
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: "${NODE_IP}:15001"
    admin:
      listen: "${ADMIN_IP}:9901"
  )"),
            "spindle.yaml:4: admin.listen: environment variable ADMIN_IP is not set");
}

TEST(Config, MalformedEnvReferencesAreErrors) {
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: "${NODE_IP:15001"
  )"),
            "spindle.yaml:2: proxy.listen: '${NODE_IP:15001': unterminated '${'");
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: "${NODE-IP}:15001"
  )"),
            "spindle.yaml:2: proxy.listen: '${NODE-IP}:15001': 'NODE-IP' is not an environment "
            "variable name");
}

TEST(Config, EnvExpandsBeforeAddressParsing) {
  // The variable holds an address that is bad only once expanded.
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: "${NODE_IP}:15001"
  )",
                    fakeEnv({{"NODE_IP", "fd00::5"}})),
            "spindle.yaml:2: proxy.listen: 'fd00::5:15001': an IPv6 address needs brackets: "
            "[addr]:port");
}

TEST(Config, BadBalanceIsNamedWithLine) {
  EXPECT_EQ(errorOf(withProxy(R"(
    services:
      - name: echo
        intercept: "198.19.0.10:80"
        endpoints: {dns: echo-pods}
        balance: fastest
  )")),
            "spindle.yaml:7: services[0].balance: 'fastest' is not one of round_robin, "
            "least_request, peak_ewma, random");
}

TEST(Config, TwoListenAddressesOfOneFamilyIsAnError) {
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen:
        - "198.18.0.1:15001"
        - "[fd00::5]:15001"
        - "198.18.0.2:15001"
  )"),
            "spindle.yaml:5: proxy.listen[2]: '198.18.0.2:15001' is a second IPv4 address; give "
            "at most one per family");
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: ["[fd00::5]:15001", "[fd00::6]:15001"]
  )"),
            "spindle.yaml:2: proxy.listen[1]: '[fd00::6]:15001' is a second IPv6 address; give "
            "at most one per family");
}

TEST(Config, ServicePortsAreReadAndBounded) {
  Config c = mustParse(R"(
    proxy:
      listen: "198.18.0.1:15001"
      service_ports: 3
  )");
  EXPECT_EQ(c.proxy.service_ports, 3u);
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: "198.18.0.1:15001"
      service_ports: 0
  )"),
            "spindle.yaml:3: proxy.service_ports: '0' is not an integer from 1 to 1024");
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: "198.18.0.1:65500"
  )"),
            "spindle.yaml:2: proxy.listen: port 65500 leaves no room for the 64 service ports "
            "after it (service_ports)");
}

TEST(Config, OnlyDeclaredInterceptsMayBeRedirected) {
  Config c = mustParse(R"(
    proxy:
      listen: "198.18.0.1:15001"
    services:
      - name: literal
        intercept: ["198.19.0.10:7000", "[2001:db8::10]:7000"]
        endpoints: {static: ["198.18.1.3:7000"]}
      - name: named
        intercept: ["echo.demo.svc.cluster.local:50051"]
        endpoints: {static: ["198.18.1.3:50051"]}
  )");
  const uint32_t literal = serviceId("literal");
  const uint32_t named = serviceId("named");
  EXPECT_TRUE(mayIntercept(c.services, addr("198.19.0.10:7000"), literal));
  EXPECT_TRUE(mayIntercept(c.services, addr("[2001:db8::10]:7000"), literal));
  EXPECT_FALSE(mayIntercept(c.services, addr("198.19.0.11:7000"), literal));  // another address
  EXPECT_FALSE(mayIntercept(c.services, addr("198.19.0.10:7001"), literal));  // another port
  // A name resolves in the proxy: any address, but only at the name's port.
  EXPECT_TRUE(mayIntercept(c.services, addr("10.96.0.10:50051"), named));
  EXPECT_FALSE(mayIntercept(c.services, addr("10.96.0.10:443"), named));
  EXPECT_FALSE(mayIntercept(c.services, addr("198.19.0.10:7000"), serviceId("undeclared")));
}

TEST(Config, TheProxysUserIsReadAndNeverRoot) {
  Config c = mustParse(R"(
    proxy:
      listen: "198.18.0.1:15001"
      uid: 2102
      gid: 2103
  )");
  EXPECT_EQ(c.proxy.uid, 2102u);
  EXPECT_EQ(c.proxy.gid, 2103u);
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: "198.18.0.1:15001"
      uid: 0
  )"),
            "spindle.yaml:3: proxy.uid: '0' is not an integer from 1 to 4294967294");
}

TEST(Config, AdminPagesAndMetricsBySourceAreOffByDefault) {
  Config c = mustParse(withProxy(""));
  EXPECT_TRUE(c.admin.pages.empty());
  EXPECT_FALSE(c.metrics.by_source);
  c = mustParse(withProxy(R"(
    admin:
      listen: "198.18.0.1:9901"
      pages: [status, endpoints, status]
    metrics:
      by_source: true
  )"));
  EXPECT_EQ(c.admin.pages, (std::vector<config::AdminPage>{config::AdminPage::kStatus,
                                                           config::AdminPage::kEndpoints}));
  EXPECT_TRUE(c.metrics.by_source);
  EXPECT_EQ(errorOf(withProxy(R"(
    admin:
      pages: [metrics]
  )")),
            "spindle.yaml:4: admin.pages[0]: 'metrics' is not one of endpoints, config, status "
            "(/metrics, /ready and /healthz are always served)");
}

TEST(Config, MetricsSeriesGraceIsFiveMinutesUnlessGivenAndAtLeastTenSeconds) {
  EXPECT_EQ(mustParse(withProxy("")).metrics.series_grace, std::chrono::minutes(5));
  EXPECT_EQ(mustParse(withProxy("metrics:\n  series_grace: 90s\n")).metrics.series_grace,
            std::chrono::seconds(90));
  EXPECT_EQ(mustParse(withProxy("metrics:\n  series_grace: 1h\n")).metrics.series_grace,
            std::chrono::hours(1));
  EXPECT_EQ(errorOf(withProxy("metrics:\n  series_grace: 5s\n")),
            "spindle.yaml:4: metrics.series_grace: '5s' is shorter than 10s; give at least two "
            "scrape intervals");
  EXPECT_EQ(errorOf(withProxy("metrics:\n  series_grace: 0s\n")),
            "spindle.yaml:4: metrics.series_grace: '0s': a duration must be greater than zero");
  EXPECT_EQ(errorOf(withProxy("metrics:\n  series_grace: 300\n")),
            "spindle.yaml:4: metrics.series_grace: '300' needs a unit: ms, s, m or h");
}

TEST(Config, MoreServicesThanServicePortsIsAnError) {
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: "198.18.0.1:15001"
      service_ports: 1
    services:
      - name: a
        intercept: "198.19.0.1:80"
        endpoints: {static: ["198.18.1.2:80"]}
      - name: b
        intercept: "198.19.0.2:80"
        endpoints: {static: ["198.18.1.3:80"]}
  )"),
            "spindle.yaml:5: services: 2 services, but proxy.service_ports gives ports for 1");
}

TEST(Config, EmptyOrNonMapDocumentIsAnError) {
  EXPECT_EQ(errorOf(""), "spindle.yaml:1: expected a map at the top level");
  EXPECT_EQ(errorOf("# only a comment\n"), "spindle.yaml:1: expected a map at the top level");
  EXPECT_EQ(errorOf("- proxy\n"), "spindle.yaml:1: expected a map at the top level");
  EXPECT_EQ(errorOf("just text\n"), "spindle.yaml:1: expected a map at the top level");
}

TEST(Config, SecondDocumentIsAnError) {
  EXPECT_EQ(errorOf(withProxy(R"(
    ---
    proxy:
      listen: "198.18.0.2:15001"
  )")),
            "spindle.yaml:4: expected one YAML document, found more");
}

TEST(Config, YamlSyntaxErrorReportsItsLine) {
  EXPECT_EQ(errorOf(withProxy(R"(
    services: [{name: echo]
    dns: {}
  )")),
            "spindle.yaml:3: invalid YAML: illegal flow end");

  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: "198.18.0.1:15001"
     workers: 2
  )"),
            "spindle.yaml:3: invalid YAML: end of map not found");
}

// --- load() and processEnv() -------------------------------------------------------------------

class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    char name[] = "/tmp/spindle_config_test_XXXXXX";
    int fd = ::mkstemp(name);
    EXPECT_GE(fd, 0);
    path_ = name;
    ::close(fd);
    std::ofstream(path_) << text;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(Config, LoadReadsTheFileAndNamesItInErrors) {
  TempFile good(yaml(R"(
    proxy:
      listen: "${NODE_IP}:15001"
  )"));
  auto loaded = load(good.path(), fakeEnv());
  ASSERT_TRUE(loaded.ok()) << loaded.error();
  EXPECT_EQ(loaded->proxy.listen.at(0), addr("10.0.0.5:15001"));

  TempFile bad(yaml(R"(
    proxy:
      listen: "${NODE_IP}:15001"
      wrokers: 2
  )"));
  auto failed = load(bad.path(), fakeEnv());
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error(), bad.path() + ":3: unknown key 'wrokers' in proxy");
}

TEST(Config, LoadOfUnreadableFileSaysWhy) {
  auto missing = load("/nonexistent/spindle.yaml", fakeEnv());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error(), "cannot read /nonexistent/spindle.yaml: No such file or directory");

  auto directory = load("/tmp", fakeEnv());
  ASSERT_FALSE(directory.ok());
  EXPECT_EQ(directory.error(), "cannot read /tmp: Is a directory");
}

TEST(Config, ProcessEnvReadsTheEnvironment) {
  ::setenv("SPINDLE_CONFIG_TEST_VAR", "198.18.0.9", 1);
  ::unsetenv("SPINDLE_CONFIG_TEST_UNSET");
  EnvLookup env = processEnv();
  EXPECT_EQ(env("SPINDLE_CONFIG_TEST_VAR"), std::optional<std::string>("198.18.0.9"));
  EXPECT_EQ(env("SPINDLE_CONFIG_TEST_UNSET"), std::nullopt);

  Config c = mustParse(R"(
    proxy:
      listen: "${SPINDLE_CONFIG_TEST_VAR}:15001"
  )",
                       env);
  EXPECT_EQ(c.proxy.listen.at(0), addr("198.18.0.9:15001"));
  ::unsetenv("SPINDLE_CONFIG_TEST_VAR");
}

}  // namespace
TEST(Config, DnsRefreshAndConfirmationsAreRead) {
  Config config = mustParse(withProxy(R"(
    dns:
      refresh: {min: 500ms, max: 10s}
      empty_confirmations: 5
  )"));
  EXPECT_EQ(config.dns.refresh_min, std::chrono::milliseconds(500));
  EXPECT_EQ(config.dns.refresh_max, std::chrono::seconds(10));
  EXPECT_EQ(config.dns.empty_confirmations, 5u);
}

TEST(Config, DnsDefaultsMatchTheDesign) {
  Config config = mustParse(R"(
    proxy:
      listen: "198.18.0.1:15001"
  )");
  EXPECT_EQ(config.dns.refresh_min, std::chrono::seconds(1));
  EXPECT_EQ(config.dns.refresh_max, std::chrono::seconds(30));
  EXPECT_EQ(config.dns.empty_confirmations, 3u);
}

TEST(Config, DnsRefreshMinAboveMaxIsAnError) {
  EXPECT_EQ(errorOf(withProxy(R"(
    dns:
      refresh: {min: 40s, max: 30s}
  )")),
            "spindle.yaml:4: dns.refresh: min is above max");
}

// yaml-cpp 0.7's LoadAll never returns on these, and grows without bound (found by
// fuzz/config_fuzz.cc): a typo must be an error, not a hung daemon.
TEST(Config, InputThatStallsTheYamlParserIsAnError) {
  EXPECT_EQ(errorOf(","), "spindle.yaml:1: invalid YAML: the parser made no progress");
  EXPECT_EQ(errorOf(R"(
    ,listen: "${NODE_IP} listen:6"${NODE_IP}:15
    s1"
    s
    "]}
  )"),
            "spindle.yaml:1: invalid YAML: the parser made no progress");
}

// --- limits: ----------------------------------------------------------------------------------

TEST(Config, LimitsDefaultToProductionValues) {
  const Config c = mustParse(R"(
    proxy:
      listen: ["127.0.0.1:15001"]
  )");
  EXPECT_EQ(c.limits.max_connections, 10000u);
  EXPECT_EQ(c.limits.idle_timeout, Duration(300000));
  EXPECT_EQ(c.limits.header_timeout, Duration(10000));
  EXPECT_EQ(c.limits.send_timeout, Duration(30000));
  EXPECT_EQ(c.limits.max_premature_resets, 100u);
  EXPECT_EQ(c.limits.max_glitches, 100u);
  EXPECT_EQ(c.limits.max_control_frames, 1000u);
}

TEST(Config, LimitsTakeEveryKeyAndKeepDefaultsForTheRest) {
  const Config c = mustParse(R"(
    proxy:
      listen: ["127.0.0.1:15001"]
    limits:
      max_connections: 50
      idle_timeout: 0s
      header_timeout: 2s
      send_timeout: 1500ms
      max_premature_resets: 20
      max_glitches: 30
  )");
  EXPECT_EQ(c.limits.max_connections, 50u);
  EXPECT_EQ(c.limits.idle_timeout, Duration(0));  // never
  EXPECT_EQ(c.limits.header_timeout, Duration(2000));
  EXPECT_EQ(c.limits.send_timeout, Duration(1500));
  EXPECT_EQ(c.limits.max_premature_resets, 20u);
  EXPECT_EQ(c.limits.max_glitches, 30u);
  EXPECT_EQ(c.limits.max_control_frames, 1000u);
  const Config empty = mustParse(R"(
    proxy:
      listen: ["127.0.0.1:15001"]
    limits:
  )");
  EXPECT_EQ(empty.limits.max_connections, 10000u);
}

TEST(Config, BadLimitsNameKeyAndLine) {
  const std::pair<const char*, const char*> cases[] = {
      {"max_connections: 0", "limits.max_connections: '0' is not an integer from 1 to 1000000"},
      {"max_connections: many",
       "limits.max_connections: 'many' is not an integer from 1 to 1000000"},
      {"header_timeout: 0s", "limits.header_timeout: '0s': a duration must be greater than zero"},
      {"send_timeout: 30", "limits.send_timeout: '30' needs a unit: ms, s, m or h"},
      {"idle_timeout: -1s", "limits.idle_timeout: '-1s': a duration must be zero or more"},
      {"max_premature_resets: 0",
       "limits.max_premature_resets: '0' is not an integer from 1 to 1000000"},
      {"max_glitches: -1", "limits.max_glitches: '-1' is not an integer from 1 to 1000000"},
      {"max_control_frames: 5",
       "limits.max_control_frames: '5' is not an integer from 10 to 1000000"},
  };
  for (const auto& [entry, message] : cases) {
    const std::string text = fmt::format(
        "\n    proxy:\n      listen: [\"127.0.0.1:15001\"]\n    limits:\n      {}\n", entry);
    EXPECT_EQ(errorOf(text), fmt::format("spindle.yaml:4: {}", message)) << entry;
  }
  EXPECT_EQ(errorOf(R"(
    proxy:
      listen: ["127.0.0.1:15001"]
    limits:
      max_streams: 10
  )"),
            "spindle.yaml:4: unknown key 'max_streams' in limits");
}

}  // namespace spindle::config
