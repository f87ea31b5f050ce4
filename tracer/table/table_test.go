package table

import (
	"time"

	"math/rand/v2"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/tcpscope/tcpscope/tracer/event"
)

const (
	E   = event.Established
	SS  = event.SynSent
	SR  = event.SynRecv
	FW1 = event.FinWait1
	FW2 = event.FinWait2
	TW  = event.TimeWait
	CL  = event.Close
	CW  = event.CloseWait
	LA  = event.LastAck
	LI  = event.Listen
	CG  = event.Closing
	NSR = event.NewSynRecv
)

const reqAddr = 0xffff888000001000

type want struct {
	key   uint64
	gone  bool
	kind  event.SocketKind
	state event.State
	since uint64 // checked when nonzero
	local netip.AddrPort
	last  bool // LastOwner expected
}

type step struct {
	ev    event.Event
	batch []event.Event // instead of ev: ApplyBatch
	want  []want
}

type path [2]event.State

func TestPaths(t *testing.T) {
	cases := []struct {
		name       string
		steps      []step
		mismatches uint64
		unknown    uint64
		rearms     uint64
		trans      map[path]uint64
	}{
		{
			name: "active open, close first, TIME_WAIT",
			steps: []step{
				{ev: tr(1, 10, CL, SS, tup(netip.AddrPortFrom(cliAP.Addr(), 0), srvAP)),
					want: []want{{key: 1, state: SS, since: 10, local: netip.AddrPortFrom(cliAP.Addr(), 0)}}},
				{ev: tr(1, 20, SS, E), want: []want{{key: 1, state: E, since: 20, local: cliAP}}},
				{ev: tr(1, 30, E, FW1, owner(7, "curl"), inode(99)), want: []want{{key: 1, state: FW1}}},
				{ev: tr(1, 40, FW1, FW2), want: []want{{key: 1, state: FW2, since: 40}}},
				{ev: twStart(1, 50, TW), want: []want{{key: 1, kind: event.TimewaitSocket, state: TW, since: 50, last: true}}},
				{ev: tr(1, 51, FW2, CL), want: []want{{key: 1, kind: event.TimewaitSocket, state: TW, since: 50, last: true}}},
				{ev: twStop(1, 60), want: []want{{key: 1, gone: true}}},
			},
			trans: map[path]uint64{{CL, SS}: 1, {SS, E}: 1, {E, FW1}: 1, {FW1, FW2}: 1, {FW2, TW}: 1, {TW, CL}: 1},
		},
		{
			name: "passive open, close second",
			steps: []step{
				{ev: tr(2, 10, LI, SR, tup(srvAP, anyAP)), want: []want{{key: 2, state: SR, local: srvAP}}},
				{ev: tr(2, 11, SR, E, tup(srvAP, cliAP)), want: []want{{key: 2, state: E, local: srvAP}}},
				{ev: tr(2, 20, E, CW, tup(srvAP, cliAP), owner(8, "nginx"), inode(5)), want: []want{{key: 2, state: CW}}},
				{ev: tr(2, 30, CW, LA, tup(srvAP, cliAP)), want: []want{{key: 2, state: LA}}},
				{ev: tr(2, 40, LA, CL, tup(srvAP, cliAP)), want: []want{{key: 2, gone: true}}},
			},
			trans: map[path]uint64{{LI, SR}: 1, {SR, E}: 1, {E, CW}: 1, {CW, LA}: 1, {LA, CL}: 1},
		},
		{
			name: "simultaneous close",
			steps: []step{
				{ev: tr(3, 10, CL, SS)},
				{ev: tr(3, 11, SS, E)},
				{ev: tr(3, 20, E, FW1)},
				{ev: tr(3, 21, FW1, CG), want: []want{{key: 3, state: CG}}},
				{ev: twStart(3, 22, TW), want: []want{{key: 3, kind: event.TimewaitSocket, state: TW, since: 22}}},
				{ev: tr(3, 22, CG, CL), want: []want{{key: 3, kind: event.TimewaitSocket, state: TW}}},
				{ev: twStop(3, 90), want: []want{{key: 3, gone: true}}},
			},
			trans: map[path]uint64{{CL, SS}: 1, {SS, E}: 1, {E, FW1}: 1, {FW1, CG}: 1, {CG, TW}: 1, {TW, CL}: 1},
		},
		{
			name: "reset from ESTABLISHED",
			steps: []step{
				{ev: tr(4, 10, CL, SS)},
				{ev: tr(4, 11, SS, E), want: []want{{key: 4, state: E}}},
				{ev: tr(4, 12, E, CL), want: []want{{key: 4, gone: true}}},
			},
			trans: map[path]uint64{{CL, SS}: 1, {SS, E}: 1, {E, CL}: 1},
		},
		{
			name: "orphan FIN_WAIT2 timewait, re-armed as TIME_WAIT by separate calls",
			steps: []step{
				{ev: tr(5, 10, CL, SS)},
				{ev: tr(5, 11, SS, E, owner(9, "app"))},
				{ev: tr(5, 20, E, FW1)},
				{ev: tr(5, 21, FW1, FW2)},
				{ev: twStart(5, 22, FW2), want: []want{{key: 5, kind: event.TimewaitSocket, state: FW2, since: 21, last: true}}},
				{ev: tr(5, 22, FW2, CL), want: []want{{key: 5, kind: event.TimewaitSocket, state: FW2, last: true}}},
				{ev: twStart(5, 30, FW2), want: []want{{key: 5, kind: event.TimewaitSocket, state: FW2, since: 21, last: true}}},
				{ev: twStop(5, 40), want: []want{{key: 5, gone: true}}},
				{ev: twStart(5, 40, TW), want: []want{{key: 5, kind: event.TimewaitSocket, state: TW, since: 40, last: true}}},
				{ev: twStop(5, 100), want: []want{{key: 5, gone: true}}},
			},
			rearms: 1,
			trans:  map[path]uint64{{CL, SS}: 1, {SS, E}: 1, {E, FW1}: 1, {FW1, FW2}: 1, {FW2, TW}: 1, {TW, CL}: 1},
		},
		{
			name: "timewait re-arm inside a batch keeps since",
			steps: []step{
				{ev: twStart(6, 10, TW)},
				{batch: []event.Event{twStop(6, 20), twStart(6, 20, TW)},
					want: []want{{key: 6, kind: event.TimewaitSocket, state: TW, since: 10}}},
				{ev: twStop(6, 30)},
				{ev: twStart(6, 30, TW), want: []want{{key: 6, kind: event.TimewaitSocket, state: TW, since: 10}}},
			},
			rearms: 2,
			trans:  map[path]uint64{},
		},
		{
			name: "listener open and close",
			steps: []step{
				{ev: tr(7, 10, CL, LI, tup(srvAP, anyAP)), want: []want{{key: 7, state: LI, local: srvAP}}},
				{ev: tr(7, 20, LI, CL, tup(srvAP, anyAP)), want: []want{{key: 7, gone: true}}},
			},
			trans: map[path]uint64{{CL, LI}: 1, {LI, CL}: 1},
		},
		{
			name: "request socket start, re-arm, stop",
			steps: []step{
				{ev: rqStart(reqAddr, 10, tup(srvAP, cliAP)), want: []want{{key: reqAddr, kind: event.RequestSocket, state: SR, since: 10}}},
				{ev: rqStart(reqAddr, 15, tup(srvAP, cliAP)), want: []want{{key: reqAddr, kind: event.RequestSocket, state: SR, since: 10}}},
				{batch: []event.Event{rqStop(reqAddr, 20, tup(srvAP, cliAP)), rqStart(reqAddr, 20, tup(srvAP, cliAP))},
					want: []want{{key: reqAddr, kind: event.RequestSocket, state: SR, since: 10}}},
				{ev: rqStop(reqAddr, 30, tup(srvAP, cliAP)), want: []want{{key: reqAddr, gone: true}}},
			},
			rearms: 1,
			trans:  map[path]uint64{{LI, NSR}: 1, {NSR, CL}: 1},
		},
		{
			name: "request socket address reused by another request",
			steps: []step{
				{ev: rqStart(reqAddr, 10, tup(srvAP, cliAP))},
				{ev: rqStop(reqAddr, 20, tup(srvAP, cliAP)), want: []want{{key: reqAddr, gone: true}}},
				{ev: rqStart(reqAddr, 21, tup(srvAP, netip.MustParseAddrPort("10.0.0.9:5555"))),
					want: []want{{key: reqAddr, kind: event.RequestSocket, state: SR, since: 21}}},
			},
			trans: map[path]uint64{{LI, NSR}: 2, {NSR, CL}: 1},
		},
		{
			name: "4-tuple reused after TIME_WAIT by a new socket",
			steps: []step{
				{ev: twStart(10, 10, TW)},
				{ev: twStop(10, 20)},
				{ev: tr(11, 20, CL, SS), want: []want{{key: 10, gone: true}, {key: 11, state: SS}}},
				{ev: tr(11, 21, SS, E), want: []want{{key: 11, state: E, local: cliAP}}},
			},
			trans: map[path]uint64{{TW, CL}: 1, {CL, SS}: 1, {SS, E}: 1},
		},
		{
			name: "mismatches and unknown sockets are counted and applied",
			steps: []step{
				{ev: tr(12, 10, CL, SS)},
				{ev: tr(12, 20, E, FW1), want: []want{{key: 12, state: FW1}}},  // missed SS->E
				{ev: tr(13, 20, E, CW), want: []want{{key: 13, state: CW}}},    // unknown
				{ev: tr(14, 20, SS, CL), want: []want{{key: 14, gone: true}}},  // unknown, dead
				{ev: tr(15, 20, LI, SR), want: []want{{key: 15, state: SR}}},   // child birth: fine
				{ev: twStop(16, 20), want: []want{{key: 16, gone: true}}},      // nothing to stop
				{ev: tr(13, 30, FW1, CL), want: []want{{key: 13, gone: true}}}, // missed
			},
			mismatches: 2,
			unknown:    2,
			trans:      map[path]uint64{{CL, SS}: 1, {E, FW1}: 1, {E, CW}: 1, {SS, CL}: 1, {LI, SR}: 1, {FW1, CL}: 1},
		},
		{
			name: "stops of another kind are ignored",
			steps: []step{
				{ev: tr(18, 10, CL, LI)},
				{ev: twStop(18, 11), want: []want{{key: 18, state: LI}}},
				{ev: rqStop(0, 11, func(e *event.Event) { e.Cookie = 18 }), want: []want{{key: 18, state: LI}}},
			},
			trans: map[path]uint64{{CL, LI}: 1},
		},
		{
			name: "IPv6",
			steps: []step{
				{ev: tr(17, 10, CL, SS, tup(cli6AP, srv6AP)), want: []want{{key: 17, state: SS, local: cli6AP}}},
			},
			trans: map[path]uint64{{CL, SS}: 1},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb := New()
			for i, s := range c.steps {
				if s.batch != nil {
					tb.ApplyBatch(s.batch)
				} else {
					tb.Apply(&s.ev)
				}
				check(t, tb)
				for _, w := range s.want {
					e, ok := tb.Lookup(w.key)
					if w.gone {
						if ok {
							t.Fatalf("step %d: key %d present: %+v", i, w.key, e)
						}
						continue
					}
					if !ok {
						t.Fatalf("step %d: key %d missing", i, w.key)
					}
					if e.Kind != w.kind || e.State != w.state {
						t.Errorf("step %d: key %d is %v %v, want %v %v", i, w.key, e.Kind, e.State, w.kind, w.state)
					}
					if w.since != 0 && e.Since != w.since {
						t.Errorf("step %d: key %d since %d, want %d", i, w.key, e.Since, w.since)
					}
					if w.local.IsValid() && e.Local != w.local {
						t.Errorf("step %d: key %d local %v, want %v", i, w.key, e.Local, w.local)
					}
					if e.LastOwner != w.last {
						t.Errorf("step %d: key %d LastOwner %v, want %v", i, w.key, e.LastOwner, w.last)
					}
				}
			}
			st := tb.Stats()
			if st.Mismatches != c.mismatches || st.Unknown != c.unknown || st.Rearms != c.rearms {
				t.Errorf("mismatches %d unknown %d rearms %d, want %d %d %d", st.Mismatches, st.Unknown, st.Rearms, c.mismatches, c.unknown, c.rearms)
			}
			m := tb.Transitions()
			for from := range m {
				for to, n := range m[from] {
					if w := c.trans[path{event.State(from), event.State(to)}]; n != w {
						t.Errorf("transitions %v->%v: %d, want %d", event.State(from), event.State(to), n, w)
					}
				}
			}
		})
	}
}

