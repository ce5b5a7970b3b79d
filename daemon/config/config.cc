#include "config/config.h"

#include <fmt/core.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <map>
#include <memory>
#include <sstream>
#include <system_error>
#include <utility>

namespace spindle::config {
namespace {

constexpr unsigned kMaxWorkers = 256;
// Far beyond any sensible timeout; only keeps the conversion to milliseconds exact.
constexpr double kMaxDurationMs = 365.0 * 24 * 3600 * 1000;

// Thrown by the parser and caught in parse(); nothing else sees it.
struct ParseError {
  std::string message;
};

// A value being parsed: the node, the line to blame, and its key path ("services[0].port").
struct Item {
  YAML::Node node;
  int line = 1;
  std::string path;
};

int lineOf(const YAML::Node& node, int fallback) {
  const YAML::Mark mark = node.Mark();
  return mark.is_null() ? fallback : mark.line + 1;
}

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Scalar: return fmt::format("'{}'", node.Scalar());
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: break;
  }
  return "nothing";
}

std::string child(std::string_view path, std::string_view key) {
  return path.empty() ? std::string(key) : fmt::format("{}.{}", path, key);
}

bool isAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool isEnvName(std::string_view name) {
  if (name.empty() || (name.front() >= '0' && name.front() <= '9')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return isAlnum(c) || c == '_'; });
}

}  // namespace

uint32_t serviceId(std::string_view name) {
  uint32_t hash = 2166136261u;  // FNV-1a
  for (char c : name) hash = (hash ^ static_cast<uint8_t>(c)) * 16777619u;
  return hash == 0 ? 1 : hash;  // 0 is "no service"
}

bool mayIntercept(const std::vector<Service>& services, const net::SocketAddress& address,
                  uint32_t service_id) {
  for (const Service& service : services) {
    if (serviceId(service.name) != service_id) continue;
    bool any_name = false;
    for (const Intercept& intercept : service.intercept) {
      if (intercept.port != address.port()) continue;
      if (!intercept.literal) any_name = true;
      if (intercept.literal && *intercept.literal == address) return true;
    }
    return any_name;
  }
  return false;
}

namespace {

// A Kubernetes-style DNS label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters.
bool isServiceName(std::string_view name) {
  if (name.empty() || name.size() > 63 || name.front() == '-' || name.back() == '-') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

// A host name (RFC 1123), optionally with the trailing root dot. The last label must not be
// all digits, so a mistyped IPv4 address ("10.0.0.300") is not taken for a name.
bool isDnsName(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty() || name.size() > 253) return false;
  bool all_digits = true;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('.', start);
    if (end == std::string_view::npos) end = name.size();
    std::string_view label = name.substr(start, end - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    all_digits = true;
    for (char c : label) {
      if (!isAlnum(c) && c != '-') return false;
      if (c < '0' || c > '9') all_digits = false;
    }
    start = end + 1;
  }
  return !all_digits;
}

// The key that two spellings of one intercept share: DNS names are case-insensitive.
std::string interceptKey(const Intercept& intercept) {
  if (intercept.literal) return intercept.literal->toString();
  std::string host = intercept.host;
  if (!host.empty() && host.back() == '.') host.pop_back();
  std::transform(host.begin(), host.end(), host.begin(), [](char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  });
  return fmt::format("{}:{}", host, intercept.port);
}

}  // namespace

