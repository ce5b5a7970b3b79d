#include "util/sandbox.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "util/capabilities.h"

namespace spindle::sandbox {
namespace {

constexpr int kMaxCapability = 63;  // capability bits span two 32-bit words

Status failed(const char* step, int err) {
  return makeError(fmt::format("{}: {}", step, std::strerror(err)));
}

// Returns 0 or an errno. Clears the three sets of the calling thread.
int clearCapabilitySets() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  return ::syscall(SYS_capset, &header, data) == 0 ? 0 : errno;
}

Status checkNoCapabilityLeft() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capget, &header, data) != 0) return failed("capget", errno);
  for (const auto& word : data) {
    if (word.effective != 0 || word.permitted != 0 || word.inheritable != 0) {
      return makeError("capabilities are left after capset");
    }
  }
  for (int cap = 0; cap <= kMaxCapability; ++cap) {
    const int in_bounding = ::prctl(PR_CAPBSET_READ, static_cast<unsigned long>(cap), 0L, 0L, 0L);
    const int ambient =
        ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, static_cast<unsigned long>(cap), 0L, 0L);
    if (in_bounding > 0 || ambient > 0) {
      return makeError(fmt::format("capability {} is left in the {} set", cap,
                                   in_bounding > 0 ? "bounding" : "ambient"));
    }
  }
  return {};
}

}  // namespace

Status dropPrivileges(const Identity& identity) {
  if (identity.uid == 0 || identity.gid == 0) {
    return makeError(fmt::format("cannot drop privileges to uid {} gid {}: that is root",
                                 identity.uid, identity.gid));
  }
  // Capabilities, the bounding set and no_new_privs are per thread: one started earlier would
  // keep root's.
  if (const int others = otherThreads(); others != 0) {
    return makeError(others < 0 ? std::string("cannot count threads in /proc/self/task")
                                : fmt::format("privileges must be dropped before threads start "
                                              "({} more run)",
                                              others));
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1L, 0L, 0L, 0L) != 0) {
    return failed("setting no_new_privs", errno);
  }
  // The bounding set while CAP_SETPCAP is still there: setresuid takes it away below.
  // EINVAL: a number this kernel does not know.
  for (int cap = 0; cap <= kMaxCapability; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, static_cast<unsigned long>(cap), 0L, 0L, 0L) != 0 &&
        errno != EINVAL) {
      return failed("dropping the bounding set", errno);
    }
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0L, 0L, 0L) != 0) {
    return failed("clearing the ambient set", errno);
  }
  // A change of uid disarms the parent-death signal: the privileged process may have set one.
  int parent_death_signal = 0;
  const pid_t parent = ::getppid();
  if (::prctl(PR_GET_PDEATHSIG, &parent_death_signal, 0L, 0L, 0L) != 0) {
    return failed("reading the parent-death signal", errno);
  }
  // Root's supplementary groups first (it takes CAP_SETGID), then the gid, the uid last.
  if (::setgroups(0, nullptr) != 0) return failed("setgroups", errno);
  if (::setresgid(identity.gid, identity.gid, identity.gid) != 0) {
    return failed("setresgid", errno);
  }
  if (::setresuid(identity.uid, identity.uid, identity.uid) != 0) {
    return failed("setresuid", errno);
  }
  if (parent_death_signal != 0) {
    if (::prctl(PR_SET_PDEATHSIG, static_cast<unsigned long>(parent_death_signal), 0L, 0L, 0L) !=
        0) {
      return failed("setting the parent-death signal again", errno);
    }
    if (::getppid() != parent) return makeError("the parent exited while privileges were dropped");
  }
  // Leaving uid 0 cleared the permitted and effective sets, unless a securebit set by whoever
  // started us says otherwise: clear all three here, whatever the securebits.
  if (const int err = clearCapabilitySets(); err != 0) {
    return failed("clearing the capability sets", err);
  }
  // The uid change made the process non-dumpable already (with fs.suid_dumpable 0): keep it so
  // whatever the sysctl, so that another process of the same user (nobody is shared) can
  // neither ptrace this one nor read its memory.
  if (::prctl(PR_SET_DUMPABLE, 0L, 0L, 0L, 0L) != 0) {
    return failed("making the process non-dumpable", errno);
  }

  uid_t ruid = 0, euid = 0, suid = 0;
  gid_t rgid = 0, egid = 0, sgid = 0;
  if (::getresuid(&ruid, &euid, &suid) != 0 || ::getresgid(&rgid, &egid, &sgid) != 0) {
    return failed("reading the identity", errno);
  }
  if (ruid != identity.uid || euid != identity.uid || suid != identity.uid ||
      rgid != identity.gid || egid != identity.gid || sgid != identity.gid ||
      ::getgroups(0, nullptr) != 0) {
    return makeError("the identity did not change as asked");
  }
  if (::prctl(PR_GET_NO_NEW_PRIVS, 0L, 0L, 0L, 0L) != 1) return makeError("no_new_privs is unset");
  return checkNoCapabilityLeft();
}