func TestTupleAndOwner(t *testing.T) {
	tb := New()
	zeroPort := netip.AddrPortFrom(cliAP.Addr(), 0)
	for _, e := range []event.Event{
		tr(1, 1, CL, SS, tup(cliAP, srvAP), owner(7, "curl"), inode(42)),
		tr(1, 2, SS, E, tup(zeroPort, srvAP)), // port 0 does not erase a known one
	} {
		tb.Apply(&e)
	}
	e, _ := tb.Lookup(1)
	if e.Local != cliAP || e.Remote != srvAP || e.Family != event.IPv4 {
		t.Fatalf("tuple %v %v %v", e.Local, e.Remote, e.Family)
	}
	if !e.OwnerKnown || e.Owner.PID != 7 || string(e.Owner.CommBytes()) != "curl" || e.Inode != 0 || e.UID != 1000 || e.LastOwner {
		t.Fatalf("owner %+v", e)
	}
	// Passive child: listener's tuple first, corrected later; owner from
	// the listener, then from accept.
	c := tr(2, 1, LI, SR, tup(srvAP, anyAP), owner(8, "nginx"))
	c.Source = event.OwnerListener
	tb.Apply(&c)
	c = tr(2, 2, SR, E, tup(srvAP, cliAP), owner(9, "worker"), inode(77))
	c.Source = event.OwnerAccept
	tb.Apply(&c)
	e, _ = tb.Lookup(2)
	if e.Remote != cliAP || e.Owner.PID != 9 || e.Source != event.OwnerAccept || e.Inode != 77 || e.FD != -1 {
		t.Fatalf("child %+v", e)
	}
	check(t, tb)
	tb.mu.RLock()
	owners := len(tb.ownerIdx)
	tb.mu.RUnlock()
	if owners != 2 { // curl and worker; nginx released
		t.Fatalf("%d owners interned, want 2", owners)
	}
	// Timewait keeps the last owner but not uid/inode.
	for _, e := range []event.Event{tr(2, 3, E, FW1, tup(srvAP, cliAP)), tr(2, 4, FW1, FW2, tup(srvAP, cliAP)),
		twStart(2, 5, TW, tup(srvAP, cliAP))} {
		tb.Apply(&e)
	}
	e, _ = tb.Lookup(2)
	if !e.LastOwner || e.Owner.PID != 9 || e.Inode != 0 || e.UID != 0 || e.Expires != 5+60e9 {
		t.Fatalf("timewait %+v", e)
	}
}

