// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* spindle's kernel side: redirect a Pod's connect() to a declared service into the node's
 * spindle proxy, remember where the app meant to go, and show the app that address again.
 *
 * Everything here fails open: any case that is not clearly "redirect" leaves the connect
 * alone, and no program ever fails a connect(). The daemon owns the links; when it dies, the
 * kernel detaches the programs, and when it hangs, the heartbeat goes stale. */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/socket.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "spindle/bpf_abi.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif
#ifndef SOCK_STREAM
#define SOCK_STREAM 1
#endif
#ifndef CLOCK_MONOTONIC
#define CLOCK_MONOTONIC 1
#endif
#define EEXIST 17
#define ENOMEM 12
#define EBUSY 16
#define E2BIG 7

#define ALLOW 1 /* cgroup sock_addr verdict: let the syscall proceed */

/* The verifier allows only 4-byte reads of the 16-byte address fields of some contexts;
 * a volatile read keeps clang from merging two of them into one 8-byte load. */
#define READ_U32(field) (*(volatile __u32 *)&(field))
/* A flag another CPU may set while this program runs: read (and set) it once. */
#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPINDLE_MAX_SERVICE_ADDRS);
	__type(key, struct spindle_sockaddr_key);
	__type(value, struct spindle_service_value);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPINDLE_MAX_SERVICE_PORTS);
	__type(key, __u32); /* the proxy port, network order, as in bpf_sock_addr.user_port */
	__type(value, struct spindle_service_port);
} service_ports SEC(".maps");

/* The record of a redirected socket, for getpeername() and for sockops: storage of the socket
 * itself, so it lives exactly as long as the socket and there is no capacity to run out of. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct spindle_orig_dst);
} orig_by_sock SEC(".maps");

/* The same record under the connection as the proxy's listener sees it, for the worker that
 * accepts it. Removed by that worker, or when the client's socket closes first. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SPINDLE_MAX_PEER_RECORDS + SPINDLE_PEER_RECORDS_HEADROOM);
	__type(key, struct spindle_peer_key);
	__type(value, struct spindle_peer_record);
} orig_by_peer SEC(".maps");

/* How many records orig_by_peer holds. The workers take records too, so the count is shared
 * memory (mmap) that both sides change atomically. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __s64);
} peer_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct spindle_control);
} control SEC(".maps");

/* The spindles of the node, and their listeners (see spindle_select_listener). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SPINDLE_MAX_INSTANCES);
	__type(key, __u32);
	__type(value, struct spindle_instance);
} instances SEC(".maps");

/* Each instance's proxy process, and whether it began to exit (spindle_proxy_exit). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SPINDLE_MAX_INSTANCES);
	__type(key, __u32);
	__type(value, struct spindle_proxy);
} proxies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, SPINDLE_MAX_LISTENERS);
	__type(key, __u32);
	__type(value, __u64);
} listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SPINDLE_REASON_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline int count(enum spindle_reason reason)
{
	__u32 key = reason;
	__u64 *value = bpf_map_lookup_elem(&counters, &key);

	if (value)
		*value += 1; /* per-CPU slot: no atomic needed */
	return ALLOW;
}

static __always_inline void set_v4_mapped(__u8 addr[16], __u32 ip4)
{
	__builtin_memset(addr, 0, 10);
	addr[10] = 0xff;
	addr[11] = 0xff;
	__builtin_memcpy(&addr[12], &ip4, 4);
}

static __always_inline int is_v4_mapped(const __u32 ip6[4])
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0x0000ffff);
}

/* Is ip6 one of the proxy's addresses (v6, or v4 as mapped)? */
static __always_inline int is_proxy6(const struct spindle_control *ctrl, const __u32 ip6[4])
{
	__u32 proxy6[4];

	if (is_v4_mapped(ip6))
		return (ctrl->flags & SPINDLE_CONTROL_HAS_V4) && ip6[3] == ctrl->proxy_addr4;
	__builtin_memcpy(proxy6, ctrl->proxy_addr6, 16);
	return (ctrl->flags & SPINDLE_CONTROL_HAS_V6) && ip6[0] == proxy6[0] &&
	       ip6[1] == proxy6[1] && ip6[2] == proxy6[2] && ip6[3] == proxy6[3];
}