const std::vector<KeySection>& knownKeys() {
  static const std::vector<KeySection> kKeys = {
      {"",
       {"proxy", "admin", "metrics", "redirect", "upstream", "dns", "services", "shutdown",
        "limits", "log"}},
      {"proxy", {"listen", "workers", "service_ports", "uid", "gid", "io_engine"}},
      {"admin", {"listen", "pages", "socket"}},
      {"metrics", {"by_source", "series_grace"}},
      {"redirect", {"cgroup", "host_netns", "heartbeat_timeout", "pin_path"}},
      {"upstream", {"source", "idle_timeout", "max_connections"}},
      {"dns", {"servers", "refresh", "empty_confirmations"}},
      {"dns.refresh", {"min", "max"}},
      {"shutdown", {"drain"}},
      {"limits",
       {"max_connections", "idle_timeout", "header_timeout", "send_timeout", "max_premature_resets",
        "max_glitches", "max_control_frames"}},
      {"log", {"level", "format"}},
      {"services[]",
       {"name", "intercept", "endpoints", "port", "balance", "outlier", "retries", "peak_ewma",
        "slow_start"}},
      {"services[].endpoints", {"dns", "static"}},
      {"services[].outlier",
       {"consecutive_failures", "base_ejection", "max_ejection", "max_ejected_percent"}},
      {"services[].retries", {"max", "budget_percent"}},
      {"services[].peak_ewma", {"decay"}},
  };
  return kKeys;
}

namespace {

const std::vector<std::string_view>& keysOf(std::string_view section) {
  for (const KeySection& entry : knownKeys()) {
    if (entry.section == section) return entry.keys;
  }
  std::abort();  // a section the table lacks: a programming error
}

class Parser {
 public:
  Parser(std::string_view source, const EnvLookup& env) : source_(source), env_(env) {}

  Config parseDocument(const YAML::Node& root) {
    if (!root.IsMap()) fail(lineOf(root, 1), "expected a map at the top level");
    Item top{root, lineOf(root, 1), ""};
    auto fields = readMap(top, "");

    Config config;
    auto proxy = fields.find("proxy");
    if (proxy == fields.end()) fail(top.line, "missing required key 'proxy'");
    config.proxy = parseProxy(proxy->second);
    if (auto it = fields.find("admin"); it != fields.end()) config.admin = parseAdmin(it->second);
    if (auto it = fields.find("metrics"); it != fields.end()) {
      config.metrics = parseMetrics(it->second);
    }
    if (auto it = fields.find("redirect"); it != fields.end()) {
      config.redirect = parseRedirect(it->second);
    }
    if (auto it = fields.find("upstream"); it != fields.end()) {
      config.upstream = parseUpstream(it->second);
    }
    if (auto it = fields.find("dns"); it != fields.end()) config.dns = parseDns(it->second);
    if (auto it = fields.find("services"); it != fields.end()) {
      config.services = parseServices(it->second);
      if (config.services.size() > config.proxy.service_ports) {
        fail(it->second, fmt::format("{} services, but proxy.service_ports gives ports for {}",
                                     config.services.size(), config.proxy.service_ports));
      }
    }
    if (auto it = fields.find("shutdown"); it != fields.end()) {
      config.shutdown = parseShutdown(it->second);
    }
    if (auto it = fields.find("limits"); it != fields.end())
      config.limits = parseLimits(it->second);
    if (auto it = fields.find("log"); it != fields.end()) config.log = parseLog(it->second);
    return config;
  }

  [[noreturn]] void fail(int line, std::string_view what) const {
    throw ParseError{fmt::format("{}:{}: {}", source_, line, what)};
  }
  [[noreturn]] void fail(const Item& item, std::string_view what) const {
    if (item.path.empty()) fail(item.line, what);
    fail(item.line, fmt::format("{}: {}", item.path, what));
  }

 private:
  using Fields = std::map<std::string, Item, std::less<>>;

