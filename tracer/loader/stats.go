package loader

import "time"

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

// Lost is every event that did not reach user space: ring buffer overflows,
// skipped runs that were not recovered, undecodable records, and skipped
// timer records.
func (s Stats) Lost() uint64 {
	return s.RingDrops + s.Unrecovered() + s.BadRecords + s.TimerMisses
}

// RingUsage returns how many bytes of the ring buffer hold records not read
// yet, and the ring's size. It is for monitoring (a ring that stays near full
// is about to drop events); call it only between New and Close.
func (t *Tracer) RingUsage() (used, size int) {
	if t.reader == nil {
		return 0, 0
	}
	return t.reader.AvailableBytes(), t.reader.BufferSize()
}
