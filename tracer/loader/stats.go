package loader

import (
	"fmt"
	"strings"
	"time"
)

// Stats are the tracer's counters since it was loaded.
type Stats struct {
	// Transitions is the number of TCP state changes the programs saw,
	// whether or not a filter let them through.
	Transitions uint64
	// RingDrops counts events lost because the ring buffer was full.
	RingDrops uint64
	// MainMisses counts firings the kernel did not run the main program for
	// because it was already running on that CPU (recursion_misses).
	MainMisses uint64
	// Recovered counts firings the recovery program handled instead.
	Recovered uint64
	// RecoveryMisses counts firings the recovery program was skipped for;
	// harmless, since the main program handled those.
	RecoveryMisses uint64
	// Untracked counts transitions and accepts that found no room for the
	// socket's entry in the BPF socket map (Config.MaxSockets): their
	// owner and state age are not kept.
	Untracked uint64
	// Wakeups counts reader wakeups forced by the BPF side.
	Wakeups uint64
	// BadRecords counts ring records the decoder rejected.
	BadRecords uint64
	// TimerMisses counts timer start/stop firings the kernel skipped the
	// timewait/request programs for (recursion_misses): a timewait or
	// request socket change that was lost.
	TimerMisses uint64

	MainRuns, RecoveryRuns       uint64        // program runs
	MainRuntime, RecoveryRuntime time.Duration // with kernel.bpf_stats_enabled
}

// Unrecovered is the number of skipped firings nobody emitted.
func (s Stats) Unrecovered() uint64 {
	if s.MainMisses > s.Recovered {
		return s.MainMisses - s.Recovered
	}
	return 0
}

// loss is one cause of lost events and its count.
type loss struct {
	what string
	n    uint64
}

// losses are the counters of events that did not reach user space.
func (s Stats) losses() [4]loss {
	return [4]loss{
		{"ring buffer full", s.RingDrops},
		{"state-change runs skipped by the kernel", s.Unrecovered()},
		{"timer runs skipped by the kernel", s.TimerMisses},
		{"undecodable records", s.BadRecords},
	}
}

// Lost is every event that did not reach user space: ring buffer overflows,
// skipped runs that were not recovered, undecodable records, and skipped
// timer records.
func (s Stats) Lost() uint64 {
	var n uint64
	for _, l := range s.losses() {
		n += l.n
	}
	return n
}

// LostSince returns how many events were lost since prev, and by what
// ("ring buffer full: 5; ..."). Each counter is compared on its own, and
// only one that rose counts: Unrecovered may also fall (a skipped run read
// before its recovery), and that fall must not hide a rise elsewhere.
func (s Stats) LostSince(prev Stats) (uint64, string) {
	var (
		n     uint64
		parts []string
	)
	was := prev.losses()
	for i, l := range s.losses() {
		if l.n > was[i].n {
			n += l.n - was[i].n
			parts = append(parts, fmt.Sprintf("%s: %d", l.what, l.n-was[i].n))
		}
	}
	return n, strings.Join(parts, "; ")
}

// RingUsage returns how many bytes of the ring buffers hold records not read
// yet, and the rings' size, all CPUs' together. It is for monitoring (rings
// that stay near full are about to drop events); call it only between New
// and Close.
func (t *Tracer) RingUsage() (used, size int) {
	if t.rings == nil {
		return 0, 0
	}
	return t.rings.available(), t.rings.bufferSize()
}
