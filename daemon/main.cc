// spindle: per-call gRPC load balancing for every Pod of a node, without changing the apps.
#include <getopt.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "config/config.h"
#include "daemon.h"
#include "privileged/privileged_part.h"
#include "util/fd.h"
#include "util/log.h"
#include "util/seccomp_profile.h"
#include "util/version.h"

namespace {

constexpr const char* kUsage = R"(usage: spindle --config FILE
       spindle --check-config FILE
       spindle --config FILE --probe PATH
       spindle --version | --help

spindle redirects the Pods' connections to declared gRPC services into this node's proxy and
balances every call over the service's Pods. It needs CAP_BPF, CAP_NET_ADMIN, CAP_SETUID,
CAP_SETGID, CAP_SETPCAP and CAP_KILL, cgroup v2 and io_uring; the proxy process, which parses
the Pods' traffic, runs as proxy.uid without any capability.

  --config FILE        run with the YAML configuration FILE
  --check-config FILE  validate FILE, print the first error with its line, exit 0 or 1
  --probe PATH         GET PATH (/ready, /healthz) from the spindle that runs with FILE,
                       over its admin.socket; print the answer, exit 0 on 200, else 1
  --log-level LEVEL    debug, info (default), warn or error; over the config's log.level
  --seccomp-profile F  confine spindle to the seccomp profile F (the JSON that container
                       runtimes read) before anything else; the proxy process adds its own
  --version            print the version and the commit spindle was built from
  --help               print this help
)";

// "spindle VERSION (revision HASH)": the version first, for scripts that take the second word.
void printVersion() {
  const std::string_view version = spindle::version();
  const std::string_view revision = spindle::revision();
  std::printf("spindle %.*s", static_cast<int>(version.size()), version.data());
  if (revision != "unknown") {
    std::printf(" (revision %.*s)", static_cast<int>(revision.size()), revision.data());
  }
  std::printf("\n");
}

// kubelet's exec probe: asks this Pod's own spindle over its Unix socket. An HTTP probe on
// the node's address could be answered by the other spindle of a rollout.
int probe(const std::string& socket_path, const std::string& path) {
  auto fail = [&](const std::string& what) {
    std::fprintf(stderr, "spindle: probe %s: %s\n", socket_path.c_str(), what.c_str());
    return 1;
  };
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) return fail("path too long");
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  const spindle::Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return fail(std::strerror(errno));
  const timeval timeout{2, 0};  // below kubelet's default probe timeout
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return fail(std::strerror(errno));
  }
  const std::string request =
      "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  std::string response;
  if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) ==
      static_cast<ssize_t>(request.size())) {
    char buffer[4096];
    for (ssize_t n;
         (n = ::recv(fd.get(), buffer, sizeof(buffer), 0)) > 0 && response.size() < 65536;) {
      response.append(buffer, static_cast<size_t>(n));
    }
  }
  const size_t body = response.find("\r\n\r\n");
  if (body == std::string::npos) return fail("no answer");
  std::fputs(response.c_str() + body + 4, stdout);
  return response.compare(0, 13, "HTTP/1.1 200 ") == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  enum Option {
    kConfig = 1,
    kCheckConfig,
    kProbe,
    kLogLevel,
    kSeccompProfile,
    kVersion,
    kHelp,
    kProxyChannel
  };
  static const option kOptions[] = {
      {"config", required_argument, nullptr, kConfig},
      {"check-config", required_argument, nullptr, kCheckConfig},
      {"probe", required_argument, nullptr, kProbe},
      {"log-level", required_argument, nullptr, kLogLevel},
      {"seccomp-profile", required_argument, nullptr, kSeccompProfile},
      {"version", no_argument, nullptr, kVersion},
      {"help", no_argument, nullptr, kHelp},
      // Not for people: how the privileged part starts the proxy process.
      {"proxy-channel", required_argument, nullptr, kProxyChannel},
      {nullptr, 0, nullptr, 0},
  };
  std::string config_path;
  std::string check_path;
  std::string probe_path;
  std::string seccomp_profile;
  int proxy_channel = -1;
  opterr = 0;
  for (int opt; (opt = getopt_long(argc, argv, "", kOptions, nullptr)) != -1;) {
    switch (opt) {
      case kConfig: config_path = optarg; break;
      case kCheckConfig: check_path = optarg; break;
      case kProbe: probe_path = optarg; break;
      case kProxyChannel: proxy_channel = std::atoi(optarg); break;
      case kSeccompProfile: seccomp_profile = optarg; break;
      case kLogLevel: {
        auto level = spindle::log::parseLevel(optarg);
        if (!level) {
          std::fprintf(stderr, "spindle: error: --log-level: unknown level '%s'\n", optarg);
          return 1;
        }
        spindle::log::pinThreshold(*level);
        break;
      }
      case kVersion: printVersion(); return 0;
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

  if (proxy_channel >= 0) return spindle::runProxy(proxy_channel);
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
  spindle::log::configure(config->log.level, config->log.format);
  if (!probe_path.empty()) {
    if (config->admin.socket.empty()) {
      spindle::log::error("--probe: {} sets no admin.socket", config_path);
      return 1;
    }
    return probe(config->admin.socket, probe_path);
  }
  if (!seccomp_profile.empty()) {
    if (auto installed = spindle::seccomp::installProfile(seccomp_profile); !installed) {
      spindle::log::error("--seccomp-profile: {}", installed.error());
      return 1;
    }
  }
  return spindle::privileged::run(config_path, *config);
}
