package table

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// TestSyncPartSameAsEndSync seeds two empty tables from the same walk and
// the same events during it: one merges the whole snapshot in EndSync, the
// other in parts (SyncPart) between the events, the rest in EndSync. The
// tables must end alike: entries, counts, transitions, statistics and the
// sync result.
func TestSyncPartSameAsEndSync(t *testing.T) {
	states := []event.State{E, SS, SR, FW1, FW2, TW, CL, CW, LA, LI, CG}
	for seed := uint64(1); seed <= 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		n := 1 + rng.IntN(60)
		var snap []event.Socket
		for i := 0; i < n; i++ {
			key := uint64(1 + rng.IntN(80)) // duplicates happen
			st := states[rng.IntN(len(states))]
			s := sock(key, st, func(s *event.Socket) { s.NetNS = uint32(1 + key%3) })
			switch {
			case st == TW:
				s.Kind = event.TimewaitSocket
			case st == SR && rng.IntN(2) == 0:
				s.Kind, s.Cookie, s.SockAddr = event.RequestSocket, 0, 0xffff000000000000|key
			}
			if rng.IntN(3) == 0 {
				s.OwnerKnown, s.Owner, s.Source, s.FD = true, task(uint32(key%5+1), "p"), event.OwnerIter, int32(key)
			}
			snap = append(snap, s)
		}
		var during []event.Event
		for i, m := 0, rng.IntN(40); i < m; i++ {
			key := uint64(1 + rng.IntN(80))
			mono := uint64(100 + i)
			switch rng.IntN(5) {
			case 0:
				during = append(during, twStart(key, mono, TW))
			case 1:
				during = append(during, twStop(key, mono))
			case 2:
				during = append(during, rqStart(0xffff000000000000|key, mono))
			default:
				old, nw := states[rng.IntN(len(states))], states[rng.IntN(len(states))]
				during = append(during, tr(key, mono, old, nw, ns(uint32(1+key%3)), owner(uint32(key%4+1), "q")))
			}
		}

		// The plan: parts of the walk, each followed by some of the events
		// (in one batch or one by one); both tables apply the events alike.
		type step struct {
			part  []event.Socket
			evs   []event.Event
			batch bool
		}
		var plan []step
		rest, evs := snap, during
		for len(rest) > 0 && rng.IntN(4) != 0 {
			k := 1 + rng.IntN(len(rest))
			j := rng.IntN(len(evs) + 1)
			plan = append(plan, step{rest[:k], evs[:j], rng.IntN(2) == 0})
			rest, evs = rest[k:], evs[j:]
		}
		plan = append(plan, step{nil, evs, true})
		apply := func(tb *Table, st step) {
			if st.batch {
				tb.ApplyBatch(st.evs)
				return
			}
			for i := range st.evs {
				tb.Apply(&st.evs[i])
			}
		}

		whole := New()
		whole.BeginSync()
		for _, st := range plan {
			apply(whole, st)
		}
		wantRes := whole.EndSync(snap, 50, nil)

		parts := New()
		parts.BeginSync()
		for _, st := range plan {
			if len(st.part) > 0 && !parts.SyncPart(st.part, 50, len(snap)) {
				t.Fatalf("seed %d: SyncPart refused an empty table", seed)
			}
			apply(parts, st)
		}
		gotRes := parts.EndSync(rest, 50, nil)

		check(t, whole)
		check(t, parts)
		wantRes.Duration, gotRes.Duration = 0, 0
		if gotRes != wantRes {
			t.Errorf("seed %d: sync result %+v, want %+v", seed, gotRes, wantRes)
		}
		if g, w := entries(parts), entries(whole); !reflect.DeepEqual(g, w) {
			t.Errorf("seed %d: entries differ:\n got %+v\nwant %+v", seed, g, w)
		}
		gs, ws := parts.Stats(), whole.Stats()
		gs.LastSync.Duration, ws.LastSync.Duration = 0, 0
		if gs != ws {
			t.Errorf("seed %d: stats %+v, want %+v", seed, gs, ws)
		}
		if parts.Transitions() != whole.Transitions() || parts.Counts() != whole.Counts() ||
			!reflect.DeepEqual(parts.CountsByNetNS(), whole.CountsByNetNS()) {
			t.Errorf("seed %d: transitions or counts differ", seed)
		}
		// After the sync, events apply to both alike.
		after := []event.Event{tr(1, 900, E, CW), twStop(2, 901), tr(3, 902, CL, SS)}
		whole.ApplyBatch(after)
		parts.ApplyBatch(after)
		if g, w := entries(parts), entries(whole); !reflect.DeepEqual(g, w) {
			t.Errorf("seed %d: entries differ after the sync:\n got %+v\nwant %+v", seed, g, w)
		}
	}
}

func TestSyncPartRefusedAfterSeed(t *testing.T) {
	tb := New()
	tb.BeginSync()
	if !tb.SyncPart([]event.Socket{sock(1, E)}, 1, 0) {
		t.Fatal("refused on an empty table")
	}
	tb.EndSync(nil, 1, nil)
	tb.BeginSync()
	part := []event.Socket{sock(2, E)}
	if tb.SyncPart(part, 2, 0) {
		t.Fatal("merged ahead into a table that is not empty")
	}
	// The resync needs the whole walk: socket 1 is gone.
	if r := tb.EndSync(part, 2, nil); r.Removed != 1 || r.Added != 1 {
		t.Fatalf("resync %+v", r)
	}
	check(t, tb)
}

func entries(tb *Table) map[uint64]Entry {
	m := map[uint64]Entry{}
	tb.Each(0, func(e *Entry) bool { m[e.Key] = *e; return true })
	return m
}
