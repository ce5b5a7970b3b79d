#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "redirect.skel.h"
#include "redirect/platform.h"

namespace spindle::redirect {
namespace {

using Probe = KernelFeature::Probe;

bool listed(const std::function<bool(const KernelFeature&)>& match) {
  const auto features = kernelFeatures();
  return std::any_of(features.begin(), features.end(), match);
}

// In every program type since BPF maps began (3.19): docs/kernel.md names them once, the start
// does not ask for them.
bool everyProgramHasIt(int helper) {
  return helper == BPF_FUNC_map_lookup_elem || helper == BPF_FUNC_map_update_elem ||
         helper == BPF_FUNC_map_delete_elem;
}

// The object the daemon loads, as compiled: a program, helper or map added to
// bpf/redirect.bpf.c without a row in the table fails here, not on an old kernel at load.
TEST(KernelFeatures, ListEveryProgramHelperAndMapOfTheBpfObject) {
  size_t size = 0;
  const void* bytes = redirect_bpf__elf_bytes(&size);
  bpf_object* object = bpf_object__open_mem(bytes, size, nullptr);
  ASSERT_NE(object, nullptr) << std::strerror(errno);

  bpf_program* program = nullptr;
  int programs = 0;
  bpf_object__for_each_program(program, object) {
    ++programs;
    const bpf_prog_type type = bpf_program__type(program);
    const bpf_attach_type attach = bpf_program__expected_attach_type(program);
    // The attach type names a cgroup sock_addr hook; other types are probed by type alone.
    EXPECT_TRUE(listed([&](const KernelFeature& f) {
      return f.probe == Probe::kProgram && f.program == type &&
             (type != BPF_PROG_TYPE_CGROUP_SOCK_ADDR || f.attach == attach);
    })) << bpf_program__name(program);
    const bpf_insn* insns = bpf_program__insns(program);
    for (size_t i = 0; i < bpf_program__insn_cnt(program); ++i) {
      // A helper call; src_reg 1 calls a function of the object, 2 a kernel function.
      if (insns[i].code != (BPF_JMP | BPF_CALL) || insns[i].src_reg != 0) continue;
      const int id = insns[i].imm;
      if (everyProgramHasIt(id)) continue;
      EXPECT_TRUE(listed([&](const KernelFeature& f) {
        return f.probe == Probe::kHelper && f.program == type && f.helper == id;
      })) << bpf_program__name(program)
          << " calls helper " << id;
    }
  }
  EXPECT_EQ(programs, 7);

  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, object) {
    const bpf_map_type type = bpf_map__type(map);
    EXPECT_TRUE(listed([&](const KernelFeature& f) {
      return f.probe == Probe::kMapType && f.map == type;
    })) << bpf_map__name(map);
    if (bpf_map__map_flags(map) & BPF_F_MMAPABLE) {
      EXPECT_TRUE(listed([](const KernelFeature& f) {
        return f.probe == Probe::kMapFlags && (f.map_flags & BPF_F_MMAPABLE) != 0;
      })) << bpf_map__name(map);
    }
  }
  bpf_object__close(object);
}

// docs/kernel.md and the README say 5.15: bpf_timer_* in sockops (the record a client that
// closed in order leaves for the proxy) is the newest feature.
TEST(KernelFeatures, FloorIsLinux5_15) {
  EXPECT_EQ(kernelFloor(kernelFeatures()), (KernelVersion{5, 15}));
}

TEST(KernelFeatures, EachHasANameAndARelease) {
  for (const KernelFeature& feature : kernelFeatures()) {
    EXPECT_NE(std::string(feature.name), "");
    EXPECT_GE(feature.since, (KernelVersion{3, 19})) << feature.name;
  }
}

constexpr KernelFeature kFeatures[] = {
    {.name = "BPF program type a", .since = {4, 17}, .probe = Probe::kProgram},
    {.name = "BPF helper b in a programs", .since = {5, 7}, .probe = Probe::kHelper},
    {.name = "BPF helper c in a programs", .since = {5, 15}, .probe = Probe::kHelper},
};

TEST(FirstMissingFeature, AllPresentIsOk) {
  EXPECT_TRUE(firstMissingFeature(
      kFeatures, [](const KernelFeature&) { return 1; }, "6.1.0"));
}

TEST(FirstMissingFeature, NamesTheFirstAbsentFeatureItsReleaseAndTheFloor) {
  // b and c are both absent on 5.4: b, the first, is named.
  const Status status = firstMissingFeature(
      kFeatures,
      [](const KernelFeature& f) {
        return f.since > KernelVersion{5, 4} ? 0 : 1;
      },
      "5.4.0-150-generic");
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error(),
            "the kernel lacks BPF helper b in a programs (Linux 5.7): spindle needs Linux 5.15 or "
            "later, this is 5.4.0-150-generic");
}

