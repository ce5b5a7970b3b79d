/* Every struct that crosses the kernel/user boundary. Plain C, fixed-width fields, padding
 * explicit, sizes asserted here so that a change on one side cannot silently skew the other.
 * Addresses are 16 bytes, IPv4 as v4-mapped IPv6 (::ffff:a.b.c.d); ports in network order. */
#ifndef SPINDLE_BPF_ABI_H
#define SPINDLE_BPF_ABI_H

#include <linux/types.h>

#ifdef __cplusplus
#define SPINDLE_STATIC_ASSERT static_assert
#else
#define SPINDLE_STATIC_ASSERT _Static_assert
#endif

/* The maps are pinned under <redirect.pin_path>/v<this>, so that two spindle versions on one
 * node share maps only when they agree on every struct and map here. Bump it with any change
 * to this file or to a map's definition. */
#define SPINDLE_ABI_VERSION 3

#define SPINDLE_MAX_SERVICE_ADDRS 4096
#define SPINDLE_MAX_TRACKED_SOCKETS 65536
#define SPINDLE_MAX_SERVICE_PORTS 1024

/* services key, and orig_by_peer key: an (address, port) pair. */
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

/* Where the app meant to go; value of orig_by_cookie and orig_by_peer. */
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
