// Package topview computes what `tcpscope top` shows from the live socket
// table: sockets per state with their rate of change, the processes holding
// the most sockets in each state, the CLOSE_WAIT and TIME_WAIT hot spots, and
// the tracer's loss and resync counters. It is plain Go (no terminal, no
// BPF), so tests drive it with a table fed synthetic events; package
// topview/screen draws a Snapshot.
package topview

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/ktime"
	"github.com/tcpscope/tcpscope/tracer/table"
	"github.com/tcpscope/tcpscope/tracer/termsafe"
)

// States are the rows of the state panel, in the order shown (and cycled
// by the state filter). SYN_RECV includes request sockets (NEW_SYN_RECV),
// as ss and netstat show them; CLOSE is never in the table.
var States = []event.State{
	event.Established, event.SynSent, event.SynRecv, event.FinWait1, event.FinWait2,
	event.TimeWait, event.CloseWait, event.LastAck, event.Listen, event.Closing,
}

// shown maps a table state to its row state.
func shown(st event.State) event.State {
	if st == event.NewSynRecv {
		return event.SynRecv
	}
	return st
}

// Sort orders the process rows.
type Sort int

const (
	ByCount Sort = iota // most sockets first
	ByPID               // lowest pid first
	ByName              // process name
	ByState             // state panel order, then most sockets
	sortCount
)

func (s Sort) String() string {
	switch s {
	case ByPID:
		return "pid"
	case ByName:
		return "name"
	case ByState:
		return "state"
	}
	return "count"
}

// Next returns the following sort order, wrapping around.
func (s Sort) Next() Sort { return (s + 1) % sortCount }

// ParseSort reads a sort order by name.
func ParseSort(name string) (Sort, bool) {
	for s := Sort(0); s < sortCount; s++ {
		if s.String() == name {
			return s, true
		}
	}
	return 0, false
}

// Query is what the user asked to see.
type Query struct {
	// State, when not 0, restricts the process rows to sockets in that
	// state (a row of States).
	State event.State
	// Process, when not empty, restricts every count to sockets owned by
	// the process with that pid (all digits) or whose escaped name contains
	// it.
	Process string
	Sort    Sort
}

// NextState returns the state filter after cur in the order of States:
// none, then each state, then none again; back goes the other way.
func NextState(cur event.State, back bool) event.State {
	i := slices.Index(States, cur) // -1 for none
	n := len(States) + 1
	step := 1
	if back {
		step = n - 1
	}
	j := (i+1+step)%n - 1
	if j < 0 {
		return 0
	}
	return States[j]
}

// Counters are the tracer's health counters shown with the view.
type Counters struct {
	Lost    uint64 // events the kernel side dropped
	Resyncs uint64 // times the table was rebuilt from the kernel since start
}

// StateRow is one row of the state panel.
type StateRow struct {
	State event.State
	Count int
	// PerSec is how many sockets entered the state in the last complete
	// second; Spark the same for each of the last seconds, oldest first.
	PerSec uint32
	Spark  []uint32
}

// Owner names a process, or none.
type Owner struct {
	PID   uint32
	Comm  string // escaped with termsafe: safe to print
	Known bool   // false: no owner known (orphans, sockets found before start)
}

func (o Owner) String() string {
	if !o.Known {
		return "-"
	}
	return strconv.FormatUint(uint64(o.PID), 10) + "/" + o.Comm
}

// ProcRow is the number of sockets one process holds in one state.
type ProcRow struct {
	Owner
	State event.State
	Count int
}

// HotSpot is a local port or a remote endpoint shared by many sockets in
// CLOSE_WAIT or TIME_WAIT.
type HotSpot struct {
	// Local: the sockets share local port Port; else remote endpoint Remote.
	Local  bool
	Port   uint16
	Remote netip.AddrPort
	Count  int
	// Owner is the one process that holds (or, in TIME_WAIT, last held)
	// them all, leaving aside sockets with no known owner; Owners is 0
	// (none known), 1, or 2 for several.
	Owner  Owner
	Owners int
}

