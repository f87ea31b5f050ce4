package topview

import (
	"sync"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// rateSlots is how many one-second buckets Rates keeps: enough for the
// longest sparkline plus the second in progress.
const rateSlots = 64

// Rates counts, per second of the kernel's CLOCK_MONOTONIC, how many sockets
// entered each state (a socket leaving the table entered CLOSE). It is fed
// from the table's change hook (Observe), so it sees exactly the changes the
// table makes, in one network namespace or all, at no cost to readers.
//
// Changes made by a resync (no event) are not transitions and are not
// counted: the resync counter says those happened.
type Rates struct {
	netns uint32 // 0: every namespace

	mu      sync.Mutex
	sec     [rateSlots]int64 // the second each slot holds, -1 when empty
	count   [rateSlots][event.MaxState + 1]uint32
	lastSec int64 // newest second counted

	// The table reports a timer re-arm that spans two Apply calls as a
	// removal followed by the insertion of the same socket in the same
	// state; undoing the removal's count keeps re-arms out of the rates.
	removedKey   uint64
	removedState event.State
	removedSec   int64
}

// NewRates returns Rates that count the sockets of network namespace netns
// (its inode), or of all namespaces when netns is 0.
func NewRates(netns uint32) *Rates {
	r := &Rates{netns: netns, removedSec: -1}
	for i := range r.sec {
		r.sec[i] = -1
	}
	return r
}

// Observe is a table change hook (table.AddOnChange): old nil for an
// insertion, new nil for a removal. It runs under the table's write lock, so
// it only adds to a counter.
func (r *Rates) Observe(old, new *table.Entry, ev *event.Event) {
	if ev == nil {
		return // a resync correcting the table, not a transition
	}
	var ns uint32
	switch {
	case new != nil:
		ns = new.NetNS
	case old != nil:
		ns = old.NetNS
	}
	if r.netns != 0 && ns != r.netns {
		return
	}
	sec := int64(ev.Mono / 1e9)
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case new == nil && old != nil:
		r.add(sec, event.Close, 1)
		r.removedKey, r.removedState, r.removedSec = old.Key, rateState(old), sec
	case old == nil && new != nil:
		if r.removedSec >= 0 && new.Key == r.removedKey && rateState(new) == r.removedState {
			r.add(r.removedSec, event.Close, -1) // a re-arm: nothing happened
			r.removedSec = -1
			return
		}
		r.add(sec, rateState(new), 1)
	case old != nil && new != nil && rateState(old) != rateState(new):
		r.add(sec, rateState(new), 1)
	}
}

// rateState is the state a change is counted in. As in the table's
// transition matrix, a request socket (a handshake in progress) is counted
// as NEW_SYN_RECV, so that a connection does not enter SYN_RECV twice (its
// request socket, then the child full socket).
func rateState(e *table.Entry) event.State {
	if e.Kind == event.RequestSocket {
		return event.NewSynRecv
	}
	return e.State
}

// add changes the count of st in second sec, if that second is still kept.
func (r *Rates) add(sec int64, st event.State, n int) {
	if !st.Valid() || sec < 0 {
		return
	}
	if sec > r.lastSec {
		r.lastSec = sec
	}
	if sec <= r.lastSec-rateSlots {
		return // too old to be shown
	}
	i := sec % rateSlots
	if r.sec[i] != sec {
		r.sec[i] = sec
		r.count[i] = [event.MaxState + 1]uint32{}
	}
	if n < 0 && r.count[i][st] == 0 {
		return
	}
	r.count[i][st] = uint32(int(r.count[i][st]) + n)
}

// series fills dst[st][k] with the sockets that entered st in second
// end-len(dst[st])+k, for every state, and returns whether any second up to
// end (and the one after, in progress) counted anything.
func (r *Rates) series(end int64, n int, dst *[event.MaxState + 1][]uint32) (active bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for st := range dst {
		dst[st] = make([]uint32, n)
	}
	for k := 0; k <= n; k++ {
		sec := end - int64(n) + 1 + int64(k) // k == n: the second in progress
		if sec < 0 {
			continue
		}
		i := sec % rateSlots
		if r.sec[i] != sec {
			continue
		}
		for st := range dst {
			c := r.count[i][st]
			if c != 0 {
				active = true
				if k < n {
					dst[st][k] = c
				}
			}
		}
	}
	return active
}
