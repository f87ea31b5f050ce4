// Package loader is the only part of tcpscope that touches BPF: it loads the
// programs in bpf/, attaches them, seeds socket owners, and streams decoded
// events from the ring buffer to a Sink.
package loader

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/ktime"
)

// Config tunes the tracer. The zero value is usable.
type Config struct {
	// RingBytes is the size of the ring buffers together, a power of two
	// (default 8 MiB). Each CPU has a ring of its own: its share of the
	// total, rounded down to a power of two, at least 1 MiB (or the total,
	// if smaller) and at least a page: on many CPUs the rings together can
	// be larger than RingBytes.
	RingBytes int
	// MaxSockets bounds how many sockets the BPF side keeps an owner and
	// a state-entry time for (default 1048576; ~16 bytes each up front,
	// ~130 more per socket in use). Sockets past it are traced without
	// (Stats.Untracked counts them).
	MaxSockets int
	// Batch is how long the reader lets events accumulate before reading
	// them when events are flowing (default 1ms: until 2026-12-06 the
	// default said 2ms, but the epoll_wait it went to rounded down to whole
	// milliseconds, so the batches were ~1 ms). A quiet ring wakes the
	// reader on its first event.
	Batch time.Duration
	// Filter is applied in the kernel; zero fields match everything.
	Filter KernelFilter
	// BTFPath overrides the kernel's BTF (/sys/kernel/btf/vmlinux).
	BTFPath string
	// Sockets also follows timewait and request sockets (TimewaitStart/Stop,
	// RequestStart/Stop events), which a socket table needs: they change
	// state without the state tracepoint.
	Sockets bool
	// Resets emits ResetSent and ResetReceived events for full sockets
	// (tcp:tcp_send_reset, tcp:tcp_receive_reset), which tell how a
	// connection ended.
	Resets bool
	// Owners says how owners of sockets that exist at start are found
	// (default OwnersOnEvents).
	Owners OwnerSeed
	// BareWalks makes socket walks leave out what only some views print:
	// full sockets' timers (Timer, TimerLeft, Retransmits, Probes stay
	// zero) and what the BPF side learned from events (Since, and owners:
	// those of OwnersAtWalk are still filled in). About a third cheaper
	// per socket in the kernel.
	BareWalks bool
	// WalksOnly loads only the iterators that socket and owner walks need
	// and attaches nothing: for one-shot views, which print one walk and
	// exit. No ring buffer, no events: Run only waits for its context,
	// Barrier returns at once and Stats are zero. Starting and stopping
	// cost a fraction of a tracer's (no tracepoint to attach, no RCU grace
	// period to wait for at detach). OwnersOnEvents means OwnersAtWalk here,
	// and OwnersNone leaves out the fd walk that finds owners.
	WalksOnly bool
	// Holders loads the fd walk that Holders needs even when WalksOnly.
	Holders bool
}

// KernelFilter selects which transitions are emitted. Owner and age
// bookkeeping still sees every transition.
type KernelFilter struct {
	PID    uint32          // owner process
	Port   uint16          // local or remote port
	Family event.Family    // IPv4 or IPv6
	NetNS  uint32          // network namespace inode
	States event.StateMask // old or new state in the set
}

const (
	defaultRingBytes  = 8 << 20
	defaultMaxSockets = 1 << 20
	defaultBatch      = time.Millisecond
	// While asleep the reader still wakes this often to refresh loss counters.
	idleWake = 250 * time.Millisecond
)

// Sink receives what the tracer reads.
type Sink interface {
	// Event is called for each transition; e is reused after it returns.
	Event(e *event.Event)
	// Drained is called when the ring buffer has been emptied: a good moment
	// to flush buffered output.
	Drained()
	// Lost is called when the loss counters grow, with the new totals.
	Lost(s Stats)
}

