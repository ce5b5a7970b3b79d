// The worker's view of the services: a reload keeps a service's picker (and its state) when
// the service's policy is unchanged, and gives it a new one when any setting changed.
#include "proxy/worker_services.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "lb/service_table.h"
#include "net/address.h"

namespace spindle::proxy {
namespace {

using std::chrono::seconds;

lb::ServiceEntry entry(std::string name, uint32_t id, lb::ServicePolicy policy = {}) {
  std::vector<lb::Endpoint> endpoints;
  for (const char* text : {"198.18.1.1:50051", "198.18.1.2:50051", "198.18.1.3:50051"}) {
    endpoints.push_back(
        lb::Endpoint{*net::SocketAddress::parse(text), std::make_shared<lb::EndpointLoad>()});
  }
  auto set = std::make_shared<const lb::EndpointSet>(name, std::move(endpoints));
  return lb::ServiceEntry{std::move(name), id, std::move(set), policy};
}

std::shared_ptr<const lb::ServiceTable> table(std::vector<lb::ServiceEntry> entries) {
  return std::make_shared<const lb::ServiceTable>(std::move(entries));
}

lb::ServicePolicy roundRobin() {
  lb::ServicePolicy policy;
  policy.balance = lb::Balance::kRoundRobin;
  return policy;
}

TEST(WorkerServicesTest, WorkerServices_FindsAServiceByTheIdTheKernelRecorded) {
  WorkerServices services(table({entry("a", 11), entry("b", 22)}), 1);
  EXPECT_EQ(services.indexOf(22), 1u);
  EXPECT_EQ(services.indexOf(11), 0u);
  EXPECT_FALSE(services.indexOf(33).has_value());
  EXPECT_EQ(services.name(1), "b");
}

TEST(WorkerServicesTest, WorkerServices_SamePolicyKeepsThePickerAndItsState) {
  WorkerServices services(table({entry("a", 1, roundRobin())}), 1);
  lb::Picker* before = &services.picker(0);
  const lb::Exclusions none;
  const auto first = before->pick(*services.at(0).endpoints, none, lb::Clock::now());
  // New endpoints snapshot (DNS), same policy: round robin goes on where it was.
  services.update(table({entry("a", 1, roundRobin())}));
  EXPECT_EQ(&services.picker(0), before);
  const auto second = services.picker(0).pick(*services.at(0).endpoints, none, lb::Clock::now());
  ASSERT_TRUE(first && second);
  EXPECT_NE(*first, *second);
}

TEST(WorkerServicesTest, WorkerServices_AnyChangedSettingGivesANewPickerAndBudget) {
  WorkerServices services(table({entry("a", 1, roundRobin()), entry("b", 2)}), 1);
  lb::Picker* a = &services.picker(0);
  lb::Picker* b = &services.picker(1);
  // Only the outlier settings of "a" change: not a picker setting, but part of the policy,
  // so the service is rebuilt rather than silently kept.
  lb::ServicePolicy changed = roundRobin();
  changed.outlier.base_ejection = seconds(5);
  services.update(table({entry("a", 1, changed), entry("b", 2)}));
  EXPECT_NE(&services.picker(0), a);
  EXPECT_EQ(&services.picker(1), b);
  EXPECT_EQ(services.at(0).policy.outlier.base_ejection, seconds(5));
}

TEST(WorkerServicesTest, WorkerServices_AServiceAddedByAReloadGetsItsOwnPicker) {
  WorkerServices services(table({entry("a", 1)}), 1);
  services.update(table({entry("a", 1), entry("c", 3, roundRobin())}));
  ASSERT_EQ(services.table().size(), 2u);
  EXPECT_EQ(services.indexOf(3), 1u);
  const lb::Exclusions none;
  EXPECT_TRUE(services.picker(1).pick(*services.at(1).endpoints, none, lb::Clock::now()));
  // A budget that allows the floor of 10 retries per second.
  services.retryBudget(1).onCall(lb::Clock::now());
  EXPECT_TRUE(services.retryBudget(1).tryRetry(lb::Clock::now()));
}

}  // namespace
}  // namespace spindle::proxy