TEST(FirstMissingFeature, ARecentKernelWithoutTheFeatureWasBuiltWithoutIt) {
  const Status status = firstMissingFeature(
      kFeatures, [](const KernelFeature& f) { return f.probe == Probe::kProgram ? 0 : 1; },
      "6.1.0-18-amd64");
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error(),
            "the kernel lacks BPF program type a (Linux 4.17): this 6.1.0-18-amd64 kernel was "
            "built without it");
}

TEST(FirstMissingFeature, AProbeThatCannotTellSaysWhy) {
  const Status status = firstMissingFeature(
      kFeatures, [](const KernelFeature&) { return -EPERM; }, "6.1.0");
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error(),
            "cannot tell whether the kernel has BPF program type a (Linux 4.17): Operation not "
            "permitted");
}

TEST(ParseKernelRelease, ReadsMajorAndMinor) {
  EXPECT_EQ(parseKernelRelease("6.1.0-18-amd64"), (KernelVersion{6, 1}));
  EXPECT_EQ(parseKernelRelease("5.15.0-105-generic"), (KernelVersion{5, 15}));
  EXPECT_EQ(parseKernelRelease("6.18"), (KernelVersion{6, 18}));
  EXPECT_EQ(parseKernelRelease("6"), std::nullopt);
  EXPECT_EQ(parseKernelRelease("x.1"), std::nullopt);
  EXPECT_EQ(parseKernelRelease(""), std::nullopt);
}

// The real probes on this machine's kernel, which runs the test suites: each must answer
// "present", and none may fail to tell.
TEST(CheckKernel, EveryFeatureIsPresentHere) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: the probes load BPF programs";
  for (const KernelFeature& feature : kernelFeatures()) {
    EXPECT_EQ(probeKernelFeature(feature), 1) << feature.name;
  }
  const Status status = checkKernel();
  EXPECT_TRUE(status) << status.error();
}

// Each probe can say "absent": asked for what no kernel has, it answers 0, not an error.
TEST(CheckKernel, EachProbeAnswersAbsentForWhatNoKernelHas) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: the probes load BPF programs";
  const KernelFeature absent[] = {
      // cgroup sock_addr programs have no ingress hook
      {.name = "attach type",
       .since = {9, 0},
       .probe = Probe::kProgram,
       .program = BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
       .attach = BPF_CGROUP_INET_INGRESS},
      {.name = "context field",
       .since = {9, 0},
       .probe = Probe::kContextField,
       .program = BPF_PROG_TYPE_SOCK_OPS,
       .offset = 4096},
      {.name = "helper",
       .since = {9, 0},
       .probe = Probe::kHelper,
       .program = BPF_PROG_TYPE_SOCK_OPS,
       .helper = BPF_FUNC_sk_select_reuseport},
      {.name = "helper id",
       .since = {9, 0},
       .probe = Probe::kHelper,
       .program = BPF_PROG_TYPE_SOCK_OPS,
       .helper = static_cast<bpf_func_id>(255)},  // past every helper
      {.name = "map flag", .since = {9, 0}, .probe = Probe::kMapFlags, .map_flags = 1u << 31},
      {.name = "socket option", .since = {9, 0}, .probe = Probe::kSocketOption, .option = 9999},
  };
  for (const KernelFeature& feature : absent) {
    EXPECT_EQ(probeKernelFeature(feature), 0) << feature.name;
  }
}

}  // namespace
}  // namespace spindle::redirect
