#include "util/seccomp_profile.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <string>

namespace spindle::seccomp {
namespace {

// The profile the DaemonSet gives spindle (k8s/seccomp-spindle.json), from the source tree.
const char* kShippedProfile = "k8s/seccomp-spindle.json";

std::string writeTemp(const std::string& text) {
  char path[] = "/tmp/spindle-seccomp-XXXXXX";
  const int fd = ::mkstemp(path);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  ::close(fd);
  return path;
}

// The exit code of a fork()ed child that installs `path` and runs `check` (0: as expected).
// The filter cannot be taken off again: never in the test process.
int inChild(const std::string& path, int (*check)()) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (!installProfile(path)) ::_exit(100);
    ::_exit(check());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 200 + WTERMSIG(status);
}

TEST(SeccompProfile, TheShippedProfileRefusesFileHandlesAndAllowsWhatSpindleUses) {
  ASSERT_TRUE(std::ifstream(kShippedProfile).good()) << "run from the repository root";
  const int code = inChild(kShippedProfile, [] {
    // Refused with the profile's errno (EPERM): not in its allow list.
    if (::syscall(SYS_open_by_handle_at, AT_FDCWD, nullptr, 0) != -1 || errno != EPERM) return 1;
    if (::syscall(SYS_name_to_handle_at, AT_FDCWD, "/", nullptr, nullptr, 0) != -1 ||
        errno != EPERM) {
      return 2;
    }
    // Allowed: io_uring, setns (pod mode), ordinary calls.
    if (::syscall(SYS_io_uring_setup, 0, nullptr) != -1 || errno == EPERM) return 3;
    if (::syscall(SYS_setns, -1, 0) != -1 || errno != EBADF) return 4;
    return ::getpid() > 0 ? 0 : 5;
  });
  EXPECT_EQ(code, 0) << "1, 2: file handles allowed; 3: io_uring refused; 4: setns refused; "
                        "100: not installed";
}

TEST(SeccompProfile, ARuleRefusesOneCallAndTheDefaultAllowsTheRest) {
  const std::string path = writeTemp(R"({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [{"names": ["getppid", "no_such_call"], "action": "SCMP_ACT_ERRNO",
                    "errnoRet": 13}]})");
  const int code = inChild(path, [] {
    if (::syscall(SYS_getppid) != -1 || errno != EACCES) return 1;
    return ::getpid() > 0 ? 0 : 2;
  });
  EXPECT_EQ(code, 0);
  ::unlink(path.c_str());
}

TEST(SeccompProfile, AnUnusableProfileIsAnErrorNamingTheFile) {
  const std::string bad_json = writeTemp("{\"defaultAction\": ");
  const std::string with_args = writeTemp(R"({"defaultAction": "SCMP_ACT_ALLOW",
      "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                    "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]})");
  const std::string unknown_action = writeTemp(R"({"defaultAction": "SCMP_ACT_NOTIFY"})");
  for (const std::string& path : {bad_json, with_args, unknown_action}) {
    // In a child too: a profile that did load would confine the test process.
    const pid_t pid = ::fork();
    if (pid == 0) {
      const Status s = installProfile(path);
      ::_exit(!s && s.error().find(path) != std::string::npos ? 0 : 1);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << path;
    ::unlink(path.c_str());
  }
  const Status missing = installProfile("/nonexistent/profile.json");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().find("/nonexistent/profile.json"), std::string::npos);
}

}  // namespace
}  // namespace spindle::seccomp
