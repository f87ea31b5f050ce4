package diag

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// ---- synthetic events ------------------------------------------------------

const ms = uint64(time.Millisecond)

func task(pid uint32, comm string) event.Task {
	t := event.Task{PID: pid, TID: pid}
	copy(t.Comm[:], comm)
	return t
}

type sockSpec struct {
	cookie        uint64
	netns         uint32
	local, remote string
}

func (s sockSpec) ev(kind event.Kind, mono uint64, old, new event.State) event.Event {
	l, r := netip.MustParseAddrPort(s.local), netip.MustParseAddrPort(s.remote)
	fam := event.IPv4
	if l.Addr().Is6() {
		fam = event.IPv6
	}
	ns := s.netns
	if ns == 0 {
		ns = 1
	}
	return event.Event{Kind: kind, Cookie: s.cookie, Mono: mono, Old: old, New: new, NetNS: ns, Family: fam, Local: l, Remote: r}
}

func owned(e event.Event, o event.Task, src event.OwnerSource, inode uint64) event.Event {
	e.Owner, e.Flags, e.Source, e.Inode = o, e.Flags|event.OwnerKnown, src, inode
	return e
}

// server drives an accepted connection of listener owner lo, accepted by
// acc (zero: never accepted), to CLOSE_WAIT at cwAt.
func server(tab *table.Table, s sockSpec, lo, acc event.Task, start, cwAt uint64) {
	tab.Apply(ptr(owned(s.ev(event.Transition, start, event.Listen, event.SynRecv), lo, event.OwnerListener, 0)))
	var inode uint64
	src, o := event.OwnerListener, lo
	if acc.PID != 0 {
		inode, src, o = 1000+s.cookie, event.OwnerAccept, acc
	}
	tab.Apply(ptr(owned(s.ev(event.Transition, start+1, event.SynRecv, event.Established), o, src, inode)))
	tab.Apply(ptr(owned(s.ev(event.Transition, cwAt, event.Established, event.CloseWait), o, src, inode)))
}

func ptr(e event.Event) *event.Event { return &e }

func listen(tab *table.Table, cookie uint64, netns uint32, addr string, o event.Task, mono uint64) {
	s := sockSpec{cookie: cookie, netns: netns, local: addr, remote: "0.0.0.0:0"}
	tab.Apply(ptr(owned(s.ev(event.Transition, mono, event.Close, event.Listen), o, event.OwnerSyscall, 500+cookie)))
}

// ---- CLOSE_WAIT --------------------------------------------------------------

