// Start-up checks of the host: privileges, cgroup v2 and the kernel's features. Each failure is
// one clear line.
#pragma once

#include <linux/bpf.h>

#include <compare>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "util/result.h"

namespace spindle::redirect {

// spindle loads and attaches cgroup BPF programs and marks its sockets: it needs CAP_BPF (or
// CAP_SYS_ADMIN on kernels before 5.8) and CAP_NET_ADMIN; and it runs its proxy as another
// user without capabilities: CAP_SETUID, CAP_SETGID, CAP_SETPCAP, CAP_KILL.
Status checkPrivileges();

// The cgroup2 mount point, from /proc/self/mountinfo (/sys/fs/cgroup on most nodes,
// /sys/fs/cgroup/unified on hybrid hosts).
Result<std::string> findCgroup2Mount();

// `path` is a directory of a cgroup v2 hierarchy.
Status checkCgroup2(const std::string& path);

struct KernelVersion {
  int major = 0;
  int minor = 0;
  friend auto operator<=>(const KernelVersion&, const KernelVersion&) = default;
};

// "6.1.0-18-amd64" -> 6.1; nullopt when it does not start with two numbers.
std::optional<KernelVersion> parseKernelRelease(std::string_view release);

// A kernel feature spindle needs, the first mainline release that has it, and how to ask the
// running kernel for it. docs/kernel.md is the same list, with what each is for.
struct KernelFeature {
  enum class Probe {
    kProgram,       // a program of type `program`, expected attach type `attach`, loads
    kContextField,  // ... and reads the 8-byte pointer at `offset` of its context
    kHelper,        // a program of type `program` may call `helper`
    kMapType,       // libbpf_probe_bpf_map_type(map)
    kMapFlags,      // an array map with `map_flags` is created
    kCgroupLink,    // BPF_LINK_CREATE takes cgroup attach types
    kSocketOption,  // getsockopt(SOL_SOCKET, `option`) answers on a UDP socket
  };
  const char* name;  // as the start-up error names it
  KernelVersion since;
  Probe probe;
  bpf_prog_type program = BPF_PROG_TYPE_UNSPEC;
  bpf_attach_type attach = BPF_CGROUP_INET_INGRESS;
  uint32_t offset = 0;
  bpf_func_id helper = BPF_FUNC_unspec;
  bpf_map_type map = BPF_MAP_TYPE_UNSPEC;
  uint32_t map_flags = 0;
  int option = 0;
  // Of spindle_proxy_exit, a tracing program: asked only of a process that may load one
  // (canLoadTracingPrograms); without, spindle runs without the program.
  bool tracing = false;
};

// What spindle needs of the kernel, io_uring aside (the loop asks for that), in the order the
// start checks it: a program type before its helpers.
std::span<const KernelFeature> kernelFeatures();

// The oldest kernel that has all of `features`.
KernelVersion kernelFloor(std::span<const KernelFeature> features);

// Answers as libbpf's probes do: 1 present, 0 absent, -errno when it could not tell.
using FeatureProbe = std::function<int(const KernelFeature&)>;

// The first of `features` that `probe` finds absent, as one line naming it and the release
// that brought it; `release` is the running kernel's (uname -r).
Status firstMissingFeature(std::span<const KernelFeature> features, const FeatureProbe& probe,
                           std::string_view release);

// Asks the running kernel for one feature.
int probeKernelFeature(const KernelFeature& feature);

// CAP_PERFMON or CAP_SYS_ADMIN, which the kernel asks of a process that loads a tracing
// program (spindle_proxy_exit).
bool canLoadTracingPrograms();

// The running kernel has every feature of kernelFeatures() (the tracing ones only when this
// process may load them): one line naming the first it lacks, instead of a verifier log at
// load.
Status checkKernel();

}  // namespace spindle::redirect
