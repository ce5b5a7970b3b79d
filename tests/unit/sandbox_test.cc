#include "util/sandbox.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <liburing.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include "loop/loop.h"
#include "util/fd.h"

namespace spindle::sandbox {
namespace {

constexpr Identity kNobody{65534, 65534};

// How the child is confined before its check runs. kFilterAsRoot keeps root and every
// capability and installs only the filter: a call refused there is refused by the filter, not
// for want of a privilege (which alone would refuse most of them after dropPrivileges).
enum class Confinement { kSandbox, kFilterAsRoot, kNone };

struct ChildResult {
  std::string report;  // "ok", or what the check found wrong
  int wait_status = 0;
};

// Runs `check` in a fork()ed child (the confinement is irreversible: never in the test process),
// which writes its report to a pipe: the check's text, or "ok" when it returned none.
ChildResult inChild(Confinement confinement, const std::function<std::string()>& check) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return {fmt::format("pipe2: {}", std::strerror(errno))};
  const pid_t pid = ::fork();
  if (pid < 0) return {fmt::format("fork: {}", std::strerror(errno))};
  if (pid == 0) {
    ::close(fds[0]);
    std::string report;
    if (confinement == Confinement::kSandbox) {
      if (Status s = dropPrivileges(kNobody); !s) report = "dropPrivileges: " + s.error();
    } else if (confinement == Confinement::kFilterAsRoot) {
      ::prctl(PR_SET_NO_NEW_PRIVS, 1L, 0L, 0L, 0L);
    }
    if (report.empty() && confinement != Confinement::kNone) {
      if (Status s = installProxyFilter(); !s) report = "installProxyFilter: " + s.error();
    }
    // An exception must not unwind into the test runner, which would go on running tests here.
    try {
      if (report.empty()) report = check();
    } catch (const std::exception& e) {
      report = std::string("exception: ") + e.what();
    } catch (...) {
      report = "exception";
    }
    if (report.empty()) report = "ok";
    for (size_t at = 0; at < report.size();) {
      const ssize_t n = ::write(fds[1], report.data() + at, report.size() - at);
      if (n <= 0) break;
      at += static_cast<size_t>(n);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  ChildResult result;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof(buffer))) > 0;) {
    result.report.append(buffer, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  ::waitpid(pid, &result.wait_status, 0);
  if (result.report.empty()) result.report = "the child reported nothing";
  return result;
}

std::string sandboxed(const std::function<std::string()>& check) {
  return inChild(Confinement::kSandbox, check).report;
}

std::string filteredAsRoot(const std::function<std::string()>& check) {
  return inChild(Confinement::kFilterAsRoot, check).report;
}

// "" when `result` is -1 with errno `expected`, else what happened instead. Call it right after
// the call, one statement each: errno is read here.
std::string expectFailure(const char* what, long result, int expected) {
  if (result == -1 && errno == expected) return "";
  if (result == -1) {
    return fmt::format("{} failed with {}, not {}; ", what, std::strerror(errno),
                       std::strerror(expected));
  }
  return fmt::format("{} succeeded ({}); ", what, result);
}

// expectFailure with EPERM for a call that makes an fd, which is closed if it was made.
std::string expectNoFd(const char* what, long fd) {
  std::string out = expectFailure(what, fd, EPERM);
  if (fd >= 0) ::close(static_cast<int>(fd));
  return out;
}

std::string firstLine(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// The value of `key:` in a /proc status file.
std::string statusLine(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) {
      const size_t value = line.find_first_not_of(" \t", key.size() + 1);
      return value == std::string::npos ? "" : line.substr(value);
    }
  }
  return "(no " + key + " line)";
}

class Sandbox : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: the sandbox starts from root";
  }
};

// --- dropPrivileges ---------------------------------------------------------------------

