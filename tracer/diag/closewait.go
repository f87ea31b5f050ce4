package diag

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// CloseWaitOptions tune a CLOSE_WAIT report.
type CloseWaitOptions struct {
	// Now is the kernel CLOCK_MONOTONIC time of the report (ktime.Now()).
	Now uint64
	// MinAge leaves out sockets that have been in CLOSE_WAIT for less (a
	// healthy server passes through it in microseconds). Sockets whose age
	// is only known as a lower bound count when that bound reaches MinAge.
	MinAge time.Duration
	// NetNS restricts the report to one network namespace (inode); 0: all.
	NetNS uint32
	// Holders, when not nil, is a walk of every fd table done just before
	// the report: the processes that hold each socket now. Nil: the table's
	// owner (the process that last used the socket) is taken instead, and
	// sockets shared by several processes cannot be seen.
	Holders Holders
	// Cmdline returns a process's command line as /proc/PID/cmdline has it
	// (NUL-separated); nil or an error: left empty.
	Cmdline func(pid uint32) ([]byte, error)
	// History, when not nil, remembers each report's counts per process so
	// that GrowthPerSec can be computed; pass the same History to each
	// report of a watch.
	History *CloseWaitHistory
	// Top bounds the local ports and peers listed per process (default 5).
	Top int
}

// CloseWaitReport answers "who is leaking sockets?".
type CloseWaitReport struct {
	Mono  uint64 `json:"mono_ns"`
	NetNS uint32 `json:"netns,omitempty"` // 0: every namespace
	// MinAgeNs is the MinAge the report was made with.
	MinAgeNs int64 `json:"min_age_ns"`
	// Total counts CLOSE_WAIT sockets at least MinAge old; Younger those
	// left out for being younger.
	Total   int `json:"total"`
	Younger int `json:"younger"`
	// HoldersWalked: holders come from a walk of every fd table (exact,
	// including shared sockets); otherwise from the table's owners.
	HoldersWalked bool `json:"holders_walked"`
	// Processes hold the sockets, worst first (most sockets, then oldest).
	// A socket held by several processes counts for each of them.
	Processes []CloseWaitProcess `json:"processes"`
	// Orphans are CLOSE_WAIT sockets that no process holds: connections
	// still in a listener's accept queue, or sockets whose file is gone.
	Orphans []CloseWaitSocket `json:"orphans"`
	// Shared are the sockets held by more than one process (fork, fd
	// passing), with every holder.
	Shared []CloseWaitSocket `json:"shared"`
}

// CloseWaitProcess is one process holding CLOSE_WAIT sockets.
type CloseWaitProcess struct {
	PID     uint32 `json:"pid"`
	Comm    string `json:"comm"`              // escaped
	Cmdline string `json:"cmdline,omitempty"` // escaped, arguments joined by spaces
	Count   int    `json:"count"`
	// Shared counts the sockets of Count that other processes hold too.
	Shared int `json:"shared,omitempty"`
	Oldest Age `json:"oldest"`
	Median Age `json:"median"`
	// FDs are the process's file descriptors of these sockets, ascending
	// (those known).
	FDs        []int32     `json:"fds"`
	LocalPorts []PortCount `json:"local_ports"`
	Peers      []PeerCount `json:"peers"`
	// GrowthPerSec is the change of Count per second over the History
	// window (up to a minute), nil when there is no earlier report.
	GrowthPerSec *float64 `json:"growth_per_sec,omitempty"`
	// FromTable: no walk found the holder; the table's owner is shown.
	FromTable bool `json:"from_table,omitempty"`
}

// CloseWaitSocket is one CLOSE_WAIT socket.
type CloseWaitSocket struct {
	Key    uint64         `json:"key"`
	NetNS  uint32         `json:"netns"`
	Local  netip.AddrPort `json:"local"`
	Remote netip.AddrPort `json:"remote"`
	Age    Age            `json:"age"`
	// Holders of a shared socket.
	Holders []Holder `json:"holders,omitempty"`
	// Orphans: why no process holds it, and the process the table last
	// knew for it (the listener's owner for a connection never accepted).
	Reason    string  `json:"reason,omitempty"`
	LastOwner *Holder `json:"last_owner,omitempty"`
}

