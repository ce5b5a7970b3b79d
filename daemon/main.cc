// spindle: per-call gRPC load balancing for every Pod of a node, without changing the apps.
#include <getopt.h>

#include <cstdio>
#include <string>

#include "config/config.h"
#include "daemon.h"
#include "util/log.h"

#ifndef SPINDLE_VERSION
#define SPINDLE_VERSION "0.1.0-dev"
#endif

namespace {

constexpr const char* kUsage = R"(usage: spindle --config FILE
       spindle --check-config FILE
       spindle --version | --help

spindle redirects the Pods' connections to declared gRPC services into this node's proxy and
balances every call over the service's Pods. It needs CAP_BPF and CAP_NET_ADMIN, cgroup v2
and io_uring.

  --config FILE        run with the YAML configuration FILE
  --check-config FILE  validate FILE, print the first error with its line, exit 0 or 1
  --log-level LEVEL    debug, info (default), warn or error
  --version            print the version
  --help               print this help
)";

}  // namespace

int main(int argc, char** argv) {
  enum Option { kConfig = 1, kCheckConfig, kLogLevel, kVersion, kHelp };
  static const option kOptions[] = {
      {"config", required_argument, nullptr, kConfig},
      {"check-config", required_argument, nullptr, kCheckConfig},
      {"log-level", required_argument, nullptr, kLogLevel},
      {"version", no_argument, nullptr, kVersion},
      {"help", no_argument, nullptr, kHelp},
      {nullptr, 0, nullptr, 0},
  };
  std::string config_path;
  std::string check_path;
  opterr = 0;
  for (int opt; (opt = getopt_long(argc, argv, "", kOptions, nullptr)) != -1;) {
    switch (opt) {
      case kConfig: config_path = optarg; break;
      case kCheckConfig: check_path = optarg; break;
      case kLogLevel: {
        const std::string level = optarg;
        if (level == "debug") spindle::log::setThreshold(spindle::log::Level::kDebug);
        else if (level == "info") spindle::log::setThreshold(spindle::log::Level::kInfo);
        else if (level == "warn") spindle::log::setThreshold(spindle::log::Level::kWarn);
        else if (level == "error") spindle::log::setThreshold(spindle::log::Level::kError);
        else {
          std::fprintf(stderr, "spindle: error: --log-level: unknown level '%s'\n", optarg);
          return 1;
        }
        break;
      }
      case kVersion: std::printf("spindle %s\n", SPINDLE_VERSION); return 0;
      case kHelp: std::fputs(kUsage, stdout); return 0;
      default:
        std::fprintf(stderr, "spindle: error: unknown option '%s'\n%s", argv[optind - 1], kUsage);
        return 1;
    }
  }
  if (optind < argc) {
    std::fprintf(stderr, "spindle: error: unexpected argument '%s'\n%s", argv[optind], kUsage);
    return 1;
  }

  if (!check_path.empty()) {
    auto config = spindle::config::load(check_path);
    if (!config) {
      spindle::log::error("{}", config.error());
      return 1;
    }
    std::printf("%s: ok\n", check_path.c_str());
    return 0;
  }
  if (config_path.empty()) {
    std::fprintf(stderr, "spindle: error: --config FILE is required\n%s", kUsage);
    return 1;
  }
  auto config = spindle::config::load(config_path);
  if (!config) {
    spindle::log::error("{}", config.error());
    return 1;
  }
  return spindle::runDaemon(config_path, *config);
}