// Tracer owns the loaded BPF objects and links. Create it with New, consume
// with Run, release with Close.
type Tracer struct {
	cfg   Config
	objs  tcpscopeObjects
	links []link.Link
	rings *cpuRings
	// wake cuts Run's sleep between batches short (a Barrier).
	wake     chan struct{}
	warnings []string

	badRecords atomic.Uint64 // records the decoder rejected

	hz uint64 // the kernel's CONFIG_HZ

	// The owners found at start, and their index by socket inode.
	// Written by the background read before ownersDone is closed.
	owners     map[uint64]uint32
	ownerList  []ownerRec
	ownersDone chan struct{} // nil unless listOwners started a read
	ownersErr  error

	iterMu   sync.Mutex
	dumpIter *link.Iter // iter/tcp, attached on first walk

	holdersMu sync.Mutex // one Holders walk at a time: it sets a map first

	// Barrier bookkeeping: barrierGen counts Barrier calls, barrierDone the
	// last one the reader has satisfied.
	barrierGen  atomic.Uint64
	barrierMu   sync.Mutex
	barrierCond *sync.Cond
	barrierDone uint64
	runState    atomic.Int32  // 0 not started, 1 running, 2 ended
	runDone     chan struct{} // closed when Run returns

	closeOnce sync.Once
	closeErr  error
	detach    sync.Once
}