// Orphan reasons.
const (
	ReasonNotAccepted = "not accepted" // in a listener's accept queue
	ReasonNoHolder    = "no holder"    // no file refers to it
)

// CloseWait builds the CLOSE_WAIT report from the table.
func CloseWait(tab *table.Table, opts CloseWaitOptions) *CloseWaitReport {
	if opts.Top == 0 {
		opts.Top = 5
	}
	rep := &CloseWaitReport{Mono: opts.Now, NetNS: opts.NetNS, MinAgeNs: int64(opts.MinAge),
		HoldersWalked: opts.Holders != nil, Processes: []CloseWaitProcess{}, Orphans: []CloseWaitSocket{}, Shared: []CloseWaitSocket{}}
	var socks []table.Entry
	listeners := map[listenKey]*Holder{} // the listener's owner, nil when not known
	tab.Each(event.StateMask(0).With(event.CloseWait).With(event.Listen), func(e *table.Entry) bool {
		if opts.NetNS != 0 && e.NetNS != opts.NetNS {
			return true
		}
		if e.State == event.Listen {
			var o *Holder
			if e.OwnerKnown {
				o = &Holder{PID: e.Owner.PID, Comm: commString(&e.Owner), FD: e.FD}
			}
			listeners[listenKey{e.NetNS, e.Local.Port()}] = o
		} else {
			socks = append(socks, *e)
		}
		return true
	})

	type acc struct {
		p     CloseWaitProcess
		ages  []Age
		ports map[uint16]int
		peers map[netip.Addr]int
		ns    uint32
	}
	procs := map[uint32]*acc{}
	add := func(h Holder, e *table.Entry, age Age, shared, fromTable bool) {
		a := procs[h.PID]
		if a == nil {
			a = &acc{p: CloseWaitProcess{PID: h.PID, Comm: h.Comm, FDs: []int32{}}, ports: map[uint16]int{}, peers: map[netip.Addr]int{}, ns: e.NetNS}
			procs[h.PID] = a
		}
		a.p.Count++
		if shared {
			a.p.Shared++
		}
		if fromTable {
			a.p.FromTable = true
		}
		if h.FD >= 0 {
			a.p.FDs = append(a.p.FDs, h.FD)
		}
		a.ages = append(a.ages, age)
		a.ports[e.Local.Port()]++
		a.peers[e.Remote.Addr().Unmap()]++
	}

	for i := range socks {
		e := &socks[i]
		age := ageOf(e, opts.Now)
		if age.Duration() < opts.MinAge {
			rep.Younger++
			continue
		}
		rep.Total++
		sock := CloseWaitSocket{Key: e.Key, NetNS: e.NetNS, Local: unmap(e.Local), Remote: unmap(e.Remote), Age: age}
		var holders []Holder
		if opts.Holders != nil {
			holders = uniqueHolders(opts.Holders[e.Key])
		}
		// A socket with a file whose holder the walk did not see (it entered
		// CLOSE_WAIT after the walk, or no walk was made): the table's owner.
		fromTable := false
		if len(holders) == 0 && tableHeld(e) {
			holders = []Holder{{PID: e.Owner.PID, Comm: commString(&e.Owner), FD: e.FD}}
			fromTable = true
		}
		switch {
		case len(holders) == 0:
			// A CLOSE_WAIT socket without a file was never accepted (close()
			// would have moved it on to LAST_ACK): it waits in the accept
			// queue of the listener on its port.
			sock.Reason = ReasonNoHolder
			if e.OwnerKnown {
				sock.LastOwner = &Holder{PID: e.Owner.PID, Comm: commString(&e.Owner), FD: -1}
			}
			if lo, ok := listeners[listenKey{e.NetNS, e.Local.Port()}]; ok && e.Inode == 0 {
				sock.Reason = ReasonNotAccepted
				if lo != nil {
					l := *lo
					sock.LastOwner = &l
				}
			} else if e.Inode == 0 && e.Source == event.OwnerListener {
				sock.Reason = ReasonNotAccepted
			}
			rep.Orphans = append(rep.Orphans, sock)
			continue
		case distinctPIDs(holders) > 1:
			sock.Holders = holders
			rep.Shared = append(rep.Shared, sock)
		}
		seen := map[uint32]bool{}
		for _, h := range holders {
			shared := len(sock.Holders) > 0
			if seen[h.PID] {
				// The same process holds the socket twice (dup): one socket,
				// one more fd.
				if h.FD >= 0 {
					procs[h.PID].p.FDs = append(procs[h.PID].p.FDs, h.FD)
				}
				continue
			}
			seen[h.PID] = true
			add(h, e, age, shared, fromTable)
		}
	}

	var counts map[uint32]int
	if opts.History != nil {
		counts = make(map[uint32]int, len(procs))
	}
	for pid, a := range procs {
		slices.Sort(a.p.FDs)
		a.p.Oldest, a.p.Median = oldestMedian(a.ages)
		a.p.LocalPorts = topPorts(a.ports, func(p uint16) bool { _, ok := listeners[listenKey{a.ns, p}]; return ok }, opts.Top)
		a.p.Peers = topPeers(a.peers, opts.Top)
		if opts.Cmdline != nil {
			if b, err := opts.Cmdline(pid); err == nil {
				a.p.Cmdline = cmdlineString(b)
			}
		}
		if counts != nil {
			counts[pid] = a.p.Count
		}
		rep.Processes = append(rep.Processes, a.p)
	}
	if opts.History != nil {
		rates := opts.History.add(opts.Now, counts)
		for i := range rep.Processes {
			if r, ok := rates[rep.Processes[i].PID]; ok {
				rep.Processes[i].GrowthPerSec = &r
			}
		}
	}
	slices.SortFunc(rep.Processes, func(a, b CloseWaitProcess) int {
		return worstFirst(a.Count, b.Count, a.Oldest, b.Oldest, a.PID, b.PID)
	})
	bySockAge := func(a, b CloseWaitSocket) int {
		return cmp.Or(cmp.Compare(b.Age.Ns, a.Age.Ns), cmp.Compare(a.Key, b.Key))
	}
	slices.SortFunc(rep.Orphans, bySockAge)
	slices.SortFunc(rep.Shared, bySockAge)
	return rep
}

