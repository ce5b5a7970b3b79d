// The kernel side's owner: loads the BPF programs, attaches them to a cgroup with links that
// this process owns (never pinned, so a dead daemon redirects nothing), and keeps the maps.
// The maps may be pinned on bpffs, so that two spindle processes on a node (the old and the
// new one of a rollout) share them: whichever process accepts a redirected connection finds
// its original destination. The only code that includes the skeleton or libbpf's map API.
#pragma once

#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "net/address.h"
#include "spindle/bpf_abi.h"
#include "util/result.h"

struct redirect_bpf;
struct bpf_link;

namespace spindle::redirect {

struct OriginalDst {
  net::SocketAddress destination;  // what the app dialled
  uint32_t service_id = 0;
  uint64_t cgroup_id = 0;     // cgroup of the connecting process
  uint64_t netns_cookie = 0;  // network namespace of the connecting socket
  uint32_t pid = 0;           // the connecting process, in the host PID namespace
};

// Where a worker finds the original destination of a connection it accepted: the privileged
// part, which reads the map (privileged/client.h).
class OriginLookup {
 public:
  virtual ~OriginLookup() = default;
  // See OriginalDstMap::take.
  virtual std::optional<OriginalDst> take(const net::SocketAddress& peer, uint16_t proxy_port,
                                          std::optional<uint32_t> isn) = 0;
};

// The privileged part's view of the orig_by_peer map: a thread-safe handle on a kernel map and
// on the count of its records, which the kernel side keeps too.
class OriginalDstMap {
 public:
  OriginalDstMap(int map_fd, int64_t* count) : fd_(map_fd), count_(count) {}
  // The original destination of a connection accepted from `peer` on `proxy_port`, whose
  // client's initial sequence number is `isn` (from its SYN; nullopt when the SYN was not
  // kept). The record is removed: each connection is looked up once. nullopt: not redirected
  // by spindle, or the record under that key is another connection's (the client of this one
  // is gone and the address and port are already someone else's).
  // Why the sequence number: the accepted socket tells nothing of the client socket (its
  // SO_COOKIE and SO_NETNS_COOKIE are its own and spindle's namespace's), but both ends see
  // the SYN, and the client's initial sequence number in it is what its sockops program
  // recorded. With records removed when their client closes, the key alone already names one
  // live client; the number makes the match exact when an accept races a reuse of the key.
  std::optional<OriginalDst> take(const net::SocketAddress& peer, uint16_t proxy_port,
                                  std::optional<uint32_t> isn) const;

 private:
  int fd_;
  int64_t* count_;
};

struct ControlSettings {
  std::optional<net::SocketAddress> proxy_v4;
  std::optional<net::SocketAddress> proxy_v6;
  uint16_t proxy_port = 0;
  // Each service is redirected to a port of its own, among the service_ports ports after
  // proxy_port, so that a connection a sidecar re-originates still names its service.
  uint16_t service_ports = 0;
  uint32_t mark = 0;
  uint64_t netns_cookie = 0;
  bool host_netns = false;
  std::chrono::nanoseconds heartbeat_timeout{0};
};

using Counters = std::array<uint64_t, SPINDLE_REASON_COUNT>;
const char* reasonName(int reason);

class Redirector {
 public:
  // Opens and loads the programs (not attached yet). With a pin directory (on bpffs), the
  // maps pinned there by another spindle of this ABI version are reused, or else created and
  // pinned there.
  static Result<std::unique_ptr<Redirector>> load(const std::string& pin_dir = "");
  // Where the maps of this ABI version are pinned under redirect.pin_path; an error when that
  // is not on a bpf filesystem.
  static Result<std::string> pinDirectory(const std::string& pin_path);
  bool pinned() const { return !pin_dir_.empty(); }
  // Removes the pins (the last spindle of the node is leaving); the maps live on while open.
  void unpin();
  // This process is the node's only spindle: entries of the services map that it did not
  // write (left by a spindle that is gone) are removed by the next setServiceAddresses().
  void claimServicesMap();
  // This process is the node's only spindle, its programs not attached yet: the records in
  // orig_by_peer are of connections to a spindle that is gone (reset with its listeners) or
  // were left while no program saw their sockets close. They go, and the count with them.
  void forgetRecords();
  ~Redirector();
  Redirector(const Redirector&) = delete;
  Redirector& operator=(const Redirector&) = delete;

