package loader_test

// Integration tests: load the real tracer, drive sockets from separate
// processes with distinct comms (sockproc), and compare what the kernel
// reported, socket by socket, with what the scenario did.
//
// Separate processes matter: transitions that run in softirq run on whatever
// task is on the CPU -- on loopback, usually the peer -- so a single process
// playing both ends could not tell a right owner from a wrong one.

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/internal/sockproc"
	"github.com/tcpscope/tcpscope/tracer/loader"
)

// eventTimeout bounds every wait for events to arrive.
const eventTimeout = 5 * time.Second

// ---- harness ---------------------------------------------------------------

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs, attaches tracepoints and creates network namespaces")
	}
}

// collector is a loader.Sink keeping a copy of every event, indexed by port
// so that tests stay fast while other TCP traffic runs on the machine.
type collector struct {
	mu     sync.Mutex
	evs    []event.Event
	byPort map[uint16][]int // local or remote port -> indexes into evs
	lost   []loader.Stats
}

func (c *collector) Event(e *event.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byPort == nil {
		c.byPort = map[uint16][]int{}
	}
	i := len(c.evs)
	c.evs = append(c.evs, *e)
	c.byPort[e.Local.Port()] = append(c.byPort[e.Local.Port()], i)
	if e.Remote.Port() != e.Local.Port() {
		c.byPort[e.Remote.Port()] = append(c.byPort[e.Remote.Port()], i)
	}
}

func (c *collector) Drained() {}

func (c *collector) Lost(s loader.Stats) {
	c.mu.Lock()
	c.lost = append(c.lost, s)
	c.mu.Unlock()
}

// all returns a copy of every event so far.
func (c *collector) all() []event.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]event.Event(nil), c.evs...)
}

// mark is the position of the next event.
func (c *collector) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.evs)
}

// withPort returns, in arrival order, the events from position from on with
// port as local or remote port.
func (c *collector) withPort(port uint16, from int) []event.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []event.Event
	for _, j := range c.byPort[port] {
		if j >= from {
			out = append(out, c.evs[j])
		}
	}
	return out
}

type tracing struct {
	tr   *loader.Tracer
	col  *collector
	from int // scenarios look at events from here on (see begin)
}

// begin starts a new scenario on a shared tracer: events that arrived before
// are ignored, so that a port the kernel hands out again does not mix two
// scenarios' sockets.
func (tc *tracing) begin() { tc.from = tc.col.mark() }

// startTracer loads and runs the tracer until the test ends. At the end it
// checks that nothing was lost, then stops it (bounded) and frees it.
func startTracer(t *testing.T, cfg loader.Config) *tracing {
	t.Helper()
	requireRoot(t)
	tr, err := loader.New(cfg)
	if err != nil {
		t.Fatalf("loader.New: %v", err)
	}
	for _, w := range tr.Warnings() {
		t.Logf("tracer warning: %s", w)
	}
	col := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx, col) }()
	t.Cleanup(func() {
		// Losses are logged, not failed: a scenario that lost one of its own
		// events fails its checks, and other TCP traffic on the machine can
		// overflow the ring. TestChurn asserts that nothing is lost.
		if s, err := tr.Stats(); err != nil {
			t.Errorf("Stats: %v", err)
		} else if s.Lost() != 0 {
			t.Logf("tracer lost %d transitions: %+v", s.Lost(), s)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return within 5s of cancel")
		}
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &tracing{tr: tr, col: col}
}

func startProc(t *testing.T, opts sockproc.Options) *sockproc.Proc {
	t.Helper()
	p, err := sockproc.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("stop %v: %v", p, err)
		}
	})
	return p
}

// netnsOf is the inode of a process's network namespace.
func netnsOf(t *testing.T, pid int) uint32 {
	t.Helper()
	fi, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return uint32(fi.Sys().(*syscall.Stat_t).Ino)
}