static __always_inline const struct spindle_control *get_control(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&control, &zero);
}

/* A spindle of the node that serves: its own heartbeat is fresh (it is not stopped or hung),
 * and its proxy has not begun to exit. */
static __always_inline int instance_live(const struct spindle_control *ctrl, __u32 instance,
					 __u64 now)
{
	struct spindle_instance *inst = bpf_map_lookup_elem(&instances, &instance);
	struct spindle_proxy *proxy = bpf_map_lookup_elem(&proxies, &instance);

	if (!inst || !inst->heartbeat_ns || !inst->workers ||
	    now - inst->heartbeat_ns > ctrl->heartbeat_timeout_ns)
		return 0;
	return !(proxy && proxy->tgid && READ_ONCE(proxy->exited));
}

/* Is this a connect spindle must leave alone whatever it dials: its own upstream sockets
 * (they carry its mark; else spindle would redirect its connections to itself), or a caller
 * in the node's own namespace unless redirect.host_netns says otherwise? */
static __always_inline enum spindle_reason __sock_exempt(struct bpf_sock_addr *ctx,
							 const struct spindle_control *ctrl)
{
	struct bpf_sock *sk = ctx->sk;

	if (sk && ctrl->mark && sk->mark == ctrl->mark)
		return SPINDLE_REASON_OWN_SOCKET;
	if (!(ctrl->flags & SPINDLE_CONTROL_HOST_NETNS) &&
	    bpf_get_netns_cookie(ctx) == ctrl->netns_cookie)
		return SPINDLE_REASON_HOST_NETNS;
	return SPINDLE_REASON_REDIRECTED;
}

/* Decide whether this connect goes to the proxy. Returns the reason; only
 * SPINDLE_REASON_REDIRECTED means "rewrite the destination", and then *svc is set. */
static __always_inline enum spindle_reason
__sock_decide(struct bpf_sock_addr *ctx, const struct spindle_control *ctrl,
	      const struct spindle_sockaddr_key *dst, struct spindle_service_value *svc)
{
	struct spindle_service_value *found;
	enum spindle_reason reason;

	found = bpf_map_lookup_elem(&services, dst);
	if (!found)
		return SPINDLE_REASON_NOT_SERVICE;
	reason = __sock_exempt(ctx, ctrl);
	if (reason != SPINDLE_REASON_REDIRECTED)
		return reason;
	/* A hung daemon must not swallow connects: a stale heartbeat means fail open. */
	if (ctrl->proxy_port == 0 || found->proxy_port == 0 ||
	    bpf_ktime_get_ns() - ctrl->heartbeat_ns > ctrl->heartbeat_timeout_ns)
		return SPINDLE_REASON_PROXY_NOT_ALIVE;
	*svc = *found;
	return SPINDLE_REASON_REDIRECTED;
}

static __always_inline __s64 *peer_count_slot(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&peer_count, &zero);
}

static __always_inline void peer_count_add(__s64 delta)
{
	__s64 *n = peer_count_slot();

	if (n)
		__sync_fetch_and_add(n, delta);
}

/* Record the original destination in the socket's storage. Before any rewrite: a record that
 * cannot be stored, or that orig_by_peer would have no room for at TCP_CONNECT_CB, leaves the
 * connect alone (map_full), never redirected without one. */
static __always_inline int __sock_remember(struct bpf_sock_addr *ctx, const __u8 addr[16],
					   __u16 port, __u32 service_id, __u16 flags)
{
	struct spindle_orig_dst *orig;
	__s64 *records = peer_count_slot();

	if (!records || *(volatile __s64 *)records >= SPINDLE_MAX_PEER_RECORDS)
		return -E2BIG;
	orig = bpf_sk_storage_get(&orig_by_sock, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!orig)
		return -ENOMEM;
	__builtin_memcpy(orig->addr, addr, 16);
	orig->port = port;
	orig->flags = flags;
	orig->service_id = service_id;
	orig->cgroup_id = bpf_get_current_cgroup_id();
	orig->netns_cookie = bpf_get_netns_cookie(ctx);
	orig->pid = bpf_get_current_pid_tgid() >> 32;
	orig->pad2 = 0;
	return 0;
}

