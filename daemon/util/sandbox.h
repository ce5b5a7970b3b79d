// The proxy process's confinement. It parses untrusted HTTP/2: once the privileged process has
// started it (as root, single-threaded), it becomes an unprivileged user with no capability, and
// a seccomp filter refuses every system call the proxy does not make. A bug in the parser then
// reaches neither the node's network namespaces nor BPF nor the kernel's rarer interfaces.
#pragma once

#include <cstdint>

#include "util/result.h"

namespace spindle::sandbox {

struct Identity {
  uint32_t uid;
  uint32_t gid;
};

// Becomes `identity` (setgroups to none, setresgid, setresuid) with no capability left in any set
// (effective, permitted, inheritable, ambient, and the bounding set), and no_new_privs set.
// Must be called as root, before any other thread starts. An error names the step that failed.
Status dropPrivileges(const Identity& identity);

// Installs the proxy's seccomp filter (libseccomp): an allowlist of exactly the system calls
// the proxy uses; every other call fails with EPERM (not a kill: a call missed in a rare path
// becomes an error the code handles). Must be called after dropPrivileges (no_new_privs) and
// before other threads start (they inherit it).
Status installProxyFilter();

}  // namespace spindle::sandbox