TEST_F(Sandbox, BecomesTheIdentityWithNoSupplementaryGroups) {
  // Real, effective, saved and filesystem ids; getresuid itself is not on the allowlist.
  EXPECT_EQ(sandboxed([] { return statusLine("/proc/self/status", "Uid"); }),
            "65534\t65534\t65534\t65534");
  EXPECT_EQ(sandboxed([] { return statusLine("/proc/self/status", "Gid"); }),
            "65534\t65534\t65534\t65534");
  // Root's supplementary groups go too, given one to lose.
  EXPECT_EQ(inChild(Confinement::kNone,
                    [] {
                      const gid_t group = 4242;
                      if (::setgroups(1, &group) != 0) return std::string("setgroups failed");
                      if (Status s = dropPrivileges(kNobody); !s) return s.error();
                      return "groups: " + statusLine("/proc/self/status", "Groups");
                    })
                .report,
            "groups: ");
  EXPECT_EQ(sandboxed([] {
              return ::getuid() == 65534 && ::geteuid() == 65534 && ::getgid() == 65534 &&
                             ::getegid() == 65534
                         ? std::string()
                         : fmt::format("getuid {} getgid {}", ::getuid(), ::getgid());
            }),
            "ok");
}

TEST_F(Sandbox, LeavesNoCapabilityInAnySet) {
  for (const char* set : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(sandboxed([set] {
                const std::string value = statusLine("/proc/self/status", set);
                return value == "0000000000000000" ? std::string() : set + (": " + value);
              }),
              "ok")
        << set;
  }
}

TEST_F(Sandbox, SetsNoNewPrivsAndAFilter) {
  EXPECT_EQ(sandboxed([] { return statusLine("/proc/self/status", "NoNewPrivs"); }), "1");
  EXPECT_EQ(sandboxed([] { return statusLine("/proc/self/status", "Seccomp"); }), "2");
}

TEST_F(Sandbox, IsNotDumpableSoThatProcessesOfTheSameUserCannotTraceIt) {
  // The kernel gives a non-dumpable process's /proc files to root.
  EXPECT_EQ(sandboxed([] {
              struct stat st {};
              if (::stat("/proc/self/status", &st) != 0) return std::string("stat failed");
              return st.st_uid == 0 ? std::string()
                                    : fmt::format("/proc/self/status is uid {}'s", st.st_uid);
            }),
            "ok");
}

TEST_F(Sandbox, DropFailsWhileAnotherThreadRuns) {
  EXPECT_EQ(inChild(Confinement::kNone,
                    [] {
                      std::atomic<bool> stop{false};
                      std::thread other([&stop] {
                        while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(1));
                      });
                      const Status s = dropPrivileges(kNobody);
                      stop = true;
                      other.join();
                      if (s) return std::string("dropPrivileges succeeded");
                      return s.error().find("threads") != std::string::npos ? std::string()
                                                                            : s.error();
                    })
                .report,
            "ok");
}

TEST_F(Sandbox, FilterNeedsNoNewPrivsFirst) {
  EXPECT_EQ(inChild(Confinement::kNone,
                    [] {
                      const Status s = installProxyFilter();
                      if (s) return std::string("installProxyFilter succeeded without it");
                      return statusLine("/proc/self/status", "Seccomp") == "0"
                                 ? std::string()
                                 : std::string("a filter was installed anyway");
                    })
                .report,
            "ok");
}

// --- refused: each in the sandbox, and with only the filter as root ---------------------

// Runs `check` both ways; a failure names the way.
void expectRefused(const std::function<std::string()>& check) {
  EXPECT_EQ(sandboxed(check), "ok") << "after dropPrivileges and installProxyFilter";
  EXPECT_EQ(filteredAsRoot(check), "ok") << "with the filter only, as root";
}

TEST_F(Sandbox, RefusesSetnsWithEperm) {
  expectRefused([] {
    const Fd ns(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!ns.valid()) return fmt::format("open /proc/self/ns/net: {}", std::strerror(errno));
    return expectFailure("setns", ::setns(ns.get(), CLONE_NEWNET), EPERM);
  });
}

// Room for any file handle (its bytes are a flexible array member).
struct HandleBuffer {
  HandleBuffer() { get()->handle_bytes = MAX_HANDLE_SZ; }
  file_handle* get() { return reinterpret_cast<file_handle*>(bytes); }
  alignas(file_handle) unsigned char bytes[sizeof(file_handle) + MAX_HANDLE_SZ] = {};
};