func TestEntrySize(t *testing.T) {
	if s := unsafe.Sizeof(entry{}); s > 104 {
		t.Fatalf("entry is %d bytes, want <= 104", s)
	}
}

func TestEach(t *testing.T) {
	tb := New()
	states := []event.State{E, E, CW, LI, E, CW, FW1}
	for i, st := range states {
		e := tr(uint64(i+1), 1, CL, st)
		tb.Apply(&e)
	}
	n := map[event.State]int{}
	tb.Each(event.StateMask(0).With(CW).With(LI), func(e *Entry) bool { n[e.State]++; return true })
	if len(n) != 2 || n[CW] != 2 || n[LI] != 1 {
		t.Fatalf("Each(CW|LI) = %v", n)
	}
	all := 0
	tb.Each(0, func(e *Entry) bool { all++; return true })
	if all != len(states) {
		t.Fatalf("Each(all) = %d", all)
	}
	stop := 0
	tb.Each(0, func(e *Entry) bool { stop++; return stop < 2 })
	if stop != 2 {
		t.Fatalf("Each did not stop: %d", stop)
	}
	if c := tb.Counts(); c[E] != 3 || c[CW] != 2 || c.Total() != len(states) || tb.Len() != len(states) {
		t.Fatalf("Counts %v", c)
	}
}