// New checks privileges and kernel support, loads and attaches the programs,
// and seeds owners of sockets that already exist. On error everything done so
// far is undone.
func New(cfg Config) (*Tracer, error) {
	if cfg.RingBytes == 0 {
		cfg.RingBytes = defaultRingBytes
	}
	if cfg.RingBytes < os.Getpagesize() || cfg.RingBytes&(cfg.RingBytes-1) != 0 {
		return nil, fmt.Errorf("ring buffer size %d: must be a power of two of at least %d bytes", cfg.RingBytes, os.Getpagesize())
	}
	if cfg.MaxSockets == 0 {
		cfg.MaxSockets = defaultMaxSockets
	}
	if cfg.Batch == 0 {
		cfg.Batch = defaultBatch
	}
	if cfg.WalksOnly && cfg.Owners == OwnersOnEvents {
		cfg.Owners = OwnersAtWalk
	}
	if err := CheckCapabilities(); err != nil {
		return nil, err
	}
	if err := checkBTF(cfg.BTFPath); err != nil {
		return nil, err
	}

	t := &Tracer{cfg: cfg, wake: make(chan struct{}, 1), runDone: make(chan struct{})}
	t.barrierCond = sync.NewCond(&t.barrierMu)
	if err := t.install(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// install does the kernel-side work of New; Close undoes any part of it.
func (t *Tracer) install() error {
	if err := t.load(); err != nil {
		return err
	}
	if !t.cfg.WalksOnly {
		if err := t.attach(); err != nil {
			return err
		}
	}
	var seed func() error
	switch t.cfg.Owners {
	case OwnersOnEvents, OwnersAtWalk:
		seed = t.listOwners
	case OwnersNone:
		seed = func() error { return nil }
	default:
		return fmt.Errorf("unknown owner seeding %d", t.cfg.Owners)
	}
	if err := seed(); err != nil {
		return err
	}
	if t.cfg.Owners == OwnersOnEvents {
		// Run joins them into events from its first one.
		if err := t.awaitOwners(); err != nil {
			return err
		}
	}
	return nil
}

func (t *Tracer) load() error {
	// Decoding the kernel's BTF (for CO-RE and the iterators' attach
	// targets) is the largest fixed cost of a load, ~15 ms: start it now,
	// beside the parse of our own object, instead of at the first program.
	types := btf.NewCache()
	go types.Kernel() //nolint:errcheck // the load asks again and sees the error
	// /proc/kallsyms is slow to read (the kernel formats every symbol
	// before ours): read it while the object is parsed.
	type symsResult struct {
		syms map[string]uint64
		err  error
	}
	symsc := make(chan symsResult, 1)
	followTimers := t.cfg.Sockets && !t.cfg.WalksOnly
	if followTimers {
		go func() {
			syms, err := kernelSymbols("tw_timer_handler", "reqsk_timer_handler")
			symsc <- symsResult{syms, err}
		}()
	}
	spec, err := loadTcpscope()
	if err != nil {
		return fmt.Errorf("parse BPF object: %w", err)
	}
	var (
		cpus         int
		ringTemplate *ebpf.MapSpec
	)
	if !t.cfg.WalksOnly {
		if cpus, err = ebpf.PossibleCPU(); err != nil {
			return fmt.Errorf("count possible CPUs: %w", err)
		}
		rings := spec.Maps["rings"]
		rings.MaxEntries = uint32(cpus)
		ringTemplate = rings.InnerMap.Copy()
		// The kernel creates a ring from the template to check the slots
		// against: the smallest one will do (a ring's size is not part of
		// its type).
		rings.InnerMap.MaxEntries = uint32(os.Getpagesize())
	}
	spec.Maps["socks"].MaxEntries = uint32(t.cfg.MaxSockets)
	if t.cfg.WalksOnly {
		// Nothing is attached to fill these, and the buckets of a large
		// hash are allocated and zeroed up front (16 MiB for socks: a
		// third of a one-shot view's time).
		spec.Maps["socks"].MaxEntries = 1
		spec.Maps["listeners"].MaxEntries = 1
	}

	f := t.cfg.Filter
	vars := []struct {
		name string
		val  any
	}{
		{"filter_pid", f.PID},
		{"filter_port", f.Port},
		{"filter_family", familyNumber(f.Family)},
		{"filter_netns", f.NetNS},
		{"filter_states", uint32(f.States)},
		{"walk_extras", walkExtras(t.cfg.BareWalks)},
	}
	// Only timers need the length of a jiffy (a read of the kernel's
	// config): the views that ask for bare walks print none.
	hz := uint64(250)
	if !t.cfg.BareWalks {
		var err error
		if hz, err = kernelHZ(); err != nil {
			hz = 250
			t.warnings = append(t.warnings, fmt.Sprintf("timer values assume CONFIG_HZ=250: %v", err))
		}
	}
	t.hz = hz
	vars = append(vars, struct {
		name string
		val  any
	}{"ns_per_jiffy", uint64(time.Second) / hz})
	if followTimers {
		r := <-symsc
		syms, err := r.syms, r.err
		if err != nil {
			t.warnings = append(t.warnings, fmt.Sprintf("TIME_WAIT and SYN_RECV sockets not followed live: %v", err))
		}
		vars = append(vars, struct {
			name string
			val  any
		}{"tw_timer_fn", syms["tw_timer_handler"]}, struct {
			name string
			val  any
		}{"req_timer_fn", syms["reqsk_timer_handler"]})
	}
	for _, v := range vars {
		if err := spec.Variables[v.name].Set(v.val); err != nil {
			return fmt.Errorf("set %s: %w", v.name, err)
		}
	}

	opts := ebpf.CollectionOptions{Cache: types}
	if t.cfg.BTFPath != "" {
		kt, err := btf.LoadSpec(t.cfg.BTFPath)
		if err != nil {
			return fmt.Errorf("%w: load BTF from %s: %w", ErrUnsupported, t.cfg.BTFPath, err)
		}
		opts.Programs.KernelTypes = kt
	}
	if t.cfg.WalksOnly {
		return t.loadWalks(spec, &opts)
	}
	if err := spec.LoadAndAssign(&t.objs, &opts); err != nil {
		return classifyLoadError(err)
	}
	// The rings before attach: the programs find their CPU's at once.
	t.rings, err = newCPURings(t.objs.Rings, ringTemplate, cpus, CPURingBytes(t.cfg.RingBytes, cpus), &t.badRecords)
	return err
}

// loadWalks loads only the iterators a WalksOnly tracer uses, and the maps
// they reference: each program costs a verification (~1-2 ms).
func (t *Tracer) loadWalks(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions) error {
	type walkObjs struct {
		DumpTcp *ebpf.Program `ebpf:"dump_tcp"`
	}
	type ownerObjs struct {
		ListOwners *ebpf.Program `ebpf:"list_owners"`
	}
	type holderObjs struct {
		FindHolders  *ebpf.Program `ebpf:"find_holders"`
		HolderStates *ebpf.Map     `ebpf:"holder_states"`
	}
	var (
		w      walkObjs
		o      ownerObjs
		h      holderObjs
		to     any = &w
		owners     = t.cfg.Owners != OwnersNone
	)
	// LoadAndAssign follows untagged pointers to structs.
	switch {
	case owners && t.cfg.Holders:
		to = &struct {
			*walkObjs
			*ownerObjs
			*holderObjs
		}{&w, &o, &h}
	case owners:
		to = &struct {
			*walkObjs
			*ownerObjs
		}{&w, &o}
	case t.cfg.Holders:
		to = &struct {
			*walkObjs
			*holderObjs
		}{&w, &h}
	}
	if err := spec.LoadAndAssign(to, opts); err != nil {
		return classifyLoadError(err)
	}
	t.objs.DumpTcp, t.objs.ListOwners, t.objs.FindHolders, t.objs.HolderStates = w.DumpTcp, o.ListOwners, h.FindHolders, h.HolderStates
	return nil
}

func familyNumber(f event.Family) uint16 {
	switch f {
	case event.IPv4:
		return unix.AF_INET
	case event.IPv6:
		return unix.AF_INET6
	}
	return 0
}

// classifyLoadError turns the kernel's refusal into one of our errors.
func classifyLoadError(err error) error {
	var ve *ebpf.VerifierError
	switch {
	case errors.As(err, &ve):
		return fmt.Errorf("%w: BPF verifier rejected the program: %v", ErrUnsupported, err)
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w: the kernel refused to load BPF programs (%v): need CAP_BPF and CAP_PERFMON, or root", ErrPrivileges, err)
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	return fmt.Errorf("load BPF objects: %w", err)
}

func (t *Tracer) attach() error {
	// The main program first: the recovery program must run after it on
	// every firing of the tracepoint.
	for _, p := range []*ebpf.Program{t.objs.OnStateChange, t.objs.OnStateChangeNested} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, ebpf.ErrNotSupported) {
				return fmt.Errorf("%w: attach sock:inet_sock_set_state: %v", ErrUnsupported, err)
			}
			return fmt.Errorf("attach inet_sock_set_state: %w", err)
		}
		t.links = append(t.links, l)
	}

	if t.cfg.Sockets {
		for _, tp := range []struct {
			name string
			prog *ebpf.Program
		}{
			{"timer:timer_start", t.objs.OnTimerStart},
			{"timer:timer_cancel", t.objs.OnTimerCancel},
			// FIN_WAIT2 -> TIME_WAIT of a timewait socket whose re-armed
			// timer stays in its wheel bucket fires no timer tracepoint.
			{"skb:kfree_skb", t.objs.OnKfreeSkb},
		} {
			l, err := link.AttachTracing(link.TracingOptions{Program: tp.prog, AttachType: ebpf.AttachTraceRawTp})
			if err != nil {
				return fmt.Errorf("attach %s: %w", tp.name, err)
			}
			t.links = append(t.links, l)
		}
	}

	if t.cfg.Resets {
		for _, tp := range []struct {
			name string
			prog *ebpf.Program
		}{
			{"tcp:tcp_send_reset", t.objs.OnSendReset},
			{"tcp:tcp_receive_reset", t.objs.OnReceiveReset},
		} {
			l, err := link.AttachTracing(link.TracingOptions{Program: tp.prog, AttachType: ebpf.AttachTraceRawTp})
			if err != nil {
				if errors.Is(err, unix.ENOENT) || errors.Is(err, ebpf.ErrNotSupported) {
					return fmt.Errorf("%w: attach %s: %v", ErrUnsupported, tp.name, err)
				}
				return fmt.Errorf("attach %s: %w", tp.name, err)
			}
			t.links = append(t.links, l)
		}
	}

	// accept() attribution uses classic syscall tracepoints, which need
	// tracefs. Without it owners of accepted sockets fall back to their
	// listener's owner, which is right unless several processes accept.
	if err := ensureTracefs(); err != nil {
		t.warnings = append(t.warnings, fmt.Sprintf("accept() attribution off: %v", err))
		return nil
	}
	for _, tp := range []struct {
		name string
		prog *ebpf.Program
	}{
		{"sys_exit_accept4", t.objs.OnAccept4Exit},
		{"sys_exit_accept", t.objs.OnAcceptExitLegacy},
	} {
		l, err := link.Tracepoint("syscalls", tp.name, tp.prog, nil)
		if err != nil {
			t.warnings = append(t.warnings, fmt.Sprintf("accept() attribution off: attach %s: %v", tp.name, err))
			continue
		}
		t.links = append(t.links, l)
	}
	return nil
}