  // The entries of a map section, refusing unknown and repeated keys. A section written with
  // no value ("admin:") reads as an empty map.
  // `section` names the map in knownKeys().
  Fields readMap(const Item& item, std::string_view section) const {
    const std::vector<std::string_view>& known = keysOf(section);
    Fields fields;
    if (item.node.IsNull()) return fields;
    if (!item.node.IsMap()) fail(item, fmt::format("expected a map, got {}", describe(item.node)));
    for (const auto& entry : item.node) {
      const int key_line = lineOf(entry.first, item.line);
      if (!entry.first.IsScalar()) {
        fail(key_line, fmt::format("{}: keys must be plain words, got {}", where(item),
                                   describe(entry.first)));
      }
      const std::string& key = entry.first.Scalar();
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        fail(key_line, fmt::format("unknown key '{}' {}", key, inWhere(item)));
      }
      if (auto seen = fields.find(key); seen != fields.end()) {
        fail(key_line, fmt::format("key '{}' repeated {} (first at line {})", key, inWhere(item),
                                   seen->second.line));
      }
      // A key with no value has its mark on the next token; blame the key's line instead.
      const int value_line = entry.second.IsNull() ? key_line : lineOf(entry.second, key_line);
      fields.emplace(key, Item{entry.second, value_line, child(item.path, key)});
    }
    return fields;
  }

  static std::string where(const Item& item) { return item.path.empty() ? "top level" : item.path; }
  static std::string inWhere(const Item& item) {
    return item.path.empty() ? "at the top level" : fmt::format("in {}", item.path);
  }

  // The elements of a list, or of a single scalar written in its place when `single_ok`.
  std::vector<Item> readList(const Item& item, bool single_ok) const {
    std::vector<Item> items;
    if (item.node.IsNull()) return items;
    if (single_ok && item.node.IsScalar()) {
      items.push_back(item);
      return items;
    }
    if (!item.node.IsSequence()) {
      fail(item, fmt::format("expected {}, got {}", single_ok ? "a string or a list" : "a list",
                             describe(item.node)));
    }
    size_t index = 0;
    for (const auto& element : item.node) {
      const int line = element.IsNull() ? item.line : lineOf(element, item.line);
      items.push_back(Item{element, line, fmt::format("{}[{}]", item.path, index++)});
    }
    return items;
  }

  // A scalar with ${NAME} expanded.
  std::string string(const Item& item, std::string_view expected = "a string") const {
    if (!item.node.IsScalar()) {
      fail(item, fmt::format("expected {}, got {}", expected, describe(item.node)));
    }
    const std::string& in = item.node.Scalar();
    std::string out;
    size_t pos = 0;
    while (pos < in.size()) {
      const size_t open = in.find("${", pos);
      if (open == std::string::npos) {
        out.append(in, pos);
        break;
      }
      out.append(in, pos, open - pos);
      const size_t close = in.find('}', open + 2);
      if (close == std::string::npos) fail(item, fmt::format("'{}': unterminated '${{'", in));
      const std::string_view name(in.data() + open + 2, close - open - 2);
      if (!isEnvName(name)) {
        fail(item, fmt::format("'{}': '{}' is not an environment variable name", in, name));
      }
      std::optional<std::string> value;
      if (env_) value = env_(name);
      if (!value) fail(item, fmt::format("environment variable {} is not set", name));
      out += *value;
      pos = close + 1;
    }
    return out;
  }

