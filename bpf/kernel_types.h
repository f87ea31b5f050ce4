/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The few kernel structures tcpscope reads, declared with
 * preserve_access_index so that clang emits CO-RE relocations: libbpf-style
 * loaders (here cilium/ebpf) rewrite every field offset against the running
 * kernel's BTF at load time. Only the fields we touch are listed; their order
 * and the padding between them do not matter.
 */
#ifndef TCPSCOPE_KERNEL_TYPES_H
#define TCPSCOPE_KERNEL_TYPES_H

#include <linux/types.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef _Bool bool;
#define true 1
#define false 0

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
};

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

typedef struct {
	__s64 counter;
} atomic64_t;

typedef struct {
	unsigned int val;
} kuid_t;

struct sock_common {
	union {
		struct {
			__be32 skc_daddr;
			__be32 skc_rcv_saddr;
		};
	};
	union {
		struct {
			__be16 skc_dport;
			__u16 skc_num;
		};
	};
	unsigned short skc_family;
	volatile unsigned char skc_state;
	union {
		struct sock *skc_listener; /* request sockets: their listener */
	};
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	atomic64_t skc_cookie;
};

struct inode {
	unsigned short i_mode;
	unsigned long i_ino;
};

struct file {
	void *private_data;
	struct inode *f_inode;
};

struct socket {
	struct file *file;
	struct sock *sk;
};


/* A socket and its inode are allocated together: SOCK_INODE() in the kernel. */
struct socket_alloc {
	struct socket socket;
	struct inode vfs_inode;
};

struct hlist_node {
	struct hlist_node *next;
	struct hlist_node **pprev;
};

struct timer_list {
	struct hlist_node entry;
	unsigned long expires;
	void (*function)(struct timer_list *);
};

struct sock {
	struct sock_common __sk_common;
	struct socket *sk_socket;
	struct timer_list sk_timer; /* keepalive (and orphan FIN_WAIT2) timer */
	kuid_t sk_uid;
	u16 sk_protocol;
	u16 sk_type;
	u32 sk_ack_backlog;
};

/* inet_sport survives inet_put_port(), which zeroes skc_num before the
 * CLOSE transition is traced. */
struct inet_sock {
	struct sock sk;
	__be16 inet_sport;
};

struct inet_connection_sock {
	struct inet_sock icsk_inet;
	struct timer_list icsk_retransmit_timer;
	__u8 icsk_retransmits;
	__u8 icsk_pending;
	__u8 icsk_probes_out;
};

struct tcp_sock {
	struct inet_connection_sock inet_conn;
	u32 copied_seq;
	u32 write_seq;
	u32 rcv_nxt;
	u32 snd_una;
};

/* Replaces a full socket in TIME_WAIT (or an orphan's FIN_WAIT2). */
struct inet_timewait_sock {
	struct sock_common __tw_common;
	unsigned char tw_substate;
	__be16 tw_sport;
	struct timer_list tw_timer;
};

struct tcp_timewait_sock {
	struct inet_timewait_sock tw_sk;
};

/* A connection request: SYN received, handshake not complete. */
struct request_sock {
	struct sock_common __req_common;
	u8 num_timeout;
	struct timer_list rsk_timer;
};

struct inet_request_sock {
	struct request_sock req;
};

struct tcp_request_sock {
	struct inet_request_sock req;
};

/* An MPTCP socket; the TCP socket in the kernel's tables is its subflow. */
struct mptcp_sock {
	struct sock *first;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct task_struct {
	unsigned int flags;
	int pid;
	int tgid;
	struct task_struct *group_leader;
	char comm[16];
	struct files_struct *files;
};

struct seq_file;

struct sk_buff;

struct bpf_iter_meta {
	struct seq_file *seq;
};

#pragma clang attribute pop

/* Iterator contexts are checked by offset, so they mirror the kernel's layout. */
struct bpf_iter__task_file {
	union {
		struct bpf_iter_meta *meta;
		__u64 _meta;
	};
	union {
		struct task_struct *task;
		__u64 _task;
	};
	__u32 fd;
	union {
		struct file *file;
		__u64 _file;
	};
};

struct bpf_iter__tcp {
	union {
		struct bpf_iter_meta *meta;
		__u64 _meta;
	};
	union {
		struct sock_common *sk_common;
		__u64 _sk_common;
	};
	__u32 uid;
};

#endif /* TCPSCOPE_KERNEL_TYPES_H */
