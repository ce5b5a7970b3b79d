#include "config/config_json.h"

#include <fmt/core.h>

namespace spindle::config {
namespace {

using nlohmann::json;

json addresses(const std::vector<net::SocketAddress>& list) {
  json out = json::array();
  for (const net::SocketAddress& address : list) out.push_back(address.toString());
  return out;
}

json service(const Service& s) {
  json intercept = json::array();
  for (const Intercept& i : s.intercept) intercept.push_back(i.text);
  json endpoints = json::object();
  if (!s.endpoints.dns.empty()) {
    endpoints["dns"] = s.endpoints.dns;
  } else {
    endpoints["static"] = addresses(s.endpoints.statics);
  }
  return {
      {"name", s.name},
      {"intercept", intercept},
      {"endpoints", endpoints},
      {"port", s.port},
      {"balance", std::string(lb::balanceName(s.balance))},
      {"outlier",
       {{"consecutive_failures", s.outlier.consecutive_failures},
        {"base_ejection", durationText(s.outlier.base_ejection)},
        {"max_ejection", durationText(s.outlier.max_ejection)},
        {"max_ejected_percent", s.outlier.max_ejected_percent}}},
      {"retries", {{"max", s.retries.max}, {"budget_percent", s.retries.budget_percent}}},
      {"peak_ewma", {{"decay", durationText(s.peak_ewma.decay)}}},
      {"slow_start", durationText(s.slow_start)},
  };
}

}  // namespace

std::string durationText(Duration duration) {
  const int64_t ms = duration.count();
  if (ms == 0) return "0s";
  if (ms % 3'600'000 == 0) return fmt::format("{}h", ms / 3'600'000);
  if (ms % 60'000 == 0) return fmt::format("{}m", ms / 60'000);
  if (ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
  return fmt::format("{}ms", ms);
}

json toJson(const Config& c) {
  json admin = {{"pages", json::array()}, {"socket", c.admin.socket}};
  if (c.admin.listen) admin["listen"] = c.admin.listen->toString();
  for (AdminPage page : c.admin.pages)
    admin["pages"].push_back(std::string(choiceName(kAdminPages, page)));
  json services = json::array();
  for (const Service& s : c.services) services.push_back(service(s));
  return {
      {"proxy",
       {{"listen", addresses(c.proxy.listen)},
        {"workers", c.proxy.workers},
        {"service_ports", c.proxy.service_ports},
        {"uid", c.proxy.uid},
        {"gid", c.proxy.gid},
        {"io_engine", std::string(choiceName(kIoEngines, c.proxy.io_engine))}}},
      {"admin", admin},
      {"metrics",
       {{"by_source", c.metrics.by_source},
        {"series_grace", durationText(c.metrics.series_grace)}}},
      {"redirect",
       {{"cgroup", c.redirect.cgroup},
        {"host_netns", c.redirect.host_netns},
        {"heartbeat_timeout", durationText(c.redirect.heartbeat_timeout)},
        {"pin_path", c.redirect.pin_path}}},
      {"upstream",
       {{"source", std::string(choiceName(kUpstreamSources, c.upstream.source))},
        {"idle_timeout", durationText(c.upstream.idle_timeout)},
        {"max_connections", c.upstream.max_connections}}},
      {"dns",
       {{"servers", addresses(c.dns.servers)},
        {"refresh",
         {{"min", durationText(c.dns.refresh_min)}, {"max", durationText(c.dns.refresh_max)}}},
        {"empty_confirmations", c.dns.empty_confirmations}}},
      {"shutdown", {{"drain", durationText(c.shutdown.drain)}}},
      {"limits",
       {{"max_connections", c.limits.max_connections},
        {"idle_timeout", durationText(c.limits.idle_timeout)},
        {"header_timeout", durationText(c.limits.header_timeout)},
        {"send_timeout", durationText(c.limits.send_timeout)},
        {"max_premature_resets", c.limits.max_premature_resets},
        {"max_glitches", c.limits.max_glitches},
        {"max_control_frames", c.limits.max_control_frames}}},
      {"log",
       {{"level", log::levelName(c.log.level)},
        {"format", std::string(choiceName(kLogFormats, c.log.format))}}},
      {"services", services},
  };
}

}  // namespace spindle::config
