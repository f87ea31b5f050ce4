// SPDX-License-Identifier: GPL-2.0
/*
 * tcpscope: every TCP state change as the kernel makes it, stamped with the
 * process that owns the socket.
 *
 * Event path: sock:inet_sock_set_state (tp_btf) -> one fixed-layout record
 * per transition in the BPF ring buffer of the CPU it ran on -> Go reader,
 * which merges the CPUs' rings by kernel time.
 *
 * Owner attribution: the task on the CPU at a transition is only the owner
 * when the kernel runs that transition on behalf of a syscall (connect,
 * listen, close, shutdown). Everything else (handshake completion, FIN/RST
 * processing, timers) runs in softirq, where "current" is whoever was
 * interrupted -- on loopback, usually the peer. So the owner is learned in
 * process context, kept per socket in `socks`, and stamped on every event.
 * accept() is an owner context too: its exit resolves the returned fd to
 * the socket and writes the acceptor into the socket's entry.
 */
#include "kernel_types.h"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_MPTCP 262
#define PF_KTHREAD 0x00200000
#define S_IFMT 00170000
#define S_IFSOCK 0140000

enum tcp_state {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT,
	TCP_SYN_RECV,
	TCP_FIN_WAIT1,
	TCP_FIN_WAIT2,
	TCP_TIME_WAIT,
	TCP_CLOSE,
	TCP_CLOSE_WAIT,
	TCP_LAST_ACK,
	TCP_LISTEN,
	TCP_CLOSING,
	TCP_NEW_SYN_RECV,
};

/* How the owner of a socket was learned (event.owner_src). */
enum owner_src {
	OWNER_NONE = 0,
	OWNER_SYSCALL = 1,  /* transition run by the owner's own syscall */
	OWNER_ACCEPT = 2,   /* accept()/accept4() returned it */
	OWNER_LISTENER = 3, /* not accepted yet: the listener's owner */
	OWNER_ITER = 4,     /* held before start: found by iter/task_file */
};

/* event.flags */
#define EV_OWNER_KNOWN 0x1
#define EV_PREV_KNOWN 0x2  /* prev_ns is valid */
#define EV_RECOVERED 0x4   /* emitted by the nested-run recovery program */
#define EV_UNTRACKED 0x8   /* no room in `socks`: owner and age not kept */

/* One record per transition. Layout is part of the Go decoder's contract
 * (tracer/event): fixed size, naturally aligned, no implicit padding. */
struct event {
	__u64 ts_ns;   /* bpf_ktime_get_ns() at the transition */
	__u64 cookie;  /* socket cookie: unique for the boot, survives address reuse */
	__u64 skaddr;  /* struct sock address (reused by the kernel) */
	__u64 prev_ns; /* time spent in oldstate, valid with EV_PREV_KNOWN */
	__u64 inode;   /* socket inode, 0 when the socket has no file */
	__u32 netns;   /* network namespace inode */
	__u32 uid;     /* socket uid */
	__u32 pid;     /* owner process (tgid), valid with EV_OWNER_KNOWN */
	__u32 tid;     /* owner thread */
	__u32 cpu_pid; /* task on the CPU when the transition ran */
	__u32 cpu_tid;
	__u8 saddr[16]; /* IPv4 uses the first 4 bytes */
	__u8 daddr[16];
	__u16 sport; /* host byte order */
	__u16 dport;
	__u16 family;
	__u8 oldstate;
	__u8 newstate;
	__u8 flags;
	__u8 owner_src;
	__u8 sk_err; /* the socket's pending error (ECONNREFUSED, ETIMEDOUT, ...) */
	__u8 _pad[5];
	char comm[16];     /* owner's comm */
	char cpu_comm[16]; /* on-CPU task's comm */
	__u64 bytes_sent;     /* data bytes sent so far, each once (no SYN, FIN, retransmits) */
	__u64 bytes_received; /* data bytes received in order so far (no FIN) */
};

/* Timewait and request sockets change state without the state tracepoint:
 * the kernel arms a timer when one is created (tcp_time_wait(),
 * reqsk_queue_hash_req()) and stops it when the socket goes (expiry, RST,
 * 4-tuple reuse, handshake completion). One record per timer start/stop of
 * those two timer functions. Told apart from struct event by its size. */
enum timer_kind {
	TK_TIMEWAIT_START = 1,
	TK_TIMEWAIT_STOP = 2,
	TK_REQUEST_START = 3,
	TK_REQUEST_STOP = 4,
	/* Not timers: a full socket sent or received a reset. The same record
	 * (tcp:tcp_send_reset, tcp:tcp_receive_reset), attached only when asked
	 * for (tcpscope life), so that a connection's end can be told apart. */
	TK_RESET_SENT = 5,
	TK_RESET_RECV = 6,
};

struct timer_event {
	__u64 ts_ns;
	__u64 cookie; /* timewait: the cookie of the full socket it replaced */
	__u64 skaddr;
	__u64 expires_ns; /* start: ns from ts_ns until the timer fires */
	__u32 netns;
	__u32 uid;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 kind;  /* enum timer_kind */
	__u8 state; /* timewait: TIME_WAIT or FIN_WAIT2; request: SYN_RECV; reset: the socket's */
};

/* One socket as iter/tcp finds it, with what /proc/net/tcp would print for
 * it (queues, timer) and what tcpscope knows (owner, state age). */