// waitUntil polls cond until it holds or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitEvent waits for one event with port matching pred.
func (tc *tracing) waitEvent(t *testing.T, port uint16, what string, pred func(*event.Event) bool) {
	t.Helper()
	ok := waitUntil(eventTimeout, func() bool {
		for _, e := range tc.col.withPort(port, tc.from) {
			if pred(&e) {
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("no event %s within %v", what, eventTimeout)
	}
}

// waitEstablished waits for the server side of the connection from client to
// reach ESTABLISHED, so that a following accept() happens strictly after the
// handshake events (which carry the listener's owner).
func (tc *tracing) waitEstablished(t *testing.T, listener, client sockproc.Sock) {
	t.Helper()
	tc.waitEvent(t, listener.Local.Port(), fmt.Sprintf("SYN_RECV->ESTABLISHED of %v<-%v", listener.Local, client.Local), func(e *event.Event) bool {
		return e.Old == event.SynRecv && e.New == event.Established && e.Local == listener.Local && e.Remote == client.Local
	})
}

func do(t *testing.T, p *sockproc.Proc, words ...any) []string {
	t.Helper()
	f, err := p.Do(words...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// waitEOF has p read its socket s until the peer's FIN.
func waitEOF(t *testing.T, p *sockproc.Proc, s sockproc.Sock) {
	t.Helper()
	if f := do(t, p, "waiteof", s.ID); len(f) != 1 || f[0] != "eof" {
		t.Fatalf("%v: waiteof %d: %q, want eof", p, s.ID, f)
	}
}

// ---- expectations ----------------------------------------------------------

// who is an expected owner.
type who struct {
	pid  int
	comm string
}

func whoOf(p *sockproc.Proc) who { return who{p.Pid(), p.Comm()} }

func (w who) String() string { return fmt.Sprintf("%s[%d]", w.comm, w.pid) }

// someInode: the socket has a file, whose inode the test does not know.
const someInode = math.MaxUint64

// step is one expected transition of a socket.
type step struct {
	old, new event.State
	owner    who
	src      event.OwnerSource
	// inode of the socket's file at the transition; 0 when it has none (not
	// accepted yet, or already closed by its owner).
	inode uint64
	// cpu, when set, is the task the transition must run on: transitions run
	// by the owner's own syscall.
	cpu who
}

// sockWant is the expected life of one socket, found among the events by its
// tuple.
type sockWant struct {
	name          string
	netns         uint32
	local, remote netip.AddrPort
	// anyLocalPort: the test does not know the ephemeral port (a connect
	// that failed).
	anyLocalPort bool
	steps        []step
}

func (w *sockWant) family() event.Family {
	if w.local.Addr().Is4() {
		return event.IPv4
	}
	return event.IPv6
}

// matches reports whether e is an event of this socket.
func (w *sockWant) matches(e *event.Event) bool {
	if e.NetNS != w.netns || e.Remote != w.remote {
		return false
	}
	if w.anyLocalPort {
		return e.Local.Addr() == w.local.Addr()
	}
	return e.Local == w.local
}

// group is the events of one socket (one cookie), in arrival order.
type group struct {
	cookie uint64
	evs    []event.Event
}

// groupEvents groups by socket the events in the given namespaces.
func groupEvents(evs []event.Event, netns map[uint32]bool) []*group {
	var out []*group
	byCookie := map[uint64]*group{}
	for _, e := range evs {
		if !netns[e.NetNS] {
			continue
		}
		g := byCookie[e.Cookie]
		if g == nil {
			g = &group{cookie: e.Cookie}
			byCookie[e.Cookie] = g
			out = append(out, g)
		}
		g.evs = append(g.evs, e)
	}
	return out
}

// assign maps each want to the groups matching it; unmatched lists groups
// matching no want.
func assign(groups []*group, wants []sockWant) (matched [][]*group, unmatched []*group) {
	matched = make([][]*group, len(wants))
	for _, g := range groups {
		hit := false
		for i := range wants {
			for j := range g.evs {
				if wants[i].matches(&g.evs[j]) {
					matched[i] = append(matched[i], g)
					hit = true
					break
				}
			}
		}
		if !hit {
			unmatched = append(unmatched, g)
		}
	}
	return matched, unmatched
}

// expectSockets waits until every expected socket has all its transitions
// and checks them field by field. The sockets are those with port as local
// or remote port in the namespaces of wants; every one of them must be
// expected. Returns the matching groups.
func (tc *tracing) expectSockets(t *testing.T, port uint16, wants []sockWant) []*group {
	t.Helper()
	netns := map[uint32]bool{}
	for _, w := range wants {
		netns[w.netns] = true
	}
	var groups []*group
	complete := func() bool {
		groups = groupEvents(tc.col.withPort(port, tc.from), netns)
		matched, unmatched := assign(groups, wants)
		if len(unmatched) > 0 {
			return false
		}
		for i, gs := range matched {
			if len(gs) != 1 || len(gs[0].evs) < len(wants[i].steps) {
				return false
			}
		}
		return true
	}
	if !waitUntil(eventTimeout, complete) {
		t.Errorf("port %d: expected sockets incomplete after %v", port, eventTimeout)
	}
	matched, unmatched := assign(groups, wants)
	for _, g := range unmatched {
		t.Errorf("unexpected socket %#x:\n%s", g.cookie, dump(g.evs))
	}
	var out []*group
	for i, w := range wants {
		switch len(matched[i]) {
		case 0:
			t.Errorf("%s: no events (want %d)", w.name, len(w.steps))
			continue
		case 1:
		default:
			for _, g := range matched[i] {
				t.Errorf("%s: one of %d sockets matching %v<->%v:\n%s", w.name, len(matched[i]), w.local, w.remote, dump(g.evs))
			}
			continue
		}
		g := matched[i][0]
		out = append(out, g)
		if errs := checkSocket(&w, g.evs); len(errs) > 0 {
			t.Errorf("%s (cookie %#x): %s\ngot:\n%s", w.name, g.cookie, strings.Join(errs, "\n  "), dump(g.evs))
		}
	}
	return out
}

// checkSocket compares one socket's events with its expected life.
func checkSocket(w *sockWant, evs []event.Event) []string {
	var errs []string
	bad := func(i int, format string, args ...any) {
		errs = append(errs, fmt.Sprintf("event %d: ", i)+fmt.Sprintf(format, args...))
	}
	if len(evs) != len(w.steps) {
		errs = append(errs, fmt.Sprintf("%d events, want %d", len(evs), len(w.steps)))
	}
	uid := uint32(os.Geteuid())
	for i := range evs {
		if i >= len(w.steps) {
			break
		}
		e, s := &evs[i], w.steps[i]
		if e.Old != s.old || e.New != s.new {
			bad(i, "%v->%v, want %v->%v", e.Old, e.New, s.old, s.new)
			continue // the rest of the step does not apply
		}
		if e.Family != w.family() {
			bad(i, "family %v, want %v", e.Family, w.family())
		}
		if e.NetNS != w.netns {
			bad(i, "netns %d, want %d", e.NetNS, w.netns)
		}
		connecting := e.Old == event.Close && e.New == event.SynSent
		switch {
		case w.anyLocalPort:
			if e.Local.Addr() != w.local.Addr() || (e.Local.Port() == 0) != connecting {
				bad(i, "local %v, want %v with an ephemeral port (0 at CLOSE->SYN_SENT)", e.Local, w.local.Addr())
			}
		case connecting:
			// connect() sets the state before it picks the local port.
			if e.Local != w.local && e.Local != netip.AddrPortFrom(w.local.Addr(), 0) {
				bad(i, "local %v, want %v or port 0", e.Local, w.local)
			}
		case e.Local != w.local:
			bad(i, "local %v, want %v", e.Local, w.local)
		}
		if e.Remote != w.remote {
			bad(i, "remote %v, want %v", e.Remote, w.remote)
		}
		if e.UID != uid {
			bad(i, "uid %d, want %d", e.UID, uid)
		}
		if e.SockAddr == 0 || e.SockAddr != evs[0].SockAddr {
			bad(i, "sock address %#x, first event had %#x", e.SockAddr, evs[0].SockAddr)
		}
		if e.Flags&event.Untracked != 0 {
			bad(i, "flag Untracked set")
		}
		if e.Flags&event.OwnerKnown == 0 {
			bad(i, "owner unknown, want %v", s.owner)
		} else if int(e.Owner.PID) != s.owner.pid || string(e.Owner.CommBytes()) != s.owner.comm || e.Owner.TID == 0 {
			bad(i, "owner %s[%d/%d], want %v", e.Owner.CommBytes(), e.Owner.PID, e.Owner.TID, s.owner)
		}
		if e.Source != s.src {
			bad(i, "owner source %v, want %v", e.Source, s.src)
		}
		if s.cpu.pid != 0 && (int(e.OnCPU.PID) != s.cpu.pid || string(e.OnCPU.CommBytes()) != s.cpu.comm) {
			bad(i, "ran on %s[%d], want %v", e.OnCPU.CommBytes(), e.OnCPU.PID, s.cpu)
		}
		switch {
		case s.inode == someInode:
			if e.Inode == 0 {
				bad(i, "inode 0, want the socket's file")
			}
		case e.Inode != s.inode:
			bad(i, "inode %d, want %d", e.Inode, s.inode)
		}
		// The first event of every socket, including one that existed
		// before the tracer, has no previous state age; every later one
		// has exactly the time since the previous event.
		if i == 0 {
			if e.Flags&event.PrevKnown != 0 || e.InPrev != 0 {
				bad(i, "first event has PrevKnown (%v)", e.InPrev)
			}
			continue
		}
		p := &evs[i-1]
		switch {
		case e.Mono < p.Mono:
			bad(i, "time goes back: %d after %d", e.Mono, p.Mono)
		case e.Flags&event.PrevKnown == 0:
			bad(i, "PrevKnown unset")
		case e.InPrev <= 0 || e.InPrev != time.Duration(e.Mono-p.Mono):
			bad(i, "InPrev %v, want %v (time since the previous event)", e.InPrev, time.Duration(e.Mono-p.Mono))
		}
	}
	return errs
}

func dump(evs []event.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "    %-11s -> %-11s %v -> %v ino=%d netns=%d owner=%s[%d] src=%v cpu=%s[%d] flags=%#x prev=%v\n",
			e.Old, e.New, e.Local, e.Remote, e.Inode, e.NetNS, e.Owner.CommBytes(), e.Owner.PID, e.Source,
			e.OnCPU.CommBytes(), e.OnCPU.PID, uint8(e.Flags), e.InPrev)
	}
	return b.String()
}

// ---- step builders ---------------------------------------------------------

func st(old, new event.State, owner who, src event.OwnerSource, inode uint64) step {
	return step{old: old, new: new, owner: owner, src: src, inode: inode}
}

// bySyscall is a step run by the owner's own syscall, on its own CPU.
func bySyscall(old, new event.State, owner who, inode uint64) step {
	return step{old: old, new: new, owner: owner, src: event.OwnerSyscall, inode: inode, cpu: owner}
}

func unspecified(a netip.Addr) netip.AddrPort {
	if a.Is4() {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
}

func listenerWant(netns uint32, l sockproc.Sock, steps ...step) sockWant {
	return sockWant{name: "listener " + l.Local.String(), netns: netns, local: l.Local, remote: unspecified(l.Local.Addr()), steps: steps}
}

func clientWant(netns uint32, c sockproc.Sock, steps ...step) sockWant {
	return sockWant{name: "client " + c.Local.String(), netns: netns, local: c.Local, remote: c.Remote, steps: steps}
}

func serverWant(netns uint32, a sockproc.Sock, steps ...step) sockWant {
	return sockWant{name: "server " + a.Local.String() + "<-" + a.Remote.String(), netns: netns, local: a.Local, remote: a.Remote, steps: steps}
}

// connectSteps is a client's connect: the owner's syscall, then the SYN-ACK.
func connectSteps(c who, ino uint64) []step {
	return []step{
		bySyscall(event.Close, event.SynSent, c, ino),
		st(event.SynSent, event.Established, c, event.OwnerSyscall, ino),
	}
}

// handshakeSteps is a server-side connection before accept(): no file yet,
// owned by the listener's owner.
func handshakeSteps(s who) []step {
	return []step{
		st(event.Listen, event.SynRecv, s, event.OwnerListener, 0),
		st(event.SynRecv, event.Established, s, event.OwnerListener, 0),
	}
}

// activeClose: the owner closes first; the socket has no file once close()
// returns, and ends when the peer's FIN arrives (its TIME_WAIT successor is
// not a full socket and reports nothing).
func activeClose(o who, src event.OwnerSource, ino uint64) []step {
	return []step{
		bySyscall(event.Established, event.FinWait1, o, ino),
		st(event.FinWait1, event.FinWait2, o, event.OwnerSyscall, 0),
		st(event.FinWait2, event.Close, o, event.OwnerSyscall, 0),
	}
}

// passiveClose: the peer closed first (FIN in softirq, owner from src), then
// the owner closes.
func passiveClose(o who, src event.OwnerSource, ino uint64) []step {
	return []step{
		st(event.Established, event.CloseWait, o, src, ino),
		bySyscall(event.CloseWait, event.LastAck, o, ino),
		st(event.LastAck, event.Close, o, event.OwnerSyscall, 0),
	}
}

func concat(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ---- tests -----------------------------------------------------------------

// loopEnv is a server and a client process on the host's loopback.
type loopEnv struct {
	tc       *tracing
	srv, cli *sockproc.Proc
	s, c     who
	netns    uint32
	addr     netip.Addr
}

// pair opens a listener, connects to it and accepts, waiting for the
// handshake events before accept().
func (x *loopEnv) pair(t *testing.T) (l, c, a sockproc.Sock) {
	t.Helper()
	l = must[sockproc.Sock](t)(x.srv.Listen(netip.AddrPortFrom(x.addr, 0)))
	c = must[sockproc.Sock](t)(x.cli.Connect(l.Local))
	x.tc.waitEstablished(t, l, c)
	a = must[sockproc.Sock](t)(x.srv.Accept(l))
	return l, c, a
}

func (x *loopEnv) listenerSteps(l sockproc.Sock) sockWant {
	return listenerWant(x.netns, l,
		bySyscall(event.Close, event.Listen, x.s, l.Inode),
		bySyscall(event.Listen, event.Close, x.s, l.Inode))
}

// TestLifecycles runs each connection life over IPv4 and IPv6 loopback, a
// server and a client process, and checks every transition of every socket.
func TestLifecycles(t *testing.T) {
	tc := startTracer(t, loader.Config{})
	srv := startProc(t, sockproc.Options{Comm: "tsp-server"})
	cli := startProc(t, sockproc.Options{Comm: "tsp-client"})
	base := loopEnv{tc: tc, srv: srv, cli: cli, s: whoOf(srv), c: whoOf(cli), netns: netnsOf(t, srv.Pid())}

	cases := []struct {
		name string
		run  func(t *testing.T, x *loopEnv) (port uint16, wants []sockWant)
	}{
		{"client-closes-first", func(t *testing.T, x *loopEnv) (uint16, []sockWant) {
			l, c, a := x.pair(t)
			do(t, x.cli, "close", c.ID)
			waitEOF(t, x.srv, a)
			do(t, x.srv, "close", a.ID)
			do(t, x.srv, "close", l.ID)
			return l.Local.Port(), []sockWant{
				x.listenerSteps(l),
				clientWant(x.netns, c, concat(connectSteps(x.c, c.Inode), activeClose(x.c, event.OwnerSyscall, c.Inode))...),
				serverWant(x.netns, a, concat(handshakeSteps(x.s), passiveClose(x.s, event.OwnerAccept, a.Inode))...),
			}
		}},
		{"server-closes-first", func(t *testing.T, x *loopEnv) (uint16, []sockWant) {
			l, c, a := x.pair(t)
			do(t, x.srv, "close", a.ID)
			waitEOF(t, x.cli, c)
			do(t, x.cli, "close", c.ID)
			do(t, x.srv, "close", l.ID)
			return l.Local.Port(), []sockWant{
				x.listenerSteps(l),
				clientWant(x.netns, c, concat(connectSteps(x.c, c.Inode), passiveClose(x.c, event.OwnerSyscall, c.Inode))...),
				serverWant(x.netns, a, concat(handshakeSteps(x.s), activeClose(x.s, event.OwnerAccept, a.Inode))...),
			}
		}},
		{"client-resets", func(t *testing.T, x *loopEnv) (uint16, []sockWant) {
			l, c, a := x.pair(t)
			do(t, x.cli, "linger0", c.ID)
			do(t, x.cli, "close", c.ID)
			if f := do(t, x.srv, "waiteof", a.ID); f[0] != "reset" {
				t.Errorf("server read %q after the client's RST, want reset", f)
			}
			do(t, x.srv, "close", a.ID)
			do(t, x.srv, "close", l.ID)
			return l.Local.Port(), []sockWant{
				x.listenerSteps(l),
				clientWant(x.netns, c, append(connectSteps(x.c, c.Inode),
					bySyscall(event.Established, event.Close, x.c, c.Inode))...),
				serverWant(x.netns, a, append(handshakeSteps(x.s),
					st(event.Established, event.Close, x.s, event.OwnerAccept, a.Inode))...),
			}
		}},
		{"server-resets", func(t *testing.T, x *loopEnv) (uint16, []sockWant) {
			l, c, a := x.pair(t)
			do(t, x.srv, "linger0", a.ID)
			do(t, x.srv, "close", a.ID)
			if f := do(t, x.cli, "waiteof", c.ID); f[0] != "reset" {
				t.Errorf("client read %q after the server's RST, want reset", f)
			}
			do(t, x.cli, "close", c.ID)
			do(t, x.srv, "close", l.ID)
			rst := bySyscall(event.Established, event.Close, x.s, a.Inode)
			rst.src = event.OwnerAccept // a close is not an owner-learning transition
			return l.Local.Port(), []sockWant{
				x.listenerSteps(l),
				clientWant(x.netns, c, append(connectSteps(x.c, c.Inode),
					st(event.Established, event.Close, x.c, event.OwnerSyscall, c.Inode))...),
				serverWant(x.netns, a, append(handshakeSteps(x.s), rst)...),
			}
		}},
		{"connect-refused", func(t *testing.T, x *loopEnv) (uint16, []sockWant) {
			// A port that was just listened on and closed: nothing listens.
			l := must[sockproc.Sock](t)(x.srv.Listen(netip.AddrPortFrom(x.addr, 0)))
			do(t, x.srv, "close", l.ID)
			if _, err := x.cli.Connect(l.Local); err == nil || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("connect to a closed port: %v, want connection refused", err)
			}
			return l.Local.Port(), []sockWant{
				x.listenerSteps(l),
				{
					name: "refused client", netns: x.netns, local: netip.AddrPortFrom(x.addr, 0), remote: l.Local, anyLocalPort: true,
					steps: []step{
						bySyscall(event.Close, event.SynSent, x.c, someInode),
						st(event.SynSent, event.Close, x.c, event.OwnerSyscall, someInode),
					},
				},
			}
		}},
		{"listener-only", func(t *testing.T, x *loopEnv) (uint16, []sockWant) {
			l := must[sockproc.Sock](t)(x.srv.Listen(netip.AddrPortFrom(x.addr, 0)))
			do(t, x.srv, "close", l.ID)
			return l.Local.Port(), []sockWant{x.listenerSteps(l)}
		}},
	}
	for _, addr := range []string{"127.0.0.1", "::1"} {
		for _, c := range cases {
			x := base
			x.addr = netip.MustParseAddr(addr)
			name := "ipv4/" + c.name
			if x.addr.Is6() {
				name = "ipv6/" + c.name
			}
			t.Run(name, func(t *testing.T) {
				tc.begin()
				port, wants := c.run(t, &x)
				tc.expectSockets(t, port, wants)
			})
		}
	}
}

// newVethPair creates two network namespaces joined by a veth link (names
// prefix + pid, addresses from base), deleted when the test ends. Call it
// before starting processes in them: cleanups run last-registered first,
// so the processes are stopped before their namespaces go.
func newVethPair(t *testing.T, prefix string, base netip.Addr) *sockproc.VethPair {
	t.Helper()
	pair, err := sockproc.NewVethPair(fmt.Sprintf("%s%d", prefix, os.Getpid()%100000), base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pair.Delete(); err != nil {
			t.Errorf("delete namespaces: %v", err)
		}
	})
	return pair
}

// TestNetworkNamespaces runs a connection over a veth link between two
// network namespaces created for the test: each side's events carry its own
// namespace.
func TestNetworkNamespaces(t *testing.T) {
	tc := startTracer(t, loader.Config{})
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("the ip tool (iproute2) is needed to create network namespaces: %v", err)
	}
	pair := newVethPair(t, "tsp", netip.MustParseAddr("10.231.7.0"))
	srv := startProc(t, sockproc.Options{Comm: "tsp-ns-server", NetNS: pair.A})
	cli := startProc(t, sockproc.Options{Comm: "tsp-ns-client", NetNS: pair.B})
	nsA, nsB := netnsOf(t, srv.Pid()), netnsOf(t, cli.Pid())
	if own := netnsOf(t, os.Getpid()); nsA == nsB || nsA == own || nsB == own {
		t.Fatalf("namespaces not distinct: server %d, client %d, test %d", nsA, nsB, own)
	}
	s, c := whoOf(srv), whoOf(cli)

	l := must[sockproc.Sock](t)(srv.Listen(netip.AddrPortFrom(pair.AddrA, 0)))
	cs := must[sockproc.Sock](t)(cli.Connect(l.Local))
	tc.waitEstablished(t, l, cs)
	as := must[sockproc.Sock](t)(srv.Accept(l))
	do(t, cli, "close", cs.ID)
	waitEOF(t, srv, as)
	do(t, srv, "close", as.ID)
	do(t, srv, "close", l.ID)

	tc.expectSockets(t, l.Local.Port(), []sockWant{
		listenerWant(nsA, l, bySyscall(event.Close, event.Listen, s, l.Inode), bySyscall(event.Listen, event.Close, s, l.Inode)),
		clientWant(nsB, cs, concat(connectSteps(c, cs.Inode), activeClose(c, event.OwnerSyscall, cs.Inode))...),
		serverWant(nsA, as, concat(handshakeSteps(s), passiveClose(s, event.OwnerAccept, as.Inode))...),
	})
}

// TestKernelNetNSFilterTimers: with Filter.NetNS and Sockets, only that
// namespace's records reach user space, the timewait timer records too (a
// table of one namespace, as netstat -c keeps, needs all of its own and
// none of the others'). Namespace B closes client-first first (a TIME_WAIT
// there); the ring is FIFO, so once A's TimewaitStart is in, any record of
// B's would be too.
func TestKernelNetNSFilterTimers(t *testing.T) {
	requireRoot(t)
	pair := newVethPair(t, "tsf", netip.MustParseAddr("10.231.8.0"))
	procA := startProc(t, sockproc.Options{Comm: "tsp-nsf-a", NetNS: pair.A})
	procB := startProc(t, sockproc.Options{Comm: "tsp-nsf-b", NetNS: pair.B})
	nsA, nsB := netnsOf(t, procA.Pid()), netnsOf(t, procB.Pid())
	tc := startTracer(t, loader.Config{Sockets: true, Filter: loader.KernelFilter{NetNS: nsA}})

	clientFirst := func(p *sockproc.Proc) uint16 {
		l := must[sockproc.Sock](t)(p.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
		c := must[sockproc.Sock](t)(p.Connect(l.Local))
		a := must[sockproc.Sock](t)(p.Accept(l))
		do(t, p, "close", c.ID)
		waitEOF(t, p, a)
		do(t, p, "close", a.ID)
		return l.Local.Port()
	}
	clientFirst(procB)
	portA := clientFirst(procA)
	tc.waitEvent(t, portA, "TimewaitStart in namespace A", func(e *event.Event) bool {
		return e.Kind == event.TimewaitStart
	})
	for _, e := range tc.col.all() {
		if e.NetNS != nsA {
			t.Errorf("a record of namespace %d passed the filter for %d (B is %d):\n%s", e.NetNS, nsA, nsB, dump([]event.Event{e}))
		}
	}
}

// TestForkedWorker: the server accepts and hands the connection to a child
// process (fork-accept). Once the worker acts on the socket, its events carry
// the worker. Before that they carry the acceptor: passing a file to another
// process is invisible to the tracer.
func TestForkedWorker(t *testing.T) {
	tc := startTracer(t, loader.Config{})
	srv := startProc(t, sockproc.Options{Comm: "tsp-forker"})
	cli := startProc(t, sockproc.Options{Comm: "tsp-client"})
	s, c := whoOf(srv), whoOf(cli)
	ns := netnsOf(t, srv.Pid())

	for _, workerFirst := range []bool{true, false} {
		name := "worker-closes-first"
		if !workerFirst {
			name = "client-closes-first"
		}
		t.Run(name, func(t *testing.T) {
			tc.begin()
			l := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
			cs := must[sockproc.Sock](t)(cli.Connect(l.Local))
			tc.waitEstablished(t, l, cs)
			ch, err := srv.ForkAccept(l, "tsp-worker")
			if err != nil {
				t.Fatal(err)
			}
			w := who{ch.Pid, ch.Comm}
			if ch.Pid == srv.Pid() || ch.Sock.Remote != cs.Local {
				t.Fatalf("worker %+v for client %v", ch, cs.Local)
			}
			var client, server []step
			if workerFirst {
				if _, err := srv.InChild(ch, "close", ch.Sock.ID); err != nil {
					t.Fatal(err)
				}
				waitEOF(t, cli, cs)
				do(t, cli, "close", cs.ID)
				client = passiveClose(c, event.OwnerSyscall, cs.Inode)
				server = activeClose(w, event.OwnerSyscall, ch.Sock.Inode)
			} else {
				do(t, cli, "close", cs.ID)
				if f, err := srv.InChild(ch, "waiteof", ch.Sock.ID); err != nil || f[0] != "eof" {
					t.Fatalf("worker waiteof: %q %v", f, err)
				}
				if _, err := srv.InChild(ch, "close", ch.Sock.ID); err != nil {
					t.Fatal(err)
				}
				client = activeClose(c, event.OwnerSyscall, cs.Inode)
				server = []step{
					st(event.Established, event.CloseWait, s, event.OwnerAccept, ch.Sock.Inode),
					bySyscall(event.CloseWait, event.LastAck, w, ch.Sock.Inode),
					st(event.LastAck, event.Close, w, event.OwnerSyscall, 0),
				}
			}
			if _, err := srv.InChild(ch, "exit"); err != nil {
				t.Fatal(err)
			}
			do(t, srv, "close", l.ID)
			tc.expectSockets(t, l.Local.Port(), []sockWant{
				listenerWant(ns, l, bySyscall(event.Close, event.Listen, s, l.Inode), bySyscall(event.Listen, event.Close, s, l.Inode)),
				clientWant(ns, cs, concat(connectSteps(c, cs.Inode), client)...),
				serverWant(ns, ch.Sock, concat(handshakeSteps(s), server)...),
			})
		})
	}
}

// TestSocketsFromBeforeStart: a listener and two established connections
// exist before the tracer loads. Their owners come from the fd-table walk
// (OwnerIter) until an owner's syscall says otherwise, and their first event
// has no previous-state age. A new connection to the old listener gets the
// listener's seeded owner.
func TestSocketsFromBeforeStart(t *testing.T) {
	requireRoot(t)
	srv := startProc(t, sockproc.Options{Comm: "tsp-old-server"})
	cli := startProc(t, sockproc.Options{Comm: "tsp-old-client"})
	s, c := whoOf(srv), whoOf(cli)
	ns := netnsOf(t, srv.Pid())
	l := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
	c1 := must[sockproc.Sock](t)(cli.Connect(l.Local))
	a1 := must[sockproc.Sock](t)(srv.Accept(l))
	c2 := must[sockproc.Sock](t)(cli.Connect(l.Local))
	a2 := must[sockproc.Sock](t)(srv.Accept(l))

	tc := startTracer(t, loader.Config{})

	// 1: the client closes first: the server's CLOSE_WAIT carries the seed.
	do(t, cli, "close", c1.ID)
	waitEOF(t, srv, a1)
	do(t, srv, "close", a1.ID)
	// 2: the server closes first: the client's CLOSE_WAIT carries the seed.
	do(t, srv, "close", a2.ID)
	waitEOF(t, cli, c2)
	do(t, cli, "close", c2.ID)
	// 3: a new connection to the old listener.
	c3 := must[sockproc.Sock](t)(cli.Connect(l.Local))
	tc.waitEstablished(t, l, c3)
	a3 := must[sockproc.Sock](t)(srv.Accept(l))
	do(t, cli, "close", c3.ID)
	waitEOF(t, srv, a3)
	do(t, srv, "close", a3.ID)
	do(t, srv, "close", l.ID)

	tc.expectSockets(t, l.Local.Port(), []sockWant{
		listenerWant(ns, l, bySyscall(event.Listen, event.Close, s, l.Inode)),
		clientWant(ns, c1, activeClose(c, event.OwnerIter, c1.Inode)...),
		serverWant(ns, a1, passiveClose(s, event.OwnerIter, a1.Inode)...),
		clientWant(ns, c2, passiveClose(c, event.OwnerIter, c2.Inode)...),
		serverWant(ns, a2, activeClose(s, event.OwnerIter, a2.Inode)...),
		clientWant(ns, c3, concat(connectSteps(c, c3.Inode), activeClose(c, event.OwnerSyscall, c3.Inode))...),
		serverWant(ns, a3, concat(handshakeSteps(s), passiveClose(s, event.OwnerAccept, a3.Inode))...),
	})
}

// TestKernelPIDFilterSeeded: with Filter.PID set, a socket from before
// start whose owner only user space knows (the fd walk) is not dropped in
// the kernel: its softirq transitions reach user space with the seeded
// owner, while the peer process's sockets, whose owner the kernel learns
// from its own close(), are filtered out in the kernel.
func TestKernelPIDFilterSeeded(t *testing.T) {
	requireRoot(t)
	srv := startProc(t, sockproc.Options{Comm: "tsp-pid-server"})
	cli := startProc(t, sockproc.Options{Comm: "tsp-pid-client"})
	s := whoOf(srv)
	ns := netnsOf(t, srv.Pid())
	l := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
	c1 := must[sockproc.Sock](t)(cli.Connect(l.Local))
	a1 := must[sockproc.Sock](t)(srv.Accept(l))

	tc := startTracer(t, loader.Config{Filter: loader.KernelFilter{PID: uint32(srv.Pid())}})

	do(t, cli, "close", c1.ID)
	waitEOF(t, srv, a1)
	do(t, srv, "close", a1.ID)

	tc.expectSockets(t, l.Local.Port(), []sockWant{
		serverWant(ns, a1, passiveClose(s, event.OwnerIter, a1.Inode)...),
	})
}

// TestKernelPortFilter: with Filter.Port set, only transitions of sockets
// with that local or remote port reach user space; the others are still
// seen (and counted) by the BPF program, and take no ring space: a churn of
// filtered-out connections cannot fill even a tiny ring.
func TestKernelPortFilter(t *testing.T) {
	requireRoot(t)
	srv := startProc(t, sockproc.Options{Comm: "tsp-server"})
	cli := startProc(t, sockproc.Options{Comm: "tsp-client"})
	churner := startProc(t, sockproc.Options{Comm: "tsp-churn"})
	s, c := whoOf(srv), whoOf(cli)
	ns := netnsOf(t, srv.Pid())
	lp := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
	lq := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
	port := lp.Local.Port()

	// 16 KiB: about a hundred records.
	tc := startTracer(t, loader.Config{RingBytes: 1 << 14, Filter: loader.KernelFilter{Port: port}})
	before := must[loader.Stats](t)(tc.tr.Stats())

	// The filtered-out traffic first: the ring is FIFO, so once the wanted
	// connection's events are in, any leak of the others' would be too.
	const churn = 1000
	do(t, churner, "churn", "127.0.0.1:0", churn)
	qc := must[sockproc.Sock](t)(cli.Connect(lq.Local))
	qa := must[sockproc.Sock](t)(srv.Accept(lq))
	do(t, cli, "close", qc.ID)
	waitEOF(t, srv, qa)
	do(t, srv, "close", qa.ID)
	do(t, srv, "close", lq.ID)

	pc := must[sockproc.Sock](t)(cli.Connect(lp.Local))
	tc.waitEstablished(t, lp, pc)
	pa := must[sockproc.Sock](t)(srv.Accept(lp))
	do(t, cli, "close", pc.ID)
	waitEOF(t, srv, pa)
	do(t, srv, "close", pa.ID)
	do(t, srv, "close", lp.ID)

	tc.expectSockets(t, port, []sockWant{
		listenerWant(ns, lp, bySyscall(event.Listen, event.Close, s, lp.Inode)),
		clientWant(ns, pc, concat(connectSteps(c, pc.Inode), activeClose(c, event.OwnerSyscall, pc.Inode))...),
		serverWant(ns, pa, concat(handshakeSteps(s), passiveClose(s, event.OwnerAccept, pa.Inode))...),
	})

	all := tc.col.all()
	for _, e := range all {
		if e.Local.Port() != port && e.Remote.Port() != port {
			t.Errorf("event without port %d passed the filter:\n%s", port, dump([]event.Event{e}))
		}
	}
	after := must[loader.Stats](t)(tc.tr.Stats())
	// Filtered out: the churn (10 per connection + its listener's 2) and the
	// other connection (listener close + 5 + 5).
	filtered := uint64(churn*10 + 2 + 11)
	if seen := after.Transitions - before.Transitions; seen < uint64(len(all))+filtered {
		t.Errorf("BPF saw %d transitions, %d emitted: the %d filtered ones were not all seen", seen, len(all), filtered)
	}
	if after.RingDrops != 0 {
		t.Errorf("%d ring drops with a filter that let %d events through: filtered transitions take ring space", after.RingDrops, len(all))
	}
}

// ftraceWitness records, through a private tracefs instance, every
// sock:inet_sock_set_state firing with port as local or remote port: the
// kernel's own account, independent of the BPF programs. Nil (logged) when
// tracefs instances are not available.
type ftraceWitness struct{ dir string }

func startWitness(t *testing.T, port uint16) *ftraceWitness {
	t.Helper()
	dir := filepath.Join("/sys/kernel/tracing/instances", fmt.Sprintf("tcpscope-test-%d-%d", os.Getpid(), port))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Logf("no ftrace witness: %v", err)
		return nil
	}
	w := &ftraceWitness{dir: dir}
	ev := filepath.Join(dir, "events/sock/inet_sock_set_state")
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(ev, "enable"), []byte("0"), 0)
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove ftrace instance: %v", err)
		}
	})
	for _, kv := range [][2]string{
		{filepath.Join(dir, "buffer_size_kb"), "8192"},
		{filepath.Join(ev, "filter"), fmt.Sprintf("sport == %d || dport == %d", port, port)},
		{filepath.Join(ev, "enable"), "1"},
	} {
		if err := os.WriteFile(kv[0], []byte(kv[1]), 0); err != nil {
			t.Logf("no ftrace witness: %s: %v", kv[0], err)
			return nil
		}
	}
	return w
}