  uint64_t integer(const Item& item, uint64_t min, uint64_t max) const {
    const std::string text = string(item, "an integer");
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < min ||
        value > max) {
      fail(item, fmt::format("'{}' is not an integer from {} to {}", text, min, max));
    }
    return value;
  }

  bool boolean(const Item& item) const {
    const std::string text = string(item, "true or false");
    if (text == "true" || text == "True" || text == "TRUE") return true;
    if (text == "false" || text == "False" || text == "FALSE") return false;
    fail(item, fmt::format("'{}' is not true or false", text));
  }

  // "500ms", "2s", "1.5s", "1m", "1h". A bare number is refused: seconds or milliseconds?
  // `zero_ok` lets "0s" mean "off" for settings that can be turned off.
  Duration duration(const Item& item, bool zero_ok = false) const {
    const std::string text = string(item, "a duration");
    size_t split = 0;
    while (split < text.size() &&
           ((text[split] >= '0' && text[split] <= '9') || text[split] == '.')) {
      ++split;
    }
    const std::string_view number(text.data(), split);
    const std::string_view unit(text.data() + split, text.size() - split);
    if (!text.empty() && text.front() == '-') {
      fail(item, fmt::format("'{}': a duration must be {}", text,
                             zero_ok ? "zero or more" : "greater than zero"));
    }
    if (number.empty()) {
      fail(item, fmt::format("'{}' is not a duration like 500ms, 2s or 1m", text));
    }
    if (unit.empty()) {
      fail(item, fmt::format("'{}' needs a unit: ms, s, m or h", text));
    }
    double unit_ms = 0;
    if (unit == "ms") {
      unit_ms = 1;
    } else if (unit == "s") {
      unit_ms = 1000;
    } else if (unit == "m") {
      unit_ms = 60'000;
    } else if (unit == "h") {
      unit_ms = 3'600'000;
    } else {
      fail(item, fmt::format("'{}': unknown unit '{}', use ms, s, m or h", text, unit));
    }
    double value = 0;
    auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
    if (ec != std::errc() || end != number.data() + number.size()) {
      fail(item, fmt::format("'{}' is not a duration like 500ms, 2s or 1m", text));
    }
    const double ms = value * unit_ms;
    if (ms == 0 && zero_ok) return Duration(0);
    if (ms <= 0) fail(item, fmt::format("'{}': a duration must be greater than zero", text));
    if (ms < 1) fail(item, fmt::format("'{}' is shorter than 1ms", text));
    if (ms > kMaxDurationMs) fail(item, fmt::format("'{}' is longer than a year", text));
    return Duration(static_cast<Duration::rep>(std::llround(ms)));
  }

  net::SocketAddress address(const Item& item) const {
    const std::string text = string(item, "an address");
    auto parsed = net::SocketAddress::parse(text);
    if (!parsed) fail(item, parsed.error());
    return *parsed;
  }

  Proxy parseProxy(const Item& item) const {
    auto fields = readMap(item, "proxy");
    Proxy proxy;
    auto listen = fields.find("listen");
    if (listen == fields.end()) fail(item, "missing required key 'listen'");
    bool have_v4 = false;
    bool have_v6 = false;
    for (const Item& entry : readList(listen->second, true)) {
      net::SocketAddress addr = address(entry);
      bool& have = addr.isV4() ? have_v4 : have_v6;
      if (have) {
        fail(entry, fmt::format("'{}' is a second {} address; give at most one per family",
                                addr.toString(), addr.isV4() ? "IPv4" : "IPv6"));
      }
      have = true;
      proxy.listen.push_back(addr);
    }
    if (proxy.listen.empty()) fail(listen->second, "give at least one address");
    if (auto it = fields.find("workers"); it != fields.end()) {
      proxy.workers = static_cast<unsigned>(integer(it->second, 0, kMaxWorkers));
    }
    if (auto it = fields.find("service_ports"); it != fields.end()) {
      proxy.service_ports = static_cast<uint16_t>(integer(it->second, 1, kMaxServicePorts));
    }
    // The proxy parses every Pod's bytes: it never runs as root.
    if (auto it = fields.find("uid"); it != fields.end()) {
      proxy.uid = static_cast<uint32_t>(integer(it->second, 1, 0xfffffffe));
    }
    if (auto it = fields.find("gid"); it != fields.end()) {
      proxy.gid = static_cast<uint32_t>(integer(it->second, 1, 0xfffffffe));
    }
    if (auto it = fields.find("io_engine"); it != fields.end()) {
      proxy.io_engine = choice(it->second, kIoEngines);
    }
    const uint16_t port = proxy.listen.front().port();
    if (port + proxy.service_ports > 65535) {
      fail(listen->second,
           fmt::format("port {} leaves no room for the {} service ports after it (service_ports)",
                       port, proxy.service_ports));
    }
    return proxy;
  }

  Admin parseAdmin(const Item& item) const {
    auto fields = readMap(item, "admin");
    Admin admin;
    if (auto it = fields.find("listen"); it != fields.end()) admin.listen = address(it->second);
    if (auto it = fields.find("pages"); it != fields.end()) {
      for (const Item& entry : readList(it->second, false)) {
        const AdminPage page =
            choice(entry, kAdminPages, " (/metrics, /ready and /healthz are always served)");
        if (std::find(admin.pages.begin(), admin.pages.end(), page) == admin.pages.end()) {
          admin.pages.push_back(page);
        }
      }
    }
    if (auto it = fields.find("socket"); it != fields.end()) {
      admin.socket = string(it->second);
      if (!admin.socket.empty() && admin.socket.front() != '/') {
        fail(it->second, fmt::format("'{}' is not an absolute path", admin.socket));
      }
    }
    return admin;
  }

  Log parseLog(const Item& item) const {
    auto fields = readMap(item, "log");
    Log out;
    if (auto it = fields.find("level"); it != fields.end()) {
      const std::string text = string(it->second);
      auto level = log::parseLevel(text);
      if (!level)
        fail(it->second, fmt::format("'{}' is not one of debug, info, warn, error", text));
      out.level = *level;
    }
    if (auto it = fields.find("format"); it != fields.end()) {
      out.format = choice(it->second, kLogFormats);
    }
    return out;
  }

  Metrics parseMetrics(const Item& item) const {
    auto fields = readMap(item, "metrics");
    Metrics metrics;
    if (auto it = fields.find("by_source"); it != fields.end()) {
      metrics.by_source = boolean(it->second);
    }
    if (auto it = fields.find("series_grace"); it != fields.end()) {
      metrics.series_grace = duration(it->second);
      // Shorter, and a series could leave between two scrapes with counts never seen.
      if (metrics.series_grace < Duration(10000)) {
        fail(it->second, fmt::format("'{}' is shorter than 10s; give at least two scrape "
                                     "intervals",
                                     string(it->second)));
      }
    }
    return metrics;
  }

  Redirect parseRedirect(const Item& item) const {
    auto fields = readMap(item, "redirect");
    Redirect redirect;
    if (auto it = fields.find("cgroup"); it != fields.end()) redirect.cgroup = string(it->second);
    if (auto it = fields.find("host_netns"); it != fields.end()) {
      redirect.host_netns = boolean(it->second);
    }
    if (auto it = fields.find("heartbeat_timeout"); it != fields.end()) {
      redirect.heartbeat_timeout = duration(it->second);
    }
    if (auto it = fields.find("pin_path"); it != fields.end()) {
      redirect.pin_path = string(it->second);
      if (!redirect.pin_path.empty() && redirect.pin_path.front() != '/') {
        fail(it->second, fmt::format("'{}' is not an absolute path", redirect.pin_path));
      }
    }
    return redirect;
  }

  Dns parseDns(const Item& item) const {
    auto fields = readMap(item, "dns");
    Dns dns;
    if (auto it = fields.find("servers"); it != fields.end()) {
      for (const Item& entry : readList(it->second, false)) {
        // A bare IP means the standard port.
        const std::string text = string(entry, "an address");
        auto bare = net::SocketAddress::parseIp(text, 53);
        if (bare) {
          dns.servers.push_back(*bare);
        } else {
          dns.servers.push_back(address(entry));
        }
      }
    }
    if (auto it = fields.find("refresh"); it != fields.end()) {
      auto refresh = readMap(it->second, "dns.refresh");
      if (auto min = refresh.find("min"); min != refresh.end()) {
        dns.refresh_min = duration(min->second);
      }
      if (auto max = refresh.find("max"); max != refresh.end()) {
        dns.refresh_max = duration(max->second);
      }
      if (dns.refresh_min > dns.refresh_max) fail(it->second, "min is above max");
    }
    if (auto it = fields.find("empty_confirmations"); it != fields.end()) {
      dns.empty_confirmations = static_cast<uint32_t>(integer(it->second, 1, 1000));
    }
    return dns;
  }

  Upstream parseUpstream(const Item& item) const {
    auto fields = readMap(item, "upstream");
    Upstream upstream;
    if (auto it = fields.find("idle_timeout"); it != fields.end()) {
      upstream.idle_timeout = duration(it->second, true);
    }
    if (auto it = fields.find("max_connections"); it != fields.end()) {
      upstream.max_connections = static_cast<uint32_t>(integer(it->second, 1, 1000000));
    }
    if (auto it = fields.find("source"); it != fields.end()) {
      upstream.source = choice(it->second, kUpstreamSources);
    }
    return upstream;
  }

  Shutdown parseShutdown(const Item& item) const {
    auto fields = readMap(item, "shutdown");
    Shutdown shutdown;
    if (auto it = fields.find("drain"); it != fields.end())
      shutdown.drain = duration(it->second, true);
    return shutdown;
  }

  Limits parseLimits(const Item& item) const {
    auto fields = readMap(item, "limits");
    Limits limits;
    if (auto it = fields.find("max_connections"); it != fields.end()) {
      limits.max_connections = static_cast<uint32_t>(integer(it->second, 1, 1000000));
    }
    if (auto it = fields.find("idle_timeout"); it != fields.end()) {
      limits.idle_timeout = duration(it->second, true);
    }
    if (auto it = fields.find("header_timeout"); it != fields.end()) {
      limits.header_timeout = duration(it->second);
    }
    if (auto it = fields.find("send_timeout"); it != fields.end()) {
      limits.send_timeout = duration(it->second);
    }
    if (auto it = fields.find("max_premature_resets"); it != fields.end()) {
      limits.max_premature_resets = static_cast<uint32_t>(integer(it->second, 1, 1000000));
    }
    if (auto it = fields.find("max_glitches"); it != fields.end()) {
      limits.max_glitches = static_cast<uint32_t>(integer(it->second, 1, 1000000));
    }
    if (auto it = fields.find("max_control_frames"); it != fields.end()) {
      limits.max_control_frames = static_cast<uint32_t>(integer(it->second, 10, 1000000));
    }
    return limits;
  }

  Intercept intercept(const Item& item) const {
    Intercept out;
    out.text = string(item, "an address");
    auto split = net::splitHostPort(out.text);
    if (!split) fail(item, split.error());
    out.port = split->port;
    if (!out.text.empty() && out.text.front() == '[') {
      // Brackets promise an IPv6 literal.
      auto literal = net::SocketAddress::parse(out.text);
      if (!literal) fail(item, literal.error());
      out.literal = *literal;
    } else if (auto literal = net::SocketAddress::parseIp(split->host, split->port)) {
      out.literal = *literal;
    } else if (isDnsName(split->host)) {
      out.host = split->host;
    } else {
      fail(item, fmt::format("'{}': '{}' is neither an IP address nor a DNS name", out.text,
                             split->host));
    }
    return out;
  }

  Endpoints endpoints(const Item& item) const {
    auto fields = readMap(item, "services[].endpoints");
    auto dns = fields.find("dns");
    auto statics = fields.find("static");
    if ((dns == fields.end()) == (statics == fields.end())) {
      fail(item, "give exactly one of 'dns' or 'static'");
    }
    Endpoints out;
    if (dns != fields.end()) {
      out.dns = string(dns->second, "a DNS name");
      if (!isDnsName(out.dns)) fail(dns->second, fmt::format("'{}' is not a DNS name", out.dns));
    } else {
      for (const Item& entry : readList(statics->second, false)) {
        out.statics.push_back(address(entry));
      }
      if (out.statics.empty()) fail(statics->second, "give at least one address");
    }
    return out;
  }

  // One of a setting's names (config.h); `note` follows the list in the error.
  template <typename Enum, size_t N>
  Enum choice(const Item& item, const Choice<Enum> (&choices)[N],
              std::string_view note = {}) const {
    const std::string text = string(item);
    std::string names;
    for (const Choice<Enum>& c : choices) {
      if (text == c.name) return c.value;
      names += names.empty() ? "" : ", ";
      names += c.name;
    }
    fail(item, fmt::format("'{}' is not one of {}{}", text, names, note));
  }

  Balance balance(const Item& item) const {
    const std::string text = string(item);
    for (Balance b :
         {Balance::kRoundRobin, Balance::kLeastRequest, Balance::kPeakEwma, Balance::kRandom}) {
      if (text == lb::balanceName(b)) return b;
    }
    fail(item,
         fmt::format("'{}' is not one of round_robin, least_request, peak_ewma, random", text));
  }

  std::vector<Service> parseServices(const Item& item) const {
    struct Claim {
      std::string service;
      int line;
    };
    std::map<std::string, Claim> claims;  // intercept key -> who claimed it
    std::map<std::string, int> names;     // service name -> line
    std::map<uint32_t, std::string> ids;  // serviceId -> service name
    std::vector<Service> services;
    for (const Item& entry : readList(item, false)) {
      if (!entry.node.IsMap()) {
        fail(entry, fmt::format("expected a map, got {}", describe(entry.node)));
      }
      auto fields = readMap(entry, "services[]");
      for (std::string_view key : {"name", "intercept", "endpoints"}) {
        if (fields.find(key) == fields.end()) {
          fail(entry, fmt::format("missing required key '{}'", key));
        }
      }
      Service service;
      const Item& name = fields.at("name");
      service.name = string(name);
      if (!isServiceName(service.name)) {
        fail(name, fmt::format("'{}' is not a valid name: lowercase letters, digits and '-', "
                               "starting and ending with a letter or digit, at most 63",
                               service.name));
      }
      if (auto [seen, fresh] = names.emplace(service.name, name.line); !fresh) {
        fail(name, fmt::format("service name '{}' is already used at line {}", service.name,
                               seen->second));
      }
      if (auto [other, fresh] = ids.emplace(serviceId(service.name), service.name); !fresh) {
        fail(name, fmt::format("service names '{}' and '{}' have the same id; rename one",
                               other->second, service.name));
      }

      for (const Item& target : readList(fields.at("intercept"), true)) {
        Intercept parsed = intercept(target);
        auto [claim, fresh] =
            claims.emplace(interceptKey(parsed), Claim{service.name, target.line});
        if (!fresh) {
          fail(target, fmt::format("'{}' is already claimed by service '{}' at line {}",
                                   parsed.text, claim->second.service, claim->second.line));
        }
        service.intercept.push_back(std::move(parsed));
      }
      if (service.intercept.empty()) fail(fields.at("intercept"), "give at least one address");

      service.endpoints = endpoints(fields.at("endpoints"));
      service.port = service.intercept.front().port;
      if (auto it = fields.find("port"); it != fields.end()) {
        service.port = static_cast<uint16_t>(integer(it->second, 1, 65535));
      }
      if (auto it = fields.find("balance"); it != fields.end()) {
        service.balance = balance(it->second);
      }
      if (auto it = fields.find("outlier"); it != fields.end()) {
        service.outlier = outlier(it->second);
      }
      if (auto it = fields.find("retries"); it != fields.end()) {
        service.retries = retries(it->second);
      }
      if (auto it = fields.find("peak_ewma"); it != fields.end()) {
        service.peak_ewma = peakEwma(it->second);
      }
      if (auto it = fields.find("slow_start"); it != fields.end()) {
        service.slow_start = duration(it->second, /*zero_ok=*/true);
      }
      services.push_back(std::move(service));
    }
    return services;
  }

  Outlier outlier(const Item& item) const {
    auto fields = readMap(item, "services[].outlier");
    Outlier out;
    if (auto it = fields.find("consecutive_failures"); it != fields.end()) {
      out.consecutive_failures = static_cast<uint32_t>(integer(it->second, 1, 1000));
    }
    if (auto it = fields.find("base_ejection"); it != fields.end()) {
      out.base_ejection = duration(it->second);
    }
    if (auto it = fields.find("max_ejection"); it != fields.end()) {
      out.max_ejection = duration(it->second);
    }
    if (auto it = fields.find("max_ejected_percent"); it != fields.end()) {
      out.max_ejected_percent = static_cast<uint32_t>(integer(it->second, 0, 100));
    }
    // Either may be left at its default, so the pair is checked whichever was written.
    if (out.base_ejection > out.max_ejection) {
      fail(item, "base_ejection is above max_ejection");
    }
    return out;
  }

  Retries retries(const Item& item) const {
    auto fields = readMap(item, "services[].retries");
    Retries out;
    if (auto it = fields.find("max"); it != fields.end()) {
      out.max = static_cast<uint32_t>(integer(it->second, 1, 10));
    }
    if (auto it = fields.find("budget_percent"); it != fields.end()) {
      out.budget_percent = static_cast<uint32_t>(integer(it->second, 0, 100));
    }
    return out;
  }

  PeakEwma peakEwma(const Item& item) const {
    auto fields = readMap(item, "services[].peak_ewma");
    PeakEwma out;
    if (auto it = fields.find("decay"); it != fields.end()) out.decay = duration(it->second);
    return out;
  }

  std::string_view source_;
  const EnvLookup& env_;
};

}  // namespace