// ensureTracefs mounts tracefs at its usual place if no tracefs is mounted.
func ensureTracefs() error {
	var st unix.Statfs_t
	for _, p := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		if unix.Statfs(p, &st) == nil && st.Type == unix.TRACEFS_MAGIC {
			return nil
		}
	}
	if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("tracefs is not mounted and mounting it failed: %w", err)
	}
	return nil
}

// Warnings lists features that were turned off because the kernel or the
// system did not allow them; the tracer works without them.
func (t *Tracer) Warnings() []string { return t.warnings }

// Run reads events until ctx is done or a fatal error occurs. When ctx ends
// it detaches the programs, drains what is left in the rings, and returns nil.
func (t *Tracer) Run(ctx context.Context, sink Sink) error {
	if !t.runState.CompareAndSwap(0, 1) {
		return errors.New("tracer: Run called twice")
	}
	defer close(t.runDone)
	if t.cfg.WalksOnly {
		<-ctx.Done()
		t.runState.Store(2)
		return nil
	}
	// detached: the programs are gone, so the next pass is the last one.
	var detached atomic.Bool
	stop := context.AfterFunc(ctx, func() {
		t.detachAll()
		detached.Store(true)
		t.rings.wake()
	})
	defer stop()
	defer func() {
		t.runState.Store(2)
		t.releaseBarriers(t.barrierGen.Load())
	}()
	// Owners of sockets from before start are joined into their events
	// (install waited for them).
	joinEvents := t.cfg.Owners == OwnersOnEvents && len(t.owners) > 0

	var (
		ev        event.Event
		lastLost  uint64
		lastCheck time.Time
		served    uint64 // the last Barrier generation satisfied
		// The Barrier generation being waited for, and the mark of the
		// first pass that saw it: every event committed before those
		// calls is timed before bmark.
		bgen, bmark uint64
	)
	// Between batches Run sleeps in its own thread (nanosleep) and then
	// takes what the rings hold without blocking. Not on a Go timer: the
	// runtime fires timers from whichever thread next schedules or sits in
	// the netpoller, a thread at the process's priority, which under
	// saturating churn waited 8-30 ms for a CPU while the reader's own
	// (given a higher priority by ReaderNice callers) would have run at
	// once. Not in epoll_wait for the rest of the batch either: the
	// runtime's sysmon kept taking the P from that syscall, thousands of
	// thread switches a second. Only an idle reader blocks in epoll_wait,
	// until a producer wakes it.
	for {
		pollStart := time.Now()
		// In this order: a Barrier counted in gen was called before the
		// mark, so the events it waits for are timed before it.
		gen := t.barrierGen.Load()
		last := detached.Load()
		mark := ktime.Now()
		if last {
			mark = math.MaxUint64 // every program has finished
		}
		if gen != served && bgen == served {
			bgen, bmark = gen, mark
		}
		read, more, err := t.rings.fill()
		if errors.Is(err, os.ErrClosed) {
			return nil // Close was called
		}
		if err != nil {
			return fmt.Errorf("read ring buffer: %w", err)
		}
		n := 0
		for b := t.rings.next(mark); b != nil; b = t.rings.next(mark) {
			if derr := event.Decode(b, &ev); derr != nil {
				t.badRecords.Add(1)
				continue
			}
			if joinEvents {
				t.joinEvent(&ev)
			}
			sink.Event(&ev)
			n++
		}
		waiting := t.rings.compact()
		if last && more {
			continue // what the rings still hold, then the end
		}
		// Every event committed before bgen's calls is out once the pass
		// read each ring past bmark: a record not read yet was reserved
		// after one timed later than bmark (fill's cut).
		barrier := bgen != served && min(mark, t.rings.cut) >= bmark
		if n > 0 || barrier || last {
			sink.Drained()
		}
		if barrier {
			t.releaseBarriers(bgen)
			served = bgen
		}
		if last {
			t.reportLoss(sink, &lastLost)
			return nil
		}
		if now := time.Now(); now.Sub(lastCheck) >= 100*time.Millisecond {
			lastCheck = now
			t.reportLoss(sink, &lastLost)
		}
		if n == 0 && waiting == 0 && !more && t.barrierGen.Load() == served {
			// A whole batch interval without events: sleep until a
			// producer wakes us. Raise the flag first, then look at the
			// rings once more; a producer that committed before seeing
			// the flag is found here, one that commits after it wakes us.
			t.setReaderAsleep(true)
			if t.rings.available() == 0 && !detached.Load() {
				if err := t.rings.wait(idleWake); err != nil {
					if errors.Is(err, os.ErrClosed) {
						return nil
					}
					t.setReaderAsleep(false)
					return err
				}
			}
			t.setReaderAsleep(false)
			continue
		}
		// A pass that found an eighth of a ring or more in one, or left
		// records in one, polls again at once: the producers do not wake a busy
		// reader (they could not: it sleeps here, not in epoll_wait), and
		// a small ring would overflow during a whole sleep.
		if !more && read < t.rings.ringSize/8 {
			select {
			case <-t.wake: // a Barrier: poll again at once
			default:
				sleepThread(time.Until(pollStart.Add(t.cfg.Batch)))
			}
		}
	}
}

