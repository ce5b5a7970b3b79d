/* Every struct that crosses the kernel/user boundary. Plain C, fixed-width fields, padding
 * explicit, sizes asserted here so that a change on one side cannot silently skew the other.
 * Addresses are 16 bytes, IPv4 as v4-mapped IPv6 (::ffff:a.b.c.d); ports in network order. */
#ifndef SPINDLE_BPF_ABI_H
#define SPINDLE_BPF_ABI_H

#include <linux/bpf.h> /* struct bpf_timer */
#include <linux/types.h>

#ifdef __cplusplus
#define SPINDLE_STATIC_ASSERT static_assert
#else
#define SPINDLE_STATIC_ASSERT _Static_assert
#endif

/* The maps are pinned under <redirect.pin_path>/v<this>, so that two spindle versions on one
 * node share maps only when they agree on every struct and map here. Bump it with any change
 * to a struct or a map's definition. A new map alone keeps it: a spindle that does not know
 * the map shares the others as before (instances and listeners came that way). */
#define SPINDLE_ABI_VERSION 4

#define SPINDLE_MAX_SERVICE_ADDRS 4096
#define SPINDLE_MAX_SERVICE_PORTS 1024
/* Records in orig_by_peer: connections from this node's Pods that spindle has not accepted yet
 * (normally a few, in its listeners' queues), those a sidecar in the Pod took instead (one per
 * connection the sidecar holds), and for SPINDLE_CLOSED_RECORD_NS those whose client closed
 * before spindle accepted. At this many a connect is not redirected (map_full): spindle counts
 * the records in peer_count and connect4/6 look before they rewrite. */
#define SPINDLE_MAX_PEER_RECORDS 65536
/* The map holds this many more, for connects that passed that look and have not stored their
 * record yet: each is inside one connect() call, between connect4/6 and TCP_CONNECT_CB. */
#define SPINDLE_PEER_RECORDS_HEADROOM 4096
/* How long a record outlives a client that closed in order (FIN) before spindle accepted: its
 * data is in spindle's queue and still to be served. Longer than any accept of a live spindle. */
#define SPINDLE_CLOSED_RECORD_NS 1000000000ull

/* The spindles of a node that share the maps (the old and the new one of a rollout), each an
 * instance in the instances map; and what the listeners map holds for each: the proxy's
 * listeners, one per worker, listening port (proxy_port and the service ports after it) and
 * family. */
#define SPINDLE_MAX_INSTANCES 2
#define SPINDLE_MAX_WORKERS 64
#define SPINDLE_LISTENER_GROUPS (2 * (SPINDLE_MAX_SERVICE_PORTS + 1))
#define SPINDLE_MAX_LISTENERS (SPINDLE_MAX_INSTANCES * SPINDLE_MAX_WORKERS * SPINDLE_LISTENER_GROUPS)

/* The listeners key of an instance's worker's listener on proxy_port + port_offset. */
static inline __u32 spindle_listener_key(__u32 instance, __u32 worker, __u32 port_offset,
					 int ipv6)
{
	return (instance * SPINDLE_MAX_WORKERS + worker) * SPINDLE_LISTENER_GROUPS +
	       port_offset * 2 + (ipv6 ? 1 : 0);
}

/* An instances entry: a spindle is chosen for a new connection only while its own heartbeat is
 * fresh, so that one that hangs (stopped, a worker stuck) gets none while another serves. */
struct spindle_instance {
	__u64 heartbeat_ns; /* CLOCK_MONOTONIC; 0: not serving (stopping, or the slot is free) */
	__u32 workers;
	__u32 owner; /* a random number of the spindle that holds the slot */
};
SPINDLE_STATIC_ASSERT(sizeof(struct spindle_instance) == 16, "spindle_instance size");

/* A proxies entry, by instance: the spindle's proxy process, as its privileged part sees it.
 * The kernel closes a dead process's sockets in an order of its own, a client's connection
 * before the listener it could reconnect to, and the privileged part hears of the death only
 * as its channel closes: a client that reconnects at once would be sent to the dead proxy.
 * spindle_proxy_exit marks the entry as the proxy's main thread begins to exit, before the
 * kernel closes any of its sockets, and zeroes the shared heartbeat unless another spindle of
 * the node serves: from then on no connect goes to that proxy. */
struct spindle_proxy {
	__u64 pidns_dev; /* the pid namespace of both processes (stat of /proc/self/ns/pid) */
	__u64 pidns_ino;
	__u32 tgid;   /* the proxy's pid in that namespace; 0: no proxy registered */
	__u32 exited; /* set by spindle_proxy_exit, never cleared but with a new tgid */
};
SPINDLE_STATIC_ASSERT(sizeof(struct spindle_proxy) == 24, "spindle_proxy size");

/* services key: an (address, port) pair. */
struct spindle_sockaddr_key {
	__u8 addr[16];
	__u16 port; /* network order */
	__u16 pad;  /* always 0, so that keys compare bytewise */
};
SPINDLE_STATIC_ASSERT(sizeof(struct spindle_sockaddr_key) == 20, "spindle_sockaddr_key size");

/* services value. A redirected connect goes to the proxy's address and the service's own
 * port: a connection that a sidecar in the Pod re-originates to that address (it dials the
 * original destination it captured) still says which service it is for. */