namespace {

using FilterPtr = std::unique_ptr<void, decltype(&seccomp_release)>;

// Allowed whatever their arguments: what the daemon's proxy threads, admin server and c-ares
// made under strace, and what the planned epoll engine will. A name another architecture lacks
// (poll, epoll_wait: arm64 has only ppoll, epoll_pwait) is a pseudo-number there, which
// libseccomp leaves out of the filter.
constexpr std::array kAllowed{
    // io_uring: the event loop of every thread. Its operations bypass this filter; each ring
    // is restricted to the operations spindle uses instead (loop::Loop::create).
    SCMP_SYS(io_uring_setup), SCMP_SYS(io_uring_enter), SCMP_SYS(io_uring_register),
    // Memory: jemalloc and glibc (thread stacks, guard pages).
    SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mprotect), SCMP_SYS(mremap), SCMP_SYS(madvise),
    SCMP_SYS(brk), SCMP_SYS(membarrier),
    // Threads (clone is argument-checked below), and glibc's abort().
    SCMP_SYS(futex), SCMP_SYS(set_robust_list), SCMP_SYS(rseq), SCMP_SYS(exit),
    SCMP_SYS(exit_group), SCMP_SYS(gettid), SCMP_SYS(getpid), SCMP_SYS(getppid),
    SCMP_SYS(sched_yield), SCMP_SYS(sched_getaffinity),
    // Time: the vDSO answers most clock reads, the system call is its fallback.
    SCMP_SYS(clock_gettime), SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep), SCMP_SYS(gettimeofday),
    // Signals: SIGTERM/SIGHUP through a signalfd, the rest blocked; glibc's abort().
    SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigreturn), SCMP_SYS(signalfd4),
    SCMP_SYS(restart_syscall), SCMP_SYS(sigaltstack),
    // Wake-ups (a Waker is an eventfd) and the epoll engine's timers.
    SCMP_SYS(eventfd2), SCMP_SYS(timerfd_create), SCMP_SYS(timerfd_settime),
    SCMP_SYS(timerfd_gettime),
    // Files: /proc/self/{stat,limits,fd} and /proc/stat for the process metrics, the cgroup tree
    // for metrics by calling Pod, c-ares's /etc/resolv.conf, /etc/hosts and /dev/urandom, the
    // config file (openat is argument-checked below).
    SCMP_SYS(close), SCMP_SYS(read), SCMP_SYS(pread64), SCMP_SYS(write), SCMP_SYS(writev),
    SCMP_SYS(readv), SCMP_SYS(lseek), SCMP_SYS(fstat), SCMP_SYS(newfstatat), SCMP_SYS(statx),
    SCMP_SYS(getdents64), SCMP_SYS(fcntl), SCMP_SYS(dup), SCMP_SYS(dup3), SCMP_SYS(readlinkat),
    SCMP_SYS(pipe2),
    // Sockets: accepted downstream, connected upstream, c-ares's UDP and TCP (socket and
    // socketpair are argument-checked below). No bind or listen: the listeners come bound.
    SCMP_SYS(connect), SCMP_SYS(accept4), SCMP_SYS(setsockopt), SCMP_SYS(getsockopt),
    SCMP_SYS(getsockname), SCMP_SYS(getpeername), SCMP_SYS(sendto), SCMP_SYS(recvfrom),
    SCMP_SYS(sendmsg), SCMP_SYS(recvmsg), SCMP_SYS(sendmmsg), SCMP_SYS(recvmmsg),
    SCMP_SYS(shutdown),
    // Readiness: the epoll engine.
    SCMP_SYS(poll), SCMP_SYS(ppoll), SCMP_SYS(epoll_create1), SCMP_SYS(epoll_ctl),
    SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait),
    // What the process reads about itself and the machine.
    SCMP_SYS(getrandom), SCMP_SYS(uname), SCMP_SYS(getuid), SCMP_SYS(geteuid), SCMP_SYS(getgid),
    SCMP_SYS(getegid), SCMP_SYS(getrlimit), SCMP_SYS(sysinfo)};

// The bits of clone's flags that make a namespace. CLONE_NEWTIME lies within clone()'s exit
// signal byte (signals stop at 64, so no real one sets it) and only clone3 and unshare honour it:
// refusing it costs nothing.
constexpr uint64_t kNamespaceFlags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
                                     CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP | CLONE_NEWTIME;

// The write intents of openat(2): the proxy only reads files.
constexpr uint64_t kOpenForWriting = O_ACCMODE | O_CREAT | O_TRUNC;

// libseccomp's SCMP_A0() macros are C compound literals, which ISO C++ lacks.
scmp_arg_cmp equals(unsigned arg, uint64_t value) { return {arg, SCMP_CMP_EQ, value, 0}; }
scmp_arg_cmp masked(unsigned arg, uint64_t mask, uint64_t value) {
  return {arg, SCMP_CMP_MASKED_EQ, mask, value};
}

