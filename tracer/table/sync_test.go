package table

import (
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
)

func sock(cookie uint64, st event.State, opts ...func(*event.Socket)) event.Socket {
	s := event.Socket{Cookie: cookie, Kind: event.FullSocket, Family: event.IPv4, State: st,
		Local: cliAP, Remote: srvAP, NetNS: 1, UID: 1000, FD: -1}
	for _, o := range opts {
		o(&s)
	}
	return s
}

func TestSync(t *testing.T) {
	type present struct {
		key   uint64
		state event.State
	}
	cases := []struct {
		name    string
		before  []event.Event // applied before BeginSync
		during  []event.Event // applied between BeginSync and EndSync
		snap    []event.Socket
		walked  map[uint32]bool
		want    []present
		gone    []uint64
		result  SyncResult
		benign  uint64
		mismat  uint64
		after   []event.Event // applied after EndSync
		checkFn func(*testing.T, *Table)
	}{
		{
			name:   "seed into empty table",
			snap:   []event.Socket{sock(1, E), sock(2, LI), sock(3, CL)},
			want:   []present{{1, E}, {2, LI}},
			gone:   []uint64{3},
			result: SyncResult{Added: 2, Ignored: 1},
		},
		{
			name:   "event during the walk wins",
			before: []event.Event{tr(1, 1, CL, SS), tr(1, 2, SS, E)},
			during: []event.Event{tr(1, 5, E, FW1)},
			snap:   []event.Socket{sock(1, E)},
			want:   []present{{1, FW1}},
			result: SyncResult{Skipped: 1},
		},
		{
			name:   "socket closed during the walk is not resurrected",
			before: []event.Event{tr(1, 1, CL, SS), tr(1, 2, SS, E)},
			during: []event.Event{tr(1, 5, E, CL), tr(2, 6, CL, SS), tr(2, 7, SS, CL)},
			snap:   []event.Socket{sock(1, E), sock(2, SS)},
			gone:   []uint64{1, 2},
			result: SyncResult{Skipped: 2},
		},
		{
			name:   "timewait stopped during the walk is not resurrected",
			before: []event.Event{twStart(1, 1, TW)},
			during: []event.Event{twStop(1, 5)},
			snap:   []event.Socket{sock(1, TW, func(s *event.Socket) { s.Kind = event.TimewaitSocket })},
			gone:   []uint64{1},
			result: SyncResult{Skipped: 1},
		},
		{
			name:   "stale entries removed, only in walked namespaces",
			before: []event.Event{tr(1, 1, CL, LI), tr(2, 1, CL, LI, ns(2)), tr(3, 1, CL, LI, ns(3))},
			snap:   []event.Socket{sock(4, E, func(s *event.Socket) { s.NetNS = 2 })},
			walked: map[uint32]bool{1: true, 2: true},
			want:   []present{{3, LI}, {4, E}},
			gone:   []uint64{1, 2},
			result: SyncResult{Added: 1, Removed: 2},
		},
		{
			name:   "socket created during walk and missed by it is kept",
			during: []event.Event{tr(9, 5, CL, SS)},
			snap:   nil,
			want:   []present{{9, SS}},
		},
		{
			name:   "snapshot corrects untouched entries",
			before: []event.Event{tr(1, 1, CL, SS), tr(1, 2, SS, E), tr(2, 1, CL, LI)},
			snap:   []event.Socket{sock(1, CW), sock(2, LI)},
			want:   []present{{1, CW}, {2, LI}},
			result: SyncResult{Changed: 1, Unchanged: 1},
		},
		{
			name:   "late event already seen by the walk is benign",
			snap:   []event.Socket{sock(1, FW1)},
			after:  []event.Event{tr(1, 50, E, FW1), tr(1, 60, FW1, FW2)},
			want:   []present{{1, FW2}},
			result: SyncResult{Added: 1},
			benign: 1,
		},
		{
			name:   "late event contradicting the walk is a mismatch",
			snap:   []event.Socket{sock(1, CW)},
			after:  []event.Event{tr(1, 50, E, FW1)},
			want:   []present{{1, FW1}},
			result: SyncResult{Added: 1},
			mismat: 1,
		},
		{
			name: "seed times",
			before: []event.Event{tr(1, 10, CL, SS), tr(1, 11, SS, E),
				tr(2, 10, CL, SS), tr(2, 11, SS, E), tr(3, 10, CL, LI)},
			snap: []event.Socket{
				sock(1, E), // same state: keeps 11
				sock(2, CW),
				sock(3, LI, func(s *event.Socket) { s.Since = 7 }),
				sock(4, E),
				sock(5, TW, func(s *event.Socket) {
					s.Kind, s.Timer, s.TimerLeft, s.UID = event.TimewaitSocket, event.TimerTimewait, 30*time.Second, 0
				}),
			},
			want:   []present{{1, E}, {2, CW}, {3, LI}, {4, E}, {5, TW}},
			result: SyncResult{Added: 2, Changed: 1, Unchanged: 2},
			checkFn: func(t *testing.T, tb *Table) {
				for _, c := range []struct{ key, since, bound uint64 }{{1, 11, 0}, {2, 0, 1000}, {3, 7, 0}, {4, 0, 1000}} {
					e, _ := tb.Lookup(c.key)
					if e.Since != c.since || e.SinceBound != c.bound {
						t.Errorf("key %d: since %d bound %d, want %d %d", c.key, e.Since, e.SinceBound, c.since, c.bound)
					}
				}
				if e, _ := tb.Lookup(4); !e.SeedOnly || e.SeenAt != 1000 {
					t.Errorf("seeded socket %+v", e)
				}
				if e, _ := tb.Lookup(1); e.SeedOnly || e.SeenAt != 10 {
					t.Errorf("traced socket %+v", e)
				}
				if e, _ := tb.Lookup(5); e.Kind != event.TimewaitSocket || e.Expires != 1000+30e9 {
					t.Errorf("timewait %+v", e)
				}
			},
		},
		{
			name:   "owner from snapshot, kept when the snapshot does not know it",
			before: []event.Event{tr(1, 1, CL, LI, owner(5, "sshd")), tr(2, 1, CL, LI, owner(5, "sshd"))},
			snap: []event.Socket{
				sock(1, LI),
				sock(2, LI, func(s *event.Socket) {
					s.Owner, s.OwnerKnown, s.FD, s.Source = task(6, "nginx"), true, 3, event.OwnerIter
				}),
			},
			result: SyncResult{Unchanged: 1, Changed: 1},
			checkFn: func(t *testing.T, tb *Table) {
				if e, _ := tb.Lookup(1); e.Owner.PID != 5 {
					t.Errorf("owner lost: %+v", e)
				}
				if e, _ := tb.Lookup(2); e.Owner.PID != 6 || e.FD != 3 || e.Source != event.OwnerIter {
					t.Errorf("owner not taken: %+v", e)
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb := New()
			tb.ApplyBatch(c.before)
			tb.BeginSync()
			tb.ApplyBatch(c.during)
			res := tb.EndSync(c.snap, 1000, c.walked)
			res.Duration = 0
			if res != c.result {
				t.Errorf("result %+v, want %+v", res, c.result)
			}
			tb.ApplyBatch(c.after)
			check(t, tb)
			for _, p := range c.want {
				if e, ok := tb.Lookup(p.key); !ok || e.State != p.state {
					t.Errorf("key %d: %v %v, want %v", p.key, ok, e.State, p.state)
				}
			}
			for _, k := range c.gone {
				if e, ok := tb.Lookup(k); ok {
					t.Errorf("key %d present: %+v", k, e)
				}
			}
			st := tb.Stats()
			if st.Benign != c.benign || st.Mismatches != c.mismat || st.Resyncs != 1 {
				t.Errorf("benign %d mismatches %d resyncs %d, want %d %d 1", st.Benign, st.Mismatches, st.Resyncs, c.benign, c.mismat)
			}
			if c.checkFn != nil {
				c.checkFn(t, tb)
			}
		})
	}
}

// A second sync after the first must not see the first one's touched keys.
func TestSyncTwice(t *testing.T) {
	tb := New()
	tb.BeginSync()
	e := tr(1, 1, CL, LI)
	tb.Apply(&e)
	tb.EndSync(nil, 10, nil)
	tb.BeginSync()
	if r := tb.EndSync(nil, 20, nil); r.Removed != 1 || tb.Len() != 0 {
		t.Fatalf("second sync %+v, len %d", r, tb.Len())
	}
}