/* A connect left alone. A socket may connect again after a failed connect: a record from the
 * earlier one must not answer getpeername() for this one. */
static __always_inline int __sock_leave(struct bpf_sock_addr *ctx, enum spindle_reason reason)
{
	bpf_sk_storage_delete(&orig_by_sock, ctx->sk);
	return count(reason);
}

/* A connect to one of the proxy's addresses. To a service's proxy port, from a Pod: a
 * sidecar in the Pod captured a redirected connection and dials where it was going, as a
 * mesh's passthrough does. Record it as a call to that service from this Pod, as if it had
 * been redirected, and leave the connect as it is. Also what a program of another spindle
 * (a rollout) redirected before this one ran: that connect is recorded already. */
static __always_inline int __sock_relayed(struct bpf_sock_addr *ctx,
					  const struct spindle_control *ctrl, __u32 port)
{
	struct spindle_service_port *svc;
	enum spindle_reason reason;

	if (port == ctrl->proxy_port)
		return ALLOW; /* the proxy's own port names no service */
	svc = bpf_map_lookup_elem(&service_ports, &port);
	if (!svc)
		return ALLOW;
	reason = __sock_exempt(ctx, ctrl);
	if (reason != SPINDLE_REASON_REDIRECTED)
		return ALLOW;
	if (bpf_sk_storage_get(&orig_by_sock, ctx->sk, 0, 0))
		return ALLOW;
	if (__sock_remember(ctx, svc->addr, svc->port, svc->service_id, SPINDLE_ORIG_RELAYED))
		return count(SPINDLE_REASON_MAP_FULL);
	return count(SPINDLE_REASON_RELAYED);
}

SEC("cgroup/connect4")
int spindle_connect4(struct bpf_sock_addr *ctx)
{
	const struct spindle_control *ctrl;
	struct spindle_sockaddr_key dst = {};
	struct spindle_service_value svc = {};
	enum spindle_reason reason;

	if (ctx->type != SOCK_STREAM)
		return ALLOW;
	ctrl = get_control();
	if (!ctrl)
		return ALLOW;
	if ((ctrl->flags & SPINDLE_CONTROL_HAS_V4) && ctx->user_ip4 == ctrl->proxy_addr4)
		return __sock_relayed(ctx, ctrl, ctx->user_port);
	set_v4_mapped(dst.addr, ctx->user_ip4);
	dst.port = (__u16)ctx->user_port;

	reason = __sock_decide(ctx, ctrl, &dst, &svc);
	if (reason != SPINDLE_REASON_REDIRECTED)
		return __sock_leave(ctx, reason);
	if (!(ctrl->flags & SPINDLE_CONTROL_HAS_V4))
		return __sock_leave(ctx, SPINDLE_REASON_NO_PROXY_FAMILY);
	if (__sock_remember(ctx, dst.addr, dst.port, svc.service_id, 0))
		return __sock_leave(ctx, SPINDLE_REASON_MAP_FULL);

	ctx->user_ip4 = ctrl->proxy_addr4;
	ctx->user_port = svc.proxy_port;
	return count(SPINDLE_REASON_REDIRECTED);
}

