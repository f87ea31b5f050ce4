package diag

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// Side says which end of a connection a socket is.
type Side string

const (
	Client      Side = "client"  // connected out: its local port is not a listener's
	Server      Side = "server"  // accepted: its local port is a listener's
	SideUnknown Side = "unknown" // no table entry, or a listener seen too late
)

// TimeWaitTracker watches sockets enter TIME_WAIT. Install OnChange as the
// table's change hook (table.AddOnChange) before the table is seeded; then
// Report at any time. Safe for concurrent use.
type TimeWaitTracker struct {
	mu        sync.Mutex
	keep      time.Duration
	entries   []twEntry // in arrival order
	listeners map[listenKey]int
	seedMono  uint64
	// entered counts every entry since the tracker started, by side
	// (indexed by sideIndex), for counters such as Prometheus's.
	entered [3]uint64
}

// sides lists the sides in the order of TimeWaitTracker.entered.
var sides = [...]Side{Client, Server, SideUnknown}

func sideIndex(s Side) int {
	switch s {
	case Client:
		return 0
	case Server:
		return 1
	}
	return 2
}

// sideOf is the rule that tells the two ends of a connection apart: a
// socket whose local port has a listener in its namespace was accepted (the
// server's end); any other connected out (the client's end).
func sideOf(listened bool) Side {
	if listened {
		return Server
	}
	return Client
}

type twEntry struct {
	mono     uint64
	netns    uint32
	local    netip.AddrPort
	remote   netip.AddrPort
	owner    event.Task
	ownerOK  bool
	side     Side
	lifetime int64 // ns from the socket's first sight to TIME_WAIT, -1 unknown
}

// NewTimeWaitTracker keeps the TIME_WAIT entries of the last keep (the
// longest window a report will ask for).
func NewTimeWaitTracker(keep time.Duration) *TimeWaitTracker {
	return &TimeWaitTracker{keep: keep, listeners: map[listenKey]int{}}
}

// SetKeep changes how long entries are kept (see NewTimeWaitTracker).
func (t *TimeWaitTracker) SetKeep(keep time.Duration) {
	t.mu.Lock()
	t.keep = keep
	t.mu.Unlock()
}

// SetSeedMono tells the tracker when the table's seed walk ran: sockets
// first seen then predate tracing, and their lifetimes are unknown.
func (t *TimeWaitTracker) SetSeedMono(mono uint64) {
	t.mu.Lock()
	t.seedMono = mono
	t.mu.Unlock()
}

// OnChange is a table change hook (see table.AddOnChange). It must be
// quick: it runs under the table's lock.
func (t *TimeWaitTracker) OnChange(old, new *table.Entry, ev *event.Event) {
	wasListen := old != nil && old.State == event.Listen
	isListen := new != nil && new.State == event.Listen
	// A socket entering TIME_WAIT from another state, by an event (a seed
	// walk finding TIME_WAIT sockets is not an entry: ev == nil).
	entering := new != nil && new.State == event.TimeWait && ev != nil && (old == nil || old.State != event.TimeWait)
	if !wasListen && !isListen && !entering {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if wasListen {
		k := listenKey{old.NetNS, old.Local.Port()}
		if t.listeners[k]--; t.listeners[k] <= 0 {
			delete(t.listeners, k)
		}
	}
	if isListen {
		t.listeners[listenKey{new.NetNS, new.Local.Port()}]++
	}
	if !entering {
		return
	}
	e := twEntry{mono: ev.Mono, netns: new.NetNS, local: unmap(new.Local), remote: unmap(new.Remote),
		owner: new.Owner, ownerOK: new.OwnerKnown, lifetime: -1}
	if old == nil {
		// The table did not know the socket: its start and side are unknown.
		e.side = SideUnknown
	} else {
		e.side = sideOf(t.listeners[listenKey{new.NetNS, new.Local.Port()}] > 0)
		if old.SeenAt != 0 && old.SeenAt != t.seedMono && old.SeenAt <= ev.Mono && !old.SeedOnly {
			e.lifetime = int64(ev.Mono - old.SeenAt)
		}
	}
	t.entered[sideIndex(e.side)]++
	t.entries = append(t.entries, e)
	t.prune(ev.Mono, t.keep)
}

// EnteredBySide returns how many sockets entered TIME_WAIT since the
// tracker was installed, by side (Client, Server, SideUnknown), as Report
// classifies them when they happen. A few integers: cheap to read often.
func (t *TimeWaitTracker) EnteredBySide() map[Side]uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[Side]uint64, len(sides))
	for i, s := range sides {
		out[s] = t.entered[i]
	}
	return out
}