// missing stops the witness and returns the kernel's transitions that are
// not among evs, matched by ports and states, and how many it recorded.
func (w *ftraceWitness) missing(evs []event.Event) (missing []string, total int) {
	os.WriteFile(filepath.Join(w.dir, "events/sock/inet_sock_set_state/enable"), []byte("0"), 0)
	raw, err := os.ReadFile(filepath.Join(w.dir, "trace"))
	if err != nil {
		return []string{err.Error()}, 0
	}
	state := map[string]event.State{"TCP_FIN_WAIT1": event.FinWait1, "TCP_FIN_WAIT2": event.FinWait2}
	for s := event.Established; s <= event.MaxState; s++ {
		state["TCP_"+s.String()] = s
	}
	key := func(sport, dport uint16, old, new event.State) string {
		if old == event.Close && new == event.SynSent {
			sport = 0 // the port is picked after the transition
		}
		return fmt.Sprintf("%d %d %v %v", sport, dport, old, new)
	}
	have := map[string]int{}
	for _, e := range evs {
		have[key(e.Local.Port(), e.Remote.Port(), e.Old, e.New)]++
	}
	for _, line := range strings.Split(string(raw), "\n") {
		i := strings.Index(line, "sport=")
		if i < 0 {
			continue
		}
		total++
		var sport, dport uint16
		var old, new event.State
		for _, f := range strings.Fields(line[i:]) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "sport", "dport":
				n, _ := strconv.ParseUint(v, 10, 16)
				if k == "sport" {
					sport = uint16(n)
				} else {
					dport = uint16(n)
				}
			case "oldstate":
				old = state[v]
			case "newstate":
				new = state[v]
			}
		}
		if k := key(sport, dport, old, new); have[k] > 0 {
			have[k]--
		} else {
			missing = append(missing, strings.TrimSpace(line))
		}
	}
	return missing, total
}

