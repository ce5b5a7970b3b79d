// Keeps a set of names resolved: asks A and AAAA for each, applies the failure policy, and
// reports every change of a name's address set. Runs on the main loop.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dns/dns_resolver.h"
#include "dns/policy.h"
#include "loop/loop.h"

namespace spindle::dns {

class Discovery {
 public:
  using OnChange = std::function<void(const std::vector<net::SocketAddress>&)>;
  // Every answer's outcome (for the metrics).
  using OnResult = std::function<void(Outcome)>;

  Discovery(loop::Loop& loop, DnsResolver& resolver, PolicySettings settings);

  // Resolves `name` from now on; on_change runs with each new address set (ports 0).
  void watch(const std::string& name, OnChange on_change, OnResult on_result = nullptr);
  // Whether every watched name has had a good answer; else the first that has not.
  bool allResolved(std::string* pending = nullptr) const;
  struct Freshness {
    std::chrono::seconds age;       // since the last good answer
    std::chrono::milliseconds ttl;  // how long that answer holds (NameState::goodFor)
  };
  // Of `name`'s last good answer; nullopt before the first.
  std::optional<Freshness> freshness(const std::string& name) const;

 private:
  struct Watched {
    std::string name;
    NameState state;
    OnChange on_change;
    OnResult on_result;
    bool in_flight = false;
    std::optional<Answer> a;
    std::optional<Answer> aaaa;
    // Each family's last answer that was not a failure, to stand in for a failed one.
    std::optional<Answer> last_good_a;
    std::optional<Answer> last_good_aaaa;
  };

  void query(Watched& watched);
  void onAnswer(Watched& watched);
  void onTick();

  loop::Loop& loop_;
  DnsResolver& resolver_;
  PolicySettings settings_;
  std::vector<std::unique_ptr<Watched>> names_;
  loop::Timer tick_;
};

}  // namespace spindle::dns