// Barrier returns once Run has passed every event committed to the ring
// buffers before the call and called Sink.Drained, or once Run has returned.
// Called before Run starts, it waits for Run.
func (t *Tracer) Barrier(ctx context.Context) error {
	if t.cfg.WalksOnly {
		return nil // no events to wait for
	}
	gen := t.barrierGen.Add(1)
	if t.runState.Load() == 2 {
		return nil
	}
	select {
	case t.wake <- struct{}{}:
	default:
	}
	t.rings.wake()
	done := make(chan struct{})
	go func() {
		t.barrierMu.Lock()
		for t.barrierDone < gen && t.runState.Load() != 2 {
			t.barrierCond.Wait()
		}
		t.barrierMu.Unlock()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *Tracer) releaseBarriers(gen uint64) {
	t.barrierMu.Lock()
	if gen > t.barrierDone {
		t.barrierDone = gen
	}
	t.barrierMu.Unlock()
	t.barrierCond.Broadcast()
}

func (t *Tracer) setReaderAsleep(v bool) {
	var val uint32
	if v {
		val = 1
	}
	// A map update is a syscall, which orders it before our next look at the
	// ring; the BPF side reads the flag after its commit.
	_ = t.objs.ReaderState.Update(uint32(0), val, ebpf.UpdateAny)
}

func (t *Tracer) reportLoss(sink Sink, last *uint64) {
	s, err := t.Stats()
	if err != nil {
		return
	}
	if l := s.Lost(); l != *last {
		*last = l
		sink.Lost(s)
	}
}

// Stats reads the kernel-side counters.
func (t *Tracer) Stats() (Stats, error) {
	var s Stats
	if t.cfg.WalksOnly {
		return s, nil // nothing traced
	}
	// The skipped runs before the recoveries: the kernel counts a skip
	// before the recovery program runs, so read in this order a recovery
	// can only be ahead of its skip (Unrecovered then reads 0 until the
	// next call), never behind it (a loss that is not one).
	main, err := t.objs.OnStateChange.Stats()
	if err != nil {
		return s, fmt.Errorf("read program stats: %w", err)
	}
	nested, err := t.objs.OnStateChangeNested.Stats()
	if err != nil {
		return s, fmt.Errorf("read program stats: %w", err)
	}
	var perCPU []uint64
	for idx, dst := range map[tcpscopeStatIndex]*uint64{
		tcpscopeStatIndexSTAT_RINGBUF_DROPS: &s.RingDrops,
		tcpscopeStatIndexSTAT_RECOVERED:     &s.Recovered,
		tcpscopeStatIndexSTAT_UNTRACKED:     &s.Untracked,
		tcpscopeStatIndexSTAT_TRANSITIONS:   &s.Transitions,
		tcpscopeStatIndexSTAT_WAKEUPS:       &s.Wakeups,
	} {
		if err := t.objs.Stats.Lookup(uint32(idx), &perCPU); err != nil {
			return s, fmt.Errorf("read stats: %w", err)
		}
		for _, v := range perCPU {
			*dst += v
		}
	}
	s.MainMisses = main.RecursionMisses
	s.RecoveryMisses = nested.RecursionMisses
	s.MainRuns, s.MainRuntime = main.RunCount, main.Runtime
	s.RecoveryRuns, s.RecoveryRuntime = nested.RunCount, nested.Runtime
	s.BadRecords = t.badRecords.Load()
	for _, p := range []*ebpf.Program{t.objs.OnTimerStart, t.objs.OnTimerCancel, t.objs.OnKfreeSkb} {
		if !t.cfg.Sockets {
			break
		}
		st, err := p.Stats()
		if err != nil {
			return s, fmt.Errorf("read program stats: %w", err)
		}
		s.TimerMisses += st.RecursionMisses
	}
	return s, nil
}

// ProgramStats returns the BPF programs' own counters by program name, for
// benchmarks. Run time is only counted while kernel.bpf_stats_enabled is 1.
func (t *Tracer) ProgramStats() (map[string]*ebpf.ProgramStats, error) {
	out := map[string]*ebpf.ProgramStats{}
	for name, p := range map[string]*ebpf.Program{
		"on_state_change":        t.objs.OnStateChange,
		"on_state_change_nested": t.objs.OnStateChangeNested,
		"on_accept4_exit":        t.objs.OnAccept4Exit,
		"on_timer_start":         t.objs.OnTimerStart,
		"on_timer_cancel":        t.objs.OnTimerCancel,
		"on_kfree_skb":           t.objs.OnKfreeSkb,
		"on_send_reset":          t.objs.OnSendReset,
		"on_receive_reset":       t.objs.OnReceiveReset,
	} {
		if p == nil {
			continue // not loaded (WalksOnly)
		}
		st, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("stats of %s: %w", name, err)
		}
		out[name] = st
	}
	return out, nil
}