struct sock_rec {
	__u64 cookie;
	__u64 skaddr;
	__u64 since_ns; /* entered its state, 0 = before tracing */
	__u64 inode;
	__u64 timer_ns; /* until the timer fires, never negative */
	__u32 netns;
	__u32 uid;
	__u32 pid;
	__u32 tid;
	__s32 fd; /* -1 = not known */
	__u32 rx_queue;
	__u32 tx_queue;
	__u16 sport;
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 family;
	__u8 state;
	__u8 kind;  /* 0 full, 1 timewait, 2 request */
	__u8 timer; /* /proc/net/tcp "tr": 0 off, 1 retransmit, 2 keepalive, 3 timewait, 4 probe */
	__u8 retransmits;
	__u8 probes;
	__u8 owner_src;
	__u8 flags; /* EV_OWNER_KNOWN */
	__u8 _pad[7];
	char comm[16];
};

/* One socket fd as iter/task_file finds it (list_owners): the owner of a
 * socket that predates the tracer, joined in user space with walks and
 * events by the socket's inode, as netstat -p and ss -p join
 * /proc/PID/fd. */
struct owner_rec {
	__u64 inode;
	__u32 pid;
	__u32 tid;
	__s32 fd;
	__u32 _pad;
	char comm[16];
};

/* Per-socket state kept between transitions. */
struct sock_info {
	__u64 cookie;   /* the socket's; 0 = not known yet (an entry accept made) */
	__u64 since_ns; /* when the socket entered its current state, 0 = unknown */
	__u32 pid;
	__u32 tid;
	char comm[16];
	__u8 owner_src;
	__u8 _pad[3];
	__u32 fd1; /* the owner's fd + 1; 0 = not known */
};

struct listener_key {
	__u32 netns;
	__u16 port;
	__u16 _pad;
};

struct listener_owner {
	__u64 skaddr;
	__u32 pid;
	__u32 tid;
	char comm[16];
};

/* Nested-run recovery: the main program notes each firing it handles here;
 * the recovery program, which runs right after it on the same tracepoint,
 * emits only firings the main program did not note (the kernel skipped the
 * main program because it was already running on this CPU). Four slots,
 * since a softirq can complete a whole firing between the two programs of an
 * interrupted outer firing. */
#define CLAIM_SLOTS 4
struct claims {
	__u64 sk[CLAIM_SLOTS];
	__u32 states[CLAIM_SLOTS];
	__u32 next;
};

enum stat_index {
	STAT_RINGBUF_DROPS = 0, /* bpf_ringbuf_reserve failed: event lost */
	STAT_RECOVERED = 1,     /* firings handled by the recovery program */
	STAT_UNTRACKED = 2,     /* no room in `socks` for a socket's entry */
	STAT_TRANSITIONS = 3,   /* TCP transitions seen (emitted or filtered) */
	STAT_WAKEUPS = 4,       /* forced reader wakeups */
	STAT_MAX,
};

/* Records for user space go to a ring buffer of the CPU they are made on.
 * One ring shared by all CPUs cost ~260 ns per transition here, against
 * ~115 ns with a ring per CPU (2026-12-06): every reserve and commit took a
 * spinlock and dirtied cache lines the other CPU was using. The reader
 * merges the rings back into kernel-time order (tracer/loader).
 *
 * Every record is timed (bpf_ktime_get_ns) before it is reserved: the merge
 * depends on it.
 *
 * The template of one CPU's ring; the loader creates them, one per possible
 * CPU (power of two, sized from the configured total). */
struct cpu_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 12);
};

/* key: CPU number; value: that CPU's ring. Filled by the loader before
 * attach, never changed after. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct cpu_ring);
} rings SEC(".maps");

/* key: struct sock address; value: the socket's owner and state-entry
 * time. Inserted by the state programs at a socket's first transition and
 * by the accept exit programs; deleted by the state programs at the
 * socket's transition to CLOSE (every full socket ends with one). The
 * cookie in the value tells a reused address from the same socket. A hash
 * that allocates from BPF's per-CPU caches: socket-local storage, which
 * kmallocs and frees under two locks per socket, cost ~8% of the loopback
 * churn rate more (measured, 2026-12-05). Size set by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 20);
	__type(key, __u64);
	__type(value, struct sock_info);
} socks SEC(".maps");

/* key: (netns, local port) of a listening socket; value: its owner.
 * Inserted on CLOSE->LISTEN and by the seed; deleted on LISTEN->CLOSE by the
 * same socket. Children not yet accepted inherit this owner. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, struct listener_key);
	__type(value, struct listener_owner);
} listeners SEC(".maps");

/* key: 0; value: per-CPU claims of the main program (see struct claims). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct claims);
} claims SEC(".maps");

/* key: enum stat_index; value: per-CPU counter. Written here, read by the
 * loader. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* key: 0; value: 1 while the reader sleeps until woken, else 0. Written by
 * the reader (a map update: a full barrier) before it sleeps. Producers
 * otherwise submit without waking it: the reader polls in short batches. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} reader_state SEC(".maps");

/* Referenced so that their BTF is emitted for bpf2go -type. */
struct event *unused_event __attribute__((unused));
struct timer_event *unused_timer_event __attribute__((unused));
struct sock_rec *unused_sock_rec __attribute__((unused));
struct holder_rec *unused_holder_rec __attribute__((unused));
struct owner_rec *unused_owner_rec __attribute__((unused));
enum stat_index *unused_stat_index __attribute__((unused));