// Label is the hot spot's endpoint: ":PORT" for a local port, ADDR:PORT for
// a remote endpoint.
func (h HotSpot) Label() string {
	if h.Local {
		return "local :" + strconv.Itoa(int(h.Port))
	}
	return "peer " + h.Remote.String()
}

// Snapshot is everything the view shows at one moment.
type Snapshot struct {
	Mono   uint64 // CLOCK_MONOTONIC time it was taken
	NetNS  uint32 // the namespace shown, 0 for all
	Query  Query
	States []StateRow // in the order of States
	Total  int        // sockets counted in States
	// Transitions is the number of state changes in the last complete
	// second (every state, the process filter not applied).
	Transitions uint32
	Procs       []ProcRow // sorted by Query.Sort
	CloseWait   []HotSpot // most sockets first
	TimeWait    []HotSpot
	Counters    Counters
	// NoRates: a process filter is on, and rates are not kept per
	// process: the rows carry none (Transitions still counts them all).
	NoRates bool
	// Moving: rates shown will change as time passes even without events
	// (a second with transitions is still in the sparkline window).
	Moving bool
	Cost   time.Duration // how long building it took
}

// SparkLen is the number of seconds of rate history a Snapshot carries.
const SparkLen = 16

// Model builds snapshots from a table.
type Model struct {
	tab      *table.Table
	rates    *Rates
	groups   *groups
	spots    spotCache
	netns    uint32
	counters func() Counters
	now      func() uint64
	hotN     int
}

// Options configure a Model.
type Options struct {
	// NetNS restricts the view to one network namespace (its inode); 0
	// shows all.
	NetNS uint32
	// Counters reads the tracer's counters; nil shows zeros.
	Counters func() Counters
	// Now returns the CLOCK_MONOTONIC time in ns (default ktime.Now; tests
	// inject theirs).
	Now func() uint64
	// HotSpots is the number of hot spots kept per state (default 20).
	HotSpots int
}

// New returns a Model of tab and installs its counters as tab's change hook
// (tab must have no other). Install it before the table is seeded.
func New(tab *table.Table, opts Options) *Model {
	m := &Model{tab: tab, rates: NewRates(opts.NetNS), groups: &groups{netns: opts.NetNS, n: map[procKey]int{}}, netns: opts.NetNS,
		counters: opts.Counters, now: opts.Now, hotN: opts.HotSpots}
	if m.hotN <= 0 {
		m.hotN = 20
	}
	if m.now == nil {
		m.now = ktime.Now
	}
	tab.AddOnChange(func(old, new *table.Entry, ev *event.Event) {
		m.rates.Observe(old, new, ev)
		m.groups.observe(old, new)
	})
	return m
}

// Changed is the table's change notification.
func (m *Model) Changed() <-chan struct{} { return m.tab.Changed() }

// NetNS returns the namespace shown, 0 for all.
func (m *Model) NetNS() uint32 { return m.netns }

// procKey groups sockets by owner and state.
type procKey struct {
	pid   uint32
	comm  [16]byte
	known bool
	state event.State
}

type spotAgg struct {
	count  int
	owner  procKey // state unused
	owners int
}

type spotKey struct {
	local  bool
	port   uint16
	remote netip.AddrPort
}

// groups counts the sockets of each owner in each state, kept current by
// the table's change hook. The process panel and the process filter read it
// instead of walking the table, so a snapshot holds the table's lock only
// for the CLOSE_WAIT and TIME_WAIT sockets (hot spots), not for every socket.
type groups struct {
	netns uint32
	mu    sync.Mutex
	n     map[procKey]int
}

func keyOf(e *table.Entry) procKey {
	k := procKey{state: shown(e.State)}
	if e.OwnerKnown {
		k.pid, k.comm, k.known = e.Owner.PID, e.Owner.Comm, true
	}
	return k
}

