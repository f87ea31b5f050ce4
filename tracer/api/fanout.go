package api

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// fanOut moves the work of serving event streams off the caller of Publish,
// which is the table's pipeline: offering every event to every client
// (a query match and a copy each) cost the table's applier ~1 µs an event
// with 10 clients, and under churn the applier then held up the ring
// buffer's reader until the ring overflowed (TestServeBurst lost events in
// a third of its runs, none with no client). Publish now makes one copy of
// the batch into a bounded queue; a goroutine of the API's own, at the
// API's priority, offers it to the clients.
type fanOut struct {
	streams atomic.Int64 // stream clients connected
	limit   int          // events queued at most
	wake    chan struct{}

	mu       sync.Mutex
	queue    []event.Event
	gaps     []gap // events dropped before queue[gap.at]
	lost     uint64
	spare    []event.Event
	running  bool // a fan-out goroutine is running
	offering int  // events taken from queue and being offered (for tests)
}

// signal wakes the fan-out goroutine.
func (f *fanOut) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Publish offers a batch of table events to the stream clients, in order.
// It never blocks, and keeps nothing of evs: it queues a copy for the
// fan-out goroutine, or drops what does not fit. With no client it does
// nothing.
func (a *API) Publish(evs []event.Event) {
	f := &a.fan
	if f.streams.Load() == 0 || len(evs) == 0 {
		return
	}
	f.mu.Lock()
	room := max(f.limit-len(f.queue), 0)
	if room < len(evs) {
		f.lost += uint64(len(evs) - room)
		evs = evs[:room]
	}
	if len(evs) > 0 {
		if f.lost > 0 {
			f.gaps = append(f.gaps, gap{len(f.queue), f.lost})
			f.lost = 0
		}
		if need := len(f.queue) + len(evs); need > cap(f.queue) {
			// Doubling, but not past the limit: the queue is kept.
			f.queue = slices.Grow(f.queue, min(max(2*cap(f.queue), need), f.limit)-len(f.queue))
		}
		f.queue = append(f.queue, evs...)
	}
	start := !f.running
	f.running = true
	f.mu.Unlock()
	if start {
		go a.fanOutLoop()
	}
	f.signal()
}

// fanOutLoop offers what Publish queued to every client until there is no
// client and nothing queued.
func (a *API) fanOutLoop() {
	f := &a.fan
	for {
		f.mu.Lock()
		q, gaps, lost := f.queue, f.gaps, f.lost
		if len(q) == 0 && lost == 0 {
			if f.streams.Load() == 0 {
				// No client: give the queues back (up to FanOutQueue
				// events each) until the next one comes.
				f.running = false
				f.queue, f.spare = nil, nil
				f.mu.Unlock()
				return
			}
			f.mu.Unlock()
			<-f.wake
			continue
		}
		f.queue, f.gaps, f.lost, f.spare = f.spare[:0], nil, 0, nil
		f.offering = len(q)
		f.mu.Unlock()

		from := 0
		for _, g := range gaps {
			a.offerAll(q[from:g.at])
			a.loseAll(g.n)
			from = g.at
		}
		a.offerAll(q[from:])
		if lost > 0 { // dropped after the last event queued
			a.loseAll(lost)
		}
		f.mu.Lock()
		f.spare, f.offering = q[:0], 0
		f.mu.Unlock()
	}
}
