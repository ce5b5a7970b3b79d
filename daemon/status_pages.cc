#include "status_pages.h"

#include <fmt/core.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "admin/process_metrics.h"
#include "config/config_json.h"
#include "lb/health.h"
#include "metrics/text_format.h"
#include "util/version.h"

namespace spindle {
namespace {

using admin::HttpRequest;
using admin::HttpResponse;

// A worker whose loop has not gone round for this long is stuck: its loop wakes at least once
// a second.
constexpr auto kStuckAfter = std::chrono::seconds(5);

std::string jsonString(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string htmlEscape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// One series line: name{a="x",b="y"} value
void appendSeries(std::string& out, std::string_view name,
                  std::initializer_list<std::pair<std::string_view, std::string_view>> labels,
                  double value) {
  out += name;
  if (labels.size() > 0) {
    out += '{';
    bool first = true;
    for (const auto& [key, label_value] : labels) {
      if (!first) out += ',';
      first = false;
      out += key;
      out += "=\"";
      metrics::appendEscapedLabelValue(out, label_value);
      out += '"';
    }
    out += '}';
  }
  out += ' ';
  out += metrics::formatValue(value);
  out += '\n';
}

const char* endpointState(const lb::EndpointLoad& load, lb::TimePoint now) {
  return lb::isEjected(load, now) ? "ejected" : "healthy";
}

// Why /ready answers 503, or nullopt when spindle is ready: the programs attached and every
// service's DNS name answered once.
std::optional<std::string> notReadyReason(const Daemon& d) {
  if (!d.attached()) return "BPF not attached";
  std::string pending;
  if (d.discovery() != nullptr && !d.discovery()->allResolved(&pending)) {
    return fmt::format("DNS has not answered for {}", pending);
  }
  return std::nullopt;
}

// The metrics whose values live elsewhere than in the shards: the kernel's redirect
// counters, the endpoints' shared load, DNS state, the build.
std::string renderLiveMetrics(const Daemon& d) {
  std::string out;
  metrics::appendHeader(out, "spindle_redirects_total",
                        "Connects seen by the BPF programs, by what was done with them.",
                        "counter");
  const privileged::RedirectState state = d.redirectState();
  for (int reason = 0; reason < SPINDLE_REASON_COUNT; ++reason) {
    appendSeries(out, "spindle_redirects_total", {{"reason", redirect::reasonName(reason)}},
                 static_cast<double>(state.counters[reason]));
  }
  metrics::appendHeader(out, "spindle_redirect_records",
                        "Records of redirected connections that spindle has not accepted yet, or "
                        "that a sidecar in the Pod holds; at 65536, connects go direct (map_full).",
                        "gauge");
  appendSeries(out, "spindle_redirect_records", {}, static_cast<double>(state.records));

  const auto table = d.services().table();
  const auto now = lb::Clock::now();
  metrics::appendHeader(out, "spindle_active_streams", "Calls in flight, by endpoint.", "gauge");
  for (const lb::ServiceEntry& service : *table) {
    for (const lb::Endpoint& e : service.endpoints->endpoints()) {
      appendSeries(out, "spindle_active_streams",
                   {{"service", service.name}, {"endpoint", e.load->label}},
                   e.load->active_streams.load(std::memory_order_relaxed));
    }
  }
  metrics::appendHeader(out, "spindle_upstream_connections_active",
                        "Open HTTP/2 connections to endpoints, all workers.", "gauge");
  for (const lb::ServiceEntry& service : *table) {
    for (const lb::Endpoint& e : service.endpoints->endpoints()) {
      appendSeries(out, "spindle_upstream_connections_active",
                   {{"service", service.name}, {"endpoint", e.load->label}},
                   e.load->upstream_connections.load(std::memory_order_relaxed));
    }
  }
  metrics::appendHeader(out, "spindle_endpoints", "Endpoints of each service, by state.", "gauge");
  for (const lb::ServiceEntry& service : *table) {
    size_t ejected = 0;
    for (const lb::Endpoint& e : service.endpoints->endpoints()) {
      if (lb::isEjected(*e.load, now)) ++ejected;
    }
    appendSeries(out, "spindle_endpoints", {{"service", service.name}, {"state", "healthy"}},
                 static_cast<double>(service.endpoints->size() - ejected));
    appendSeries(out, "spindle_endpoints", {{"service", service.name}, {"state", "ejected"}},
                 static_cast<double>(ejected));
  }
  if (d.discovery() != nullptr) {
    // Services whose DNS name has answered; each family's series go together.
    std::vector<std::pair<std::string_view, dns::Discovery::Freshness>> answered;
    for (const config::Service& service : d.config().services) {
      if (service.endpoints.dns.empty()) continue;
      if (auto fresh = d.discovery()->freshness(service.endpoints.dns)) {
        answered.emplace_back(service.name, *fresh);
      }
    }
    metrics::appendHeader(out, "spindle_dns_staleness_seconds",
                          "Seconds since the service's endpoints name last had a good answer.",
                          "gauge");
    for (const auto& [service, fresh] : answered) {
      appendSeries(out, "spindle_dns_staleness_seconds", {{"service", service}},
                   static_cast<double>(fresh.age.count()));
    }
    metrics::appendHeader(out, "spindle_dns_ttl_seconds",
                          "How long the last good answer holds: its TTL within dns.refresh's "
                          "bounds, when spindle asks again.",
                          "gauge");
    for (const auto& [service, fresh] : answered) {
      appendSeries(out, "spindle_dns_ttl_seconds", {{"service", service}},
                   std::chrono::duration<double>(fresh.ttl).count());
    }
  }
  metrics::appendHeader(out, "spindle_ready",
                        "1 when /ready answers 200: the programs attached and every service's "
                        "DNS name answered.",
                        "gauge");
  appendSeries(out, "spindle_ready", {}, notReadyReason(d) ? 0 : 1);
  metrics::appendHeader(out, "spindle_io_engine", "The I/O engine the proxy runs on.", "gauge");
  appendSeries(out, "spindle_io_engine", {{"engine", loop::engineName(d.ioEngine().engine)}}, 1);
  metrics::appendHeader(out, "spindle_build_info",
                        "The running spindle's version and the commit it was built from.", "gauge");
  appendSeries(out, "spindle_build_info", {{"version", version()}, {"revision", revision()}}, 1);
  out += admin::renderProcessMetrics();
  out += admin::renderPrivilegedMetrics(d.privilegedPid());
  return out;
}

HttpResponse metricsPage(const Daemon& d) {
  std::vector<const metrics::Shard*> shards{&d.mainShard()};
  for (const auto& worker : d.workers()) shards.push_back(&worker->shard());
  HttpResponse response;
  response.content_type = std::string(metrics::kContentType);
  response.body = metrics::render(d.metricRegistry(), shards) + renderLiveMetrics(d);
  return response;
}

// Ready once the programs are attached, the workers run and every DNS name has answered.
HttpResponse readyPage(const Daemon& d) {
  if (auto why = notReadyReason(d)) {
    return {503, "text/plain; charset=utf-8", fmt::format("not ready: {}\n", *why)};
  }
  return {200, "text/plain; charset=utf-8", "ready\n"};
}

HttpResponse healthPage(const Daemon& d) {
  const auto now = std::chrono::steady_clock::now();
  for (size_t i = 0; i < d.workers().size(); ++i) {
    if (now - d.workers()[i]->lastBeat() > kStuckAfter) {
      return {503, "text/plain; charset=utf-8", fmt::format("worker {} is stuck\n", i)};
    }
  }
  return {200, "text/plain; charset=utf-8", "ok\n"};
}

HttpResponse endpointsPage(const Daemon& d) {
  const auto now = lb::Clock::now();
  std::string out = "{\"services\":[";
  bool first_service = true;
  for (const lb::ServiceEntry& service : *d.services().table()) {
    if (!first_service) out += ',';
    first_service = false;
    out += fmt::format("{{\"name\":{},\"balance\":{},\"endpoints\":[", jsonString(service.name),
                       jsonString(lb::balanceName(service.policy.balance)));
    bool first = true;
    for (const lb::Endpoint& e : service.endpoints->endpoints()) {
      if (!first) out += ',';
      first = false;
      out += fmt::format(
          "{{\"address\":{},\"state\":\"{}\",\"active_streams\":{},\"calls\":{},"
          "\"latency_ewma_ms\":{:.3f},\"upstream_connections\":{}}}",
          jsonString(e.load->label), endpointState(*e.load, now),
          e.load->active_streams.load(std::memory_order_relaxed),
          e.load->total_calls.load(std::memory_order_relaxed),
          static_cast<double>(e.load->latency_ewma_ns.load(std::memory_order_relaxed)) / 1e6,
          e.load->upstream_connections.load(std::memory_order_relaxed));
    }
    out += "]}";
  }
  out += "]}\n";
  return {200, "application/json", out};
}

// The running config (as the YAML would write it), and what it came to at start.
HttpResponse configPage(const Daemon& d) {
  const config::Config& c = d.config();
  nlohmann::json page = config::toJson(c);
  nlohmann::json ports = nlohmann::json::object();
  for (const config::Service& service : c.services) {
    ports[service.name] = d.servicePort(config::serviceId(service.name));
  }
  page["running"] = {{"io_engine", loop::engineName(d.ioEngine().engine)},
                     {"io_uring_missing", d.ioEngine().fallback_reason},
                     {"service_proxy_ports", ports}};
  // Strings a config holds may be anything the file said: replaced, not thrown on.
  return {200, "application/json",
          page.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"};
}

// For a person with a browser: services, endpoints with their state and share of calls,
// and why connects were or were not redirected.
HttpResponse indexPage(const Daemon& d) {
  const auto now = lb::Clock::now();
  std::string out =
      "<!doctype html><html><head><meta charset=\"utf-8\"><title>spindle</title><style>"
      "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:"
      "1.5em}td,th{border:1px solid #ccc;padding:.3em .8em;text-align:left}"
      ".ejected{color:#b00}</style></head><body><h1>spindle ";
  out += htmlEscape(version());
  out += "</h1>";
  out +=
      "<p><a href=\"/metrics\">/metrics</a> &middot; <a href=\"/endpoints\">/endpoints</a>"
      " &middot; <a href=\"/config\">/config</a> &middot; <a href=\"/ready\">/ready</a></p>";
  const loop::EngineChoice& engine = d.ioEngine();
  out +=
      fmt::format("<p>I/O engine: {}{}</p>", loop::engineName(engine.engine),
                  engine.fallback_reason.empty()
                      ? ""
                      : " (io_uring cannot run here: " + htmlEscape(engine.fallback_reason) + ")");
  for (const lb::ServiceEntry& service : *d.services().table()) {
    uint64_t total = 0;
    for (const lb::Endpoint& e : service.endpoints->endpoints()) {
      total += e.load->total_calls.load(std::memory_order_relaxed);
    }
    out += fmt::format(
        "<h2>{}</h2><p>balance: {}, {} endpoints</p><table><tr><th>endpoint</th>"
        "<th>state</th><th>active calls</th><th>calls</th><th>share</th></tr>",
        htmlEscape(service.name), lb::balanceName(service.policy.balance),
        service.endpoints->size());
    for (const lb::Endpoint& e : service.endpoints->endpoints()) {
      const uint64_t calls = e.load->total_calls.load(std::memory_order_relaxed);
      const char* state = endpointState(*e.load, now);
      out += fmt::format(
          "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1f}%</td></tr>",
          state, htmlEscape(e.load->label), state,
          e.load->active_streams.load(std::memory_order_relaxed), calls,
          total == 0 ? 0.0 : 100.0 * static_cast<double>(calls) / static_cast<double>(total));
    }
    out += "</table>";
  }
  out += "<h2>Redirects</h2><table><tr><th>reason</th><th>connects</th></tr>";
  const privileged::RedirectState state = d.redirectState();
  for (int reason = 0; reason < SPINDLE_REASON_COUNT; ++reason) {
    out += fmt::format("<tr><td>{}</td><td>{}</td></tr>", redirect::reasonName(reason),
                       state.counters[reason]);
  }
  out += "</table></body></html>\n";
  return {200, "text/html; charset=utf-8", out};
}

}  // namespace

void installStatusPages(admin::AdminServer& server, const Daemon& daemon,
                        const std::vector<config::AdminPage>& pages) {
  server.handle("/metrics", [&daemon](const HttpRequest&) { return metricsPage(daemon); });
  server.handle("/ready", [&daemon](const HttpRequest&) { return readyPage(daemon); });
  server.handle("/healthz", [&daemon](const HttpRequest&) { return healthPage(daemon); });
  for (config::AdminPage page : pages) {
    switch (page) {
      case config::AdminPage::kEndpoints:
        server.handle("/endpoints",
                      [&daemon](const HttpRequest&) { return endpointsPage(daemon); });
        break;
      case config::AdminPage::kConfig:
        server.handle("/config", [&daemon](const HttpRequest&) { return configPage(daemon); });
        break;
      case config::AdminPage::kStatus:
        server.handle("/", [&daemon](const HttpRequest&) { return indexPage(daemon); });
        break;
    }
  }
}

}  // namespace spindle