// observe is the table's change hook: resyncs included, since they change
// what the table holds.
func (g *groups) observe(old, new *table.Entry) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if old != nil && (g.netns == 0 || old.NetNS == g.netns) {
		k := keyOf(old)
		if g.n[k]--; g.n[k] <= 0 {
			delete(g.n, k)
		}
	}
	if new != nil && (g.netns == 0 || new.NetNS == g.netns) {
		g.n[keyOf(new)]++
	}
}

func (g *groups) copy() map[procKey]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return maps.Clone(g.n)
}

// matcher returns whether an owner matches the process filter.
func matcher(process string) func(known bool, pid uint32, comm string) bool {
	if process == "" {
		return func(bool, uint32, string) bool { return true }
	}
	pid, isPID := parsePID(process)
	return func(known bool, p uint32, comm string) bool {
		if !known {
			return false
		}
		if isPID {
			return p == pid
		}
		return strings.Contains(comm, process)
	}
}

// Snapshot computes the view for q. It is not safe for concurrent use (one
// screen calls it).
func (m *Model) Snapshot(q Query) *Snapshot {
	start := time.Now()
	now := m.now()
	s := &Snapshot{Mono: now, NetNS: m.netns, Query: q, NoRates: q.Process != ""}
	if m.counters != nil {
		s.Counters = m.counters()
	}

	// Rates: the last SparkLen complete seconds.
	var series [event.MaxState + 1][]uint32
	s.Moving = m.rates.series(int64(now/1e9)-1, SparkLen, &series)
	for st := range series {
		s.Transitions += series[st][SparkLen-1]
	}

	// Counts and process rows, from the owner groups.
	match := matcher(q.Process)
	var counts table.Counts
	for k, n := range m.groups.copy() {
		o := k.owner()
		if !match(o.Known, o.PID, o.Comm) {
			continue
		}
		counts[k.state] += n
		if q.State == 0 || q.State == k.state {
			s.Procs = append(s.Procs, ProcRow{Owner: o, State: k.state, Count: n})
		}
	}
	if q.Process == "" {
		// The table's own counts (the groups agree; tests check it).
		if m.netns == 0 {
			counts = m.tab.Counts()
		} else {
			counts = m.tab.CountsByNetNS()[m.netns]
		}
		counts[event.SynRecv] += counts[event.NewSynRecv]
	}
	for _, st := range States {
		// SYN_RECV's rate is that of full sockets entering it (one per
		// completed handshake); request sockets are in Transitions.
		row := StateRow{State: st, Count: counts[st], Spark: series[st]}
		if q.Process != "" {
			row.Spark = nil
		} else {
			row.PerSec = row.Spark[SparkLen-1]
		}
		s.States = append(s.States, row)
		s.Total += row.Count
	}
	sortProcs(s.Procs, q.Sort)

	s.CloseWait, s.TimeWait = m.hotSpots(q.Process, match)
	s.Cost = time.Since(start)
	return s
}

// hotSpots walks the CLOSE_WAIT and TIME_WAIT sockets, holding the table's
// read lock (the reader waits meanwhile): ~0.3 µs a socket. When that walk
// is long (a million TIME_WAIT sockets), its result is reused for up to 20
// times its cost, so that the walk takes at most 5% of the time while the
// counts and process rows, which cost nothing to read, stay current.
func (m *Model) hotSpots(process string, match func(bool, uint32, string) bool) (cw, tw []HotSpot) {
	c := &m.spots
	if c.valid && c.process == process && c.cost > 5*time.Millisecond && time.Since(c.at) < 20*c.cost {
		return c.cw, c.tw
	}
	start := time.Now()
	spots := [2]map[spotKey]*spotAgg{{}, {}}
	names := map[[16]byte]string{} // escaped once per name, not per socket
	m.tab.Each(event.StateMask(0).With(event.CloseWait).With(event.TimeWait), func(e *table.Entry) bool {
		if m.netns != 0 && e.NetNS != m.netns {
			return true
		}
		k := keyOf(e)
		if process != "" {
			name, ok := names[k.comm]
			if !ok && k.known {
				name = k.owner().Comm
				names[k.comm] = name
			}
			if !match(k.known, k.pid, name) {
				return true
			}
		}
		sp := spots[0]
		if k.state == event.TimeWait {
			sp = spots[1]
		}
		k.state = 0
		addSpot(sp, spotKey{local: true, port: e.Local.Port()}, k)
		addSpot(sp, spotKey{remote: e.Remote}, k)
		return true
	})
	cw, tw = topSpots(spots[0], m.hotN), topSpots(spots[1], m.hotN)
	*c = spotCache{valid: true, process: process, at: start, cost: time.Since(start), cw: cw, tw: tw}
	return cw, tw
}