TEST_F(Sandbox, RefusesFileHandlesWithEperm) {
  // A handle of / made before the confinement: open_by_handle_at would open it as root.
  HandleBuffer handle;
  int mount_id = 0;
  ASSERT_EQ(::name_to_handle_at(AT_FDCWD, "/", handle.get(), &mount_id, 0), 0)
      << std::strerror(errno);
  expectRefused([&handle] {
    const Fd root(::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    std::string out =
        expectNoFd("open_by_handle_at", ::open_by_handle_at(root.get(), handle.get(), O_RDONLY));
    HandleBuffer other;
    int id = 0;
    // name_to_handle_at needs no privilege at all: only the filter refuses it.
    out += expectFailure("name_to_handle_at",
                         ::name_to_handle_at(AT_FDCWD, "/", other.get(), &id, 0), EPERM);
    return out;
  });
}

TEST_F(Sandbox, RefusesUnshare) {
  expectRefused(
      [] { return expectFailure("unshare(CLONE_NEWNET)", ::unshare(CLONE_NEWNET), EPERM); });
  // A user namespace needs no privilege: only the filter refuses it.
  expectRefused(
      [] { return expectFailure("unshare(CLONE_NEWUSER)", ::unshare(CLONE_NEWUSER), EPERM); });
}

TEST_F(Sandbox, RefusesBpf) {
  expectRefused([] {
    bpf_attr attr{};
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    return expectNoFd("bpf(BPF_MAP_CREATE)",
                      ::syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr)));
  });
}

// clone() as fork() with one namespace flag: a child that is made exits at once.
std::string cloneWith(unsigned long flag, const char* name) {
  const long pid = ::syscall(SYS_clone, flag | SIGCHLD, 0L, 0L, 0L, 0L);
  if (pid == 0) ::_exit(0);
  std::string out = expectFailure(name, pid, EPERM);
  if (pid > 0) ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
  return out;
}

TEST_F(Sandbox, RefusesCloneWithANamespaceFlag) {
  expectRefused([] { return cloneWith(CLONE_NEWNET, "clone(CLONE_NEWNET)"); });
  expectRefused([] { return cloneWith(CLONE_NEWUSER, "clone(CLONE_NEWUSER)"); });
  expectRefused([] { return cloneWith(CLONE_NEWNS, "clone(CLONE_NEWNS)"); });
}

TEST_F(Sandbox, Clone3IsNotImplementedSoThatGlibcFallsBackToClone) {
  expectRefused([] {
    struct {  // struct clone_args, version 0
      uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    } args{};
    args.flags = CLONE_NEWNET;
    args.exit_signal = SIGCHLD;
    const long pid = ::syscall(SYS_clone3, &args, sizeof(args));
    if (pid == 0) ::_exit(0);
    std::string out = expectFailure("clone3", pid, ENOSYS);
    if (pid > 0) ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
    return out;
  });
}

TEST_F(Sandbox, RefusesANewIdentity) {
  expectRefused([] {
    std::string out = expectFailure("setresuid", ::syscall(SYS_setresuid, 0, 0, 0), EPERM);
    out += expectFailure("setgid", ::syscall(SYS_setgid, 0), EPERM);
    out += expectFailure("setgroups", ::syscall(SYS_setgroups, 0, nullptr), EPERM);
    return out;
  });
}

TEST_F(Sandbox, RefusesExecve) {
  // A filter that let it through would replace the child: it would report nothing.
  expectRefused([] {
    char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
    return expectFailure("execve", ::execve("/bin/true", argv, environ), EPERM);
  });
}

