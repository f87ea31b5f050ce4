// Package live keeps a socket table current from a running tracer: it seeds
// the table from the kernel's socket tables while events already flow,
// applies every event, and resyncs from the kernel when events were lost or
// the table stops agreeing with what the events say.
package live

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/ktime"
	"github.com/tcpscope/tcpscope/tracer/loader"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// Source is the part of loader.Tracer that Live uses. Barrier returns once
// every event committed before the call has been passed to the sink and the
// sink's Drained that followed has returned (Drained may apply the batch
// itself: waitApplied counts on it).
type Source interface {
	Run(ctx context.Context, sink loader.Sink) error
	AllSockets(dst []event.Socket) ([]event.Socket, map[uint32]bool, error)
	Barrier(ctx context.Context) error
}

// streamSource is a Source whose walks show their sockets as they read
// them (loader.Tracer): the seed is then merged while the kernel walks.
type streamSource interface {
	AllSocketsFunc(dst []event.Socket, fn loader.WalkFunc) ([]event.Socket, map[uint32]bool, error)
}

// Options tune Live. The zero value is usable.
type Options struct {
	// Notify receives one line for each resync, saying why it happened
	// (for stderr). Nil: silent.
	Notify func(msg string)
	// Events, if set, sees every batch of events after the table applied
	// it, in order and never concurrently, but on the ring reader's
	// goroutine as often as not: it must not block (a reader that waits
	// loses events once the ring is full), and must not keep evs, which is
	// reused. The table's change hooks run there too.
	Events func(evs []event.Event)
	// MinResyncInterval spaces resyncs caused by table mismatches
	// (default 1s); lost events always resync at once.
	MinResyncInterval time.Duration
	// ReaderNice, if not 0, is the nice value (-20 to 19) given to the
	// threads that read the ring buffer and apply events, which run
	// locked to them. A reader that gets less CPU than the events need
	// loses them; a busy host (or the agent's own API work) must not
	// take that CPU. Raising priority needs CAP_SYS_NICE; without it the
	// thread keeps the process's.
	ReaderNice int
}

// RaisedReaderNice is the ReaderNice of every tcpscope command: a host's
// other work (the very churn being traced) must not starve the ring
// reader, which at nice 0 waits for a CPU as long as any busy thread does.
// `tcpscope trace` at nice 0 lost 17-32k events (a full 8 MiB ring) in 2 of
// 20 saturating churn runs, 2026-12-06.
const RaisedReaderNice = -10

// raiseThreadPriority sets the calling thread's nice value to nice (a
// negative one) only from normal priority: a tcpscope started at a higher
// priority keeps it, and one the user started with `nice -n 5` is not
// raised against their wish. Raising needs CAP_SYS_NICE; without it the
// thread keeps the process's.
func raiseThreadPriority(nice int) {
	tid := unix.Gettid()
	// getpriority(2) returns 20 - nice, so that it is never negative.
	cur, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil || 20-cur != 0 || nice >= 0 {
		return
	}
	_ = unix.Setpriority(unix.PRIO_PROCESS, tid, nice)
}

// lockReaderThread locks the calling goroutine to its OS thread and raises
// that thread to nice (0: leaves it). Never unlocked: the thread ends with
// the goroutine, and its priority with it.
func lockReaderThread(nice int) {
	if nice != 0 {
		runtime.LockOSThread()
		raiseThreadPriority(nice)
	}
}

// RunReader runs a ring reader (run) on a goroutine locked to an OS thread
// of its own, at nice value nice (if not 0, and if the process may raise
// it: CAP_SYS_NICE), and returns its error: for commands that read the
// tracer without a live table, as Start runs its reader.
func RunReader(nice int, run func() error) error {
	errc := make(chan error, 1)
	go func() {
		lockReaderThread(nice)
		errc <- run()
	}()
	return <-errc
}

// Live runs a tracer into a table.
type Live struct {
	src  Source
	tab  *table.Table
	opts Options

	seedMono     uint64
	lastSyncMono uint64
	resync       chan string
	resyncs      atomic.Uint64
	skipped      atomic.Uint64   // namespaces walks could not enter
	warned       map[uint32]bool // namespaces already reported skipped (walks run one at a time)
	lastLoss     loader.Stats    // at the last loss reported (reader goroutine only)
	runErr       chan error
	walkBuf      []event.Socket
	lastCheck    time.Time
	mismatch     atomic.Uint64 // mismatches+unknown counted at the last check
	seeding      atomic.Bool   // events during the seed may not match yet
	seedSnap     []event.Socket
	lastSnap     []event.Socket // the last walk (aliases walkBuf)
	done         chan struct{}
	wg           sync.WaitGroup

	batch []event.Event // the reader's current batch (reader goroutine only)
	q     applyQueue
}