func TestCountsByNetNS(t *testing.T) {
	tb := New()
	for _, e := range []event.Event{
		tr(1, 1, CL, LI, ns(100)), tr(2, 1, CL, LI, ns(200)), tr(3, 1, CL, SS, ns(200)),
		tr(3, 2, SS, E, ns(200)),
	} {
		tb.Apply(&e)
	}
	m := tb.CountsByNetNS()
	if len(m) != 2 || m[100][LI] != 1 || m[200][LI] != 1 || m[200][E] != 1 || m[200].Total() != 2 {
		t.Fatalf("by netns %v", m)
	}
	e := tr(1, 3, LI, CL, ns(100))
	tb.Apply(&e)
	m = tb.CountsByNetNS()
	if _, ok := m[100]; ok || len(m) != 1 {
		t.Fatalf("empty namespace kept: %v", m)
	}
	// A socket moving namespace (event disagreeing with the table) moves
	// its count.
	e = tr(3, 4, E, CW, ns(300))
	tb.Apply(&e)
	m = tb.CountsByNetNS()
	if m[200][E] != 0 || m[300][CW] != 1 {
		t.Fatalf("moved %v", m)
	}
	check(t, tb)
}

func TestOnChangeAndNotify(t *testing.T) {
	tb := New()
	type call struct{ old, new event.State }
	var calls []call
	tb.AddOnChange(func(o, n *Entry, ev *event.Event) {
		var c call
		if o != nil {
			c.old = o.State
		}
		if n != nil {
			c.new = n.State
		}
		calls = append(calls, c)
	})
	// A second watcher sees the same changes, after the first.
	var second int
	tb.AddOnChange(func(o, n *Entry, ev *event.Event) {
		if second++; len(calls) != second {
			t.Errorf("second hook call %d after %d calls of the first", second, len(calls))
		}
	})
	v0 := tb.Version()
	for _, e := range []event.Event{tr(1, 1, CL, SS), tr(1, 2, SS, E), tr(1, 3, E, FW1), tr(1, 4, FW1, FW2),
		twStart(1, 5, TW), tr(1, 5, FW2, CL), twStop(1, 9)} {
		tb.Apply(&e)
	}
	want := []call{{0, SS}, {SS, E}, {E, FW1}, {FW1, FW2}, {FW2, TW}, {TW, 0}}
	if second != len(want) {
		t.Errorf("second hook called %d times, want %d", second, len(want))
	}
	if len(calls) != len(want) {
		t.Fatalf("calls %v, want %v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Fatalf("calls %v, want %v", calls, want)
		}
	}
	if v := tb.Version(); v != v0+6 { // the absorbed CLOSE is no change
		t.Fatalf("version %d -> %d", v0, v)
	}
	select {
	case <-tb.Changed():
	default:
		t.Fatal("no change notification")
	}
	select {
	case <-tb.Changed():
		t.Fatal("notifications not coalesced")
	default:
	}
}