// TestChurn: one process makes many short loopback connections to itself,
// half closed by the client first, half by the server first. Nothing may be
// lost and every socket must report its whole life. A tracefs instance
// records the same tracepoint as a witness: if the tracer misses something,
// the failure shows what the kernel did.
func TestChurn(t *testing.T) {
	const conns = 2000
	requireRoot(t)
	// A port for the churn's listener, known in advance for the witness,
	// found before tracing so that this lookup is not traced.
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()

	tc := startTracer(t, loader.Config{})
	p := startProc(t, sockproc.Options{Comm: "tsp-churn", Timeout: 20 * time.Second})
	ns := netnsOf(t, p.Pid())
	witness := startWitness(t, port)

	start := time.Now()
	f := do(t, p, "churn", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), conns)
	elapsed := time.Since(start)
	if f[0] != strconv.Itoa(int(port)) {
		t.Fatalf("churn reply %q, want port %d", f, port)
	}

	var groups []*group
	nsSet := map[uint32]bool{ns: true}
	done := func() bool {
		groups = groupEvents(tc.col.withPort(port, tc.from), nsSet)
		if len(groups) != 2*conns+1 {
			return false
		}
		for _, g := range groups {
			if g.evs[len(g.evs)-1].New != event.Close {
				return false
			}
		}
		return true
	}
	complete := waitUntil(eventTimeout, done)
	if !complete {
		t.Errorf("after %v: %d sockets on port %d, want %d, or some not closed", eventTimeout, len(groups), port, 2*conns+1)
	}

	var (
		S, E, F1, F2, C, CW, LA = event.SynSent, event.Established, event.FinWait1, event.FinWait2, event.Close, event.CloseWait, event.LastAck
		L, SR                   = event.Listen, event.SynRecv
	)
	type seq [5][2]event.State
	want := map[string]seq{
		"client, client first": {{C, S}, {S, E}, {E, F1}, {F1, F2}, {F2, C}},
		"client, server first": {{C, S}, {S, E}, {E, CW}, {CW, LA}, {LA, C}},
		"server, client first": {{L, SR}, {SR, E}, {E, CW}, {CW, LA}, {LA, C}},
		"server, server first": {{L, SR}, {SR, E}, {E, F1}, {F1, F2}, {F2, C}},
	}
	counts := map[string]int{}
	owner := whoOf(p)
	var recovered, events int
	for _, g := range groups {
		events += len(g.evs)
		for _, e := range g.evs {
			if e.Flags&event.Recovered != 0 {
				recovered++
			}
			if e.Flags&event.OwnerKnown == 0 || int(e.Owner.PID) != owner.pid || string(e.Owner.CommBytes()) != owner.comm {
				t.Errorf("socket %#x: owner %s[%d] flags %#x, want %v", g.cookie, e.Owner.CommBytes(), e.Owner.PID, uint8(e.Flags), owner)
			}
		}
		if len(g.evs) == 2 && g.evs[0].New == event.Listen {
			counts["listener"]++
			continue
		}
		var got seq
		if len(g.evs) == len(got) {
			for i, e := range g.evs {
				got[i] = [2]event.State{e.Old, e.New}
			}
		}
		kind := ""
		for k, w := range want {
			if got == w {
				kind = k
			}
		}
		if kind == "" {
			t.Errorf("socket %#x: unexpected life:\n%s", g.cookie, dump(g.evs))
			continue
		}
		counts[kind]++
	}
	for k := range want {
		if counts[k] != conns/2 {
			t.Errorf("%d sockets lived %q, want %d", counts[k], k, conns/2)
		}
	}
	if counts["listener"] != 1 {
		t.Errorf("%d listeners, want 1", counts["listener"])
	}

	s := must[loader.Stats](t)(tc.tr.Stats())
	t.Logf("%d connections in %v; %d events on port %d, %d recovered; stats: transitions=%d lost=%d ring drops=%d main misses=%d recovered=%d recovery misses=%d untracked=%d wakeups=%d",
		conns, elapsed.Round(time.Millisecond), events, port, recovered, s.Transitions, s.Lost(), s.RingDrops, s.MainMisses, s.Recovered, s.RecoveryMisses, s.Untracked, s.Wakeups)
	if s.Lost() != 0 {
		t.Errorf("lost %d transitions (%d of the %d transitions seen were not this test's: other TCP load on the machine)",
			s.Lost(), int64(s.Transitions)-int64(events), s.Transitions)
	}
	tc.col.mu.Lock()
	if len(tc.col.lost) > 0 {
		t.Errorf("sink was told of losses: %+v", tc.col.lost)
	}
	tc.col.mu.Unlock()
	if uint64(recovered) > s.Recovered {
		t.Errorf("%d events flagged Recovered, the counter says %d", recovered, s.Recovered)
	}
	if witness != nil {
		missing, total := witness.missing(tc.col.withPort(port, tc.from))
		t.Logf("ftrace witness: the kernel fired the tracepoint %d times for port %d", total, port)
		for _, m := range missing {
			t.Errorf("the kernel traced a transition the tracer did not report (stats above: nothing counted as lost):\n    %s", m)
		}
		if !complete && len(missing) == 0 {
			t.Errorf("sockets incomplete, but the kernel did not trace the missing transitions either")
		}
	}
}