// applyQueue hands the reader's batches to the goroutine that applies them
// to the table, so that the ring buffer reader never waits for the table's
// lock: an API answer or a walk's merge may hold it for a long time, and a
// reader that waits loses events once the ring is full. Batches wait here
// instead, up to maxPending events. When nothing waits here, nothing is
// being applied and the table's lock is free, the reader applies its batch
// itself: most batches, under churn, and a thread switch less for each.
type applyQueue struct {
	mu       sync.Mutex
	cond     *sync.Cond // broadcast when a batch is taken or applied
	pending  []event.Event
	free     [][]event.Event // empty batch buffers, for the reader's next batch
	queued   uint64          // batches handed over or applied by the reader
	applied  uint64          // batches applied (all of the first `applied`)
	applying bool            // a batch is being applied, by the applier or the reader
	stopped  bool            // the applier has ended
	wake     chan struct{}
}

// maxPending bounds the events waiting for the table (about 200 bytes
// each; at the churn this machine makes, about 0.7 s of events). Past it
// the reader waits for the applier, and the ring buffer takes the rest.
const maxPending = 1 << 18

// Start begins consuming events into tab, then seeds it with a walk of the
// kernel's socket tables, merging so that a socket that changes during the
// walk ends in its true state. It returns once the table is seeded; events
// keep flowing until ctx ends. Wait returns Run's error.
func Start(ctx context.Context, src Source, tab *table.Table, opts Options) (*Live, error) {
	if opts.MinResyncInterval == 0 {
		opts.MinResyncInterval = time.Second
	}
	l := &Live{
		src:    src,
		tab:    tab,
		opts:   opts,
		resync: make(chan string, 1),
		runErr: make(chan error, 1),
		done:   make(chan struct{}),
		warned: map[uint32]bool{},
	}
	l.q.cond = sync.NewCond(&l.q.mu)
	l.q.wake = make(chan struct{}, 1)
	l.seeding.Store(true)
	tab.BeginSync()
	l.wg.Go(func() {
		// The applier is the reader's other half: events wait for it as
		// they would for the reader.
		lockReaderThread(opts.ReaderNice)
		l.applyLoop()
	})
	go func() {
		lockReaderThread(opts.ReaderNice)
		l.runErr <- src.Run(ctx, sink{l})
		close(l.done)
	}()
	if err := l.sync(ctx); err != nil {
		return nil, fmt.Errorf("seed socket table: %w", err)
	}
	l.seedMono = l.lastSyncMono
	l.seedSnap, l.walkBuf = l.lastSnap, nil // the next walk must not reuse it
	// Events that arrived before the seed was merged found sockets the table
	// did not have yet: not a reason to resync.
	st := tab.Stats()
	l.mismatch.Store(st.Mismatches + st.Unknown)
	l.seeding.Store(false)
	l.wg.Add(1)
	go l.resyncLoop(ctx)
	l.wg.Go(func() { l.overdueLoop(ctx) })
	return l, nil
}

// SeedMono is the CLOCK_MONOTONIC time of the first walk: sockets seen only
// by it have been in their state at least since then.
func (l *Live) SeedMono() uint64 { return l.seedMono }

// TakeSeed returns the sockets the seed walk found, in the kernel's order
// (every namespace the Source walks, the caller's first), and forgets them. A one-shot
// view prints these instead of walking again.
func (l *Live) TakeSeed() []event.Socket {
	s := l.seedSnap
	l.seedSnap = nil
	return s
}

// Resyncs counts resyncs after the seed.
func (l *Live) Resyncs() uint64 { return l.resyncs.Load() }

// Wait blocks until the tracer stops (ctx ended or a read error) and
// returns its error.
func (l *Live) Wait() error {
	err := <-l.runErr
	l.wg.Wait()
	return err
}

// Done is closed when the tracer has stopped.
func (l *Live) Done() <-chan struct{} { return l.done }

// sync walks the kernel after BeginSync, lets the reader pass every event
// committed during the walk, and merges.
func (l *Live) sync(ctx context.Context) error {
	mono := ktime.Now()
	walk := l.src.AllSockets
	// Into an empty table (the seed) the walk is merged as it is read, on
	// this goroutine while the kernel walks on another thread; EndSync then
	// gets only what is left (nothing, unless the table was not empty).
	merged := 0
	if ss, ok := l.src.(streamSource); ok {
		parts := true
		fn := func(dst []event.Socket, from int) {
			if parts = parts && l.tab.SyncPart(dst[from:], mono, cap(dst)); parts {
				merged = len(dst)
			}
		}
		walk = func(dst []event.Socket) ([]event.Socket, map[uint32]bool, error) { return ss.AllSocketsFunc(dst, fn) }
	}
	snap, walked, err := walk(l.walkBuf[:0])
	if pe, ok := errors.AsType[*loader.PartialWalkError](err); ok {
		l.noteSkipped(pe)
		err = nil // the walked set leaves the skipped namespaces' entries alone
	}
	if err != nil {
		l.tab.EndSync(nil, mono, map[uint32]bool{}) // leave sync mode, change nothing
		return err
	}
	if err := l.src.Barrier(ctx); err != nil {
		l.tab.EndSync(nil, mono, map[uint32]bool{})
		return err
	}
	l.waitApplied() // the events the reader passed before the barrier
	// (A namespace dropped from snap after a failed read may have shrunk it
	// below what was merged.)
	l.tab.EndSync(snap[min(merged, len(snap)):], mono, walked)
	l.lastSyncMono = mono
	l.lastSnap = snap
	// Keep the buffer for the next resync unless it is huge and mostly idle.
	if cap(snap) <= 4*len(snap)+1024 {
		l.walkBuf = snap[:0]
	} else {
		l.walkBuf = nil
	}
	return nil
}