/* Kernel-side filters for `trace`, set at load time. 0 means "any". */
const volatile __u32 filter_pid = 0;
const volatile __u32 filter_netns = 0;
const volatile __u32 filter_states = 0; /* bit (1 << state), old or new */
const volatile __u16 filter_port = 0;   /* local or remote */
const volatile __u16 filter_family = 0;
/* Kernel addresses of tw_timer_handler and reqsk_timer_handler (from
 * kallsyms; 0 disables timewait/request tracking), and the length of a
 * jiffy (1e9 / CONFIG_HZ). Set by the loader. */
const volatile __u64 tw_timer_fn = 0;
const volatile __u64 req_timer_fn = 0;
const volatile __u64 ns_per_jiffy = 4000000;
/* 0: dump_tcp leaves out full sockets' timers and what socket storage
 * holds (state age, owner from events), for views that print neither: the
 * storage lookup alone is a cache miss per socket. Set by the loader. */
const volatile __u8 walk_extras = 1;

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

/* Transitions the kernel only runs inside the owner's own syscall: connect()
 * (CLOSE->SYN_SENT), listen(), close()/shutdown() of a connection
 * (->FIN_WAIT1, CLOSE_WAIT->LAST_ACK) or of a listener (LISTEN->CLOSE). */
static __always_inline bool in_owner_context(int oldstate, int newstate)
{
	switch (newstate) {
	case TCP_SYN_SENT:
	case TCP_LISTEN:
	case TCP_FIN_WAIT1:
	case TCP_LAST_ACK:
		return true;
	case TCP_CLOSE:
		return oldstate == TCP_LISTEN;
	}
	return false;
}

/* The state programs get a trusted struct sock pointer: plain loads through
 * it (and through the pointers it leads to) are JITed as guarded loads,
 * several times cheaper than bpf_probe_read_kernel calls. */
static __always_inline __u32 sock_netns(const struct sock *sk)
{
	return sk->__sk_common.skc_net.net->ns.inum;
}

/* A socket's inode is allocated with it (SOCK_INODE() in the kernel): one
 * read there instead of two dependent loads through its file, which cost a
 * cache miss more per socket. */
static __always_inline __u64 sock_inode(const struct sock *sk)
{
	struct socket *sock = sk->sk_socket;

	if (!sock || !sock->file)
		return 0;
	return BPF_CORE_READ((struct socket_alloc *)sock, vfs_inode.i_ino);
}

static __always_inline bool claimed(struct claims *c, __u64 sk, __u32 states)
{
	for (int i = 0; i < CLAIM_SLOTS; i++) {
		if (c->sk[i] == sk && c->states[i] == states) {
			c->sk[i] = 0;
			return true;
		}
	}
	return false;
}

/* Filters run before a record is reserved: a reserved-then-discarded record
 * would still take ring space until the reader passes it. */
static __always_inline bool pass_filters(__u32 pid, __u32 netns, __u16 family, __u16 sport,
					 __u16 dport, int oldstate, int newstate)
{
	/* pid 0: the owner is not known here. It may be one user space
	 * knows (a socket from before start), which filters again. */
	if (filter_pid && pid && pid != filter_pid)
		return false;
	if (filter_netns && netns != filter_netns)
		return false;
	if (filter_family && family != filter_family)
		return false;
	if (filter_port && sport != filter_port && dport != filter_port)
		return false;
	if (filter_states && !(filter_states & ((1u << oldstate) | (1u << newstate))))
		return false;
	return true;
}

/* This CPU's ring buffer: records are reserved and committed on one CPU (BPF
 * programs run with migration disabled). NULL only if the loader left the
 * slot empty. */
static __always_inline void *cpu_ring(void)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return bpf_map_lookup_elem(&rings, &cpu);
}

/* Commit a record, waking the reader only if it sleeps until woken: a busy
 * reader polls the ring every millisecond (and at once again after a poll
 * that found much), so a wake-up would reach no one. */
static __always_inline void submit(void *ring, void *e)
{
	__u32 zero = 0;
	__u32 *waiting = bpf_map_lookup_elem(&reader_state, &zero);

	if (waiting && *waiting) {
		stat_inc(STAT_WAKEUPS);
		bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
		return;
	}
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	/* The reader may have gone to sleep between the check above and the
	 * commit. The commit is a full barrier and the reader re-checks the ring
	 * after raising its flag, so one of the two sides sees the other; if it
	 * is us, wake it with an empty record (it sleeps on every CPU's ring
	 * at once). */
	if (waiting && *waiting) {
		void *nudge = bpf_ringbuf_reserve(ring, 8, 0);
		if (nudge) {
			stat_inc(STAT_WAKEUPS);
			bpf_ringbuf_discard(nudge, BPF_RB_FORCE_WAKEUP);
		}
	}
}

/* The TCP socket behind a socket file's sock: itself, or for MPTCP the first
 * subflow, which the state tracepoint and the TCP tables report (an MPTCP
 * connection whose peer does not speak MPTCP is that one subflow). NULL for
 * other protocols. */
