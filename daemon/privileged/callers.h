// The calling Pods the proxy may ask sockets for: those whose redirected connections the
// privileged part itself found in the kernel's records. A proxy that is not itself any more
// cannot have a socket made in any other network namespace of the node (another tenant's, the
// host's), since each socket is checked to be made in the namespace of the cookie it names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>

namespace spindle::privileged {

class Callers {
 public:
  explicit Callers(size_t limit = 65536) : limit_(limit) {}

  // A record named this caller's namespace. Past the limit, the namespaces nobody holds are
  // forgotten (a Pod's next connection names its namespace again).
  void seen(uint64_t netns_cookie) {
    if (entries_.size() >= limit_ && entries_.count(netns_cookie) == 0) {
      std::erase_if(entries_, [](const auto& entry) { return entry.second == 0; });
    }
    entries_.try_emplace(netns_cookie, 0);
  }
  bool known(uint64_t netns_cookie) const { return entries_.count(netns_cookie) != 0; }
  // The proxy keeps connections of the caller: it is not forgotten meanwhile.
  void hold(uint64_t netns_cookie) {
    if (auto it = entries_.find(netns_cookie); it != entries_.end()) it->second++;
  }
  void release(uint64_t netns_cookie) {
    if (auto it = entries_.find(netns_cookie); it != entries_.end() && it->second > 0) {
      it->second--;
    }
  }
  size_t size() const { return entries_.size(); }

 private:
  size_t limit_;
  std::unordered_map<uint64_t, size_t> entries_;  // by netns cookie: holds
};

}  // namespace spindle::privileged