struct spindle_service_value {
	__u32 service_id;
	__u16 proxy_port; /* network order */
	__u16 pad;
};
SPINDLE_STATIC_ASSERT(sizeof(struct spindle_service_value) == 8, "spindle_service_value size");

/* service_ports value, keyed by the proxy port (network order, in a __u32): the service a
 * connect to that port of the proxy is for, and an address of it that apps dial. */
struct spindle_service_port {
	__u8 addr[16];
	__u16 port; /* network order */
	__u16 pad;
	__u32 service_id;
};
SPINDLE_STATIC_ASSERT(sizeof(struct spindle_service_port) == 24, "spindle_service_port size");

/* orig_by_peer key: a redirected connection as the proxy's listener sees it. With the proxy port,
 * two connections of one client (address, port) to two services are two keys: Linux gives a
 * connect() a local port that is free for that destination, not one free for all of them. */
struct spindle_peer_key {
	__u8 addr[16];    /* the client's address */
	__u16 port;       /* the client's port, network order */
	__u16 proxy_port; /* the proxy port it was sent to, network order */
};
SPINDLE_STATIC_ASSERT(sizeof(struct spindle_peer_key) == 20, "spindle_peer_key size");

/* Where the app meant to go; the value of orig_by_sock (storage of the connecting socket). */
struct spindle_orig_dst {
	__u8 addr[16];
	__u16 port; /* network order */
	__u16 flags; /* SPINDLE_ORIG_* */
	__u32 service_id;
	__u64 cgroup_id;    /* cgroup of the connecting process, for per-Pod attribution */
	__u64 netns_cookie; /* network namespace of the connecting socket: the caller's Pod */
	__u32 pid;          /* the connecting process (host PID namespace), to find that netns */
	__u32 pad2;
};
SPINDLE_STATIC_ASSERT(sizeof(struct spindle_orig_dst) == 48, "spindle_orig_dst size");

/* orig_by_peer value: the socket's record, and what tells its connection from any other that
 * had, or will have, the same key. */
struct spindle_peer_record {
	/* Kernel-owned: removes a record whose client closed first. At offset 0: the verifier
	 * refuses the pointer arithmetic to a timer further in unless the loader has CAP_PERFMON. */
	struct bpf_timer expiry;
	struct spindle_orig_dst orig;
	__u64 socket_cookie; /* the client socket: only its own close removes the record */
	__u32 isn;           /* the client's initial sequence number, once SPINDLE_PEER_ESTABLISHED */
	__u32 state;         /* SPINDLE_PEER_* */
};
SPINDLE_STATIC_ASSERT(sizeof(struct spindle_peer_record) == 80, "spindle_peer_record size");

/* The client saw the SYN-ACK: isn is set. The proxy accepts only established connections, so
 * a record without it belongs to another connection. */
#define SPINDLE_PEER_ESTABLISHED (1u << 0)

/* The connect dialled a service's proxy port itself (a sidecar relaying a redirected
 * connection): it was not rewritten, so getpeername() has nothing to undo. */
#define SPINDLE_ORIG_RELAYED (1u << 0)

#define SPINDLE_CONTROL_HOST_NETNS (1u << 0) /* also redirect callers in the daemon's netns */
#define SPINDLE_CONTROL_HAS_V6 (1u << 1)     /* proxy_addr6 is set */
#define SPINDLE_CONTROL_HAS_V4 (1u << 2)     /* proxy_addr4 is set */

/* The single entry of the control array, written only by the daemon. */
struct spindle_control {
	__u8 proxy_addr6[16];
	__u32 proxy_addr4; /* network order */
	__u16 proxy_port;  /* network order; 0 = no proxy configured, redirect nothing */
	__u16 flags;       /* SPINDLE_CONTROL_* */
	__u32 mark;        /* SO_MARK of the daemon's own sockets: never redirected */
	__u32 pad;
	__u64 netns_cookie;         /* the node's (the daemon's) network namespace */
	__u64 heartbeat_ns;         /* CLOCK_MONOTONIC of the daemon's last heartbeat */
	__u64 heartbeat_timeout_ns; /* older than this: the daemon is hung, fail open */
};
SPINDLE_STATIC_ASSERT(sizeof(struct spindle_control) == 56, "spindle_control size");

/* Index into the per-CPU counters array: why a connect was or was not redirected. */
enum spindle_reason {
	SPINDLE_REASON_REDIRECTED = 0,
	SPINDLE_REASON_NOT_SERVICE = 1,     /* destination not in the services map */
	SPINDLE_REASON_HOST_NETNS = 2,      /* caller in the node's own network namespace */
	SPINDLE_REASON_OWN_SOCKET = 3,      /* socket carries spindle's mark */
	SPINDLE_REASON_PROXY_NOT_ALIVE = 4, /* heartbeat stale or no proxy configured */
	SPINDLE_REASON_MAP_FULL = 5,        /* could not record the original destination */
	SPINDLE_REASON_NO_PROXY_FAMILY = 6, /* no proxy address of the destination's family */
	SPINDLE_REASON_RELAYED = 7,         /* a service's proxy port dialled from a Pod (sidecar) */
	SPINDLE_REASON_COUNT = 8,
};

#endif /* SPINDLE_BPF_ABI_H */