static __always_inline struct sock *tcp_sock_of(struct sock *sk)
{
	__u16 proto = BPF_CORE_READ(sk, sk_protocol);

	if (proto == IPPROTO_TCP)
		return sk;
	if (proto == IPPROTO_MPTCP && bpf_core_field_exists(((struct mptcp_sock *)0)->first))
		return BPF_CORE_READ((struct mptcp_sock *)sk, first);
	return NULL;
}

/* The entry of the socket at skaddr in `socks`, made if missing. An entry
 * of an earlier socket at the same address (whose CLOSE was not seen) is
 * reset; one made before the cookie was known takes it. cookie 0 (not
 * known yet: accept before any traced transition) takes whatever entry is
 * there. NULL when the map is full. */
static __always_inline struct sock_info *sock_info_of(__u64 skaddr, __u64 cookie)
{
	struct sock_info *info = bpf_map_lookup_elem(&socks, &skaddr);

	if (info) {
		if (info->cookie == cookie || !cookie)
			return info;
		if (!info->cookie) {
			info->cookie = cookie;
			return info;
		}
	}
	struct sock_info fresh = {.cookie = cookie};
	if (bpf_map_update_elem(&socks, &skaddr, &fresh, BPF_ANY))
		return NULL;
	return bpf_map_lookup_elem(&socks, &skaddr);
}