// TestOwnerSeedModes: sockets that exist before start get the same owner and
// fd in a walk whether the seed is also joined into events (OwnersOnEvents)
// or only into walks (OwnersAtWalk), with bare walks too, and none with
// OwnersNone.
// The expected fd is the one /proc/PID/fd links to the socket's inode.
func TestOwnerSeedModes(t *testing.T) {
	requireRoot(t)
	srv := startProc(t, sockproc.Options{Comm: "tsp-seed-srv"})
	cli := startProc(t, sockproc.Options{Comm: "tsp-seed-cli"})
	l := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
	c := must[sockproc.Sock](t)(cli.Connect(l.Local))
	a := must[sockproc.Sock](t)(srv.Accept(l))
	type want struct {
		sock sockproc.Sock
		who  who
	}
	wants := []want{{l, whoOf(srv)}, {c, whoOf(cli)}, {a, whoOf(srv)}}
	nsPath := "/proc/" + strconv.Itoa(srv.Pid()) + "/ns/net"

	for _, mode := range []struct {
		name   string
		seed   loader.OwnerSeed
		bare   bool
		owners bool
	}{
		{"on events", loader.OwnersOnEvents, false, true},
		{"at walk", loader.OwnersAtWalk, false, true},
		{"at walk, bare walks", loader.OwnersAtWalk, true, true},
		{"none", loader.OwnersNone, false, false},
		{"on events, bare walks", loader.OwnersOnEvents, true, true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			tc := startTracer(t, loader.Config{Sockets: true, Owners: mode.seed, BareWalks: mode.bare})
			socks, err := tc.tr.SocketsIn(nsPath, nil)
			if err != nil {
				t.Fatal(err)
			}
			byInode := map[uint64]event.Socket{}
			for _, s := range socks {
				byInode[s.Inode] = s
			}
			for _, w := range wants {
				s, ok := byInode[w.sock.Inode]
				if !ok {
					t.Errorf("socket %v (inode %d) not in the walk", w.sock.Local, w.sock.Inode)
					continue
				}
				if !mode.owners {
					if s.OwnerKnown || s.FD != -1 {
						t.Errorf("socket %v: owner %d/%s fd %d, want none", w.sock.Local, s.Owner.PID, s.Owner.CommBytes(), s.FD)
					}
					continue
				}
				fd := fdOf(t, w.who.pid, w.sock.Inode)
				if !s.OwnerKnown || s.Source != event.OwnerIter || int(s.Owner.PID) != w.who.pid ||
					string(s.Owner.CommBytes()) != w.who.comm || int(s.FD) != fd {
					t.Errorf("socket %v: owner %d/%s fd %d source %v known %v, want %d/%s fd %d from the fd walk",
						w.sock.Local, s.Owner.PID, s.Owner.CommBytes(), s.FD, s.Source, s.OwnerKnown, w.who.pid, w.who.comm, fd)
				}
			}
		})
	}
}