// tableHeld: the table's owner of a CLOSE_WAIT socket holds it now (the
// socket has a file, and the owner is not just the last one known).
func tableHeld(e *table.Entry) bool {
	return e.Inode != 0 && e.OwnerKnown && !e.LastOwner
}

// worstFirst orders processes by CLOSE_WAIT sockets held, then by the
// oldest, then by pid.
func worstFirst(countA, countB int, oldestA, oldestB Age, pidA, pidB uint32) int {
	return cmp.Or(cmp.Compare(countB, countA), cmp.Compare(oldestB.Ns, oldestA.Ns), cmp.Compare(pidA, pidB))
}

// CloseWaitCount is one process's CLOSE_WAIT sockets.
type CloseWaitCount struct {
	PID    uint32
	Comm   string // escaped
	Count  int
	Oldest Age
}

// CloseWaitCounts counts CLOSE_WAIT sockets per process as CloseWait does
// without Holders (the table's owners), worst first as CloseWait orders
// them, and the sockets no process holds (CloseWait's orphans). For callers
// that ask often (a metrics scrape): it copies no entries and keeps no
// per-socket detail.
func CloseWaitCounts(tab *table.Table, now uint64) (procs []CloseWaitCount, orphans int) {
	byPID := map[uint32]int{} // index into procs
	tab.Each(event.StateMask(0).With(event.CloseWait), func(e *table.Entry) bool {
		if !tableHeld(e) {
			orphans++
			return true
		}
		i, ok := byPID[e.Owner.PID]
		if !ok {
			i = len(procs)
			byPID[e.Owner.PID] = i
			procs = append(procs, CloseWaitCount{PID: e.Owner.PID, Comm: commString(&e.Owner)})
		}
		p := &procs[i]
		p.Count++
		if age := ageOf(e, now); age.Ns > p.Oldest.Ns {
			p.Oldest = age
		}
		return true
	})
	slices.SortFunc(procs, func(a, b CloseWaitCount) int {
		return worstFirst(a.Count, b.Count, a.Oldest, b.Oldest, a.PID, b.PID)
	})
	return procs, orphans
}

