// Package table keeps the live table of every TCP socket on the host, per
// state, driven only by events (event.Event) and by seed walks of the
// kernel's socket tables (event.Socket). It is plain Go: no BPF.
//
// # Layout
//
// Entries live in a slab of fixed-size chunks ([]entry of chunkSize each;
// growing never copies existing entries, so no latency spike at 1M
// sockets) with a free list threaded through the entries' next field. A
// map[uint64]uint32 finds an entry's slot by key. Every live entry is on
// exactly one intrusive doubly-linked list, that of its state (int32
// prev/next slot indices), so iterating one state touches only its sockets,
// and counts per state and per network namespace are maintained on every
// change, O(1) to read. Entries hold no pointers (the GC does not scan the
// slab): addresses are [16]byte plus ports, owners and network namespaces
// are interned into small side tables with reference counts (an entry holds
// a uint32 index; index slots are reused when their count drops to zero, so
// neither side table grows without bound as processes and namespaces come
// and go).
//
// # Concurrency
//
// One goroutine applies events (Apply, ApplyBatch, BeginSync, EndSync);
// any number of others read (Counts, Each, Lookup, ...). A sync.RWMutex
// protects the table; ApplyBatch takes it once per batch. Changed and
// Version may be used without the lock.
//
// # Transition matrix
//
// Transitions counts the logical state changes of the sockets the table
// tracks, from -> to:
//   - a Transition event counts Old -> New; except the full socket's
//     FIN_WAIT2/CLOSING -> CLOSE that follows its TimewaitStart (the socket
//     lives on as a timewait socket: that hand-over was already counted);
//   - a TimewaitStart counts <previous state> -> New (TIME_WAIT or
//     FIN_WAIT2) when it replaces an entry in another state (a full socket
//     in FIN_WAIT2 becoming an orphan FIN_WAIT2 timewait socket is not a
//     state change; a FIN_WAIT2 timewait socket re-armed as TIME_WAIT
//     counts FIN_WAIT2 -> TIME_WAIT); one for a socket the table did not
//     know counts nothing;
//   - a TimewaitStop that removes an entry counts <state> -> CLOSE;
//   - request sockets use the NEW_SYN_RECV row and column, so that they do
//     not double the children's LISTEN -> SYN_RECV: RequestStart of a new
//     request counts LISTEN -> NEW_SYN_RECV, RequestStop that removes one
//     counts NEW_SYN_RECV -> CLOSE (completed handshakes included: those
//     then show up as the child's LISTEN -> SYN_RECV).
//
// # State times
//
// Since is the time the socket entered its state: the Mono of the event
// that put it there. A TimewaitStart that does not change the state (a
// re-arm, or an orphan full socket in FIN_WAIT2 handed over to a FIN_WAIT2
// timewait socket) keeps it. Sockets found only by a seed walk have Since 0
// and SinceBound the walk's time, unless the walk reported their Since.
//
// A re-arm (a stop immediately followed by a start of the same socket with
// the same tuple) is not a change: inside one ApplyBatch the stop is
// skipped; across calls the start restores the removed entry's Since,
// SeenAt and owner and takes back the stop's count (the removal and
// re-insertion are then visible to OnChange and to readers in between).
package table

import (
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
)

const (
	chunkShift = 12
	chunkSize  = 1 << chunkShift
	chunkMask  = chunkSize - 1
	nilSlot    = int32(-1)
	nStates    = int(event.MaxState) + 1

	// memoN stopped timewait/request entries are remembered so that a
	// re-arm split across calls keeps Since; memoWindow bounds the time
	// between the stop and the start of a re-arm.
	memoN      = 8
	memoWindow = uint64(10 * time.Millisecond)
	// lookahead is how many following events ApplyBatch searches for the
	// start that makes a stop a re-arm.
	lookahead = 8
)

// Counts is a number of sockets per state, indexed by event.State.
type Counts [event.MaxState + 1]int

