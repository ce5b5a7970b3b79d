#include "util/seccomp_profile.h"

#include <fmt/core.h>
#include <seccomp.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

namespace spindle::seccomp {
namespace {

// The action a profile names, with its errno where it has one.
std::optional<uint32_t> actionOf(const std::string& name, uint32_t errno_ret) {
  if (name == "SCMP_ACT_ALLOW") return SCMP_ACT_ALLOW;
  if (name == "SCMP_ACT_ERRNO") return SCMP_ACT_ERRNO(errno_ret);
  if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") return SCMP_ACT_KILL;
  if (name == "SCMP_ACT_KILL_PROCESS") return SCMP_ACT_KILL_PROCESS;
  if (name == "SCMP_ACT_LOG") return SCMP_ACT_LOG;
  if (name == "SCMP_ACT_TRAP") return SCMP_ACT_TRAP;
  return std::nullopt;
}

Status install(const nlohmann::json& profile) {
  const uint32_t default_errno = profile.value("defaultErrnoRet", uint32_t{EPERM});
  const auto default_action =
      actionOf(profile.at("defaultAction").get<std::string>(), default_errno);
  if (!default_action) return makeError("defaultAction: not an action spindle knows");
  using Filter = std::unique_ptr<void, decltype(&seccomp_release)>;
  Filter filter(seccomp_init(*default_action), &seccomp_release);
  if (!filter) return makeError("seccomp_init failed");
  // The native architecture only (libseccomp's default): spindle makes no call through
  // another ABI, so the profile's other architectures are left out, and a call through one
  // gets the default action.
  size_t index = 0;
  for (const nlohmann::json& rule : profile.value("syscalls", nlohmann::json::array())) {
    const std::string where = fmt::format("syscalls[{}]", index++);
    if (rule.contains("args") && !rule.at("args").empty()) {
      return makeError(fmt::format("{}: rules with args are not supported", where));
    }
    const auto action =
        actionOf(rule.at("action").get<std::string>(), rule.value("errnoRet", uint32_t{EPERM}));
    if (!action) return makeError(fmt::format("{}: action: not one spindle knows", where));
    if (*action == *default_action) continue;  // libseccomp refuses a rule that changes nothing
    for (const nlohmann::json& name : rule.at("names")) {
      const int number = seccomp_syscall_resolve_name(name.get<std::string>().c_str());
      if (number == __NR_SCMP_ERROR) continue;  // not a call of this architecture
      if (int rc = seccomp_rule_add(filter.get(), *action, number, 0); rc != 0) {
        return makeError(
            fmt::format("{}: {}: {}", where, name.get<std::string>(), std::strerror(-rc)));
      }
    }
  }
  if (int rc = seccomp_attr_set(filter.get(), SCMP_FLTATR_CTL_TSYNC, 1); rc != 0) {
    return makeError(fmt::format("thread sync: {}", std::strerror(-rc)));
  }
  if (int rc = seccomp_load(filter.get()); rc != 0) {
    return makeError(fmt::format("loading it: {}", std::strerror(-rc)));
  }
  return {};
}

}  // namespace

Status installProfile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return makeError(fmt::format("seccomp profile {}: {}", path, std::strerror(errno)));
  try {
    const nlohmann::json profile = nlohmann::json::parse(in);
    if (Status s = install(profile); !s) {
      return makeError(fmt::format("seccomp profile {}: {}", path, s.error()));
    }
  } catch (const nlohmann::json::exception& e) {
    return makeError(fmt::format("seccomp profile {}: {}", path, e.what()));
  }
  return {};
}

}  // namespace spindle::seccomp
