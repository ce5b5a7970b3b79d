// The validated, immutable configuration. Parsed from YAML (a ConfigMap in Kubernetes);
// every error names the file, line and key.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lb/policy.h"
#include "loop/engine.h"
#include "net/address.h"
#include "util/log.h"
#include "util/result.h"

namespace spindle::config {

using Duration = std::chrono::milliseconds;

// The balancing settings are lb/'s own types, named here after their YAML sections.
using Balance = lb::Balance;
using Outlier = lb::OutlierSettings;
using Retries = lb::RetrySettings;

// What apps dial. A literal "ip:port" goes straight into the BPF services map; a "name:port"
// is resolved by DNS to the Service's ClusterIP (the DNS issue fills that in).
struct Intercept {
  std::string text;                           // as written, for messages
  std::optional<net::SocketAddress> literal;  // set when the host is an IP literal
  std::string host;                           // the name, when it is not a literal
  uint16_t port = 0;
};

struct Endpoints {
  std::string dns;                          // headless Service name, or empty
  std::vector<net::SocketAddress> statics;  // "ip:port" list, or empty
};

struct PeakEwma {
  // Time constant of the latency average: a sample's weight falls by 1/e over this time.
  // Read with any balance (the latency estimate is also what /endpoints shows).
  Duration decay{10000};
};

struct Service {
  std::string name;
  std::vector<Intercept> intercept;
  Endpoints endpoints;
  uint16_t port = 0;  // Pod port; defaults to the first intercept's port
  Balance balance = Balance::kLeastRequest;
  Outlier outlier;
  Retries retries;
  PeakEwma peak_ewma;
  // A new endpoint's share of picks ramps up over this time; 0 = off.
  Duration slow_start{0};
};

// How the service is balanced, as lb/ takes it.
lb::ServicePolicy policyOf(const Service& service);

// The most proxy.service_ports may be (the kernel side's service_ports map holds as many).
inline constexpr uint16_t kMaxServicePorts = 1024;

struct Proxy {
  std::vector<net::SocketAddress> listen;  // at most one per family
  unsigned workers = 0;                    // 0 = one per CPU
  // Each service is redirected to a port of its own, the ports after the listen port's: a
  // connection that a sidecar in the Pod re-originates to where it was going still names
  // its service. At most this many services.
  uint16_t service_ports = 64;  // 1..1024
  // Who the proxy process runs as, without any capability (never root): nobody by default.
  uint32_t uid = 65534;
  uint32_t gid = 65534;
  // The I/O engine: io_uring where it runs with everything spindle uses, epoll otherwise (auto).
  loop::EngineSetting io_engine = loop::EngineSetting::kAuto;
};

// The admin pages beyond /metrics, /ready and /healthz: they name services, endpoints and
// settings, which the Pods of other tenants need not learn.
enum class AdminPage : uint8_t { kEndpoints, kConfig, kStatus };

struct Admin {
  // Reachable by every Pod of the node: serves /metrics, /ready, /healthz, and of the other
  // pages only those listed in `pages`.
  std::optional<net::SocketAddress> listen;
  std::vector<AdminPage> pages;
  // Every page on a Unix socket, for `spindle --probe` and operators: in Kubernetes a path
  // in the Pod's own volume, so that its probes reach its own process during a rollout.
  std::string socket;
};

struct Metrics {
  // Calls counted per calling Pod (spindle_source_requests_total{source}). Off by default:
  // the label names which Pods call which services, on a port every Pod can read, and its
  // series grow with the node's Pods.
  bool by_source = false;
  // How long the series of an endpoint that left its service, or of a calling Pod that is
  // gone, are still scraped before they are removed: at least two scrape intervals, so that
  // their last counts are seen. 5 minutes covers scrape intervals up to 2 minutes and is
  // Prometheus' own lookback. Reloadable.
  Duration series_grace{300000};
};

struct Redirect {
  std::string cgroup;  // "" = the cgroup2 mount root
  bool host_netns = false;
  Duration heartbeat_timeout{2000};
  // A bpffs directory where the maps are pinned, so that an old and a new spindle on one node
  // (a rollout) share one view of them; "" = not shared, one spindle per node.
  std::string pin_path = "/sys/fs/bpf/spindle";
};

// Where upstream connections leave from.
struct Upstream {
  enum class Source {
    // The node's own namespace and address, shared by every Pod of the node: fewer
    // connections, but backends, NetworkPolicy and CNI rules see the node, not the caller.
    kNode,
    // The calling Pod's network namespace: the backend sees the Pod's address, and the
    // policies of both sides apply as if the Pod had dialled it. Connections are pooled per
    // (Pod, endpoint).
    kPod,
  };
  // The default: spindle must not change what the network sees.
  Source source = Source::kPod;
  // An upstream connection without streams is closed after this long; 0 = never. In pod
  // mode a Pod that stopped calling lets go of its connections (and namespace) with it.
  Duration idle_timeout{60000};
  // Upstream connections per worker, all endpoints and callers together: at the bound a
  // call that needs a new one fails with UNAVAILABLE, counted.
  uint32_t max_connections = 10000;  // 1..1000000
  bool operator==(const Upstream&) const = default;
};

struct Shutdown {
  // On SIGTERM: how long in-flight calls get to finish after the GOAWAYs went out.
  Duration drain{30000};
};

struct Dns {
  std::vector<net::SocketAddress> servers;  // empty = /etc/resolv.conf
  // Names are re-resolved within their TTL, clamped to [refresh_min, refresh_max].
  Duration refresh_min{1000};
  Duration refresh_max{30000};
  // NXDOMAIN or empty answers in a row before a service's endpoints are dropped.
  uint32_t empty_confirmations = 3;
};

// Bounds that protect the node from a misbehaving HTTP/2 peer, downstream (Pods) and upstream
// (endpoints) alike. Read at start: a reload does not change them.
struct Limits {
  uint32_t max_connections = 10000;  // open downstream connections per worker: 1..1000000
  Duration idle_timeout{300000};     // a connection without streams is closed; 0 = never
  // The client preface and SETTINGS, and each header block once begun, within this time.
  Duration header_timeout{10000};
  Duration send_timeout{30000};  // a send that makes no progress for this long closes
  // Streams the client resets before any response: past this many, and over half of the
  // connection's streams, the connection is closed (CVE-2023-44487).
  uint32_t max_premature_resets = 100;
  // Stream errors the peer provokes (malformed frames or headers): a burst of this many,
  // refilled at a tenth of it per second.
  uint32_t max_glitches = 100;
  // SETTINGS, PING, WINDOW_UPDATE, PRIORITY and empty DATA frames, each: a burst of this
  // many, refilled at a tenth of it per second.
  uint32_t max_control_frames = 1000;
  bool operator==(const Limits&) const = default;
};

// spindle's own log: stderr, one line per event. Reloadable; --log-level on the command line
// takes precedence over `level`.
struct Log {
  log::Level level = log::Level::kInfo;
  log::Format format = log::Format::kText;  // json: one object per line, for log pipelines
};

struct Config {
  Proxy proxy;
  Limits limits;
  Admin admin;
  Metrics metrics;
  Redirect redirect;
  Upstream upstream;
  Dns dns;
  Shutdown shutdown;
  Log log;
  std::vector<Service> services;
};

// Every key the config takes, by the map it is in: "" is the top level, "dns.refresh" a map in
// a map, "services[]" each element of a list. The parser reads this table; /config and the
// reference's test (docs/configuration.md) check against it.
struct KeySection {
  std::string_view section;
  std::vector<std::string_view> keys;
};
const std::vector<KeySection>& knownKeys();

// The id that the BPF services map carries for a service, derived from its name: two spindle
// processes on one node (during a rollout) agree on it whatever their reload history.
uint32_t serviceId(std::string_view name);

// Whether connects to `address` may be redirected for the service `service_id`: a declared
// service, at one of its intercept ports, and one of its literal addresses unless it also
// intercepts a name (names resolve in the proxy: their addresses cannot be checked). The
// privileged part checks what the proxy asks it to put in the services map with this, so that
// a compromised proxy cannot draw connects to any address into itself.
bool mayIntercept(const std::vector<Service>& services, const net::SocketAddress& address,
                  uint32_t service_id);

// The names an enumerated setting takes, in the order the reference lists them: the parser
// reads them (and lists them when a value is none of them), /config writes them.
template <typename Enum>
struct Choice {
  std::string_view name;
  Enum value;
};
inline constexpr Choice<loop::EngineSetting> kIoEngines[] = {
    {"auto", loop::EngineSetting::kAuto},
    {"io_uring", loop::EngineSetting::kIoUring},
    {"epoll", loop::EngineSetting::kEpoll},
};
inline constexpr Choice<AdminPage> kAdminPages[] = {
    {"endpoints", AdminPage::kEndpoints},
    {"config", AdminPage::kConfig},
    {"status", AdminPage::kStatus},
};
inline constexpr Choice<Upstream::Source> kUpstreamSources[] = {
    {"pod", Upstream::Source::kPod},
    {"node", Upstream::Source::kNode},
};
inline constexpr Choice<log::Format> kLogFormats[] = {
    {"text", log::Format::kText},
    {"json", log::Format::kJson},
};

template <typename Enum, size_t N>
constexpr std::string_view choiceName(const Choice<Enum> (&choices)[N], Enum value) {
  for (const Choice<Enum>& choice : choices) {
    if (choice.value == value) return choice.name;
  }
  return "unknown";
}

// Looks up an environment variable for ${NAME} expansion; nullopt when it is not set.
using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;
EnvLookup processEnv();

// `source` names the input in messages ("spindle.yaml"). Errors read
// "spindle.yaml:12: services[0].intercept[1]: 'x' is not host:port".
Result<Config> parse(std::string_view yaml, std::string_view source, const EnvLookup& env);
Result<Config> load(const std::string& path, const EnvLookup& env = processEnv());

}  // namespace spindle::config