func TestCloseWaitGroupsByHolder(t *testing.T) {
	tab := table.New()
	srv, cli, kid := task(100, "srv"), task(200, "cli"), task(300, "worker\x1b[2J")
	listen(tab, 1, 1, "10.0.0.2:80", srv, 1*ms)
	peer := func(i int) string { return fmt.Sprintf("10.0.0.%d:%d", 9+i%2, 40000+i) }
	// Four accepted connections left in CLOSE_WAIT at 10, 20, 30 and 995 ms.
	for i, at := range []uint64{10, 20, 30, 995} {
		server(tab, sockSpec{cookie: uint64(10 + i), local: "10.0.0.2:80", remote: peer(i)}, srv, srv, 5*ms, at*ms)
	}
	// The client end of one of them sits in FIN_WAIT2: never blamed.
	c := sockSpec{cookie: 50, local: peer(0), remote: "10.0.0.2:80"}
	tab.Apply(ptr(owned(c.ev(event.Transition, 2*ms, event.Close, event.SynSent), cli, event.OwnerSyscall, 900)))
	tab.Apply(ptr(owned(c.ev(event.Transition, 3*ms, event.SynSent, event.Established), cli, event.OwnerSyscall, 900)))
	tab.Apply(ptr(owned(c.ev(event.Transition, 9*ms, event.Established, event.FinWait1), cli, event.OwnerSyscall, 900)))
	tab.Apply(ptr(owned(c.ev(event.Transition, 10*ms, event.FinWait1, event.FinWait2), cli, event.OwnerSyscall, 900)))
	// Never accepted: in the listener's queue, no file.
	server(tab, sockSpec{cookie: 20, local: "10.0.0.2:80", remote: "10.0.0.7:41000"}, srv, event.Task{}, 5*ms, 40*ms)
	// Another namespace.
	server(tab, sockSpec{cookie: 30, netns: 2, local: "10.0.0.2:80", remote: "10.0.0.8:41000"}, srv, srv, 5*ms, 40*ms)

	now := 1000 * ms
	// The walk: 10 and 11 held by srv (11 twice: dup), 12 also by the
	// forked worker, 13 not seen (entered CLOSE_WAIT after the walk).
	holders := Holders{
		10: {{PID: 100, Comm: "srv", FD: 4}},
		11: {{PID: 100, Comm: "srv", FD: 5}, {PID: 100, Comm: "srv", FD: 9}, {PID: 100, Comm: "srv", FD: 5}},
		12: {{PID: 300, Comm: commString(&kid), FD: 3}, {PID: 100, Comm: "srv", FD: 6}},
	}
	for _, tc := range []struct {
		name    string
		opts    CloseWaitOptions
		total   int
		younger int
		procs   map[uint32]int // pid -> count
		shared  int
		orphans int
	}{
		{"walked", CloseWaitOptions{Now: now, NetNS: 1, Holders: holders}, 5, 0, map[uint32]int{100: 4, 300: 1}, 1, 1},
		{"table owners only", CloseWaitOptions{Now: now, NetNS: 1}, 5, 0, map[uint32]int{100: 4}, 0, 1},
		{"min age", CloseWaitOptions{Now: now, NetNS: 1, Holders: holders, MinAge: 975 * time.Millisecond}, 2, 3, map[uint32]int{100: 2}, 0, 0},
		{"all namespaces", CloseWaitOptions{Now: now}, 6, 0, map[uint32]int{100: 5}, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := CloseWait(tab, tc.opts)
			if rep.Total != tc.total || rep.Younger != tc.younger || len(rep.Shared) != tc.shared || len(rep.Orphans) != tc.orphans {
				t.Fatalf("total %d younger %d shared %d orphans %d, want %d %d %d %d", rep.Total, rep.Younger, len(rep.Shared), len(rep.Orphans), tc.total, tc.younger, tc.shared, tc.orphans)
			}
			got := map[uint32]int{}
			for _, p := range rep.Processes {
				got[p.PID] = p.Count
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.procs) {
				t.Fatalf("processes %v, want %v", got, tc.procs)
			}
			if _, err := json.Marshal(rep); err != nil {
				t.Fatal(err)
			}
		})
	}

	rep := CloseWait(tab, CloseWaitOptions{Now: now, NetNS: 1, Holders: holders,
		Cmdline: func(pid uint32) ([]byte, error) { return []byte(fmt.Sprintf("/usr/bin/srv\x00--port\x0080\x00")), nil }})
	p := rep.Processes[0]
	if p.PID != 100 || p.Comm != "srv" || p.Cmdline != "/usr/bin/srv --port 80" || p.Shared != 1 {
		t.Errorf("worst process %+v", p)
	}
	if fmt.Sprint(p.FDs) != "[4 5 6 9 -1]" && fmt.Sprint(p.FDs) != "[4 5 6 9]" {
		t.Errorf("fds %v, want 4 5 6 9", p.FDs)
	}
	if p.Oldest.Ns != int64(990*ms) || p.Median.Ns != int64(970*ms) || p.Oldest.AtLeast {
		t.Errorf("oldest %v median %v, want 990ms 970ms (lower median)", p.Oldest.Duration(), p.Median.Duration())
	}
	if len(p.LocalPorts) != 1 || p.LocalPorts[0] != (PortCount{Port: 80, Count: 4, Listener: true}) {
		t.Errorf("local ports %+v", p.LocalPorts)
	}
	if len(p.Peers) != 2 || p.Peers[0].Count != 2 || p.Peers[1].Count != 2 {
		t.Errorf("peers %+v", p.Peers)
	}
	if !p.FromTable {
		t.Errorf("socket 13 was not walked: its owner comes from the table, FromTable should say so")
	}
	w := rep.Processes[1]
	if w.PID != 300 || w.Comm != `worker\x1b[2J` || w.Count != 1 || w.Shared != 1 {
		t.Errorf("forked holder %+v", w)
	}
	if s := rep.Shared[0]; s.Key != 12 || len(s.Holders) != 2 || s.Holders[0].PID != 100 || s.Holders[1].PID != 300 {
		t.Errorf("shared %+v", s)
	}
	if o := rep.Orphans[0]; o.Key != 20 || o.Reason != ReasonNotAccepted || o.LastOwner == nil || o.LastOwner.PID != 100 {
		t.Errorf("orphan %+v", o)
	}
	for _, p := range rep.Processes {
		if p.PID == 200 {
			t.Errorf("the client (FIN_WAIT2) is blamed: %+v", p)
		}
	}
}