// TimeWaitBySide counts the sockets in TIME_WAIT now, of one namespace or
// all (netns 0), by side (Client or Server) by the rule Report uses.
func TimeWaitBySide(tab *table.Table, netns uint32) map[Side]int {
	listeners := map[listenKey]bool{}
	var ports []listenKey
	tab.Each(event.StateMask(0).With(event.TimeWait).With(event.Listen), func(e *table.Entry) bool {
		switch {
		case netns != 0 && e.NetNS != netns:
		case e.State == event.Listen:
			listeners[listenKey{e.NetNS, e.Local.Port()}] = true
		default:
			ports = append(ports, listenKey{e.NetNS, e.Local.Port()})
		}
		return true
	})
	out := map[Side]int{Client: 0, Server: 0}
	for _, k := range ports {
		out[sideOf(listeners[k])]++
	}
	return out
}

// prune drops entries older than keep. Lock held.
func (t *TimeWaitTracker) prune(now uint64, keep time.Duration) {
	i := 0
	for i < len(t.entries) && now > t.entries[i].mono && now-t.entries[i].mono > uint64(keep) {
		i++
	}
	if i > 0 {
		t.entries = append(t.entries[:0], t.entries[i:]...)
	}
}

// TimeWaitOptions tune a TIME_WAIT report.
type TimeWaitOptions struct {
	Now    uint64        // kernel CLOCK_MONOTONIC time of the report
	Window time.Duration // how far back rates, closers and lifetimes look
	NetNS  uint32        // one network namespace (inode); 0: all
	// PortRange is net.ipv4.ip_local_port_range (first, last) of the
	// namespace; zero: Destinations is left empty.
	PortRange [2]uint16
	// WarnFraction of the port range in TIME_WAIT towards one destination
	// raises a warning (default 0.5).
	WarnFraction float64
	Top          int // entries of each top list (default 10)
	// TwReuse is net.ipv4.tcp_tw_reuse (0 off, 1 on, 2 loopback only), for
	// the hints; -1 or any other value: not known.
	TwReuse int
}

// TimeWaitReport answers "who is churning?".
type TimeWaitReport struct {
	Mono     uint64 `json:"mono_ns"`
	WindowNs int64  `json:"window_ns"`
	NetNS    uint32 `json:"netns,omitempty"`
	// Current is the number of TIME_WAIT sockets now.
	Current int `json:"current"`
	// Entered is how many sockets entered TIME_WAIT in the window, PerSec
	// the same per second.
	Entered int     `json:"entered"`
	PerSec  float64 `json:"per_sec"`
	// ClientFirst: the client closed first (TIME_WAIT on the client);
	// ServerFirst: the server did. Entries in the window.
	ClientFirst int `json:"client_first"`
	ServerFirst int `json:"server_first"`
	UnknownSide int `json:"unknown_side"`
	// Closers are the processes whose sockets entered TIME_WAIT in the
	// window (the side that closed first), most first.
	Closers []Closer `json:"closers"`
	// TopRemotes and TopLocalPorts count the TIME_WAIT sockets now.
	TopRemotes    []EndpointCount `json:"top_remotes"`
	TopLocalPorts []PortCount     `json:"top_local_ports"`
	// PortRange is the ephemeral port range Destinations are measured
	// against; Destinations are the busiest (local address, remote
	// endpoint) pairs of client-side TIME_WAIT sockets now.
	PortRange    [2]uint16     `json:"port_range"`
	Destinations []Destination `json:"destinations"`
	// Lifetimes of the connections that entered TIME_WAIT in the window.
	Lifetimes Lifetimes `json:"lifetimes"`
	// Hints say in plain words what the pattern looks like.
	Hints []string `json:"hints"`
}

// Closer is a process that closed connections first.
type Closer struct {
	PID   uint32 `json:"pid"` // 0: not known
	Comm  string `json:"comm"`
	Side  Side   `json:"side"`
	Count int    `json:"count"`
}

// Destination is one local address talking to one remote endpoint, which
// can use at most the ephemeral port range's size of local ports.
type Destination struct {
	NetNS    uint32         `json:"netns"`
	Local    netip.Addr     `json:"local"`
	Remote   netip.AddrPort `json:"remote"`
	TimeWait int            `json:"time_wait"`
	// Fraction is TimeWait over the port range's size; Warning is set when
	// it reaches WarnFraction.
	Fraction float64 `json:"fraction"`
	Warning  bool    `json:"warning"`
}

// Lifetimes is a distribution of connection lifetimes.
type Lifetimes struct {
	Known   int      `json:"known"`
	Unknown int      `json:"unknown"` // connections that predate tracing
	Buckets []Bucket `json:"buckets"`
	P50Ns   int64    `json:"p50_ns"`
	P90Ns   int64    `json:"p90_ns"`
	P99Ns   int64    `json:"p99_ns"`
	MaxNs   int64    `json:"max_ns"`
}