struct Rule {
  int syscall;
  uint32_t action;
  std::vector<scmp_arg_cmp> conditions;  // all must hold
};

std::string syscallName(int syscall) {
  char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, syscall);
  std::string out = name != nullptr ? name : fmt::format("system call {}", syscall);
  std::free(name);
  return out;
}

// Several rules for one system call: any of them allows it.
std::vector<Rule> proxyRules() {
  std::vector<Rule> rules;
  for (const int syscall : kAllowed) rules.push_back({syscall, SCMP_ACT_ALLOW, {}});
  // glibc's pthread_create tries clone3 first and falls back to clone on ENOSYS. clone3 passes
  // its flags in memory, which seccomp cannot read; clone's are in a register.
  rules.push_back({SCMP_SYS(clone3), SCMP_ACT_ERRNO(ENOSYS), {}});
  rules.push_back({SCMP_SYS(clone), SCMP_ACT_ALLOW, {masked(0, kNamespaceFlags, 0)}});
  // Read-only: files the proxy's user may write (in /tmp, /dev/shm) stay out of reach too.
  rules.push_back({SCMP_SYS(openat), SCMP_ACT_ALLOW, {masked(2, kOpenForWriting, 0)}});
  // IPv4 and IPv6 only: no netlink, packet, AF_ALG, vsock or other families and their kernel
  // code. Unix sockets only as a pair, for talking to the privileged process.
  for (const uint64_t family : {uint64_t{AF_INET}, uint64_t{AF_INET6}}) {
    rules.push_back({SCMP_SYS(socket), SCMP_ACT_ALLOW, {equals(0, family)}});
  }
  rules.push_back({SCMP_SYS(socketpair), SCMP_ACT_ALLOW, {equals(0, uint64_t{AF_UNIX})}});
  // Thread names (the workers name themselves); none of prctl's other switches.
  for (const uint64_t option : {uint64_t{PR_SET_NAME}, uint64_t{PR_GET_NAME}}) {
    rules.push_back({SCMP_SYS(prctl), SCMP_ACT_ALLOW, {equals(0, option)}});
  }
  // ioctl reaches every driver's code. The proxy makes none (measured); a socket's queued bytes
  // and non-blocking mode, and stdio's isatty(), are the harmless ones a library may ask for.
  // TIOCSTI (typing into a terminal) and the rest are refused. The kernel reads the request as
  // 32 bits: so does the comparison.
  for (const uint64_t request : {uint64_t{FIONREAD}, uint64_t{FIONBIO}, uint64_t{TCGETS}}) {
    rules.push_back({SCMP_SYS(ioctl), SCMP_ACT_ALLOW, {masked(1, 0xffffffff, request)}});
  }
  // Its own limits only (glibc's getrlimit and setrlimit are prlimit64 on pid 0).
  rules.push_back({SCMP_SYS(prlimit64), SCMP_ACT_ALLOW, {equals(0, 0)}});
  // abort() and pthread_kill signal a thread of this process, never another process.
  rules.push_back(
      {SCMP_SYS(tgkill), SCMP_ACT_ALLOW, {equals(0, static_cast<uint64_t>(::getpid()))}});
  return rules;
}

}  // namespace

Status installProxyFilter() {
  // libseccomp would set it itself: checked so that a missed dropPrivileges is an error here.
  if (::prctl(PR_GET_NO_NEW_PRIVS, 0L, 0L, 0L, 0L) != 1) {
    return makeError("seccomp filter: no_new_privs is not set: drop privileges first");
  }
  FilterPtr filter(seccomp_init(SCMP_ACT_ERRNO(EPERM)), &seccomp_release);
  if (!filter) return makeError("seccomp filter: seccomp_init failed");
  // The filter holds the native architecture only (libseccomp's default). A call through
  // another ABI (i386's int 0x80, x32) numbers the same calls otherwise, so the allowlist would
  // mean something else there; the proxy makes none, so one is an exploit's: end the process.
  if (int rc = seccomp_attr_set(filter.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
      rc != 0) {
    return failed("seccomp filter: the action for other architectures", -rc);
  }
  // Every thread of the process, should one have started before.
  if (int rc = seccomp_attr_set(filter.get(), SCMP_FLTATR_CTL_TSYNC, 1); rc != 0) {
    return failed("seccomp filter: thread sync", -rc);
  }
  for (const Rule& rule : proxyRules()) {
    const int rc = seccomp_rule_add_array(filter.get(), rule.action, rule.syscall,
                                          static_cast<unsigned>(rule.conditions.size()),
                                          rule.conditions.data());
    if (rc != 0) {
      return makeError(fmt::format("seccomp filter: the rule for {}: {}", syscallName(rule.syscall),
                                   std::strerror(-rc)));
    }
  }
  if (int rc = seccomp_load(filter.get()); rc != 0) {
    return failed("seccomp filter: loading it", -rc);
  }
  return {};
}

}  // namespace spindle::sandbox