// spotCache is the last hot spot walk.
type spotCache struct {
	valid   bool
	process string
	at      time.Time
	cost    time.Duration
	cw, tw  []HotSpot
}

func (k procKey) owner() Owner {
	if !k.known {
		return Owner{}
	}
	n := 0
	for n < len(k.comm) && k.comm[n] != 0 {
		n++
	}
	return Owner{PID: k.pid, Comm: termsafe.String(string(k.comm[:n])), Known: true}
}

func parsePID(s string) (uint32, bool) {
	if s == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// addSpot counts a socket for a spot. Sockets with no known owner (e.g.
// TIME_WAIT sockets that predate tcpscope) count, but do not make the
// owner ambiguous.
func addSpot(m map[spotKey]*spotAgg, k spotKey, owner procKey) {
	a := m[k]
	if a == nil {
		a = &spotAgg{}
		m[k] = a
	}
	a.count++
	switch {
	case !owner.known:
	case a.owners == 0:
		a.owner, a.owners = owner, 1
	case a.owners == 1 && a.owner.pid != owner.pid:
		// Counting every distinct owner would need a set per spot; "one"
		// or "several" is what the view says.
		a.owners = 2
	}
}

func topSpots(m map[spotKey]*spotAgg, n int) []HotSpot {
	out := make([]HotSpot, 0, len(m))
	for k, a := range m {
		if a.count < 2 {
			continue // one socket is not a spot; the panels above show it
		}
		h := HotSpot{Local: k.local, Port: k.port, Remote: k.remote, Count: a.count, Owners: a.owners}
		if a.owners == 1 {
			h.Owner = a.owner.owner()
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b HotSpot) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		if a.Local != b.Local {
			if a.Local {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(a.Port, b.Port); c != 0 {
			return c
		}
		return a.Remote.Compare(b.Remote)
	})
	return out[:min(n, len(out))]
}

func sortProcs(rows []ProcRow, by Sort) {
	order := func(st event.State) int { return slices.Index(States, st) }
	byCount := func(a, b ProcRow) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		if c := cmp.Compare(a.PID, b.PID); c != 0 {
			return c
		}
		if c := cmp.Compare(order(a.State), order(b.State)); c != 0 {
			return c
		}
		return cmp.Compare(a.Comm, b.Comm)
	}
	slices.SortFunc(rows, func(a, b ProcRow) int {
		// Unknown owners after known ones for pid and name sorts.
		switch by {
		case ByPID:
			if a.Known != b.Known {
				return cmpBool(b.Known, a.Known)
			}
			if c := cmp.Compare(a.PID, b.PID); c != 0 {
				return c
			}
		case ByName:
			if a.Known != b.Known {
				return cmpBool(b.Known, a.Known)
			}
			if c := cmp.Compare(a.Comm, b.Comm); c != 0 {
				return c
			}
		case ByState:
			if c := cmp.Compare(order(a.State), order(b.State)); c != 0 {
				return c
			}
		}
		return byCount(a, b)
	})
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}