// Bucket counts lifetimes below UpperNs (the last bucket: all others, UpperNs 0).
type Bucket struct {
	Label   string `json:"label"`
	UpperNs int64  `json:"upper_ns"`
	Count   int    `json:"count"`
}

var lifetimeBuckets = []struct {
	label string
	upper time.Duration
}{
	{"<1ms", time.Millisecond},
	{"<10ms", 10 * time.Millisecond},
	{"<100ms", 100 * time.Millisecond},
	{"<1s", time.Second},
	{"<10s", 10 * time.Second},
	{"<1m", time.Minute},
	{">=1m", 0},
}

// Report builds the TIME_WAIT report: entries from the tracker's window,
// current sockets from the table.
func (t *TimeWaitTracker) Report(tab *table.Table, opts TimeWaitOptions) *TimeWaitReport {
	if opts.Window <= 0 {
		opts.Window = 5 * time.Second
	}
	if opts.WarnFraction == 0 {
		opts.WarnFraction = 0.5
	}
	if opts.Top == 0 {
		opts.Top = 10
	}
	rep := &TimeWaitReport{Mono: opts.Now, WindowNs: int64(opts.Window), NetNS: opts.NetNS, PortRange: opts.PortRange,
		Closers: []Closer{}, Destinations: []Destination{}, Hints: []string{}}

	// Sockets in TIME_WAIT and listeners now.
	remotes := map[netip.AddrPort]int{}
	ports := map[uint16]int{}
	listeners := map[listenKey]bool{}
	type destKey struct {
		netns  uint32
		local  netip.Addr
		remote netip.AddrPort
	}
	dests := map[destKey]int{}
	var tws []table.Entry
	tab.Each(event.StateMask(0).With(event.TimeWait).With(event.Listen), func(e *table.Entry) bool {
		switch {
		case opts.NetNS != 0 && e.NetNS != opts.NetNS:
		case e.State == event.Listen:
			listeners[listenKey{e.NetNS, e.Local.Port()}] = true
		default:
			tws = append(tws, *e)
		}
		return true
	})
	// Entries in the window.
	type closerKey struct {
		pid  uint32
		comm string
		side Side
	}
	closers := map[closerKey]int{}
	var lifetimes []int64
	from := uint64(0)
	if opts.Now > uint64(opts.Window) {
		from = opts.Now - uint64(opts.Window)
	}
	entryDest := map[netip.AddrPort]int{}
	t.mu.Lock()
	t.prune(opts.Now, max(t.keep, opts.Window))
	for i := range t.entries {
		e := &t.entries[i]
		if e.mono < from || e.mono > opts.Now || (opts.NetNS != 0 && e.netns != opts.NetNS) {
			continue
		}
		rep.Entered++
		side := e.side
		// A listener the table learned only after the entry (its seed ran
		// late) still makes it the server side.
		if side == Client {
			side = sideOf(listeners[listenKey{e.netns, e.local.Port()}])
		}
		switch side {
		case Client:
			rep.ClientFirst++
			entryDest[e.remote]++
		case Server:
			rep.ServerFirst++
		default:
			rep.UnknownSide++
		}
		k := closerKey{side: side, comm: "-"}
		if e.ownerOK {
			k.pid, k.comm = e.owner.PID, commString(&e.owner)
		}
		closers[k]++
		if e.lifetime >= 0 {
			lifetimes = append(lifetimes, e.lifetime)
		} else {
			rep.Lifetimes.Unknown++
		}
	}
	t.mu.Unlock()
	rep.PerSec = float64(rep.Entered) / opts.Window.Seconds()
	for k, n := range closers {
		rep.Closers = append(rep.Closers, Closer{PID: k.pid, Comm: k.comm, Side: k.side, Count: n})
	}
	slices.SortFunc(rep.Closers, func(a, b Closer) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.PID, b.PID), cmp.Compare(a.Side, b.Side))
	})
	if len(rep.Closers) > opts.Top {
		rep.Closers = rep.Closers[:opts.Top]
	}
	rep.Lifetimes = lifetimeStats(lifetimes, rep.Lifetimes.Unknown)

	for i := range tws {
		e := &tws[i]
		rep.Current++
		l, r := unmap(e.Local), unmap(e.Remote)
		remotes[r]++
		ports[l.Port()]++
		// Client side only: a listener's port is not an ephemeral one.
		if p := l.Port(); opts.PortRange[1] != 0 && p >= opts.PortRange[0] && p <= opts.PortRange[1] && !listeners[listenKey{e.NetNS, p}] {
			dests[destKey{e.NetNS, l.Addr(), r}]++
		}
	}
	rep.TopRemotes = topEndpoints(remotes, opts.Top)
	// Ports are per namespace; with every namespace in the report a port
	// counts as a listener's if it listens in any.
	rep.TopLocalPorts = topPorts(ports, func(p uint16) bool {
		for k := range listeners {
			if k.port == p && (opts.NetNS == 0 || k.netns == opts.NetNS) {
				return true
			}
		}
		return false
	}, opts.Top)
	if size := int(opts.PortRange[1]) - int(opts.PortRange[0]) + 1; opts.PortRange[1] != 0 && size > 0 {
		for k, n := range dests {
			f := float64(n) / float64(size)
			rep.Destinations = append(rep.Destinations, Destination{NetNS: k.netns, Local: k.local, Remote: k.remote,
				TimeWait: n, Fraction: f, Warning: f >= opts.WarnFraction})
		}
		slices.SortFunc(rep.Destinations, func(a, b Destination) int {
			return cmp.Or(cmp.Compare(b.TimeWait, a.TimeWait), a.Remote.Compare(b.Remote), a.Local.Compare(b.Local))
		})
		if len(rep.Destinations) > opts.Top {
			rep.Destinations = rep.Destinations[:opts.Top]
		}
	}
	rep.Hints = timeWaitHints(rep, entryDest, opts)
	return rep
}