// TestRandom applies random event sequences (and resyncs) over a small key
// space and checks the invariants after every step.
func TestRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tb := New()
	var pending []event.Event
	mono := uint64(1)
	for i := 0; i < 20000; i++ {
		mono += uint64(r.IntN(1000))
		key := uint64(r.IntN(64) + 1)
		var e event.Event
		opts := []evOpt{ns(uint32(r.IntN(3) + 1))}
		if r.IntN(2) == 0 {
			opts = append(opts, owner(uint32(r.IntN(5)+1), "p"))
		}
		switch r.IntN(6) {
		case 0, 1, 2:
			e = tr(key, mono, event.State(r.IntN(12)+1), event.State(r.IntN(11)+1), opts...)
		case 3:
			e = twStart(key, mono, []event.State{TW, FW2}[r.IntN(2)], opts...)
		case 4:
			e = twStop(key, mono, opts...)
		case 5:
			if r.IntN(2) == 0 {
				e = rqStart(0xffff000000000000|key, mono, opts...)
			} else {
				e = rqStop(0xffff000000000000|key, mono, opts...)
			}
		}
		switch {
		case r.IntN(4) == 0:
			pending = append(pending, e)
			if len(pending) > 5 {
				tb.ApplyBatch(pending)
				pending = pending[:0]
			}
		default:
			tb.Apply(&e)
		}
		if i%500 == 0 {
			tb.BeginSync()
			e := tr(key, mono, E, FW1)
			tb.Apply(&e)
			var snap []event.Socket
			for k := 0; k < 40; k++ {
				snap = append(snap, event.Socket{Cookie: uint64(r.IntN(80) + 1), Kind: event.SocketKind(r.IntN(3)),
					Family: event.IPv4, State: event.State(r.IntN(12) + 1), Local: cliAP, Remote: srvAP,
					NetNS: uint32(r.IntN(3) + 1), OwnerKnown: r.IntN(2) == 0, Owner: task(uint32(r.IntN(5)), "s")})
			}
			tb.EndSync(snap, mono, map[uint32]bool{1: true, 2: true})
		}
		if err := tb.verify(); err != nil {
			t.Fatalf("step %d (%v %v->%v key %d): %v", i, e.Kind, e.Old, e.New, key, err)
		}
	}
	if tb.Len() == 0 {
		t.Fatal("table empty: the test exercises nothing")
	}
}