// noteSkipped counts namespaces a walk could not enter and reports the new
// ones in one line, so that a namespace that stays unreachable (no
// CAP_SYS_ADMIN) is not repeated at every resync, and a host with a hundred
// of them gets one line, not a hundred.
func (l *Live) noteSkipped(pe *loader.PartialWalkError) {
	l.skipped.Add(uint64(len(pe.Skipped)))
	var fresh []string
	for _, s := range pe.Skipped {
		if l.warned[s.Inode] {
			continue
		}
		l.warned[s.Inode] = true
		if len(fresh) < 3 {
			fresh = append(fresh, fmt.Sprintf("%v (inode %d)", s.Err, s.Inode))
		} else {
			fresh = append(fresh, "")
		}
	}
	if len(fresh) == 0 || l.opts.Notify == nil {
		return
	}
	shown := slices.DeleteFunc(slices.Clone(fresh), func(s string) bool { return s == "" })
	more := ""
	if n := len(fresh) - len(shown); n > 0 {
		more = fmt.Sprintf("; and %d more", n)
	}
	l.opts.Notify(fmt.Sprintf("%d network namespaces not walked, their sockets are known from events only: %s%s",
		len(fresh), strings.Join(shown, "; "), more))
}

// SkippedWalks counts namespaces that a seed or resync walk had to skip.
func (l *Live) SkippedWalks() uint64 { return l.skipped.Load() }

// overdueGrace is how long past its kernel timer's deadline a timewait or
// request entry may stay without the stop event before it is dropped. The
// timer wheel fires a timer of 16 s to 131 s up to 2.05 s late (512 jiffies
// at HZ=250; measured here: 1.8 s for TIME_WAIT), so less would drop live
// sockets; longer timers (tcp_fin_timeout over 131 s) can be later still.
const overdueGrace = 5 * time.Second

// overdueLoop drops timewait and request entries whose timer fired without
// the tracer seeing its stop (table.DropOverdue): the kernel freed them on its
// own schedule, so the table does too, rather than keep a ghost until the next
// resync. The deadlines come from the kernel's own timers.
func (l *Live) overdueLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if !l.seeding.Load() {
				l.tab.DropOverdue(ktime.Now(), uint64(overdueGrace))
			}
		}
	}
}

func (l *Live) resyncLoop(ctx context.Context) {
	defer l.wg.Done()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.done:
			return
		case why := <-l.resync:
			if wait := l.opts.MinResyncInterval - time.Since(last); wait > 0 && why != "" {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return
				}
			}
			last = time.Now()
			l.tab.BeginSync()
			if err := l.sync(ctx); err != nil {
				if ctx.Err() == nil && l.opts.Notify != nil {
					l.opts.Notify(fmt.Sprintf("resync failed: %v", err))
				}
				continue
			}
			l.resyncs.Add(1)
			if l.opts.Notify != nil {
				l.opts.Notify(fmt.Sprintf("%s; table resynced from the kernel (resync %d)", why, l.resyncs.Load()))
			}
		}
	}
}

func (l *Live) requestResync(why string) {
	select {
	case l.resync <- why:
	default: // one is already pending; it will cover this too
	}
}

// sink adapts Live to loader.Sink; its methods run on the reader goroutine.
type sink struct{ l *Live }

func (s sink) Event(e *event.Event) {
	s.l.batch = append(s.l.batch, *e)
}

