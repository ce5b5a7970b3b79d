// The config parser: YAML text in. A config comes from a ConfigMap, so it is trusted more
// than network input, but a typo must still end in an error that names the line, never in a
// crash or in a Config that breaks what config.h promises the rest of the daemon.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "config/config.h"
#include "fuzz.h"

using namespace spindle;

namespace {

std::optional<std::string> env(std::string_view name) {
  if (name == "NODE_IP") return "198.18.0.1";
  if (name == "NODE_IP6") return "2001:2::1";
  if (name == "PORT") return "15001";
  if (name == "EMPTY") return "";
  return std::nullopt;
}

void check(const config::Config& config) {
  FUZZ_REQUIRE(config.proxy.workers <= 256);
  std::set<int> families;
  for (const auto& listen : config.proxy.listen) {
    FUZZ_REQUIRE(families.insert(listen.family()).second);
  }
  FUZZ_REQUIRE(config.redirect.heartbeat_timeout.count() >= 0);
  FUZZ_REQUIRE(config.dns.refresh_min <= config.dns.refresh_max);
  FUZZ_REQUIRE(config.dns.empty_confirmations >= 1);
  std::set<std::string> names;
  for (const config::Service& service : config.services) {
    FUZZ_REQUIRE(names.insert(service.name).second);
    FUZZ_REQUIRE(!service.intercept.empty());
    FUZZ_REQUIRE(service.port != 0);
    // Exactly one of dns and static.
    FUZZ_REQUIRE(service.endpoints.dns.empty() != service.endpoints.statics.empty());
    for (const config::Intercept& intercept : service.intercept) {
      FUZZ_REQUIRE(intercept.port != 0);
      FUZZ_REQUIRE(intercept.literal.has_value() == intercept.host.empty());
    }
    FUZZ_REQUIRE(service.outlier.consecutive_failures >= 1);
    FUZZ_REQUIRE(service.outlier.consecutive_failures <= 1000);
    FUZZ_REQUIRE(service.outlier.base_ejection <= service.outlier.max_ejection);
    FUZZ_REQUIRE(service.outlier.max_ejected_percent <= 100);
    FUZZ_REQUIRE(service.retries.max >= 1 && service.retries.max <= 10);
    FUZZ_REQUIRE(service.retries.budget_percent <= 100);
    FUZZ_REQUIRE(service.peak_ewma.decay.count() >= 0);
    FUZZ_REQUIRE(service.slow_start.count() >= 0);
    (void)lb::balanceName(service.balance);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view yaml(reinterpret_cast<const char*>(data), size);
  const Result<config::Config> result = config::parse(yaml, "fuzz.yaml", env);
  if (result) {
    check(*result);
  } else {
    // "fuzz.yaml:12: ...": every error names the file and the line.
    const std::string& error = result.error();
    FUZZ_REQUIRE(error.rfind("fuzz.yaml:", 0) == 0);
    FUZZ_REQUIRE(error.size() > 10 && error[10] >= '1' && error[10] <= '9');
  }
  return 0;
}