TEST_F(Sandbox, RefusesOtherProcessesAndTheirMemory) {
  static int in_parent = 42;  // the same address in the parent after fork()
  expectRefused([] {
    int copy = 0;
    iovec local{&copy, sizeof(copy)};
    iovec remote{&in_parent, sizeof(in_parent)};
    const pid_t parent = ::getppid();
    rlimit limit{};
    std::string out = expectFailure("process_vm_readv",
                                    ::process_vm_readv(parent, &local, 1, &remote, 1, 0), EPERM);
    out += expectFailure("kill", ::kill(parent, 0), EPERM);
    out += expectFailure("tgkill", ::syscall(SYS_tgkill, parent, parent, 0), EPERM);
    out += expectFailure("prlimit", ::prlimit(parent, RLIMIT_NOFILE, nullptr, &limit), EPERM);
    // PTRACE_SEIZE: were it let through, the parent would not be stopped.
    out += expectFailure("ptrace", ::syscall(SYS_ptrace, 0x4206, parent, 0, 0), EPERM);
    return out;
  });
}

TEST_F(Sandbox, RefusesIoctlsBeyondTheHarmlessFew) {
  expectRefused([] {
    // On /dev/null TIOCSTI would fail with ENOTTY: EPERM is the filter's.
    const Fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    char c = 'x';
    std::string out = expectFailure("ioctl(TIOCSTI)", ::ioctl(null.get(), TIOCSTI, &c), EPERM);
    // With high bits set too, which the kernel ignores: the bypass of filters that compared 64
    // bits to refuse TIOCSTI alone.
    out += expectFailure("ioctl(TIOCSTI | 1 << 32)",
                         ::syscall(SYS_ioctl, null.get(), (1UL << 32) | TIOCSTI, &c), EPERM);
    int queued = 0;
    const int fionread = ::ioctl(null.get(), FIONREAD, &queued);  // ENOTTY: let through
    if (fionread == -1 && errno == EPERM) out += "ioctl(FIONREAD) refused";
    return out;
  });
}

TEST_F(Sandbox, RefusesOtherPrctlsAndKeepsThreadNames) {
  expectRefused([] {
    std::string out =
        expectFailure("prctl(PR_SET_DUMPABLE)", ::prctl(PR_SET_DUMPABLE, 1L, 0L, 0L, 0L), EPERM);
    char name[16] = {};
    if (::prctl(PR_SET_NAME, "sandboxed", 0L, 0L, 0L) != 0 ||
        ::prctl(PR_GET_NAME, name, 0L, 0L, 0L) != 0 || std::string(name) != "sandboxed") {
      out += fmt::format("thread name: {} ({})", name, std::strerror(errno));
    }
    return out;
  });
}

TEST_F(Sandbox, RefusesOtherSocketFamiliesAndOpeningForWriting) {
  expectRefused([] {
    std::string out =
        expectNoFd("socket(AF_NETLINK)", ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0));
    out += expectNoFd("socket(AF_UNIX)", ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    out += expectNoFd("open for writing", ::open("/dev/null", O_WRONLY | O_CLOEXEC));
    // O_CREAT of a file that exists only opens it, were it let through.
    out +=
        expectNoFd("open with O_CREAT", ::open("/dev/null", O_RDONLY | O_CREAT | O_CLOEXEC, 0600));
    return out;
  });
}

// --- allowed: what the proxy does --------------------------------------------------------

TEST_F(Sandbox, StartsAThreadThatDoesWorkUnderTheSameFilter) {
  EXPECT_EQ(sandboxed([] {
              long sum = 0;
              std::string seccomp;
              std::thread worker([&] {
                for (int i = 1; i <= 100; ++i) sum += i;
                seccomp = statusLine("/proc/thread-self/status", "Seccomp");
              });
              worker.join();
              if (sum != 5050) return fmt::format("the thread summed {}", sum);
              return seccomp == "2" ? std::string() : "thread's Seccomp: " + seccomp;
            }),
            "ok");
}

TEST_F(Sandbox, ConnectsAcceptsAndCarriesBytesOverLoopback) {
  // Bound before the sandbox, as the proxy's listeners are.
  const Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(::listen(listener.get(), 4), 0);
  ASSERT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&address), &length), 0);
  EXPECT_EQ(sandboxed([&] {
              const Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
              if (!client.valid()) return fmt::format("socket: {}", std::strerror(errno));
              if (::connect(client.get(), reinterpret_cast<const sockaddr*>(&address),
                            sizeof(address)) != 0) {
                return fmt::format("connect: {}", std::strerror(errno));
              }
              const Fd accepted(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
              if (!accepted.valid()) return fmt::format("accept4: {}", std::strerror(errno));
              char byte = 'p';
              if (::send(client.get(), &byte, 1, MSG_NOSIGNAL) != 1 ||
                  ::recv(accepted.get(), &byte, 1, 0) != 1) {
                return fmt::format("send/recv: {}", std::strerror(errno));
              }
              return byte == 'p' ? std::string() : std::string("wrong byte");
            }),
            "ok");
}