// Total returns the sum over all states.
func (c Counts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// Matrix counts transitions: [from][to].
type Matrix [event.MaxState + 1][event.MaxState + 1]uint64

// entry flags
const (
	fV4 uint8 = 1 << iota
	fV6
	fLastOwner    // owner held the socket last and does not now (timewait)
	fSeedOnly     // known only from a seed walk: no event applied yet
	fSinceUnknown // since is a lower bound (the seed time), not the entry time
	fSeedPending  // merged by SyncPart in the current sync, no event since (meaningful only while parted)
	fQueued       // has a deadline in the heap (setExpires)
)

// entry is one socket. 104 bytes, no pointers. A free slot has state 0.
type entry struct {
	key     uint64
	since   uint64
	seen    uint64
	expires uint64
	inode   uint64
	local   [16]byte
	remote  [16]byte
	uid     uint32
	owner   uint32 // index into Table.owners, 0 = none
	ns      uint32 // index into Table.nss
	fd      int32
	prev    int32
	next    int32
	lport   uint16
	rport   uint16
	state   event.State
	kind    event.SocketKind
	flags   uint8
	source  event.OwnerSource
}

type ownerRec struct {
	task event.Task
	refs uint32
}

type nsRec struct {
	inode  uint32
	refs   int
	counts Counts
}

// stopMemo remembers a removed timewait or request entry for re-arms.
type stopMemo struct {
	key, mono, since, seen uint64
	local, remote          [16]byte
	lport, rport           uint16
	owner                  event.Task
	hasOwner               bool
	source                 event.OwnerSource
	state                  event.State
	kind                   event.SocketKind
	flags                  uint8
	valid                  bool
}

// Entry is a copy of one socket of the table.
type Entry struct {
	Key    uint64
	Kind   event.SocketKind
	State  event.State
	Family event.Family
	Local  netip.AddrPort
	Remote netip.AddrPort
	NetNS  uint32
	UID    uint32
	Inode  uint64 // 0 when no file refers to the socket
	// Owner is valid with OwnerKnown. With LastOwner it is the process that
	// held the socket last and no longer does (timewait sockets: the owner
	// of the full socket, i.e. the side that closed first).
	Owner      event.Task
	OwnerKnown bool
	LastOwner  bool
	Source     event.OwnerSource
	FD         int32 // owner's file descriptor, -1 when not known
	// Since is the kernel CLOCK_MONOTONIC time the socket entered State, 0
	// when not known. Then SinceBound is a time at which the socket was
	// already in State (the seed walk that found it there).
	Since      uint64
	SinceBound uint64
	// SeenAt is when the table first saw the socket (event or seed time).
	SeenAt uint64
	// SeedOnly: the socket is known only from a seed walk, no event yet.
	SeedOnly bool
	// Expires is the CLOCK_MONOTONIC time the timer of a timewait or
	// request socket fires, 0 when not known or for full sockets.
	Expires uint64
}

// Stats are counters of the table's life.
type Stats struct {
	Applied    uint64 // events applied
	Mismatches uint64 // transitions whose Old disagreed with the table
	Unknown    uint64 // transitions of sockets the table did not know
	Benign     uint64 // transitions to the state the table already had (seed race)
	Absorbed   uint64 // full socket -> CLOSE handed over to a timewait entry
	Rearms     uint64 // timewait/request timer re-arms recognised
	Invalid    uint64 // events with an unknown kind or state, ignored
	Overdue    uint64 // timewait/request entries dropped after their timer's deadline passed without a stop
	Resyncs    uint64 // EndSync calls, the first seed included
	LastSync   SyncResult
}

// SyncResult reports one EndSync.
type SyncResult struct {
	Added     int // snapshot sockets the table did not have
	Changed   int // entries the snapshot corrected
	Unchanged int // entries the snapshot agreed with
	Removed   int // entries absent from the snapshot (in walked namespaces)
	Skipped   int // snapshot sockets touched by events during the walk
	Ignored   int // snapshot sockets in CLOSE or an invalid state
	Duration  time.Duration
}

// Table is the live socket table. The zero value is not usable: use New.
type Table struct {
	mu sync.RWMutex

	chunks [][]entry
	nslots uint32 // slots handed out (high-water mark)
	free   int32  // free list head
	index  map[uint64]uint32
	heads  [nStates]int32
	counts Counts
	n      int

	owners    []ownerRec // owners[0] unused
	ownerIdx  map[event.Task]uint32
	ownerFree []uint32

	nss    []nsRec
	nsIdx  map[uint32]uint32
	nsFree []uint32

	trans Matrix
	stats Stats

	syncing bool
	touched map[uint64]struct{}
	// seedEmpty: the table was empty at BeginSync, so SyncPart may merge
	// ahead of EndSync; parted: it did, and partRes counts what it merged.
	seedEmpty, parted bool
	partRes           SyncResult
	partDups          map[uint64][2]int // sockets SyncPart met twice: copies counted changed, unchanged

	memo     [memoN]stopMemo
	memoNext int

	dirty      bool
	version    atomic.Uint64
	mismatches atomic.Uint64 // stats.Mismatches + stats.Unknown, for Mismatches
	changed    chan struct{}

	hook             func(old, new *Entry, ev *event.Event)
	hookOld, hookNew Entry

	// deadlines of timewait and request entries' kernel timers, for
	// DropOverdue, earliest first.
	deadlines deadlines
}

// New returns an empty table.
func New() *Table {
	t := &Table{
		free:     nilSlot,
		index:    make(map[uint64]uint32),
		owners:   make([]ownerRec, 1),
		ownerIdx: make(map[event.Task]uint32),
		nsIdx:    make(map[uint32]uint32),
		changed:  make(chan struct{}, 1),
	}
	for i := range t.heads {
		t.heads[i] = nilSlot
	}
	return t
}

// AddOnChange adds fn to the functions called for every change of an entry:
// old nil for an insertion, new nil for a removal, ev the event that caused
// it (nil for EndSync). Several views (top's rates, timewait's tracker, the
// exporter) may watch one table; they run in the order added. fn runs with
// the table's write lock held: it must be quick, must not call the Table's
// methods, and must not keep the pointers.
func (t *Table) AddOnChange(fn func(old, new *Entry, ev *event.Event)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if prev := t.hook; prev != nil {
		t.hook = func(old, new *Entry, ev *event.Event) { prev(old, new, ev); fn(old, new, ev) }
		return
	}
	t.hook = fn
}

// --- slab, lists, interning -------------------------------------------------

func (t *Table) at(slot uint32) *entry {
	return &t.chunks[slot>>chunkShift][slot&chunkMask]
}

func (t *Table) alloc() uint32 {
	if t.free != nilSlot {
		s := uint32(t.free)
		t.free = t.at(s).next
		return s
	}
	s := t.nslots
	if int(s>>chunkShift) >= len(t.chunks) {
		t.chunks = append(t.chunks, make([]entry, chunkSize))
	}
	t.nslots++
	return s
}

func (t *Table) link(slot uint32, en *entry) {
	st := en.state
	en.prev = nilSlot
	en.next = t.heads[st]
	if en.next != nilSlot {
		t.at(uint32(en.next)).prev = int32(slot)
	}
	t.heads[st] = int32(slot)
	t.counts[st]++
	t.nss[en.ns].counts[st]++
}

func (t *Table) unlink(slot uint32, en *entry) {
	st := en.state
	if en.prev != nilSlot {
		t.at(uint32(en.prev)).next = en.next
	} else {
		t.heads[st] = en.next
	}
	if en.next != nilSlot {
		t.at(uint32(en.next)).prev = en.prev
	}
	t.counts[st]--
	t.nss[en.ns].counts[st]--
}

func (t *Table) ownerRef(task *event.Task) uint32 {
	if i, ok := t.ownerIdx[*task]; ok {
		t.owners[i].refs++
		return i
	}
	var i uint32
	if n := len(t.ownerFree); n > 0 {
		i = t.ownerFree[n-1]
		t.ownerFree = t.ownerFree[:n-1]
		t.owners[i] = ownerRec{task: *task, refs: 1}
	} else {
		i = uint32(len(t.owners))
		t.owners = append(t.owners, ownerRec{task: *task, refs: 1})
	}
	t.ownerIdx[*task] = i
	return i
}

func (t *Table) ownerUnref(i uint32) {
	if i == 0 {
		return
	}
	o := &t.owners[i]
	if o.refs--; o.refs == 0 {
		delete(t.ownerIdx, o.task)
		t.ownerFree = append(t.ownerFree, i)
	}
}

// setOwner points en at task; it does not allocate when the owner is
// unchanged or already interned.
func (t *Table) setOwner(en *entry, task *event.Task) {
	if en.owner != 0 && t.owners[en.owner].task == *task {
		return
	}
	i := t.ownerRef(task)
	t.ownerUnref(en.owner)
	en.owner = i
}

func (t *Table) nsRef(inode uint32) uint32 {
	if i, ok := t.nsIdx[inode]; ok {
		t.nss[i].refs++
		return i
	}
	var i uint32
	if n := len(t.nsFree); n > 0 {
		i = t.nsFree[n-1]
		t.nsFree = t.nsFree[:n-1]
		t.nss[i] = nsRec{inode: inode, refs: 1}
	} else {
		i = uint32(len(t.nss))
		t.nss = append(t.nss, nsRec{inode: inode, refs: 1})
	}
	t.nsIdx[inode] = i
	return i
}

func (t *Table) nsUnref(i uint32) {
	r := &t.nss[i]
	if r.refs--; r.refs == 0 {
		delete(t.nsIdx, r.inode)
		t.nsFree = append(t.nsFree, i)
	}
}

// insert allocates an entry for key in state st of namespace netns and
// links it. The caller fills the rest; fields not set are zero, fd -1.
func (t *Table) insert(key uint64, st event.State, kind event.SocketKind, netns uint32, seen uint64) (uint32, *entry) {
	slot := t.alloc()
	en := t.at(slot)
	*en = entry{key: key, seen: seen, state: st, kind: kind, fd: -1, ns: t.nsRef(netns)}
	t.index[key] = slot
	t.link(slot, en)
	t.n++
	t.dirty = true
	return slot, en
}

// move changes the state, kind and namespace of a linked entry.
func (t *Table) move(slot uint32, en *entry, st event.State, kind event.SocketKind, netns uint32) {
	nsChanged := t.nss[en.ns].inode != netns
	if en.state == st && !nsChanged {
		en.kind = kind
		return
	}
	t.unlink(slot, en)
	if nsChanged {
		t.nsUnref(en.ns)
		en.ns = t.nsRef(netns)
	}
	en.state, en.kind = st, kind
	t.link(slot, en)
}

func (t *Table) remove(slot uint32, en *entry, ev *event.Event) {
	old := t.hookPre(en)
	t.unlink(slot, en)
	t.nsUnref(en.ns)
	t.ownerUnref(en.owner)
	delete(t.index, en.key)
	*en = entry{next: t.free, prev: nilSlot}
	t.free = int32(slot)
	t.n--
	t.dirty = true
	t.hookPost(old, nil, ev)
}

func (t *Table) hookPre(en *entry) *Entry {
	if t.hook == nil || en == nil {
		return nil
	}
	t.export(en, &t.hookOld)
	return &t.hookOld
}

func (t *Table) hookPost(old *Entry, en *entry, ev *event.Event) {
	if t.hook == nil {
		return
	}
	var nw *Entry
	if en != nil {
		t.export(en, &t.hookNew)
		nw = &t.hookNew
	}
	if old != nil || nw != nil {
		t.hook(old, nw, ev)
	}
}

func famFlags(f event.Family, a netip.Addr) uint8 {
	switch {
	case f == event.IPv4:
		return fV4
	case f == event.IPv6:
		return fV6
	case a.Is4():
		return fV4
	case a.Is6():
		return fV6
	}
	return 0
}

// setTuple stores the event's tuple; with keepPort a zero local port does
// not overwrite a known one.
func setTuple(en *entry, f event.Family, local, remote netip.AddrPort, keepPort bool) {
	en.flags = en.flags&^(fV4|fV6) | famFlags(f, local.Addr())
	en.local = local.Addr().As16()
	en.remote = remote.Addr().As16()
	if p := local.Port(); p != 0 || !keepPort {
		en.lport = p
	}
	en.rport = remote.Port()
}

func (t *Table) export(en *entry, out *Entry) {
	*out = Entry{
		Key:     en.key,
		Kind:    en.kind,
		State:   en.state,
		NetNS:   t.nss[en.ns].inode,
		UID:     en.uid,
		Inode:   en.inode,
		Source:  en.source,
		FD:      en.fd,
		SeenAt:  en.seen,
		Expires: en.expires,
	}
	switch {
	case en.flags&fV4 != 0:
		out.Family = event.IPv4
		out.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte(en.local[12:])), en.lport)
		out.Remote = netip.AddrPortFrom(netip.AddrFrom4([4]byte(en.remote[12:])), en.rport)
	case en.flags&fV6 != 0:
		out.Family = event.IPv6
		out.Local = netip.AddrPortFrom(netip.AddrFrom16(en.local), en.lport)
		out.Remote = netip.AddrPortFrom(netip.AddrFrom16(en.remote), en.rport)
	}
	if en.owner != 0 {
		out.Owner = t.owners[en.owner].task
		out.OwnerKnown = true
		out.LastOwner = en.flags&fLastOwner != 0
	}
	if en.flags&fSinceUnknown != 0 {
		out.SinceBound = en.since
	} else {
		out.Since = en.since
	}
	out.SeedOnly = en.flags&fSeedOnly != 0
}

