// SPDX-License-Identifier: GPL-2.0
/*
 * The floor: the least a tool can do and still hand every TCP transition to
 * user space, or walk every TCP socket. Not part of tcpscope; `make bench`
 * runs it beside tcpscope so that the report can say how much of tcpscope's
 * cost any such tool pays on the same machine in the same run.
 *
 * floor_state does what every ring-buffer tracer on the state tracepoint
 * must: reserve a record, stamp it, commit it without waking the reader
 * (which polls every millisecond, as tcpscope's does while events flow, and
 * never sleeps until woken). The record has the size of tcpscope's
 * transition record, so its ring traffic is that of `tcpscope trace` (serve
 * adds timer records); it holds no owner, tuple, counters or anything a map
 * would have to keep.
 *
 * floor_walk is the least one-shot view: one small record per socket from
 * iter/tcp, which user space counts by state.
 */
#include "kernel_types.h"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

/* As large as tcpscope's struct event (tracer/event.Size). */
struct floor_event {
	__u64 ts_ns;
	__u64 skaddr;
	__u32 oldstate;
	__u32 newstate;
	__u8 _unused[136];
};

/* One record per transition, for the floor's reader. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23);
} floor_events SEC(".maps");

/* key: 0; value: per-CPU count of records the full ring refused. Written
 * here, read by the floor's reader at exit. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} floor_drops SEC(".maps");

/* Referenced so that its BTF is emitted for bpf2go -type. */
struct floor_event *unused_floor_event __attribute__((unused));

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(floor_state, const void *sk, const int oldstate, const int newstate)
{
	struct floor_event *e = bpf_ringbuf_reserve(&floor_events, sizeof(*e), 0);

	if (!e) {
		__u32 zero = 0;
		__u64 *drops = bpf_map_lookup_elem(&floor_drops, &zero);
		if (drops)
			*drops += 1;
		return 0;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->skaddr = (__u64)sk;
	e->oldstate = oldstate;
	e->newstate = newstate;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

SEC("iter/tcp")
int floor_walk(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc)
		return 0;
	__u8 state = skc->skc_state;
	bpf_seq_write(ctx->meta->seq, &state, sizeof(state));
	return 0;
}