func lifetimeStats(ls []int64, unknown int) Lifetimes {
	out := Lifetimes{Known: len(ls), Unknown: unknown, Buckets: make([]Bucket, len(lifetimeBuckets))}
	for i, b := range lifetimeBuckets {
		out.Buckets[i] = Bucket{Label: b.label, UpperNs: int64(b.upper)}
	}
	for _, l := range ls {
		for i, b := range lifetimeBuckets {
			if b.upper == 0 || l < int64(b.upper) {
				out.Buckets[i].Count++
				break
			}
		}
	}
	if len(ls) > 0 {
		slices.Sort(ls)
		pct := func(p int) int64 { return ls[(len(ls)-1)*p/100] }
		out.P50Ns, out.P90Ns, out.P99Ns, out.MaxNs = pct(50), pct(90), pct(99), ls[len(ls)-1]
	}
	return out
}

// timeWaitHints recognises common patterns. entryDest counts client-side
// entries in the window by remote endpoint.
func timeWaitHints(rep *TimeWaitReport, entryDest map[netip.AddrPort]int, opts TimeWaitOptions) []string {
	hints := []string{}
	for _, d := range rep.Destinations {
		if !d.Warning {
			continue
		}
		msg := fmt.Sprintf("%s -> %s: %d of %d ephemeral ports (%.0f%%) sit in TIME_WAIT; ",
			d.Local, d.Remote, d.TimeWait, int(opts.PortRange[1])-int(opts.PortRange[0])+1, 100*d.Fraction)
		if opts.TwReuse == 1 || (opts.TwReuse == 2 && d.Remote.Addr().IsLoopback()) {
			msg += "net.ipv4.tcp_tw_reuse lets new connections take over TIME_WAIT ports, but with the range in use connect() fails with EADDRNOTAVAIL: reuse connections (keep-alive, pooling) or widen net.ipv4.ip_local_port_range"
		} else {
			msg += "new connections to it will fail with EADDRNOTAVAIL once they are all taken: reuse connections (keep-alive, pooling), widen net.ipv4.ip_local_port_range, or set net.ipv4.tcp_tw_reuse=1"
		}
		hints = append(hints, msg)
	}
	if rep.Entered < 10 {
		return hints
	}
	short := rep.Lifetimes.Known > 0 && rep.Lifetimes.P50Ns < int64(time.Second)
	if rep.ClientFirst*10 >= rep.Entered*8 {
		var top netip.AddrPort
		n := 0
		for ep, c := range entryDest {
			if c > n || (c == n && ep.Compare(top) < 0) {
				top, n = ep, c
			}
		}
		if n*2 >= rep.ClientFirst {
			msg := fmt.Sprintf("clients here open a new connection per request to %s (%.0f/s", top, float64(n)/opts.Window.Seconds())
			if short {
				msg += fmt.Sprintf(", median lifetime %v", time.Duration(rep.Lifetimes.P50Ns).Round(time.Microsecond))
			}
			msg += ") and close first, so TIME_WAIT piles up on this side: keep connections open and reuse them"
			hints = append(hints, msg)
		} else {
			hints = append(hints, "clients here close first, so TIME_WAIT piles up on this side: reuse connections where you can")
		}
	} else if rep.ServerFirst*10 >= rep.Entered*8 {
		hints = append(hints, "the server closes first, so TIME_WAIT sits on the server side: it costs the server memory, not ports; if clients can close first (or keep connections open), it moves to them")
	}
	return hints
}