// --- readers ----------------------------------------------------------------

// Len returns the number of sockets in the table.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.n
}

// Counts returns the number of sockets per state.
func (t *Table) Counts() Counts {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.counts
}

// CountsByNetNS returns the number of sockets per state of every network
// namespace that has any.
func (t *Table) CountsByNetNS() map[uint32]Counts {
	t.mu.RLock()
	defer t.mu.RUnlock()
	m := make(map[uint32]Counts, len(t.nsIdx))
	for inode, i := range t.nsIdx {
		m[inode] = t.nss[i].counts
	}
	return m
}

// Each calls fn for every socket in states (0: all states), state by state,
// until fn returns false. The *Entry is reused between calls. Each holds
// the read lock: fn must not call the Table's methods.
func (t *Table) Each(states event.StateMask, fn func(*Entry) bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var e Entry
	for st := event.Established; st <= event.MaxState; st++ {
		if states != 0 && !states.Has(st) {
			continue
		}
		for s := t.heads[st]; s != nilSlot; {
			en := t.at(uint32(s))
			s = en.next
			t.export(en, &e)
			if !fn(&e) {
				return
			}
		}
	}
}

// Lookup returns the socket with the key.
func (t *Table) Lookup(key uint64) (Entry, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	slot, ok := t.index[key]
	if !ok {
		return Entry{}, false
	}
	var e Entry
	t.export(t.at(slot), &e)
	return e, true
}

