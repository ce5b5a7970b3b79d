// Start-up checks of the host: privileges and cgroup v2. Each failure is one clear line.
#pragma once

#include <string>

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

// Whether the kernel loads the BPF program types spindle uses.
Status probeProgramTypes();

}  // namespace spindle::redirect