static __always_inline int handle_transition(const struct sock *sk, int oldstate, int newstate,
					     bool recovered)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	stat_inc(STAT_TRANSITIONS);

	__u64 now = bpf_ktime_get_ns();
	__u64 skaddr = (__u64)sk;
	__u64 cookie = bpf_get_socket_cookie((void *)sk);
	__u16 family = sk->__sk_common.skc_family;
	__u32 netns = sock_netns(sk);
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!tp)
		return 0;
	/* inet_sport, not skc_num: inet_put_port() zeroes skc_num before the
	 * CLOSE transition is traced. */
	__u16 sport = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
	__u16 dport = bpf_ntohs(sk->__sk_common.skc_dport);
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u8 flags = 0;
	__u64 prev_ns = 0;

	struct sock_info fresh = {.cookie = cookie};
	struct sock_info *info = sock_info_of(skaddr, cookie);
	bool tracked = info;
	if (!info) {
		info = &fresh;
		flags |= EV_UNTRACKED;
		stat_inc(STAT_UNTRACKED);
	} else if (info->since_ns) {
		prev_ns = now - info->since_ns;
		flags |= EV_PREV_KNOWN;
	}
	info->since_ns = now;

	if (in_owner_context(oldstate, newstate) && !(task->flags & PF_KTHREAD)) {
		if (info->pid != pid_tgid >> 32)
			info->fd1 = 0;
		info->pid = pid_tgid >> 32;
		info->tid = (__u32)pid_tgid;
		__builtin_memcpy(info->comm, task->comm, sizeof(info->comm));
		info->owner_src = OWNER_SYSCALL;
	} else if (info->owner_src == OWNER_NONE && newstate == TCP_SYN_RECV) {
		/* A child of a listener: owned by whoever owns the listener
		 * until accept() says otherwise. */
		struct listener_key lk = {.netns = netns, .port = sport};
		struct listener_owner *lo = bpf_map_lookup_elem(&listeners, &lk);
		if (lo) {
			info->pid = lo->pid;
			info->tid = lo->tid;
			__builtin_memcpy(info->comm, lo->comm, sizeof(info->comm));
			info->owner_src = OWNER_LISTENER;
			info->fd1 = 0;
		}
	}

	if (newstate == TCP_LISTEN) {
		struct listener_key lk = {.netns = netns, .port = sport};
		struct listener_owner lo = {.skaddr = skaddr, .pid = info->pid, .tid = info->tid};
		__builtin_memcpy(lo.comm, info->comm, sizeof(lo.comm));
		bpf_map_update_elem(&listeners, &lk, &lo, BPF_ANY);
	} else if (oldstate == TCP_LISTEN && newstate == TCP_CLOSE) {
		struct listener_key lk = {.netns = netns, .port = sport};
		struct listener_owner *lo = bpf_map_lookup_elem(&listeners, &lk);
		if (lo && lo->skaddr == skaddr)
			bpf_map_delete_elem(&listeners, &lk);
	}

	struct event *e = NULL;
	void *ring = NULL;
	if (pass_filters(info->pid, netns, family, sport, dport, oldstate, newstate)) {
		ring = cpu_ring();
		if (ring)
			e = bpf_ringbuf_reserve(ring, sizeof(*e), 0);
		if (!e)
			stat_inc(STAT_RINGBUF_DROPS);
	}
	if (e) {
		e->ts_ns = now;
		e->cookie = cookie;
		e->skaddr = skaddr;
		e->prev_ns = prev_ns;
		e->inode = sock_inode(sk);
		e->netns = netns;
		e->uid = sk->sk_uid.val;
		e->pid = info->pid;
		e->tid = info->tid;
		e->cpu_pid = pid_tgid >> 32;
		e->cpu_tid = (__u32)pid_tgid;
		e->family = family;
		e->sport = sport;
		e->dport = dport;
		e->oldstate = oldstate;
		e->newstate = newstate;
		e->owner_src = info->owner_src;
		__builtin_memcpy(e->comm, info->comm, sizeof(e->comm));
		/* Copied through the task pointer: cheaper than the
		 * bpf_get_current_comm helper call (~60 ns per hit measured). */
		__builtin_memcpy(e->cpu_comm, task->comm, sizeof(e->cpu_comm));
		__builtin_memset(e->_pad, 0, sizeof(e->_pad));
		e->sk_err = sk->sk_err;
		e->bytes_sent = tp->bytes_sent - tp->bytes_retrans;
		/* bytes_received counts the FIN's sequence number too; tcp_fin()
		 * marks a received FIN with SOCK_DONE (bit 1 of sk_flags). */
		__u64 rx = tp->bytes_received, fin = (sk->__sk_common.skc_flags >> 1) & 1;
		e->bytes_received = rx >= fin ? rx - fin : 0;
		if (family == AF_INET6) {
			__builtin_memcpy(e->saddr, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
			__builtin_memcpy(e->daddr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
		} else {
			__builtin_memset(e->saddr, 0, sizeof(e->saddr));
			__builtin_memset(e->daddr, 0, sizeof(e->daddr));
			*(__u32 *)e->saddr = sk->__sk_common.skc_rcv_saddr;
			*(__u32 *)e->daddr = sk->__sk_common.skc_daddr;
		}
	}

	if (e) {
		if (info->owner_src != OWNER_NONE)
			flags |= EV_OWNER_KNOWN;
		if (recovered)
			flags |= EV_RECOVERED;
		e->flags = flags;
		submit(ring, e);
	}
	/* Every full socket ends with a transition to CLOSE (a timewait
	 * socket that takes over has no entry). */
	if (newstate == TCP_CLOSE && tracked)
		bpf_map_delete_elem(&socks, &skaddr);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state_change, const struct sock *sk, const int oldstate, const int newstate)
{
	__u32 zero = 0;
	struct claims *c = bpf_map_lookup_elem(&claims, &zero);

	if (c) {
		__u32 slot = c->next++ % CLAIM_SLOTS;
		c->sk[slot] = (__u64)sk;
		c->states[slot] = (oldstate << 8) | newstate;
	}
	return handle_transition(sk, oldstate, newstate, false);
}

/* Attached after on_state_change. Runs the same handler only for firings the
 * main program missed: the kernel skips a tracing program that is already
 * running on this CPU (a softirq interrupting it), counting the skip in its
 * recursion_misses and nothing else. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state_change_nested, const struct sock *sk, const int oldstate, const int newstate)
{
	__u32 zero = 0;
	struct claims *c = bpf_map_lookup_elem(&claims, &zero);

	if (!c || claimed(c, (__u64)sk, (oldstate << 8) | newstate))
		return 0;
	stat_inc(STAT_RECOVERED);
	return handle_transition(sk, oldstate, newstate, true);
}

/* Turns a pointer the verifier sees as a number into one it allows plain
 * (guarded, read-only) loads through. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* Record the accepting process as the owner of the socket accept() returned:
 * resolve the fd through the current task's fd table. Plain loads through
 * the task pointer (guarded loads, several times cheaper than probe reads);
 * only the fd array slot, which the verifier sees as a number, is probe
 * read. */
static __always_inline int on_accept_exit(long fd)
{
	if (fd < 0)
		return 0;

	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	if (!fdt || fd >= fdt->max_fds)
		return 0;

	struct file *fp = NULL;
	bpf_probe_read_kernel(&fp, sizeof(fp), &fdt->fd[fd]);
	if (!fp)
		return 0;
	struct file *file = bpf_rdonly_cast(fp, bpf_core_type_id_kernel(struct file));
	if ((file->f_inode->i_mode & S_IFMT) != S_IFSOCK)
		return 0;

	struct socket *sock = bpf_rdonly_cast(file->private_data, bpf_core_type_id_kernel(struct socket));
	if (!sock || sock->file != fp)
		return 0;
	struct sock *sk = sock->sk;
	if (!sk || (sk->sk_protocol != IPPROTO_TCP && !(sk = tcp_sock_of(sk))))
		return 0;

	__u64 skaddr = (__u64)sk;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	/* The cookie is 0 if no transition of the socket was traced yet:
	 * its next one fills it in. */
	struct sock_info *info = sock_info_of(skaddr, BPF_CORE_READ(sk, __sk_common.skc_cookie.counter));
	if (!info) {
		stat_inc(STAT_UNTRACKED);
		return 0;
	}
	info->pid = pid_tgid >> 32;
	info->tid = (__u32)pid_tgid;
	bpf_get_current_comm(info->comm, sizeof(info->comm));
	info->owner_src = OWNER_ACCEPT;
	info->fd1 = fd + 1;
	return 0;
}

/* The common part of a syscall exit record; `ret` is the return value. */
struct syscall_exit_args {
	__u64 common;
	__s32 nr;
	__s32 _pad;
	__s64 ret;
};

SEC("tracepoint/syscalls/sys_exit_accept4")
int on_accept4_exit(struct syscall_exit_args *ctx)
{
	return on_accept_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int on_accept_exit_legacy(struct syscall_exit_args *ctx)
{
	return on_accept_exit(ctx->ret);
}

/* Owners of sockets that existed before the tracer started, one owner_rec
 * per socket fd, walked once at start over every task's fd table; user
 * space keeps them and joins them with walks and events by inode (socket
 * storage cannot be created from here: since 6.18.x the verifier marks the
 * sock behind bpf_sock_from_file() untrusted, so no helper takes it).
 * Listeners also go into `listeners`, so that their children inherit the
 * owner in the kernel. */
SEC("iter/task_file")
int list_owners(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;

	if (!task || !file)
		return 0;
	struct socket *sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	struct sock *sk = sock->sk;
	if (!sk)
		return 0;
	struct owner_rec r = {
		.pid = task->tgid,
		.tid = task->pid,
		.fd = ctx->fd,
	};
	if (sk->sk_protocol == IPPROTO_MPTCP && bpf_core_type_exists(struct mptcp_sock)) {
		/* An MPTCP socket (Go listens with MPTCP by default, and its
		 * accepted sockets are MPTCP ones even when the peer speaks
		 * plain TCP): the socket in the TCP tables is its first
		 * subflow. */
		sk = BPF_CORE_READ((struct mptcp_sock *)sk, first);
		if (!sk)
			return 0;
	} else if (sk->sk_protocol != IPPROTO_TCP) {
		return 0;
	}
	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
	r.inode = file->f_inode->i_ino;
	if (state == TCP_CLOSE)
		return 0;
	__builtin_memcpy(r.comm, task->comm, sizeof(r.comm));
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));

	if (state == TCP_LISTEN) {
		struct listener_key lk = {
			.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum),
			.port = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport)),
		};
		struct listener_owner lo = {.skaddr = (__u64)sk, .pid = r.pid, .tid = r.tid};
		__builtin_memcpy(lo.comm, r.comm, sizeof(lo.comm));
		bpf_map_update_elem(&listeners, &lk, &lo, BPF_NOEXIST);
	}
	return 0;
}