func TestCloseWaitGrowth(t *testing.T) {
	tab := table.New()
	srv := task(100, "srv")
	listen(tab, 1, 1, "10.0.0.2:80", srv, 1*ms)
	h := &CloseWaitHistory{}
	next := uint64(10)
	leak := func(n int, at uint64) {
		for i := 0; i < n; i++ {
			server(tab, sockSpec{cookie: next, local: "10.0.0.2:80", remote: fmt.Sprintf("10.0.0.9:%d", 40000+next)}, srv, srv, at-ms, at)
			next++
		}
	}
	leak(2, 10*ms)
	r1 := CloseWait(tab, CloseWaitOptions{Now: 1000 * ms, History: h})
	if r1.Processes[0].GrowthPerSec != nil {
		t.Fatalf("first report has a growth rate %v", *r1.Processes[0].GrowthPerSec)
	}
	leak(6, 1500*ms)
	r2 := CloseWait(tab, CloseWaitOptions{Now: 3000 * ms, History: h})
	if g := r2.Processes[0].GrowthPerSec; g == nil || *g != 3 {
		t.Fatalf("growth %v, want 3/s (6 more in 2s)", g)
	}
}

// ---- TIME_WAIT ---------------------------------------------------------------

type churnTab struct {
	tab    *table.Table
	tw     *TimeWaitTracker
	cookie uint64
}

func newChurnTab() *churnTab {
	c := &churnTab{tab: table.New(), tw: NewTimeWaitTracker(time.Minute), cookie: 100}
	c.tab.AddOnChange(c.tw.OnChange)
	return c
}

// activeClose drives a socket from its first state through an active close
// into TIME_WAIT at end.
func (c *churnTab) activeClose(s sockSpec, o event.Task, client bool, start, end uint64) {
	c.cookie++
	s.cookie = c.cookie
	if client {
		c.tab.Apply(ptr(owned(s.ev(event.Transition, start, event.Close, event.SynSent), o, event.OwnerSyscall, 1)))
		c.tab.Apply(ptr(owned(s.ev(event.Transition, start+1, event.SynSent, event.Established), o, event.OwnerSyscall, 1)))
	} else {
		c.tab.Apply(ptr(owned(s.ev(event.Transition, start, event.Listen, event.SynRecv), o, event.OwnerListener, 0)))
		c.tab.Apply(ptr(owned(s.ev(event.Transition, start+1, event.SynRecv, event.Established), o, event.OwnerAccept, 1)))
	}
	c.tab.Apply(ptr(owned(s.ev(event.Transition, end-2, event.Established, event.FinWait1), o, event.OwnerSyscall, 1)))
	c.tab.Apply(ptr(owned(s.ev(event.Transition, end-1, event.FinWait1, event.FinWait2), o, event.OwnerSyscall, 0)))
	tw := s.ev(event.TimewaitStart, end, 0, event.TimeWait)
	tw.Expires = 60 * time.Second
	c.tab.Apply(&tw)
	c.tab.Apply(ptr(owned(s.ev(event.Transition, end, event.FinWait2, event.Close), o, event.OwnerSyscall, 0)))
}

