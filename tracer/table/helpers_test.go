package table

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
)

var (
	cliAP  = netip.MustParseAddrPort("10.0.0.1:40000")
	srvAP  = netip.MustParseAddrPort("10.0.0.2:80")
	anyAP  = netip.MustParseAddrPort("0.0.0.0:0")
	cli6AP = netip.MustParseAddrPort("[2001:db8::1]:40000")
	srv6AP = netip.MustParseAddrPort("[2001:db8::2]:443")
)

func task(pid uint32, comm string) event.Task {
	t := event.Task{PID: pid, TID: pid}
	copy(t.Comm[:], comm)
	return t
}

// ev builds an event. Defaults: IPv4, netns 1, client tuple.
type evOpt func(*event.Event)

func tup(l, r netip.AddrPort) evOpt {
	return func(e *event.Event) {
		e.Local, e.Remote = l, r
		e.Family = event.IPv4
		if l.Addr().Is6() {
			e.Family = event.IPv6
		}
	}
}
func ns(n uint32) evOpt { return func(e *event.Event) { e.NetNS = n } }
func owner(pid uint32, comm string) evOpt {
	return func(e *event.Event) {
		e.Owner = task(pid, comm)
		e.Flags |= event.OwnerKnown
		e.Source = event.OwnerSyscall
	}
}
func inode(i uint64) evOpt          { return func(e *event.Event) { e.Inode = i } }
func addr(a uint64) evOpt           { return func(e *event.Event) { e.SockAddr = a } }
func expires(d time.Duration) evOpt { return func(e *event.Event) { e.Expires = d } }

func mk(kind event.Kind, cookie, mono uint64, old, new event.State, opts ...evOpt) event.Event {
	e := event.Event{Kind: kind, Cookie: cookie, Mono: mono, Old: old, New: new,
		NetNS: 1, Family: event.IPv4, Local: cliAP, Remote: srvAP, UID: 1000}
	for _, o := range opts {
		o(&e)
	}
	return e
}

func tr(cookie, mono uint64, old, new event.State, opts ...evOpt) event.Event {
	return mk(event.Transition, cookie, mono, old, new, opts...)
}
func twStart(cookie, mono uint64, st event.State, opts ...evOpt) event.Event {
	return mk(event.TimewaitStart, cookie, mono, 0, st, append([]evOpt{expires(60 * time.Second)}, opts...)...)
}
func twStop(cookie, mono uint64, opts ...evOpt) event.Event {
	return mk(event.TimewaitStop, cookie, mono, 0, 0, opts...)
}
func rqStart(a, mono uint64, opts ...evOpt) event.Event {
	return mk(event.RequestStart, 0, mono, 0, event.SynRecv, append([]evOpt{addr(a), expires(time.Second)}, opts...)...)
}
func rqStop(a, mono uint64, opts ...evOpt) event.Event {
	return mk(event.RequestStop, 0, mono, 0, 0, append([]evOpt{addr(a)}, opts...)...)
}

// check verifies every internal invariant against a brute-force walk of the
// slab: counts per state and per namespace, list links, index, refcounts.
func check(tb testing.TB, t *Table) {
	tb.Helper()
	if err := t.verify(); err != nil {
		tb.Fatal(err)
	}
}

func (t *Table) verify() error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var counts Counts
	nsCounts := map[uint32]Counts{}
	ownerRefs := map[uint32]uint32{}
	live := 0
	for s := uint32(0); s < t.nslots; s++ {
		en := t.at(s)
		if en.state == 0 {
			continue
		}
		live++
		if !en.state.Valid() || en.state == event.Close {
			return fmt.Errorf("slot %d: state %v", s, en.state)
		}
		counts[en.state]++
		c := nsCounts[t.nss[en.ns].inode]
		c[en.state]++
		nsCounts[t.nss[en.ns].inode] = c
		if got, ok := t.index[en.key]; !ok || got != s {
			return fmt.Errorf("slot %d key %#x: index has %d,%v", s, en.key, got, ok)
		}
		if en.owner != 0 {
			ownerRefs[en.owner]++
		}
	}
	if live != t.n || len(t.index) != t.n {
		return fmt.Errorf("live %d, n %d, index %d", live, t.n, len(t.index))
	}
	if counts != t.counts {
		return fmt.Errorf("counts %v, brute force %v", t.counts, counts)
	}
	for st := event.State(0); st <= event.MaxState; st++ {
		n, prev := 0, nilSlot
		for s := t.heads[st]; s != nilSlot; s = t.at(uint32(s)).next {
			en := t.at(uint32(s))
			if en.state != st || en.prev != prev {
				return fmt.Errorf("list %v: slot %d state %v prev %d want %d", st, s, en.state, en.prev, prev)
			}
			prev = s
			if n++; n > t.n {
				return fmt.Errorf("list %v: cycle", st)
			}
		}
		if n != counts[st] {
			return fmt.Errorf("list %v has %d, count %d", st, n, counts[st])
		}
	}
	if len(nsCounts) != len(t.nsIdx) {
		return fmt.Errorf("namespaces %d, interned %d", len(nsCounts), len(t.nsIdx))
	}
	for inode, c := range nsCounts {
		i, ok := t.nsIdx[inode]
		if !ok || t.nss[i].counts != c || t.nss[i].refs != c.Total() {
			return fmt.Errorf("netns %d: %v refs %d, brute force %v", inode, t.nss[i].counts, t.nss[i].refs, c)
		}
	}
	if len(ownerRefs) != len(t.ownerIdx) {
		return fmt.Errorf("owners referenced %d, interned %d", len(ownerRefs), len(t.ownerIdx))
	}
	for i, n := range ownerRefs {
		if t.owners[i].refs != n || t.ownerIdx[t.owners[i].task] != i {
			return fmt.Errorf("owner %d: refs %d, brute force %d", i, t.owners[i].refs, n)
		}
	}
	return nil
}