/* Copy a sock_common's tuple (shared by full, timewait and request sockets)
 * through probe reads: the pointer was derived, not handed to us trusted. */
static __always_inline void read_tuple(const struct sock_common *skc, __u8 *saddr, __u8 *daddr,
				       __u16 *family, __u16 *dport)
{
	*family = BPF_CORE_READ(skc, skc_family);
	*dport = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	if (*family == AF_INET6) {
		BPF_CORE_READ_INTO((struct in6_addr *)saddr, skc, skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)daddr, skc, skc_v6_daddr);
	} else {
		__builtin_memset(saddr, 0, 16);
		__builtin_memset(daddr, 0, 16);
		*(__u32 *)saddr = BPF_CORE_READ(skc, skc_rcv_saddr);
		*(__u32 *)daddr = BPF_CORE_READ(skc, skc_daddr);
	}
}

static __always_inline __u64 jiffies_left_ns(unsigned long expires)
{
	__s64 left = (__s64)(expires - bpf_jiffies64());

	return left > 0 ? (__u64)left * ns_per_jiffy : 0;
}

static __always_inline int emit_sock_timer(const struct sock_common *skc, __u8 kind,
					   unsigned long expires, bool start);

/* A timer of a timewait or request socket started (expires = the jiffy it
 * fires at) or stopped (expires = 0). */
static __always_inline int on_sock_timer(struct timer_list *timer, unsigned long expires, bool start)
{
	__u64 fn = (__u64)timer->function;

	if (!fn)
		return 0;
	if (fn == tw_timer_fn)
		return emit_sock_timer((void *)timer - bpf_core_field_offset(struct inet_timewait_sock, tw_timer),
				       start ? TK_TIMEWAIT_START : TK_TIMEWAIT_STOP, expires, start);
	if (fn == req_timer_fn)
		return emit_sock_timer((void *)timer - bpf_core_field_offset(struct request_sock, rsk_timer),
				       start ? TK_REQUEST_START : TK_REQUEST_STOP, expires, start);
	return 0;
}

static __always_inline int emit_sock_timer(const struct sock_common *skc, __u8 kind,
					   unsigned long expires, bool start)
{
	/* A table of one namespace (filter_netns) needs all of its timewait
	 * and request sockets and none of the others': of the filters, only
	 * the namespace applies here. */
	__u32 netns = BPF_CORE_READ(skc, skc_net.net, ns.inum);
	if (filter_netns && netns != filter_netns)
		return 0;
	/* Timed before the reserve, as every record: the reader's merge of the
	 * CPUs' rings relies on it (tracer/loader/rings.go). */
	__u64 now = bpf_ktime_get_ns();
	void *ring = cpu_ring();
	struct timer_event *e = ring ? bpf_ringbuf_reserve(ring, sizeof(*e), 0) : NULL;
	if (!e) {
		stat_inc(STAT_RINGBUF_DROPS);
		return 0;
	}
	e->ts_ns = now;
	e->skaddr = (__u64)skc;
	e->cookie = BPF_CORE_READ(skc, skc_cookie.counter);
	e->expires_ns = start ? jiffies_left_ns(expires) : 0;
	e->netns = netns;
	e->kind = kind;
	read_tuple(skc, e->saddr, e->daddr, &e->family, &e->dport);
	if (kind == TK_TIMEWAIT_START || kind == TK_TIMEWAIT_STOP) {
		struct inet_timewait_sock *tw = (void *)skc;
		e->sport = bpf_ntohs(BPF_CORE_READ(tw, tw_sport));
		e->state = BPF_CORE_READ(tw, tw_substate);
		e->uid = 0;
	} else {
		e->sport = BPF_CORE_READ(skc, skc_num);
		e->state = TCP_SYN_RECV;
		e->uid = BPF_CORE_READ(skc, skc_listener, sk_uid.val);
	}
	submit(ring, e);
	return 0;
}