lb::ServicePolicy policyOf(const Service& service) {
  lb::ServicePolicy policy;
  policy.balance = service.balance;
  policy.picker.decay = service.peak_ewma.decay;
  policy.picker.slow_start = service.slow_start;
  policy.outlier = service.outlier;
  policy.retries = service.retries;
  return policy;
}

EnvLookup processEnv() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* value = std::getenv(std::string(name).c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

// yaml-cpp 0.7's LoadAll never returns on some malformed input (a stray ',' is enough: its
// parser stops taking tokens and yields empty documents forever, each one kept in memory).
// Walk the documents first without building them; a real stream has at most one per byte.
bool documentsEnd(const std::string& text) {
  struct Ignore final : YAML::EventHandler {
    void OnDocumentStart(const YAML::Mark&) override {}
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
  } ignore;
  std::istringstream in(text);
  YAML::Parser parser(in);
  for (size_t docs = 0; docs <= text.size() + 1; ++docs) {
    if (!parser.HandleNextDocument(ignore)) return true;
  }
  return false;
}

Result<Config> parse(std::string_view yaml, std::string_view source, const EnvLookup& env) {
  Parser parser(source, env);
  try {
    const std::string text(yaml);
    if (!documentsEnd(text)) parser.fail(1, "invalid YAML: the parser made no progress");
    std::vector<YAML::Node> docs = YAML::LoadAll(text);
    // "---" at the end of a file makes an empty second document; only content counts.
    std::erase_if(docs, [](const YAML::Node& doc) { return doc.IsNull(); });
    if (docs.empty()) parser.fail(1, "expected a map at the top level");
    if (docs.size() > 1) parser.fail(lineOf(docs[1], 1), "expected one YAML document, found more");
    return parser.parseDocument(docs.front());
  } catch (const ParseError& e) {
    return makeError(e.message);
  } catch (const YAML::Exception& e) {
    return makeError(fmt::format("{}:{}: invalid YAML: {}", source,
                                 e.mark.is_null() ? 1 : e.mark.line + 1, e.msg));
  }
}

Result<Config> load(const std::string& path, const EnvLookup& env) {
  struct FileCloser {
    void operator()(std::FILE* file) const { std::fclose(file); }
  };
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  auto cannotRead = [&path] {
    return makeError(
        fmt::format("cannot read {}: {}", path, std::generic_category().message(errno)));
  };
  if (!file) return cannotRead();
  std::string text;
  char buffer[8192];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file.get())) > 0) text.append(buffer, n);
  if (std::ferror(file.get())) return cannotRead();
  return parse(text, path, env);
}

}  // namespace spindle::config