TEST_F(Sandbox, RunsAnIoUringNop) {
  EXPECT_EQ(sandboxed([] {
              io_uring ring{};
              if (int rc = io_uring_queue_init(4, &ring, 0); rc != 0) {
                return fmt::format("io_uring_queue_init: {} (kernel.io_uring_disabled: {})",
                                   std::strerror(-rc),
                                   firstLine("/proc/sys/kernel/io_uring_disabled"));
              }
              io_uring_prep_nop(io_uring_get_sqe(&ring));
              io_uring_submit(&ring);
              io_uring_cqe* cqe = nullptr;
              const int rc = io_uring_wait_cqe(&ring, &cqe);
              std::string out;
              if (rc != 0) out = fmt::format("io_uring_wait_cqe: {}", std::strerror(-rc));
              if (rc == 0 && cqe->res != 0) out = fmt::format("NOP completed with {}", cqe->res);
              io_uring_queue_exit(&ring);
              return out;
            }),
            "ok");
}

TEST_F(Sandbox, RunsTheDaemonsLoopsWithATimerAndAWakeFromAnotherThread) {
  EXPECT_EQ(sandboxed([] {
              if (Status s = loop::probeIoUring(); !s) return "probe: " + s.error();
              for (const loop::Engine engine : {loop::Engine::kIoUring, loop::Engine::kEpoll}) {
                auto loop = loop::Loop::create(engine, 8);
                if (!loop) return loop.error();
                bool fired = false;
                bool woken = false;
                loop::Timer timer(**loop, [&fired] { fired = true; });
                loop::Waker waker(**loop, [&woken] { woken = true; });
                waker.arm();
                timer.arm(std::chrono::milliseconds(1));
                std::thread other([&waker] { waker.wake(); });
                for (int i = 0; i < 100 && !(fired && woken); ++i) {
                  (*loop)->runOnce(std::chrono::milliseconds(10));
                }
                other.join();
                if (!fired || !woken) {
                  return fmt::format("{}: timer fired: {}, woken: {}", loop::engineName(engine),
                                     fired, woken);
                }
                // The waker's read is still armed: cancelled before the loop goes.
                (*loop)->cancel(&waker);
                (*loop)->runOnce(std::chrono::milliseconds(0));
              }
              return std::string();
            }),
            "ok");
}

TEST_F(Sandbox, ReadsItsOwnProcFiles) {
  // Non-dumpable after the drop, the process still reads what its metrics read.
  EXPECT_EQ(sandboxed([] {
              std::string out;
              for (const char* path : {"/proc/self/stat", "/proc/self/limits", "/proc/stat"}) {
                std::ifstream in(path);
                std::string line;
                if (!std::getline(in, line)) out += fmt::format("cannot read {}; ", path);
              }
              DIR* fds = ::opendir("/proc/self/fd");
              if (fds == nullptr) return out + "cannot list /proc/self/fd";
              int entries = 0;
              while (::readdir(fds) != nullptr) ++entries;
              ::closedir(fds);
              if (entries < 3) out += fmt::format("/proc/self/fd lists {} entries", entries);
              return out;
            }),
            "ok");
}

TEST_F(Sandbox, AbortStillEndsTheProcessWithSigabrt) {
  const ChildResult result = inChild(Confinement::kSandbox, [] {
    std::abort();
    return std::string();
  });
  ASSERT_TRUE(WIFSIGNALED(result.wait_status))
      << "report: " << result.report << ", wait status " << result.wait_status;
  EXPECT_EQ(WTERMSIG(result.wait_status), SIGABRT);
}

}  // namespace
}  // namespace spindle::sandbox