/* A packet reached a timewait socket and was freed after processing. A FIN
 * arriving at an orphan's FIN_WAIT2 timewait socket turns it into TIME_WAIT
 * and re-arms its timer, but when the new expiry falls in the same timer-wheel
 * bucket the kernel only updates the expiry and no timer tracepoint fires.
 * Report the timewait socket as (re)started with its current substate.
 * A socket the packet killed (a RST in window: "TIME_WAIT assassination")
 * has had its timer cancelled, which reported its end, and is freed memory
 * that still reads TIME_WAIT: only a pending timer means it lives. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(on_kfree_skb, struct sk_buff *skb, void *location, int reason, struct sock *rx_sk)
{
	if (!rx_sk || !tw_timer_fn || rx_sk->__sk_common.skc_state != TCP_TIME_WAIT)
		return 0;
	struct inet_timewait_sock *tw = (void *)rx_sk;
	if (!BPF_CORE_READ(tw, tw_timer.entry.pprev))
		return 0;
	return emit_sock_timer((void *)rx_sk, TK_TIMEWAIT_START, BPF_CORE_READ(tw, tw_timer.expires), true);
}

SEC("tp_btf/timer_start")
int BPF_PROG(on_timer_start, struct timer_list *timer, unsigned long bucket_expiry)
{
	return on_sock_timer(timer, bucket_expiry, true);
}

SEC("tp_btf/timer_cancel")
int BPF_PROG(on_timer_cancel, struct timer_list *timer)
{
	return on_sock_timer(timer, 0, false);
}

#define ICSK_TIME_RETRANS 1
#define ICSK_TIME_PROBE0 3
#define ICSK_TIME_LOSS_PROBE 5
#define ICSK_TIME_REO_TIMEOUT 6

/* The iterator hands us a trusted sock_common, and the bpf_skc_to_* casts
 * return trusted pointers too: everything below is read with plain loads
 * (guarded by the JIT), several times cheaper than probe reads. */
static __always_inline void fill_full(struct sock_rec *r, struct tcp_sock *tp)
{
	struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	struct inet_connection_sock *icsk = &tp->inet_conn;
	__u8 pending = icsk->icsk_pending;

	r->cookie = bpf_get_socket_cookie(sk);
	r->sport = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
	r->inode = sock_inode(sk);
	if (r->state == TCP_LISTEN)
		r->rx_queue = sk->sk_ack_backlog;
	else
		r->rx_queue = (__s32)(tp->rcv_nxt - tp->copied_seq) > 0 ? tp->rcv_nxt - tp->copied_seq : 0;
	r->tx_queue = tp->write_seq - tp->snd_una;
	if (!walk_extras)
		return;
	r->retransmits = icsk->icsk_retransmits;
	r->probes = icsk->icsk_probes_out;
	/* The same choice of timer as /proc/net/tcp makes. */
	if (pending == ICSK_TIME_RETRANS || pending == ICSK_TIME_REO_TIMEOUT ||
	    pending == ICSK_TIME_LOSS_PROBE) {
		r->timer = 1;
		r->timer_ns = jiffies_left_ns(icsk->icsk_retransmit_timer.expires);
	} else if (pending == ICSK_TIME_PROBE0) {
		r->timer = 4;
		r->timer_ns = jiffies_left_ns(icsk->icsk_retransmit_timer.expires);
	} else if (sk->sk_timer.entry.pprev) {
		r->timer = 2;
		r->timer_ns = jiffies_left_ns(sk->sk_timer.expires);
	}

	/* Owners of sockets that predate the tracer are joined in user space
	 * (list_owners). */
	__u64 skaddr = (__u64)sk;
	struct sock_info *info = bpf_map_lookup_elem(&socks, &skaddr);
	if (!info || (info->cookie && info->cookie != r->cookie))
		return;
	r->since_ns = info->since_ns;
	if (info->owner_src != OWNER_NONE) {
		r->flags = EV_OWNER_KNOWN;
		r->pid = info->pid;
		r->tid = info->tid;
		r->owner_src = info->owner_src;
		r->fd = (__s32)info->fd1 - 1;
		__builtin_memcpy(r->comm, info->comm, sizeof(r->comm));
	}
}

/* Dump every TCP socket of the reader's network namespace: full sockets,
 * timewait sockets and request sockets, one struct sock_rec each. */