SEC("cgroup/connect6")
int spindle_connect6(struct bpf_sock_addr *ctx)
{
	const struct spindle_control *ctrl;
	struct spindle_sockaddr_key dst = {};
	struct spindle_service_value svc = {};
	enum spindle_reason reason;
	__u32 ip6[4];
	int mapped;

	if (ctx->type != SOCK_STREAM)
		return ALLOW;
	ctrl = get_control();
	if (!ctrl)
		return ALLOW;
	ip6[0] = READ_U32(ctx->user_ip6[0]);
	ip6[1] = READ_U32(ctx->user_ip6[1]);
	ip6[2] = READ_U32(ctx->user_ip6[2]);
	ip6[3] = READ_U32(ctx->user_ip6[3]);
	if (is_proxy6(ctrl, ip6))
		return __sock_relayed(ctx, ctrl, ctx->user_port);
	__builtin_memcpy(dst.addr, ip6, 16);
	dst.port = (__u16)ctx->user_port;

	reason = __sock_decide(ctx, ctrl, &dst, &svc);
	if (reason != SPINDLE_REASON_REDIRECTED)
		return __sock_leave(ctx, reason);

	/* gRPC C-core dials IPv4 targets from AF_INET6 sockets as ::ffff:a.b.c.d: those go to
	 * the proxy's IPv4 address, mapped the same way. */
	mapped = is_v4_mapped(ip6);
	if (mapped && !(ctrl->flags & SPINDLE_CONTROL_HAS_V4))
		return __sock_leave(ctx, SPINDLE_REASON_NO_PROXY_FAMILY);
	if (!mapped && !(ctrl->flags & SPINDLE_CONTROL_HAS_V6))
		return __sock_leave(ctx, SPINDLE_REASON_NO_PROXY_FAMILY);
	if (__sock_remember(ctx, dst.addr, dst.port, svc.service_id, 0))
		return __sock_leave(ctx, SPINDLE_REASON_MAP_FULL);

	if (mapped) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = ctrl->proxy_addr4;
	} else {
		__u32 proxy6[4];

		__builtin_memcpy(proxy6, ctrl->proxy_addr6, 16);
		ctx->user_ip6[0] = proxy6[0];
		ctx->user_ip6[1] = proxy6[1];
		ctx->user_ip6[2] = proxy6[2];
		ctx->user_ip6[3] = proxy6[3];
	}
	ctx->user_port = svc.proxy_port;
	return count(SPINDLE_REASON_REDIRECTED);
}

/* The orig_by_peer key of a connecting socket: its own address and port, and the port it
 * connects to (the proxy port, after connect4/6). */
static __always_inline void __skops_peer_key(const struct bpf_sock_ops *skops,
					     struct spindle_peer_key *key)
{
	if (skops->family == AF_INET) {
		set_v4_mapped(key->addr, skops->local_ip4);
	} else {
		__u32 ip6[4];

		ip6[0] = READ_U32(skops->local_ip6[0]);
		ip6[1] = READ_U32(skops->local_ip6[1]);
		ip6[2] = READ_U32(skops->local_ip6[2]);
		ip6[3] = READ_U32(skops->local_ip6[3]);
		__builtin_memcpy(key->addr, ip6, 16);
	}
	key->port = bpf_htons((__u16)skops->local_port); /* local_port is in host order */
	/* remote_port holds the network-order port in its upper 16 bits */
	key->proxy_port = (__u16)(skops->remote_port >> 16);
}

/* This socket's record in orig_by_peer, or NULL: a record under its key that another socket
 * stored is not its own. */
static __always_inline struct spindle_peer_record *
__skops_own_record(struct bpf_sock_ops *skops, const struct spindle_peer_key *key)
{
	struct spindle_peer_record *rec = bpf_map_lookup_elem(&orig_by_peer, key);

	if (!rec || rec->socket_cookie != bpf_get_socket_cookie(skops))
		return NULL;
	return rec;
}

/* At TCP_CONNECT_CB the source port is chosen and the SYN is not sent yet, so the record is
 * under the connection's key before the proxy can accept() it. The state callbacks are turned
 * on for this socket only, to remove the record when it closes. */
