// SPDX-License-Identifier: GPL-2.0
/*
 * The floor: the least a tool can do and still hand every TCP transition to
 * user space, or walk every TCP socket. Not part of tcpscope; `make bench`
 * runs it beside tcpscope so that the report can say how much of tcpscope's
 * cost any such tool pays on the same machine in the same run.
 *
 * floor_state does what every ring-buffer tracer on the state tracepoint
 * must: reserve a record in its CPU's ring (one ring per CPU, as tcpscope:
 * a shared ring costs twice as much per record here, in lock and cache-line
 * traffic between the CPUs), stamp it, commit it without waking the reader
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

/* Template of one CPU's ring; the floor's reader creates one per CPU. */
struct floor_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 12);
};

/* key: CPU number; value: that CPU's ring of records, one per transition.
 * Filled by the floor's reader before attach. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct floor_ring);
} floor_rings SEC(".maps");

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
	__u32 cpu = bpf_get_smp_processor_id();
	void *ring = bpf_map_lookup_elem(&floor_rings, &cpu);
	struct floor_event *e = ring ? bpf_ringbuf_reserve(ring, sizeof(*e), 0) : NULL;

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
