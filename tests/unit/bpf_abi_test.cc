// The structs in bpf_abi.h must have the same layout in the kernel object as in the daemon.
// The BPF object records each map's key and value sizes as the BPF compiler saw them; open
// it (no load, no privilege needed) and compare them with what g++ sees.
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <initializer_list>

#include "redirect.skel.h"
#include "spindle/bpf_abi.h"

namespace {

class BpfAbi : public ::testing::Test {
 protected:
  void SetUp() override {
    skel_ = redirect_bpf__open();
    ASSERT_NE(skel_, nullptr);
  }
  void TearDown() override { redirect_bpf__destroy(skel_); }
  redirect_bpf* skel_ = nullptr;
};

TEST_F(BpfAbi, ServicesMapMatchesDaemonStructs) {
  EXPECT_EQ(bpf_map__key_size(skel_->maps.services), sizeof(spindle_sockaddr_key));
  EXPECT_EQ(bpf_map__value_size(skel_->maps.services), sizeof(spindle_service_value));
}

TEST_F(BpfAbi, ServicePortsMapMatchesDaemonStructs) {
  EXPECT_EQ(bpf_map__key_size(skel_->maps.service_ports), sizeof(uint32_t));
  EXPECT_EQ(bpf_map__value_size(skel_->maps.service_ports), sizeof(spindle_service_port));
  EXPECT_EQ(bpf_map__max_entries(skel_->maps.service_ports),
            static_cast<uint32_t>(SPINDLE_MAX_SERVICE_PORTS));
}

TEST_F(BpfAbi, OriginalDestinationMapsMatchDaemonStructs) {
  // Socket storage: keyed by the socket itself, no entry limit.
  EXPECT_EQ(bpf_map__type(skel_->maps.orig_by_sock), BPF_MAP_TYPE_SK_STORAGE);
  EXPECT_EQ(bpf_map__value_size(skel_->maps.orig_by_sock), sizeof(spindle_orig_dst));
  // A plain hash: a record is never evicted to make room for another.
  EXPECT_EQ(bpf_map__type(skel_->maps.orig_by_peer), BPF_MAP_TYPE_HASH);
  EXPECT_EQ(bpf_map__key_size(skel_->maps.orig_by_peer), sizeof(spindle_peer_key));
  EXPECT_EQ(bpf_map__value_size(skel_->maps.orig_by_peer), sizeof(spindle_peer_record));
  EXPECT_EQ(bpf_map__max_entries(skel_->maps.orig_by_peer),
            static_cast<uint32_t>(SPINDLE_MAX_PEER_RECORDS + SPINDLE_PEER_RECORDS_HEADROOM));
}

TEST_F(BpfAbi, PeerCountIsOneSharedSignedCounter) {
  EXPECT_EQ(bpf_map__type(skel_->maps.peer_count), BPF_MAP_TYPE_ARRAY);
  EXPECT_EQ(bpf_map__max_entries(skel_->maps.peer_count), 1u);
  EXPECT_EQ(bpf_map__value_size(skel_->maps.peer_count), sizeof(int64_t));
  EXPECT_TRUE(bpf_map__map_flags(skel_->maps.peer_count) & BPF_F_MMAPABLE);
}

TEST_F(BpfAbi, ControlAndCountersMatchDaemonStructs) {
  EXPECT_EQ(bpf_map__value_size(skel_->maps.control), sizeof(spindle_control));
  EXPECT_EQ(bpf_map__max_entries(skel_->maps.counters),
            static_cast<uint32_t>(SPINDLE_REASON_COUNT));
  EXPECT_EQ(bpf_map__value_size(skel_->maps.counters), sizeof(uint64_t));
}

// Every field at the same offset on both sides: the object's BTF is the layout clang used.
struct Field {
  const char* name;
  size_t offset;
};

void expectLayout(const btf* types, const char* struct_name, size_t size,
                  std::initializer_list<Field> fields) {
  const int id = btf__find_by_name_kind(types, struct_name, BTF_KIND_STRUCT);
  ASSERT_GT(id, 0) << struct_name << " not in the BPF object's BTF";
  const btf_type* type = btf__type_by_id(types, static_cast<uint32_t>(id));
  EXPECT_EQ(type->size, size) << struct_name;
  ASSERT_EQ(btf_vlen(type), fields.size()) << struct_name << ": field count differs";
  const btf_member* member = btf_members(type);
  for (const Field& field : fields) {
    EXPECT_STREQ(btf__name_by_offset(types, member->name_off), field.name) << struct_name;
    EXPECT_EQ(btf_member_bit_offset(type, static_cast<uint32_t>(member - btf_members(type))),
              field.offset * 8)
        << struct_name << "." << field.name;
    ++member;
  }
}

#define FIELD(type, name) \
  Field { #name, offsetof(type, name) }

TEST_F(BpfAbi, EveryFieldHasTheSameOffsetOnBothSides) {
  const btf* types = bpf_object__btf(skel_->obj);
  ASSERT_NE(types, nullptr);
  expectLayout(types, "spindle_sockaddr_key", sizeof(spindle_sockaddr_key),
               {FIELD(spindle_sockaddr_key, addr), FIELD(spindle_sockaddr_key, port),
                FIELD(spindle_sockaddr_key, pad)});
  expectLayout(types, "spindle_peer_key", sizeof(spindle_peer_key),
               {FIELD(spindle_peer_key, addr), FIELD(spindle_peer_key, port),
                FIELD(spindle_peer_key, proxy_port)});
  expectLayout(types, "spindle_peer_record", sizeof(spindle_peer_record),
               {FIELD(spindle_peer_record, expiry), FIELD(spindle_peer_record, orig),
                FIELD(spindle_peer_record, socket_cookie), FIELD(spindle_peer_record, isn),
                FIELD(spindle_peer_record, state)});
  expectLayout(types, "spindle_orig_dst", sizeof(spindle_orig_dst),
               {FIELD(spindle_orig_dst, addr), FIELD(spindle_orig_dst, port),
                FIELD(spindle_orig_dst, flags), FIELD(spindle_orig_dst, service_id),
                FIELD(spindle_orig_dst, cgroup_id), FIELD(spindle_orig_dst, netns_cookie),
                FIELD(spindle_orig_dst, pid), FIELD(spindle_orig_dst, pad2)});
  expectLayout(types, "spindle_control", sizeof(spindle_control),
               {FIELD(spindle_control, proxy_addr6), FIELD(spindle_control, proxy_addr4),
                FIELD(spindle_control, proxy_port), FIELD(spindle_control, flags),
                FIELD(spindle_control, mark), FIELD(spindle_control, pad),
                FIELD(spindle_control, netns_cookie), FIELD(spindle_control, heartbeat_ns),
                FIELD(spindle_control, heartbeat_timeout_ns)});
  expectLayout(types, "spindle_service_value", sizeof(spindle_service_value),
               {FIELD(spindle_service_value, service_id), FIELD(spindle_service_value, proxy_port),
                FIELD(spindle_service_value, pad)});
  expectLayout(types, "spindle_service_port", sizeof(spindle_service_port),
               {FIELD(spindle_service_port, addr), FIELD(spindle_service_port, port),
                FIELD(spindle_service_port, pad), FIELD(spindle_service_port, service_id)});
  expectLayout(types, "spindle_instance", sizeof(spindle_instance),
               {FIELD(spindle_instance, heartbeat_ns), FIELD(spindle_instance, workers),
                FIELD(spindle_instance, owner)});
}

TEST(BpfAbiListeners, KeysAreDistinctAndFitTheMap) {
  // Every (instance, worker, port, family) a spindle may listen on has a slot of its own.
  EXPECT_EQ(spindle_listener_key(SPINDLE_MAX_INSTANCES - 1, SPINDLE_MAX_WORKERS - 1,
                                 SPINDLE_MAX_SERVICE_PORTS, 1),
            SPINDLE_MAX_LISTENERS - 1);
  EXPECT_EQ(spindle_listener_key(0, 0, 0, 0), 0u);
  EXPECT_EQ(spindle_listener_key(0, 0, 0, 1), 1u);
  EXPECT_EQ(spindle_listener_key(0, 0, 1, 0), 2u);
  EXPECT_EQ(spindle_listener_key(0, 1, 0, 0), static_cast<uint32_t>(SPINDLE_LISTENER_GROUPS));
  EXPECT_EQ(spindle_listener_key(1, 0, 0, 0),
            static_cast<uint32_t>(SPINDLE_MAX_WORKERS * SPINDLE_LISTENER_GROUPS));
}

}  // namespace
