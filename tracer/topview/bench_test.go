package topview

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// BenchmarkSnapshot builds the view of a table of n sockets spread over 50
// processes and the main states (57% in CLOSE_WAIT or TIME_WAIT), as on a
// busy host. The hot spot walk holds the table's read lock, so "walk" is
// also how long it delays the reader.
func BenchmarkSnapshot(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tab := table.New()
			m := New(tab, Options{Now: func() uint64 { return 1e12 }})
			states := []event.State{E, E, E, TW, TW, CW, FW2}
			evs := make([]event.Event, 0, 4096)
			for i := range n {
				st := states[i%len(states)]
				e := event.Event{Kind: event.Transition, Cookie: uint64(i + 1), Mono: 1e9, Old: CL, New: st,
					NetNS: 1, Family: event.IPv4,
					Local:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 16), byte(i >> 8)}), uint16(i)),
					Remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(i % 200)}), 443)}
				if st == TW {
					e.Kind, e.Old, e.Expires = event.TimewaitStart, 0, 60e9
				} else {
					e.Owner = event.Task{PID: uint32(1000 + i%50)}
					copy(e.Owner.Comm[:], "worker")
					e.Flags |= event.OwnerKnown
				}
				evs = append(evs, e)
				if len(evs) == cap(evs) {
					tab.ApplyBatch(evs)
					evs = evs[:0]
				}
			}
			tab.ApplyBatch(evs)
			if got := tab.Len(); got != n {
				b.Fatalf("table holds %d", got)
			}
			// walk: every snapshot walks the CLOSE_WAIT and TIME_WAIT
			// sockets; reuse: as top runs, the walk's result reused.
			b.Run("walk", func(b *testing.B) {
				for b.Loop() {
					m.spots.valid = false
					m.Snapshot(Query{})
				}
			})
			b.Run("reuse", func(b *testing.B) {
				m.Snapshot(Query{})
				for b.Loop() {
					m.Snapshot(Query{})
				}
			})
		})
	}
}