// Transitions returns a copy of the transition matrix (see the package
// documentation for what is counted).
func (t *Table) Transitions() Matrix {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.trans
}

// Stats returns the table's counters.
func (t *Table) Stats() Stats {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.stats
}

// Mismatches returns how many transitions contradicted the table (wrong
// Old state, or a socket it did not know): each is a sign of lost events,
// and a reason to resync. It takes no lock, so that the ring reader, which
// must never wait for the table, can watch it; it is current as of the
// last change applied.
func (t *Table) Mismatches() uint64 { return t.mismatches.Load() }

// Changed returns a channel that receives (coalesced: buffer 1) after
// changes of the table.
func (t *Table) Changed() <-chan struct{} { return t.changed }

// Version returns a number that grows with every change of the table.
func (t *Table) Version() uint64 { return t.version.Load() }

// publish makes a change visible to Changed and Version. Write lock held.
func (t *Table) publish() {
	t.mismatches.Store(t.stats.Mismatches + t.stats.Unknown)
	if !t.dirty {
		return
	}
	t.dirty = false
	t.version.Add(1)
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// DropOverdue removes the timewait and request entries whose kernel timer
// (Expires) passed more than grace before now (CLOCK_MONOTONIC) with no stop
// event: the kernel has freed them, so the stop was missed (a timer firing
// the tracer could not see). It counts them in Stats.Overdue and returns how
// many it dropped. It looks only at entries whose deadline has passed.
//
// The deadlines of entries whose stop came stay queued until they come up,
// and under churn a second's worth come up together (a wave of the
// kernel's expiries: 40k a second here). So the work is done in chunks of
// overdueChunk deadlines, each under the lock on its own, letting the ring
// reader in between: one call for a whole wave held the lock for tens of
// milliseconds (BenchmarkDropOverdueWave), and every event waited.
func (t *Table) DropOverdue(now, grace uint64) int {
	n := 0
	for {
		dropped, more := t.dropOverdueChunk(now, grace)
		n += dropped
		if !more {
			return n
		}
		runtime.Gosched()
	}
}

// overdueChunk bounds the deadlines DropOverdue takes under one hold of the
// lock: ~0.1 ms of work.
const overdueChunk = 512

func (t *Table) dropOverdueChunk(now, grace uint64) (n int, more bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for taken := 0; len(t.deadlines) > 0 && t.deadlines[0].at+grace < now; taken++ {
		if taken == overdueChunk {
			more = true
			break
		}
		d := t.deadlines.pop()
		slot, ok := t.index[d.key]
		if !ok {
			continue // gone: its stop came
		}
		en := t.at(slot)
		if en.kind == event.FullSocket || en.expires == 0 {
			en.flags &^= fQueued
			continue
		}
		if en.expires+grace >= now {
			// Re-armed to a later deadline since (setExpires does not
			// push those): wait for that one.
			t.deadlines.push(deadline{at: en.expires, key: en.key})
			continue
		}
		from := en.state
		if en.kind == event.RequestSocket {
			from = event.NewSynRecv
		}
		t.trans[from][event.Close]++
		t.remove(slot, en, nil)
		n++
	}
	if len(t.deadlines) == 0 && cap(t.deadlines) > 1<<16 {
		t.deadlines = nil // a burst's worth is not kept
	}
	t.stats.Overdue += uint64(n)
	t.publish()
	return n, more
}

// setExpires sets when the kernel timer of the timewait or request entry en
// fires (0: none) and makes sure DropOverdue looks at it by then: an entry
// has one deadline in the heap, pushed again only when its timer moves
// earlier. A later one (a re-armed timer, or the same timer reported again:
// every packet that reaches a timewait socket reports it) is picked up when
// the queued deadline comes up, so a flood of such reports cannot grow the
// heap.
func (t *Table) setExpires(en *entry, at uint64) {
	old := en.expires
	en.expires = at
	// (old 0: the entry was not timed, and what it queued then may be late.
	// The slack: a resync's walk reads each timer against the walk's start,
	// a little earlier than events did; that must not queue a copy each time.)
	if at != 0 && (en.flags&fQueued == 0 || old == 0 || at+deadlineSlack < old) {
		t.deadlines.push(deadline{at: at, key: en.key})
		en.flags |= fQueued
	}
}

// deadline says that DropOverdue should look at the entry with key at (plus
// its grace). Entries that go leave theirs in the heap, skipped when they
// come up: that costs less than finding them (and DropOverdue's earlier scan
// of every timewait entry once a second held the table's lock for
// milliseconds with 131k of them).
type deadline struct{ at, key uint64 }

// deadlineSlack is how much earlier a timer may move without a deadline of
// its own: DropOverdue then looks at the entry that much late at most.
const deadlineSlack = uint64(2 * time.Second)

// deadlines is a binary min-heap by at (container/heap would box each
// element into an interface, an allocation per push).
type deadlines []deadline

func (h *deadlines) push(d deadline) {
	*h = append(*h, d)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if s[p].at <= s[i].at {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

func (h *deadlines) pop() deadline {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		m, l, r := i, 2*i+1, 2*i+2
		if l < len(s) && s[l].at < s[m].at {
			m = l
		}
		if r < len(s) && s[r].at < s[m].at {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}