static __always_inline void __sockops_connect(struct bpf_sock_ops *skops)
{
	struct spindle_peer_key key = {};
	struct spindle_peer_record rec = {};
	struct spindle_orig_dst *orig;
	struct bpf_sock *sk = skops->sk;
	long err;

	if (!sk)
		return;
	orig = bpf_sk_storage_get(&orig_by_sock, sk, 0, 0);
	if (!orig)
		return;
	__skops_peer_key(skops, &key);
	rec.orig = *orig;
	rec.socket_cookie = bpf_get_socket_cookie(skops);
	err = bpf_map_update_elem(&orig_by_peer, &key, &rec, BPF_NOEXIST);
	if (err == -EEXIST) {
		/* Left by an earlier connection with this key whose client is gone (it closed,
		 * or its Pod did): replaced, never inherited. */
		err = bpf_map_update_elem(&orig_by_peer, &key, &rec, BPF_EXIST);
	} else if (err == 0) {
		peer_count_add(1);
	}
	if (err) {
		count(SPINDLE_REASON_MAP_FULL);
		return;
	}
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* The SYN-ACK arrived. The ACK that lets the proxy accept is sent after this returns, so the
 * record carries the client's initial sequence number before the proxy can look: the proxy
 * reads the same number from the SYN it saved, and takes no record of another connection. */
static __always_inline void __sockops_established(struct bpf_sock_ops *skops)
{
	struct spindle_peer_key key = {};
	struct spindle_peer_record *rec;
	struct bpf_sock *sk = skops->sk;

	/* Every connection of every Pod gets here: most have no record, and the socket says so
	 * without a look in the map. */
	if (!sk || !bpf_sk_storage_get(&orig_by_sock, sk, 0, 0))
		return;
	__skops_peer_key(skops, &key);
	rec = __skops_own_record(skops, &key);
	if (!rec)
		return;
	rec->isn = skops->snd_una - 1; /* the SYN took one sequence number */
	rec->state |= SPINDLE_PEER_ESTABLISHED;
}

static int __peer_expired(void *map, struct spindle_peer_key *key, struct spindle_peer_record *rec)
{
	if (bpf_map_delete_elem(map, key) == 0)
		peer_count_add(-1);
	return 0;
}

/* The client socket is closed: its record goes. Except after an orderly close (FIN sent and
 * acknowledged: FIN_WAIT2), where the connection, its data and its FIN may still wait in the
 * proxy's queue: the record stays SPINDLE_CLOSED_RECORD_NS for the proxy to take. */
static __always_inline void __sockops_closed(struct bpf_sock_ops *skops)
{
	struct spindle_peer_key key = {};
	struct spindle_peer_record *rec;
	long err;

	__skops_peer_key(skops, &key);
	rec = __skops_own_record(skops, &key);
	if (!rec)
		return;
	if (skops->args[0] == BPF_TCP_FIN_WAIT2 && (rec->state & SPINDLE_PEER_ESTABLISHED)) {
		err = bpf_timer_init(&rec->expiry, &orig_by_peer, CLOCK_MONOTONIC);
		if (err == 0 || err == -EBUSY) /* EBUSY: another spindle's program ran first */
			err = bpf_timer_set_callback(&rec->expiry, __peer_expired);
		if (err == 0)
			err = bpf_timer_start(&rec->expiry, SPINDLE_CLOSED_RECORD_NS, 0);
		if (err == 0)
			return;
	}
	if (bpf_map_delete_elem(&orig_by_peer, &key) == 0)
		peer_count_add(-1);
}

SEC("sockops")
int spindle_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		__sockops_connect(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		__sockops_established(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			__sockops_closed(skops);
		break;
	}
	return 1;
}

/* getpeername() on a redirected socket answers the address the app dialled; a relayed
 * connect went where it was dialled. */
SEC("cgroup/getpeername4")
int spindle_getpeername4(struct bpf_sock_addr *ctx)
{
	struct spindle_orig_dst *orig = bpf_sk_storage_get(&orig_by_sock, ctx->sk, 0, 0);
	__u32 ip4;

	if (!orig || (orig->flags & SPINDLE_ORIG_RELAYED))
		return ALLOW;
	__builtin_memcpy(&ip4, &orig->addr[12], 4);
	ctx->user_ip4 = ip4;
	ctx->user_port = orig->port;
	return ALLOW;
}

SEC("cgroup/getpeername6")
int spindle_getpeername6(struct bpf_sock_addr *ctx)
{
	struct spindle_orig_dst *orig = bpf_sk_storage_get(&orig_by_sock, ctx->sk, 0, 0);
	__u32 ip6[4];

	if (!orig || (orig->flags & SPINDLE_ORIG_RELAYED))
		return ALLOW;
	__builtin_memcpy(ip6, orig->addr, 16);
	ctx->user_ip6[0] = ip6[0];
	ctx->user_ip6[1] = ip6[1];
	ctx->user_ip6[2] = ip6[2];
	ctx->user_ip6[3] = ip6[3];
	ctx->user_port = orig->port;
	return ALLOW;
}

/* Which listener of a proxy port takes a new connection. Two spindles share each port during a
 * rollout (SO_REUSEPORT); left to the kernel, a connection goes to either one's listeners by
 * its hash, also to a spindle that hangs while the other keeps the shared heartbeat fresh, and
 * waits there unserved. Here it goes to a worker of a spindle whose own heartbeat is fresh,
 * by the same hash. With no such spindle, or no listener in that slot, the kernel picks. */
SEC("sk_reuseport")
int spindle_select_listener(struct sk_reuseport_md *ctx)
{
	__u32 zero = 0;
	struct spindle_control *ctrl = bpf_map_lookup_elem(&control, &zero);
	struct bpf_sock *sk = ctx->sk; /* a listener of the group: its port and family */

	if (!ctrl || !sk)
		return SK_PASS;
	__u32 base = bpf_ntohs(ctrl->proxy_port);
	__u32 port = sk->src_port;
	if (port < base || port > base + SPINDLE_MAX_SERVICE_PORTS)
		return SK_PASS;

	__u64 now = bpf_ktime_get_ns();
	__u32 live = 0;
	for (__u32 i = 0; i < SPINDLE_MAX_INSTANCES; i++) {
		if (instance_live(ctrl, i, now))
			live |= 1u << i;
	}
	__u32 count = __builtin_popcount(live);
	if (count == 0)
		return SK_PASS;
	__u32 nth = ctx->hash % count;
	for (__u32 i = 0; i < SPINDLE_MAX_INSTANCES; i++) {
		if (!(live & (1u << i)))
			continue;
		if (nth--)
			continue;
		__u32 key = i;
		struct spindle_instance *inst = bpf_map_lookup_elem(&instances, &key);

		if (!inst || !inst->workers)
			return SK_PASS;
		__u32 worker = (ctx->hash / count) % inst->workers;
		__u32 slot = spindle_listener_key(i, worker, port - base, sk->family == AF_INET6);
		/* An empty slot (a listener closed while draining): the kernel picks. */
		bpf_sk_select_reuseport(ctx, &listeners, &slot, 0);
		return SK_PASS;
	}
	return SK_PASS;
}

/* A thread of the node exits. When it is the main thread of a registered proxy, that proxy is
 * dying: its main thread exits only with the process (SIGKILL, the OOM killer, a crash, or
 * the end of its drain), and it gets here before the kernel closes the process's files, which
 * it does once the last thread is through. Other threads of the proxy (io_uring's workers
 * come and go) do not count. The proxy is marked, so that spindle_select_listener passes its
 * listeners by; when no other spindle of the node serves (a rollout's), the shared heartbeat
 * is zeroed too, so that connects go direct from now on. The dying spindle's privileged part
 * gives it no more beats (Redirector::heartbeat); a spindle without an instance slot beats
 * again within a quarter of the heartbeat timeout. Runs for every thread exit of the node:
 * two lookups, and bpf_get_ns_current_pid_tgid fails at once for a task of another pid
 * namespace. */
SEC("raw_tracepoint/sched_process_exit")
int spindle_proxy_exit(void *ctx)
{
	__u32 zero = 0;
	struct spindle_control *ctrl = bpf_map_lookup_elem(&control, &zero);

	if (!ctrl)
		return 0;
	for (__u32 i = 0; i < SPINDLE_MAX_INSTANCES; i++) {
		__u32 key = i;
		struct spindle_proxy *proxy = bpf_map_lookup_elem(&proxies, &key);
		struct bpf_pidns_info ns = {};

		if (!proxy || !proxy->tgid || proxy->exited)
			continue;
		if (bpf_get_ns_current_pid_tgid(proxy->pidns_dev, proxy->pidns_ino, &ns, sizeof(ns)))
			continue;
		if (ns.tgid != proxy->tgid || ns.pid != ns.tgid)
			continue;
		WRITE_ONCE(proxy->exited, 1);
		__u64 now = bpf_ktime_get_ns();
		int others = 0;

		for (__u32 j = 0; j < SPINDLE_MAX_INSTANCES; j++)
			others |= j != i && instance_live(ctrl, j, now);
		if (!others)
			WRITE_ONCE(ctrl->heartbeat_ns, 0);
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