SEC("iter/tcp")
int dump_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct sock_rec r = {};

	if (!skc)
		return 0;
	r.skaddr = (__u64)skc;
	r.fd = -1;
	r.state = skc->skc_state;
	r.netns = skc->skc_net.net->ns.inum;
	/* What /proc/net/tcp prints: 0 for timewait sockets, the listener's
	 * for request sockets. */
	r.uid = ctx->uid;
	r.family = skc->skc_family;
	r.dport = bpf_ntohs(skc->skc_dport);
	if (r.family == AF_INET6) {
		__builtin_memcpy(r.saddr, skc->skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(r.daddr, skc->skc_v6_daddr.in6_u.u6_addr8, 16);
	} else {
		*(__u32 *)r.saddr = skc->skc_rcv_saddr;
		*(__u32 *)r.daddr = skc->skc_daddr;
	}

	if (r.state == TCP_TIME_WAIT) {
		/* bpf_skc_to_tcp_timewait_sock() wants tcp_prot or tcpv6_prot;
		 * an MPTCP subflow's timewait socket has MPTCP's copy of them
		 * (Go listens with MPTCP by default): read those through probe
		 * reads. In the TCP hash, TIME_WAIT is always a timewait socket. */
		struct tcp_timewait_sock *tw = bpf_skc_to_tcp_timewait_sock(skc);
		r.kind = 1;
		r.cookie = skc->skc_cookie.counter;
		r.timer = 3;
		if (tw) {
			struct inet_timewait_sock *itw = &tw->tw_sk;
			r.state = itw->tw_substate;
			r.sport = bpf_ntohs(itw->tw_sport);
			r.timer_ns = jiffies_left_ns(itw->tw_timer.expires);
		} else {
			struct inet_timewait_sock *itw = (void *)skc;
			r.state = BPF_CORE_READ(itw, tw_substate);
			r.sport = bpf_ntohs(BPF_CORE_READ(itw, tw_sport));
			r.timer_ns = jiffies_left_ns(BPF_CORE_READ(itw, tw_timer.expires));
		}
	} else if (r.state == TCP_NEW_SYN_RECV) {
		/* As above, for MPTCP listeners' request sockets. */
		struct tcp_request_sock *req = bpf_skc_to_tcp_request_sock(skc);
		r.kind = 2;
		r.cookie = skc->skc_cookie.counter;
		r.state = TCP_SYN_RECV;
		r.sport = skc->skc_num;
		r.timer = 1;
		if (req) {
			struct request_sock *rs = &req->req.req;
			r.timer_ns = jiffies_left_ns(rs->rsk_timer.expires);
			r.retransmits = rs->num_timeout;
		} else {
			struct request_sock *rs = (void *)skc;
			r.timer_ns = jiffies_left_ns(BPF_CORE_READ(rs, rsk_timer.expires));
			r.retransmits = BPF_CORE_READ(rs, num_timeout);
		}
	} else {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
		if (!tp)
			return 0;
		fill_full(&r, tp);
	}
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

/* A reset sent or received by a full socket (tcpscope life). A reset sent in
 * reply to a segment for no socket, or by a timewait, request or listening
 * socket, ends no connection of ours and is skipped. */
static __always_inline int emit_reset(const struct sock *sk, __u8 kind)
{
	if (!sk || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!tp)
		return 0;
	__u8 state = sk->__sk_common.skc_state;
	if (state == TCP_LISTEN)
		return 0;
	__u64 now = bpf_ktime_get_ns(); /* before the reserve: see emit_sock_timer */
	void *ring = cpu_ring();
	struct timer_event *e = ring ? bpf_ringbuf_reserve(ring, sizeof(*e), 0) : NULL;
	if (!e) {
		stat_inc(STAT_RINGBUF_DROPS);
		return 0;
	}
	e->ts_ns = now;
	e->skaddr = (__u64)sk;
	e->cookie = bpf_get_socket_cookie((void *)sk);
	e->expires_ns = 0;
	e->netns = sock_netns(sk);
	e->uid = sk->sk_uid.val;
	e->kind = kind;
	e->state = state;
	read_tuple(&sk->__sk_common, e->saddr, e->daddr, &e->family, &e->dport);
	e->sport = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
	submit(ring, e);
	return 0;
}

/* Only the first argument is read: the tracepoint gained arguments over
 * kernel versions (skb in 4.x, the reason in 6.10). */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(on_send_reset, const struct sock *sk)
{
	return emit_reset(sk, TK_RESET_SENT);
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(on_receive_reset, struct sock *sk)
{
	return emit_reset(sk, TK_RESET_RECV);
}

/* Every process holding a TCP socket in one of the states of holder_states
 * (bit 1 << state), one record per (process, fd): the fd tables are the
 * truth about who holds a socket now, including sockets shared after fork()
 * or passed over a unix socket, which socket storage (one owner) cannot
 * tell. Walked on demand (tcpscope closewait). */
struct holder_rec {
	__u64 cookie;
	__u64 skaddr;
	__u32 pid;
	__s32 fd;
	__u8 state;
	__u8 _pad[7];
	char comm[16];
};

/* key 0: the state mask the holders walk reports. Set by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} holder_states SEC(".maps");

SEC("iter/task_file")
int find_holders(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	__u32 zero = 0;

	if (!task || !file)
		return 0;
	struct socket *sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	struct sock *sk = sock->sk;
	if (!sk || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u8 state = sk->__sk_common.skc_state;
	__u32 *mask = bpf_map_lookup_elem(&holder_states, &zero);
	if (!mask || !(*mask & (1u << (state & 31))))
		return 0;
	/* sk is untrusted here (see list_owners): no helper takes it. A
	 * socket without a cookie yet is keyed by its address in user space. */
	struct holder_rec r = {
		.cookie = sk->__sk_common.skc_cookie.counter,
		.skaddr = (__u64)sk,
		.pid = task->tgid,
		.fd = ctx->fd,
		.state = state,
	};
	__builtin_memcpy(r.comm, task->group_leader->comm, sizeof(r.comm));
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}