// TestConcurrentReaders runs readers against the applying goroutine; run
// with -race.
func TestConcurrentReaders(t *testing.T) {
	tb := New()
	done := make(chan struct{})
	readers := make(chan struct{})
	go func() {
		defer close(readers)
		for {
			select {
			case <-done:
				return
			case <-tb.Changed():
			}
			c := tb.Counts()
			n := 0
			tb.Each(0, func(*Entry) bool { n++; return true })
			_ = tb.CountsByNetNS()
			_, _ = tb.Lookup(1)
			_ = tb.Transitions()
			if c.Total() < 0 || n < 0 || tb.Version() == 0 {
				t.Error("impossible")
			}
		}
	}()
	for i := uint64(0); i < 2000; i++ {
		c := i%50 + 1
		evs := []event.Event{tr(c, i, CL, SS), tr(c, i, SS, E), tr(c, i, E, CL)}
		tb.ApplyBatch(evs[:1+i%3])
		if i%500 == 0 {
			tb.BeginSync()
			tb.EndSync([]event.Socket{sock(c, E)}, i, nil)
		}
	}
	close(done)
	<-readers
	check(t, tb)
}

// DropOverdue: a timewait or request entry whose timer deadline passed
// (plus grace) without a stop leaves the table, counted; one still within
// its deadline, and full sockets, stay.
func TestDropOverdue(t *testing.T) {
	tb := New()
	const sec = uint64(time.Second)
	for _, e := range []event.Event{
		tr(1, 1, CL, SS), tr(1, 2, SS, E), // full socket: never overdue
		twStart(2, 10, TW),     // timer fires at 10 + 60 s
		twStart(3, 20*sec, TW), // fires at 80 s
		rqStart(0xabc, 10),     // fires at 10 + 1 s
	} {
		tb.Apply(&e)
	}
	if n := tb.DropOverdue(30*sec, sec/4); n != 1 {
		t.Fatalf("at 30 s dropped %d, want the request socket only", n)
	}
	if n := tb.DropOverdue(60*sec, sec/4); n != 0 {
		t.Fatalf("at 60 s (deadline 60 s + 10 ns, grace 250 ms) dropped %d, want 0", n)
	}
	if n := tb.DropOverdue(61*sec, sec/4); n != 1 {
		t.Fatalf("at 61 s dropped %d, want 1", n)
	}
	c := tb.Counts()
	if c[TW] != 1 || c[E] != 1 || tb.Len() != 2 {
		t.Fatalf("left %v (len %d), want one TIME_WAIT and the full socket", c, tb.Len())
	}
	if st := tb.Stats(); st.Overdue != 2 {
		t.Fatalf("Overdue %d, want 2", st.Overdue)
	}
	if m := tb.Transitions(); m[TW][CL] != 1 || m[event.NewSynRecv][CL] != 1 {
		t.Fatalf("matrix TW->CLOSE %d, NEW_SYN_RECV->CLOSE %d, want 1 and 1", m[TW][CL], m[event.NewSynRecv][CL])
	}
	check(t, tb)
}

