// spindle installs its container's seccomp profile itself: the JSON profile that container
// runtimes read (the OCI runtime spec's linux.seccomp), applied to this process at start. A
// cluster then needs no file in kubelet's seccomp directory, and no Pod with a writable
// hostPath into it to put one there.
#pragma once

#include <string>

#include "util/result.h"

namespace spindle::seccomp {

// Reads the profile at `path` and applies it to this process (every thread; those started
// later and the processes it starts inherit it), setting no_new_privs. Rules with `args` are
// refused (the profile spindle ships has none); names this kernel or architecture lacks are
// skipped, as runtimes skip them. An error names the file and what is wrong with it.
Status installProfile(const std::string& path);

}  // namespace spindle::seccomp