func (t *Tracer) detachAll() {
	t.detach.Do(func() {
		// All at once: detaching a tracing program waits for an RCU grace
		// period (20-45 ms each here), which one after another made up half
		// of a one-shot netstat's run time. While the main program is
		// already gone and the recovery program not yet, the latter emits
		// the firings itself (flagged Recovered): nothing is doubled.
		var wg sync.WaitGroup
		for _, l := range t.links {
			wg.Go(func() { l.Close() })
		}
		wg.Wait()
	})
}

// Close detaches the programs and frees every kernel object. It is safe to
// call more than once. Called while Run runs, it ends Run (which then returns
// nil without draining the rings) and waits for it.
func (t *Tracer) Close() error {
	t.closeOnce.Do(func() {
		t.awaitOwners() // its error belongs to the walks
		t.detachAll()
		var errs []error
		if t.rings != nil {
			errs = append(errs, t.rings.Close())
		}
		// Run may still be between two uses of the maps (the sleep flag,
		// the loss counters): they are closed once it has returned, which
		// it does at its next look at the rings. Bounded, in case its sink
		// is what waits for this caller.
		if t.runState.Load() == 1 && !t.cfg.WalksOnly {
			select {
			case <-t.runDone:
			case <-time.After(time.Second):
			}
		}
		t.iterMu.Lock()
		if t.dumpIter != nil {
			errs = append(errs, t.dumpIter.Close())
			t.dumpIter = nil
		}
		t.iterMu.Unlock()
		errs = append(errs, t.objs.Close())
		t.closeErr = errors.Join(errs...)
	})
	return t.closeErr
}

// walkExtras is dump_tcp's walk_extras for Config.BareWalks.
func walkExtras(bare bool) uint8 {
	if bare {
		return 0
	}
	return 1
}

// sleepThread sleeps d in the calling thread, in the kernel: the thread is
// woken by its own timer, at its own priority. A short sleep keeps the
// goroutine's P (sysmon leaves a syscall under 10 ms alone while another P
// is idle).
func sleepThread(d time.Duration) {
	if d <= 0 {
		return
	}
	ts := unix.NsecToTimespec(d.Nanoseconds())
	_ = unix.Nanosleep(&ts, nil) // EINTR: a signal; the next poll comes sooner, no harm
}