func TestTimeWaitSidesAndExhaustion(t *testing.T) {
	c := newChurnTab()
	web, curl := task(100, "web"), task(200, "curl")
	listen(c.tab, 1, 1, "10.0.0.2:80", web, 1*ms)
	// 8 client-first connections of curl to 10.0.0.2:80, each 2 ms long.
	for i := 0; i < 8; i++ {
		at := uint64(100+10*i) * ms
		c.activeClose(sockSpec{local: fmt.Sprintf("10.0.0.1:%d", 40000+i), remote: "10.0.0.2:80"}, curl, true, at, at+2*ms)
	}
	// 3 server-first connections, 300 ms long.
	for i := 0; i < 3; i++ {
		at := uint64(200+10*i) * ms
		c.activeClose(sockSpec{local: "10.0.0.2:80", remote: fmt.Sprintf("10.0.0.3:%d", 50000+i)}, web, false, at, at+300*ms)
	}
	// One outside the window.
	c.activeClose(sockSpec{local: "10.0.0.1:40100", remote: "10.0.0.5:443"}, curl, true, 1*ms, 2*ms)

	rep := c.tw.Report(c.tab, TimeWaitOptions{Now: 1000 * ms, Window: 950 * time.Millisecond, PortRange: [2]uint16{40000, 40015}})
	if rep.Current != 12 || rep.Entered != 11 || rep.ClientFirst != 8 || rep.ServerFirst != 3 || rep.UnknownSide != 0 {
		t.Fatalf("current %d entered %d client %d server %d unknown %d", rep.Current, rep.Entered, rep.ClientFirst, rep.ServerFirst, rep.UnknownSide)
	}
	want := []Closer{{PID: 200, Comm: "curl", Side: Client, Count: 8}, {PID: 100, Comm: "web", Side: Server, Count: 3}}
	if fmt.Sprint(rep.Closers) != fmt.Sprint(want) {
		t.Errorf("closers %+v, want %+v", rep.Closers, want)
	}
	if rep.Lifetimes.Known != 11 || rep.Lifetimes.Buckets[0].Count != 0 || rep.Lifetimes.Buckets[1].Count != 8 || rep.Lifetimes.Buckets[3].Count != 3 {
		t.Errorf("lifetimes %+v", rep.Lifetimes)
	}
	if rep.Lifetimes.P50Ns != int64(2*ms) || rep.Lifetimes.MaxNs != int64(300*ms) {
		t.Errorf("p50 %d max %d", rep.Lifetimes.P50Ns, rep.Lifetimes.MaxNs)
	}
	if rep.TopRemotes[0] != (EndpointCount{netip.MustParseAddrPort("10.0.0.2:80"), 8}) {
		t.Errorf("top remote %+v", rep.TopRemotes[0])
	}
	if rep.TopLocalPorts[0] != (PortCount{Port: 80, Count: 3, Listener: true}) {
		t.Errorf("top local port %+v", rep.TopLocalPorts[0])
	}
	// 8 of 16 ports towards 10.0.0.2:80: a warning; the server side's
	// port 80 is no destination.
	if len(rep.Destinations) != 1 || !rep.Destinations[0].Warning || rep.Destinations[0].TimeWait != 8 || rep.Destinations[0].Fraction != 0.5 {
		t.Errorf("destinations %+v", rep.Destinations)
	}
	// 8 of 11 closes client first: not one-sided enough for a pattern hint.
	if len(rep.Hints) != 1 || !strings.Contains(rep.Hints[0], "EADDRNOTAVAIL") {
		t.Errorf("hints %q", rep.Hints)
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}

	// TIME_WAIT expiry removes sockets from Current, not from Entered.
	for k := uint64(101); k <= 104; k++ {
		stop := event.Event{Kind: event.TimewaitStop, Cookie: k, Mono: 1001 * ms}
		c.tab.Apply(&stop)
	}
	rep = c.tw.Report(c.tab, TimeWaitOptions{Now: 1002 * ms, Window: 950 * time.Millisecond})
	if rep.Current != 8 || rep.Entered != 11 || len(rep.Destinations) != 0 {
		t.Errorf("after expiry: current %d entered %d destinations %d", rep.Current, rep.Entered, len(rep.Destinations))
	}
}

func TestTimeWaitSeededSocketsHaveNoLifetime(t *testing.T) {
	c := newChurnTab()
	c.tw.SetSeedMono(0) // set below
	l, r := netip.MustParseAddrPort("10.0.0.1:40000"), netip.MustParseAddrPort("10.0.0.2:80")
	c.tab.BeginSync()
	c.tab.EndSync([]event.Socket{
		{Cookie: 7, Family: event.IPv4, State: event.FinWait2, Local: l, Remote: r, NetNS: 1},
		{Cookie: 8, Family: event.IPv4, State: event.TimeWait, Kind: event.TimewaitSocket, Local: l, Remote: netip.MustParseAddrPort("10.0.0.2:81"), NetNS: 1},
	}, 50*ms, nil)
	c.tw.SetSeedMono(50 * ms)
	tw := event.Event{Kind: event.TimewaitStart, Cookie: 7, Mono: 60 * ms, New: event.TimeWait, NetNS: 1, Family: event.IPv4, Local: l, Remote: r, Expires: time.Minute}
	c.tab.Apply(&tw)
	rep := c.tw.Report(c.tab, TimeWaitOptions{Now: 100 * ms, Window: time.Second})
	if rep.Entered != 1 || rep.Current != 2 || rep.Lifetimes.Known != 0 || rep.Lifetimes.Unknown != 1 {
		t.Errorf("entered %d current %d lifetimes %+v", rep.Entered, rep.Current, rep.Lifetimes)
	}
}