// StateAge is how long e has been in its state at now (a lower bound when
// it entered the state before tracing), as the reports count it.
func StateAge(e *table.Entry, now uint64) Age { return ageOf(e, now) }

// ageOf is how long e has been in its state at now.
func ageOf(e *table.Entry, now uint64) Age {
	switch {
	case e.Since != 0 && e.Since <= now:
		return Age{Ns: int64(now - e.Since)}
	case e.SinceBound != 0 && e.SinceBound <= now:
		return Age{Ns: int64(now - e.SinceBound), AtLeast: true}
	}
	return Age{AtLeast: true}
}

// oldestMedian returns the largest and the median age (the lower middle of
// an even count); a median is a lower bound when any age up to it is.
func oldestMedian(ages []Age) (Age, Age) {
	if len(ages) == 0 {
		return Age{}, Age{}
	}
	slices.SortFunc(ages, func(a, b Age) int { return cmp.Compare(a.Ns, b.Ns) })
	return ages[len(ages)-1], ages[(len(ages)-1)/2]
}

// uniqueHolders drops repeated (pid, fd) pairs and orders by pid, fd.
func uniqueHolders(hs []Holder) []Holder {
	if len(hs) == 0 {
		return nil
	}
	out := slices.Clone(hs)
	slices.SortFunc(out, func(a, b Holder) int { return cmp.Or(cmp.Compare(a.PID, b.PID), cmp.Compare(a.FD, b.FD)) })
	return slices.CompactFunc(out, func(a, b Holder) bool { return a.PID == b.PID && a.FD == b.FD })
}

func distinctPIDs(hs []Holder) int {
	n := 0
	for i := range hs {
		if i == 0 || hs[i].PID != hs[i-1].PID {
			n++
		}
	}
	return n
}

// CloseWaitHistory keeps the per-process counts of recent reports, for
// growth rates. Safe for concurrent use.
type CloseWaitHistory struct {
	mu      sync.Mutex
	samples []cwSample
	// Window is how far back a rate looks (default one minute).
	Window time.Duration
}

type cwSample struct {
	mono   uint64
	counts map[uint32]int
}

// add records a report's counts and returns, for every process in it, the
// change per second since the oldest sample within the window. A process
// missing from an old sample had no CLOSE_WAIT sockets then.
func (h *CloseWaitHistory) add(now uint64, counts map[uint32]int) map[uint32]float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	win := h.Window
	if win == 0 {
		win = time.Minute
	}
	for len(h.samples) > 1 && now-h.samples[0].mono > uint64(win) && now-h.samples[1].mono >= uint64(win) {
		h.samples = h.samples[1:]
	}
	var rates map[uint32]float64
	if len(h.samples) > 0 && now > h.samples[0].mono {
		old := h.samples[0]
		secs := float64(now-old.mono) / 1e9
		rates = make(map[uint32]float64, len(counts))
		for pid, c := range counts {
			rates[pid] = float64(c-old.counts[pid]) / secs
		}
	}
	h.samples = append(h.samples, cwSample{mono: now, counts: counts})
	return rates
}
