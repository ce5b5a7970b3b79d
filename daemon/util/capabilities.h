// Least privilege: once its programs are attached and its maps open, spindle keeps only the
// capabilities it still uses, and can never regain the others.
#pragma once

#include <initializer_list>
#include <string>

#include "util/result.h"

namespace spindle {

struct Capability {
  int number;        // CAP_NET_ADMIN, ...
  const char* name;  // "CAP_NET_ADMIN"
};

struct KeptCapabilities {
  std::string names;      // "CAP_NET_ADMIN, CAP_DAC_READ_SEARCH", or "none"
  bool bounding = false;  // the bounding set was cut too (it takes CAP_SETPCAP)
};

// Threads of this process other than the calling one (the kernel's io_uring workers, which
// copy the creds of the task they serve, excepted); -1 when /proc/self/task cannot be read.
int otherThreads();

// Whether the calling thread's permitted set holds `cap`.
bool isPermitted(int cap);

// Leaves the process with `required`, plus those of `optional` that are in its permitted set
// now, in its permitted and effective sets, and with nothing else: the inheritable and
// ambient sets are cleared, the bounding set too when CAP_SETPCAP allows it, and
// no_new_privs is set. Capabilities are per thread in Linux: call it before any other thread
// starts, so that they all inherit the reduced sets. An error if a required one is not
// permitted, or another thread runs already.
Result<KeptCapabilities> keepOnlyCapabilities(std::initializer_list<Capability> required,
                                              std::initializer_list<Capability> optional);

}  // namespace spindle