// fdOf returns the fd of process pid that refers to the socket inode.
func fdOf(t *testing.T, pid int, inode uint64) int {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := "socket:[" + strconv.FormatUint(inode, 10) + "]"
	for _, e := range ents {
		if link, err := os.Readlink(dir + "/" + e.Name()); err == nil && link == want {
			fd, _ := strconv.Atoi(e.Name())
			return fd
		}
	}
	t.Fatalf("process %d has no fd for socket inode %d", pid, inode)
	return -1
}

// TestWalksOnly: a one-shot tracer loads the iterators only and attaches
// nothing: its walk finds a listener with its owner, no state program is
// loaded, Run returns when its context ends, and Barrier does not wait.
func TestWalksOnly(t *testing.T) {
	requireRoot(t)
	srv := startProc(t, sockproc.Options{Comm: "tsp-walk-srv"})
	l := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
	tr, err := loader.New(loader.Config{WalksOnly: true, Sockets: true})
	if err != nil {
		t.Fatalf("loader.New: %v", err)
	}
	defer tr.Close()

	progs := must[map[string]*ebpf.ProgramStats](t)(tr.ProgramStats())
	if len(progs) != 0 {
		t.Errorf("programs other than iterators loaded: %v", progs)
	}
	socks := must[[]event.Socket](t)(tr.SocketsIn("/proc/"+strconv.Itoa(srv.Pid())+"/ns/net", nil))
	found := false
	for _, s := range socks {
		if s.Inode == l.Inode {
			found = true
			if s.State != event.Listen || !s.OwnerKnown || int(s.Owner.PID) != srv.Pid() || s.Source != event.OwnerIter {
				t.Errorf("listener %v: state %v owner %d known %v source %v, want LISTEN owned by %d from the fd walk",
					l.Local, s.State, s.Owner.PID, s.OwnerKnown, s.Source, srv.Pid())
			}
		}
	}
	if !found {
		t.Errorf("listener %v (inode %d) not in the walk", l.Local, l.Inode)
	}

	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if err := tr.Barrier(ctx); err != nil {
		t.Errorf("Barrier: %v", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(runCtx, nil) }()
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(eventTimeout):
		t.Fatal("Run did not return after its context ended")
	}
	if st := must[loader.Stats](t)(tr.Stats()); st != (loader.Stats{}) {
		t.Errorf("stats of a tracer that traces nothing: %+v", st)
	}
	if _, err := tr.Holders(event.StateMask(0).With(event.Listen)); err == nil {
		t.Error("Holders of a WalksOnly tracer without Config.Holders: no error")
	}

	// Without owners, the fd walk is not loaded: the listener is walked
	// with no owner; with Holders, the fd walk for holders is.
	bare, err := loader.New(loader.Config{WalksOnly: true, Sockets: true, Owners: loader.OwnersNone, Holders: true})
	if err != nil {
		t.Fatalf("loader.New without owners: %v", err)
	}
	defer bare.Close()
	socks = must[[]event.Socket](t)(bare.SocketsIn("/proc/"+strconv.Itoa(srv.Pid())+"/ns/net", nil))
	found = false
	for _, s := range socks {
		if s.Inode == l.Inode {
			found = true
			if s.OwnerKnown {
				t.Errorf("listener %v walked with owner %d by a tracer that finds none", l.Local, s.Owner.PID)
			}
		}
	}
	if !found {
		t.Errorf("listener %v (inode %d) not in the walk without owners", l.Local, l.Inode)
	}
	hs := must[[]loader.Holder](t)(bare.Holders(event.StateMask(0).With(event.Listen)))
	if !slices.ContainsFunc(hs, func(h loader.Holder) bool { return int(h.PID) == srv.Pid() }) {
		t.Errorf("holders of listening sockets %v: none of process %d", hs, srv.Pid())
	}
}