// DropOverdue keeps deadlines in a heap and skips the ones that no longer
// apply: a re-armed timer moves the deadline, a stopped entry has none, and
// a seeded entry's comes from the walk.
func TestDropOverdueDeadlines(t *testing.T) {
	const sec = uint64(time.Second)
	tw := event.Socket{Cookie: 9, SockAddr: 0x9000, Kind: event.TimewaitSocket, Family: event.IPv4, State: TW,
		Local: cliAP, Remote: srvAP, NetNS: 1, Timer: event.TimerTimewait, TimerLeft: time.Second}
	for _, c := range []struct {
		name    string
		evs     []event.Event
		seed    []event.Socket // at 0 s
		at      []uint64       // DropOverdue times (grace 5 s)
		dropped []int
	}{
		{"re-armed: the later deadline counts",
			[]event.Event{twStart(5, 0, TW), twStart(5, 50*sec, TW)}, nil,
			[]uint64{70 * sec, 116 * sec}, []int{0, 1}},
		{"stopped: nothing to drop, twice",
			[]event.Event{twStart(6, 0, TW), twStop(6, sec)}, nil,
			[]uint64{70 * sec, 200 * sec}, []int{0, 0}},
		{"seeded: the walk's timer",
			nil, []event.Socket{tw},
			[]uint64{5 * sec, 7 * sec, 8 * sec}, []int{0, 1, 0}},
		{"stopped and started again: the new deadline",
			[]event.Event{twStart(7, 0, TW), twStop(7, sec), twStart(7, 30*sec, TW)}, nil,
			[]uint64{70 * sec, 96 * sec}, []int{0, 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tb := New()
			if c.seed != nil {
				tb.BeginSync()
				tb.EndSync(c.seed, 0, map[uint32]bool{1: true})
			}
			for i := range c.evs {
				tb.Apply(&c.evs[i])
			}
			for i, at := range c.at {
				if n := tb.DropOverdue(at, 5*sec); n != c.dropped[i] {
					t.Errorf("at %d s: dropped %d, want %d", at/sec, n, c.dropped[i])
				}
			}
			if tb.Len() != 0 {
				t.Errorf("%d entries left, want none", tb.Len())
			}
			check(t, tb)
		})
	}
}