  Status setControl(const ControlSettings& settings);
  // Makes the services map hold exactly these (address, service id) pairs, each service
  // with its proxy port. New entries go in before stale ones go out, so an address that
  // stays is never missing. A service keeps its port while it is declared, and takes the
  // one another spindle of the node (a rollout) gave it; an error when there are more
  // services than ports.
  Status setServiceAddresses(const std::vector<std::pair<net::SocketAddress, uint32_t>>& addresses);
  // The proxy port of a service, 0 when it has none (no address yet).
  uint16_t servicePort(uint32_t service_id) const;
  // Refreshes the heartbeat; connect4/6 stop redirecting when it is older than the timeout.
  Status heartbeat();
  Status attach(const std::string& cgroup_path);
  // Programs of others that run before spindle's connect4/connect6 on the cgroup, by name: a
  // CNI's socket load balancer there turns a Service address into a Pod's before spindle
  // sees it, and then spindle balances nothing. Empty when spindle's run first.
  std::vector<std::string> connectProgramsBefore(const std::string& cgroup_path) const;
  // Names the connect programs attached to the cgroup now, while this process may still read
  // other programs' names (CAP_SYS_ADMIN), for connectProgramsBefore after the drop.
  void learnProgramNames(const std::string& cgroup_path);
  // Destroys the links: from here on every connect goes direct. The maps stay readable. This
  // spindle's listeners get no new connection while another spindle's are live.
  void detach();

  // The node's spindles (the old and the new one of a rollout) share their listening ports.
  // Each takes a slot in the instances map, and a new connection goes to a listener of one
  // whose own heartbeat is fresh (spindle_select_listener), never to one that hangs. A free
  // slot, or one whose spindle has been silent for a long time; none when the others hold
  // both: then the kernel picks listeners as usual (a warning says so).
  void claimInstance(uint32_t workers);
  // From the moment the proxy process `proxy` begins to exit, before the kernel closes any
  // of its sockets, connects go direct unless another spindle of the node serves, and none
  // goes to this spindle's listeners (spindle_proxy_exit). Without it a client that
  // reconnects as its connection closes could be sent to the dead proxy: the links go only
  // once this process has heard of the death. Not watched without the tracing program
  // (watchesExits) or an instance slot: then the heartbeat and the links are what fail open.
  Status watchProxy(pid_t proxy);
  // The tracing program is loaded: it takes CAP_PERFMON (or CAP_SYS_ADMIN).
  bool watchesExits() const { return watches_exits_; }
  // Registers a listener of this spindle's worker on proxy_port + port_offset; the first
  // of each port and family also gets the program that picks among them.
  Status addListener(uint32_t worker, uint32_t port_offset, bool ipv6, int fd, bool first_of_group);

  Counters counters() const;
  // Records in orig_by_peer, as counted by both sides.
  int64_t peerRecords() const;
  OriginalDstMap originalDsts() const;

 private:
  Redirector() = default;
  std::map<uint16_t, uint32_t> sharedServicePorts() const;  // port -> service id
  Result<uint16_t> portFor(uint32_t service_id, const std::map<uint16_t, uint32_t>& shared) const;

  redirect_bpf* skel_ = nullptr;
  int64_t* peer_count_ = nullptr;  // the peer_count map, mmapped
  std::string pin_dir_;
  std::vector<bpf_link*> links_;
  spindle_control control_{};
  uint16_t service_ports_ = 0;
  std::vector<spindle_sockaddr_key> service_keys_;
  std::map<uint32_t, uint16_t> ports_;             // service id -> proxy port (host order)
  std::string programName(uint32_t id) const;      // "" when it cannot be read
  std::map<uint32_t, std::string> program_names_;  // by program id
  std::optional<uint32_t> instance_;               // this spindle's slot in the instances map
  spindle_instance self_{};
  bool watches_exits_ = false;  // spindle_proxy_exit is loaded
  uint32_t watched_proxy_ = 0;  // the pid watchProxy registered
  void writeInstance();
  bool proxyExited() const;  // spindle_proxy_exit saw this spindle's proxy begin to exit
};

}  // namespace spindle::redirect
