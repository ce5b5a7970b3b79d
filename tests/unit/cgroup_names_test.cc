// Which Pod a connection came from, by its cgroup path.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "redirect/cgroup_names.h"

namespace spindle::redirect {
namespace {

TEST(SourceLabel, CgroupfsDriverPathGivesThePodUid) {
  EXPECT_EQ(sourceLabel("/kubepods/burstable/pod0b7b1a0e-3b8e-4a43-9a0f-5c6d7e8f9a0b/"
                        "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c"),
            "0b7b1a0e-3b8e-4a43-9a0f-5c6d7e8f9a0b");
}

TEST(SourceLabel, SystemdDriverPathGivesThePodUidWithDashes) {
  EXPECT_EQ(sourceLabel("/kubepods.slice/kubepods-besteffort.slice/"
                        "kubepods-besteffort-pod0b7b1a0e_3b8e_4a43_9a0f_5c6d7e8f9a0b.slice/"
                        "cri-containerd-4f1c2d3e.scope"),
            "0b7b1a0e-3b8e-4a43-9a0f-5c6d7e8f9a0b");
}

TEST(SourceLabel, GuaranteedQosPodHasNoQosLevel) {
  EXPECT_EQ(sourceLabel("/kubepods/pod11111111-2222-3333-4444-555555555555/abc"),
            "11111111-2222-3333-4444-555555555555");
}

TEST(SourceLabel, PathOutsideKubernetesIsKeptWithoutTheLeadingSlash) {
  EXPECT_EQ(sourceLabel("/spindle-test-1/pod-client"), "spindle-test-1/pod-client");
  EXPECT_EQ(sourceLabel("/system.slice/cron.service"), "system.slice/cron.service");
  EXPECT_EQ(sourceLabel("/"), "/");
}

TEST(SourceLabel, KubepodsPathWithoutAPodUidIsKeptWhole) {
  EXPECT_EQ(sourceLabel("/kubepods/burstable"), "kubepods/burstable");
  EXPECT_EQ(sourceLabel("/kubepods/podnotauid/x"), "kubepods/podnotauid/x");
}

TEST(SourceDirectory, IsThePodsOwnCgroupWhoseContainersComeAndGoBeneathIt) {
  EXPECT_EQ(sourceDirectory("/kubepods/burstable/pod0b7b1a0e-3b8e-4a43-9a0f-5c6d7e8f9a0b/"
                            "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c"),
            "/kubepods/burstable/pod0b7b1a0e-3b8e-4a43-9a0f-5c6d7e8f9a0b");
  EXPECT_EQ(sourceDirectory("/kubepods.slice/kubepods-besteffort.slice/"
                            "kubepods-besteffort-pod0b7b1a0e_3b8e_4a43_9a0f_5c6d7e8f9a0b.slice/"
                            "cri-containerd-4f1c2d3e.scope"),
            "/kubepods.slice/kubepods-besteffort.slice/"
            "kubepods-besteffort-pod0b7b1a0e_3b8e_4a43_9a0f_5c6d7e8f9a0b.slice");
  EXPECT_EQ(sourceDirectory("/kubepods/pod11111111-2222-3333-4444-555555555555"),
            "/kubepods/pod11111111-2222-3333-4444-555555555555");
  // Off Kubernetes the label is the path: so is the directory.
  EXPECT_EQ(sourceDirectory("/spindle-test-1/pod-client"), "/spindle-test-1/pod-client");
  EXPECT_EQ(sourceDirectory("/"), "/");
}

// A cgroup id is its directory's inode number: names are found by walking the tree, which
// any directory tree stands in for here.
TEST(CgroupNames, AnIdIsNamedByTheDirectoryWithThatInode) {
  char base[] = "/tmp/spindle-cgroup-names-XXXXXX";
  ASSERT_NE(::mkdtemp(base), nullptr);
  const std::string root = base;
  const std::string pod = root + "/kubepods/pod11111111-2222-3333-4444-555555555555";
  ASSERT_EQ(::mkdir((root + "/kubepods").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir(pod.c_str(), 0700), 0);
  ASSERT_EQ(::mkdir((pod + "/ctr").c_str(), 0700), 0);
  struct stat st {};
  ASSERT_EQ(::stat((pod + "/ctr").c_str(), &st), 0);

  auto names = CgroupNames::open(root);
  ASSERT_TRUE(names) << names.error();
  auto label = names->labelOf(st.st_ino);
  EXPECT_EQ(*label, "11111111-2222-3333-4444-555555555555");
  EXPECT_EQ(names->labelOf(st.st_ino), label);  // cached: the same shared label
  ASSERT_EQ(::stat((root + "/kubepods").c_str(), &st), 0);
  EXPECT_EQ(*names->labelOf(st.st_ino), "kubepods");
  EXPECT_EQ(*names->labelOf(0xfffffffffffffff0u), "unknown");  // no directory has it

  ::rmdir((pod + "/ctr").c_str());
  ::rmdir(pod.c_str());
  ::rmdir((root + "/kubepods").c_str());
  ::rmdir(root.c_str());
}

// A Pod is there while its own cgroup is: a container that restarts (a new cgroup id under
// it) does not make it gone, its directory going does.
TEST(CgroupNames, APodIsPresentUntilItsDirectoryIsGone) {
  char base[] = "/tmp/spindle-cgroup-names-XXXXXX";
  ASSERT_NE(::mkdtemp(base), nullptr);
  const std::string root = base;
  const std::string uid1 = "11111111-2222-3333-4444-555555555555";
  const std::string uid2 = "66666666-7777-8888-9999-aaaaaaaaaaaa";
  const std::string pod1 = root + "/kubepods/pod" + uid1;
  const std::string pod2 = root + "/kubepods/pod" + uid2;
  const std::string other = root + "/system.slice";
  for (const std::string& dir :
       {root + "/kubepods", pod1, pod1 + "/ctr", pod2, pod2 + "/ctr", other}) {
    ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0) << dir;
  }
  auto inode = [](const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return static_cast<uint64_t>(st.st_ino);
  };
  auto names = CgroupNames::open(root);
  ASSERT_TRUE(names) << names.error();
  EXPECT_EQ(*names->labelOf(inode(pod1 + "/ctr")), uid1);
  EXPECT_EQ(*names->labelOf(inode(pod2 + "/ctr")), uid2);
  EXPECT_EQ(*names->labelOf(inode(other)), "system.slice");
  EXPECT_TRUE(names->present(uid1));
  EXPECT_TRUE(names->present(uid2));
  EXPECT_TRUE(names->present("system.slice"));
  EXPECT_TRUE(names->present("unknown"));
  EXPECT_FALSE(names->present("99999999-2222-3333-4444-555555555555"));  // never given out

  ASSERT_EQ(::rmdir((pod1 + "/ctr").c_str()), 0);  // the container restarts
  names->refresh();
  EXPECT_TRUE(names->present(uid1));
  ASSERT_EQ(::rmdir(pod1.c_str()), 0);  // the Pod is deleted
  ASSERT_EQ(::rmdir(other.c_str()), 0);
  names->refresh();
  EXPECT_FALSE(names->present(uid1));
  EXPECT_FALSE(names->present("system.slice"));
  EXPECT_TRUE(names->present(uid2));
  EXPECT_TRUE(names->present("unknown"));

  ::rmdir((pod2 + "/ctr").c_str());
  ::rmdir(pod2.c_str());
  ::rmdir((root + "/kubepods").c_str());
  ::rmdir(root.c_str());
}

}  // namespace
}  // namespace spindle::redirect