// Reports of the same timewait timer (every packet that reaches the socket
// makes one) and re-arms to later deadlines do not grow DropOverdue's heap:
// one deadline per entry, moved when it comes up.
func TestDeadlinesBounded(t *testing.T) {
	const sec = uint64(time.Second)
	tb := New()
	for i := uint64(0); i < 10000; i++ {
		e := twStart(42, i*sec/1000, TW) // the same socket, reported every ms for 10 s
		tb.Apply(&e)
	}
	if n := len(tb.deadlines); n != 1 {
		t.Fatalf("%d deadlines queued for one entry, want 1", n)
	}
	// Its last report said 60 s after 9.999 s: not overdue at 70 s, at 75 s.
	if n := tb.DropOverdue(70*sec, 5*sec); n != 0 {
		t.Fatalf("at 70 s dropped %d, want 0", n)
	}
	if n := len(tb.deadlines); n != 1 {
		t.Fatalf("%d deadlines after the first came up, want 1 (moved)", n)
	}
	if n := tb.DropOverdue(75*sec, 5*sec); n != 1 {
		t.Fatalf("at 75 s dropped %d, want 1", n)
	}
	check(t, tb)
}

// A resync reads each timer against the walk's start, a little earlier than
// the events did: repeated resyncs must not queue a deadline each.
func TestDeadlinesResync(t *testing.T) {
	const sec = uint64(time.Second)
	tb := New()
	e := twStart(9, 0, TW, addr(0x9000))
	tb.Apply(&e)
	for i := uint64(1); i <= 20; i++ {
		s := event.Socket{Cookie: 9, SockAddr: 0x9000, Kind: event.TimewaitSocket, Family: event.IPv4, State: TW,
			Local: cliAP, Remote: srvAP, NetNS: 1, Timer: event.TimerTimewait,
			TimerLeft: time.Duration(60*sec - i*sec/2 - sec/10)} // 0.1 s early at each
		tb.BeginSync()
		tb.EndSync([]event.Socket{s}, i*sec/2, map[uint32]bool{1: true})
	}
	if tb.Len() != 1 {
		t.Fatalf("%d entries, want the timewait socket", tb.Len())
	}
	if n := len(tb.deadlines); n != 1 {
		t.Fatalf("%d deadlines queued after 20 resyncs, want 1", n)
	}
	if n := tb.DropOverdue(66*sec, 5*sec); n != 1 {
		t.Fatalf("at 66 s dropped %d, want 1 (deadline 59.9 s + 5 s grace)", n)
	}
	check(t, tb)
}

// DropOverdue takes a wave of deadlines in chunks, each under the lock on
// its own, and still drops exactly the overdue entries: here 1500 whose
// stop came (their deadlines are stale) and 500 still in the table past
// their deadline, several chunks' worth.
func TestDropOverdueInChunks(t *testing.T) {
	const sec = uint64(time.Second)
	tb := New()
	const n = 2000
	for i := uint64(1); i <= n; i++ {
		e := twStart(i, i*sec/1000, TW, tup(cliAP, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 80)))
		tb.Apply(&e)
	}
	for i := uint64(1); i <= 1500; i++ {
		e := twStop(i, 3*sec)
		tb.Apply(&e)
	}
	if n > 2*overdueChunk && len(tb.deadlines) != n {
		t.Fatalf("%d deadlines queued, want %d", len(tb.deadlines), n)
	}
	// One hold of the lock takes one chunk, no more.
	first, more := tb.dropOverdueChunk(70*sec, 5*sec)
	if !more || len(tb.deadlines) != n-overdueChunk {
		t.Fatalf("first chunk: more=%v, %d deadlines left; want more, %d", more, len(tb.deadlines), n-overdueChunk)
	}
	if got := first + tb.DropOverdue(70*sec, 5*sec); got != 500 {
		t.Errorf("dropped %d, want 500", got)
	}
	if c := tb.Counts(); c.Total() != 0 {
		t.Errorf("left %v, want nothing", c)
	}
	if len(tb.deadlines) != 0 {
		t.Errorf("%d deadlines left", len(tb.deadlines))
	}
	if st := tb.Stats(); st.Overdue != 500 {
		t.Errorf("Overdue %d, want 500", st.Overdue)
	}
	check(t, tb)
}