// Drained applies the batch, or hands it to the applier (applyLoop) when
// the table is busy or earlier batches are still waiting.
func (s sink) Drained() {
	l := s.l
	if len(l.batch) == 0 {
		return
	}
	q := &l.q
	q.mu.Lock()
	if len(q.pending) == 0 && !q.applying && !q.stopped {
		// Nothing is ahead of this batch: apply it here if the table's
		// lock is free. applying keeps the applier from taking a later
		// batch meanwhile (there is none: this goroutine queues them).
		q.applying = true
		q.mu.Unlock()
		ok := l.tab.TryApplyBatch(l.batch)
		if ok {
			l.afterApply(l.batch)
		}
		q.mu.Lock()
		q.applying = false
		if ok {
			q.queued++
			q.applied = q.queued
			q.cond.Broadcast()
			q.mu.Unlock()
			l.batch = l.batch[:0]
			return
		}
	}
	for len(q.pending) >= maxPending && !q.stopped {
		q.cond.Wait()
	}
	if len(q.pending) == 0 {
		// The applier has taken everything: hand the batch over without
		// a copy, and go on with a kept buffer or a new one as large (a
		// batch that grew from nothing cost the reader a tenth of its
		// time under churn: copies and fresh pages). Each buffer is in one
		// place at a time (batch, pending, free, or the applier's hands).
		q.pending = l.batch
		l.batch = q.getFree(cap(l.batch))
	} else {
		q.pending = append(q.pending, l.batch...)
		l.batch = l.batch[:0]
	}
	q.queued++
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// keptBuffers and keptBufferCap bound the batch buffers kept for reuse:
// enough for a batch being filled, one waiting and one being applied, each
// the size of a busy poll's batch (an eighth of the default ring is ~6.5k
// events), not of a long wait's backlog.
const (
	keptBuffers   = 3
	keptBufferCap = 1 << 14
)

// putFree keeps an emptied batch buffer for reuse, within the bounds above
// (none: nothing to keep). Call with q.mu held.
func (q *applyQueue) putFree(b []event.Event) {
	if cap(b) > 0 && cap(b) <= keptBufferCap && len(q.free) < keptBuffers {
		q.free = append(q.free, b[:0])
	}
}

// getFree returns an empty batch buffer: a kept one, or a new one of
// capacity n (at most keptBufferCap). Call with q.mu held.
func (q *applyQueue) getFree(n int) []event.Event {
	if k := len(q.free); k > 0 {
		b := q.free[k-1]
		q.free = q.free[:k-1]
		return b
	}
	return make([]event.Event, 0, min(n, keptBufferCap))
}

// applyLoop applies the reader's batches to the table, in order, shows
// them to Options.Events, and checks that they matched the table. It ends
// when the reader has stopped and everything it handed over is applied.
func (l *Live) applyLoop() {
	q := &l.q
	for {
		var stop bool
		select {
		case <-q.wake:
		case <-l.done:
			stop = true
		}
		q.mu.Lock()
		take, gen := q.pending, q.queued
		q.pending = nil
		if len(take) > 0 {
			q.applying = true
		}
		q.cond.Broadcast() // room for a reader that waits
		q.mu.Unlock()

		if len(take) > 0 {
			l.tab.ApplyBatch(take)
			l.afterApply(take)
		}

		q.mu.Lock()
		q.putFree(take)
		if len(take) > 0 {
			q.applying = false
		}
		// The reader may have applied batches of its own since gen was
		// read (if take was empty): never move applied back.
		q.applied = max(q.applied, gen)
		q.stopped = stop
		q.cond.Broadcast()
		q.mu.Unlock()
		if stop {
			return
		}
	}
}

// afterApply shows an applied batch to Options.Events and checks that it
// matched the table.
func (l *Live) afterApply(evs []event.Event) {
	if l.opts.Events != nil {
		l.opts.Events(evs)
	}
	l.checkMismatches()
}

// waitApplied returns once every batch handed over before the call is in
// the table (or the applier has ended).
func (l *Live) waitApplied() {
	q := &l.q
	q.mu.Lock()
	target := q.queued
	for q.applied < target && !q.stopped {
		q.cond.Wait()
	}
	q.mu.Unlock()
}

// checkMismatches asks for a resync, at most every 100 ms, when events
// stopped matching the table. It runs on whichever goroutine applied the
// batch (the applying flag orders them), so it takes no table lock.
func (l *Live) checkMismatches() {
	if now := time.Now(); now.Sub(l.lastCheck) >= 100*time.Millisecond && !l.seeding.Load() {
		l.lastCheck = now
		// Not Stats(): the reader runs this too, and must not wait for
		// the table's lock.
		if bad, was := l.tab.Mismatches(), l.mismatch.Load(); bad > was {
			l.requestResync(fmt.Sprintf("%d events did not match the table", bad-was))
			l.mismatch.Store(bad)
		}
	}
}

// Lost compares the loss counters with those of the previous call (see
// loader.Stats.LostSince: the reference is always the previous call).
func (s sink) Lost(st loader.Stats) {
	prev := s.l.lastLoss
	s.l.lastLoss = st
	if n, why := st.LostSince(prev); n > 0 {
		s.l.requestResync(fmt.Sprintf("%d events lost (%s)", n, why))
	}
}