func TestTimeWaitHints(t *testing.T) {
	for _, tc := range []struct {
		name          string
		client        bool
		n             int
		want, wantNot string
	}{
		{"client per request", true, 12, "new connection per request to 10.0.0.2:80", ""},
		{"server closes first", false, 12, "the server closes first", ""},
		{"too few to tell", true, 5, "", "per request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newChurnTab()
			listen(c.tab, 1, 1, "10.0.0.2:80", task(100, "web"), 1*ms)
			for i := 0; i < tc.n; i++ {
				at := uint64(100+10*i) * ms
				s := sockSpec{local: fmt.Sprintf("10.0.0.1:%d", 40000+i), remote: "10.0.0.2:80"}
				if !tc.client {
					s = sockSpec{local: "10.0.0.2:80", remote: fmt.Sprintf("10.0.0.1:%d", 40000+i)}
				}
				c.activeClose(s, task(200, "x"), tc.client, at, at+ms)
			}
			rep := c.tw.Report(c.tab, TimeWaitOptions{Now: 1000 * ms, Window: time.Second, PortRange: [2]uint16{32768, 60999}})
			all := strings.Join(rep.Hints, "\n")
			if tc.want != "" && !strings.Contains(all, tc.want) {
				t.Errorf("hints %q, want one with %q", rep.Hints, tc.want)
			}
			if tc.wantNot != "" && strings.Contains(all, tc.wantNot) {
				t.Errorf("hints %q, want none with %q", rep.Hints, tc.wantNot)
			}
		})
	}
}

func TestHoldersAdd(t *testing.T) {
	h := Holders{}
	var comm [16]byte
	copy(comm[:], "evil\x1b]0;x\x07")
	h.Add(7, 10, 3, comm[:])
	h.Add(7, 11, 4, []byte("plain"))
	if got := h[7]; len(got) != 2 || got[0].Comm != `evil\x1b]0;x\x07` || got[1] != (Holder{PID: 11, FD: 4, Comm: "plain"}) {
		t.Errorf("holders %+v", got)
	}
}

// TestCloseWaitCountsAgreeWithReport: the metrics' counts are CloseWait's
// without a walk: same processes, counts, oldest ages, order and orphans.
func TestCloseWaitCountsAgreeWithReport(t *testing.T) {
	tab := table.New()
	a, b, c := task(100, "a"), task(200, "b\x1b"), task(300, "c")
	listen(tab, 1, 1, "10.0.0.2:80", a, 1*ms)
	cookie := uint64(10)
	for _, x := range []struct {
		acc   event.Task
		n     int
		cwAt  uint64
		netns uint32
	}{{a, 3, 50, 1}, {b, 3, 20, 1}, {c, 1, 10, 2}, {event.Task{}, 2, 30, 1}} {
		for range x.n {
			cookie++
			server(tab, sockSpec{cookie: cookie, netns: x.netns, local: "10.0.0.2:80", remote: fmt.Sprintf("10.0.0.9:%d", cookie)}, a, x.acc, 5*ms, x.cwAt*ms)
		}
	}
	now := 100 * ms
	rep := CloseWait(tab, CloseWaitOptions{Now: now})
	procs, orphans := CloseWaitCounts(tab, now)
	var want []CloseWaitCount
	for _, p := range rep.Processes {
		want = append(want, CloseWaitCount{PID: p.PID, Comm: p.Comm, Count: p.Count, Oldest: p.Oldest})
	}
	if fmt.Sprint(procs) != fmt.Sprint(want) || orphans != len(rep.Orphans) {
		t.Errorf("CloseWaitCounts %v, %d orphans; CloseWait %v, %d orphans", procs, orphans, want, len(rep.Orphans))
	}
	// b's are older than a's: b first at the same count.
	if len(procs) != 3 || procs[0].PID != 200 || procs[1].PID != 100 || orphans != 2 {
		t.Errorf("order %v, orphans %d", procs, orphans)
	}
}
