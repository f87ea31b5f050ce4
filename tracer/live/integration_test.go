package live_test

// Integration tests (root): run the real tracer into a live table, drive
// sockets inside network namespaces created for the test, and compare the
// table's per-state counts for that namespace with what `ss` reports inside
// it. Host traffic cannot interfere: only the test's namespace is compared.

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/tcpscope/tcpscope/tracer/churn"
	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/internal/sockproc"
	"github.com/tcpscope/tcpscope/tracer/ktime"
	"github.com/tcpscope/tcpscope/tracer/live"
	"github.com/tcpscope/tcpscope/tracer/loader"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// settle bounds every wait for the table and ss to agree.
const settle = 5 * time.Second

// ---- harness ---------------------------------------------------------------

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and creates network namespaces")
	}
	for _, tool := range []string{"ip", "ss"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (iproute2): %v", tool, err)
		}
	}
}

// liveRun is a tracer running into a live table until the test ends.
type liveRun struct {
	tr  *loader.Tracer
	tab *table.Table
	lv  *live.Live

	mu    sync.Mutex
	notes []string
}

func startLive(t testing.TB, cfg loader.Config) *liveRun {
	t.Helper()
	requireRoot(t)
	cfg.Sockets = true
	tr, err := loader.New(cfg)
	if err != nil {
		t.Fatalf("loader.New: %v", err)
	}
	for _, w := range tr.Warnings() {
		t.Logf("tracer warning: %s", w)
		if strings.Contains(w, "TIME_WAIT and SYN_RECV") {
			tr.Close()
			t.Fatalf("timewait/request sockets are not followed, the table cannot agree with ss: %s", w)
		}
	}
	r := &liveRun{tr: tr, tab: table.New()}
	ctx, cancel := context.WithCancel(context.Background())
	r.lv, err = live.Start(ctx, tr, r.tab, live.Options{Notify: func(msg string) {
		r.mu.Lock()
		r.notes = append(r.notes, msg)
		r.mu.Unlock()
	}})
	if err != nil {
		cancel()
		tr.Close()
		t.Fatalf("live.Start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		done := make(chan error, 1)
		go func() { done <- r.lv.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("live: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("live did not stop within 5s of cancel")
		}
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		r.mu.Lock()
		for _, n := range r.notes {
			t.Logf("live: %s", n)
		}
		r.mu.Unlock()
	})
	return r
}

// netNS is a named network namespace made for one test.
type netNS struct {
	name  string
	inode uint32
}

var nsSeq atomic.Int32

// newNetNS creates a namespace with loopback up; it is deleted when the test
// ends (register it before the processes that live in it).
func newNetNS(t testing.TB) *netNS {
	t.Helper()
	name := fmt.Sprintf("tsl%d-%d", os.Getpid()%100000, nsSeq.Add(1))
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	var st unix.Stat_t
	if err := unix.Stat("/run/netns/"+name, &st); err != nil {
		t.Fatal(err)
	}
	return &netNS{name: name, inode: uint32(st.Ino)}
}

func (ns *netNS) sysctl(t testing.TB, kv string) {
	t.Helper()
	run(t, "ip", "netns", "exec", ns.name, "sysctl", "-qw", kv)
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// in runs fn on a thread inside the namespace: sockets fn creates belong to
// it (and stay there whatever thread uses them later).
func (ns *netNS) in(t testing.TB, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + ns.name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("setns: %v", err)
	}
	defer func() {
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			panic(fmt.Sprintf("cannot return to own network namespace: %v", err)) // thread stays locked
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

func startProc(t testing.TB, ns *netNS, comm string) *sockproc.Proc {
	t.Helper()
	p, err := sockproc.Start(sockproc.Options{Comm: comm, NetNS: ns.name, Timeout: 60 * time.Second})
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

func do(t testing.TB, p *sockproc.Proc, words ...any) []string {
	t.Helper()
	f, err := p.Do(words...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func waitEOF(t testing.TB, p *sockproc.Proc, s sockproc.Sock, want string) {
	t.Helper()
	if f := do(t, p, "waiteof", s.ID); len(f) != 1 || f[0] != want {
		t.Fatalf("%v: waiteof %d: %q, want %s", p, s.ID, f, want)
	}
}

// pair makes a connection from cli to the listener l of srv.
func pair(t testing.TB, srv, cli *sockproc.Proc, l sockproc.Sock, to netip.AddrPort) (c, a sockproc.Sock) {
	t.Helper()
	c = must[sockproc.Sock](t)(cli.Connect(to))
	a = must[sockproc.Sock](t)(srv.Accept(l))
	return c, a
}

// ---- counting --------------------------------------------------------------

// counts is a number of sockets per state, the way ss sees them: request
// sockets count as SYN_RECV, CLOSE is not counted.
type counts map[event.State]int

func (c counts) String() string {
	var keys []int
	for st, n := range c {
		if n != 0 {
			keys = append(keys, int(st))
		}
	}
	sort.Ints(keys)
	var b strings.Builder
	b.WriteString("{")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%v:%d", event.State(k), c[event.State(k)])
	}
	b.WriteString("}")
	return b.String()
}

func (c counts) equal(d counts) bool {
	for st := event.Established; st <= event.MaxState; st++ {
		if c[st] != d[st] {
			return false
		}
	}
	return true
}

var ssStates = map[string]event.State{
	"ESTAB": event.Established, "SYN-SENT": event.SynSent, "SYN-RECV": event.SynRecv,
	"FIN-WAIT-1": event.FinWait1, "FIN-WAIT-2": event.FinWait2, "TIME-WAIT": event.TimeWait,
	"CLOSE-WAIT": event.CloseWait, "LAST-ACK": event.LastAck, "LISTEN": event.Listen,
	"CLOSING": event.Closing,
}

// ssCounts runs ss inside the namespace.
func ssCounts(t testing.TB, ns *netNS) counts {
	t.Helper()
	out := run(t, "ip", "netns", "exec", ns.name, "ss", "-Htan")
	c := counts{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "UNCONN" {
			continue
		}
		st, ok := ssStates[f[0]]
		if !ok {
			t.Fatalf("ss: unknown state in %q", line)
		}
		c[st]++
	}
	return c
}

// tableCounts is the table's view of the namespace, folded like ssCounts.
func (r *liveRun) tableCounts(ns *netNS) counts {
	tc := r.tab.CountsByNetNS()[ns.inode]
	c := counts{}
	for st := event.Established; st <= event.MaxState; st++ {
		switch st {
		case event.Close:
		case event.NewSynRecv:
			c[event.SynRecv] += tc[st]
		default:
			c[st] += tc[st]
		}
	}
	return c
}

// agree waits until ss and the table agree on the namespace (ss sampled
// before and after the table, unchanged) and, with want, both equal it.
// It returns the agreed counts.
func (r *liveRun) agree(t testing.TB, ns *netNS, want counts, timeout time.Duration) counts {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var s1, tb, s2 counts
	for {
		s1 = ssCounts(t, ns)
		tb = r.tableCounts(ns)
		s2 = ssCounts(t, ns)
		if s1.equal(s2) && s1.equal(tb) && (want == nil || s1.equal(want)) {
			return tb
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	switch {
	case !s1.equal(s2):
		t.Errorf("ss kept changing for %v: %v then %v (table %v)", timeout, s1, s2, tb)
	case !s1.equal(tb):
		t.Errorf("TABLE DISAGREES WITH SS after %v: ss %v, table %v (want %v)\n%s", timeout, s1, tb, want, r.dump(ns))
	default:
		t.Errorf("table and ss agree on %v, but the scenario wanted %v (scenario did not do what it meant to)", s1, want)
	}
	return tb
}

func (r *liveRun) entries(ns *netNS) []table.Entry {
	var out []table.Entry
	r.tab.Each(0, func(e *table.Entry) bool {
		if e.NetNS == ns.inode {
			out = append(out, *e)
		}
		return true
	})
	return out
}

func (r *liveRun) dump(ns *netNS) string {
	var b strings.Builder
	b.WriteString("table entries of the namespace:\n")
	for _, e := range r.entries(ns) {
		fmt.Fprintf(&b, "    %-11v %-8v %v -> %v owner=%s[%d] known=%v last=%v since=%d bound=%d seedonly=%v\n",
			e.State, e.Kind, e.Local, e.Remote, e.Owner.CommBytes(), e.Owner.PID, e.OwnerKnown, e.LastOwner, e.Since, e.SinceBound, e.SeedOnly)
	}
	st := r.tab.Stats()
	fmt.Fprintf(&b, "table stats: %+v resyncs(live)=%d", st, r.lv.Resyncs())
	if ts, err := r.tr.Stats(); err == nil {
		fmt.Fprintf(&b, "\ntracer stats: lost=%d %+v", ts.Lost(), ts)
	}
	r.mu.Lock()
	fmt.Fprintf(&b, "\nnotes: %q", r.notes)
	r.mu.Unlock()
	return b.String()
}

// ---- 1. sockets from before the start ---------------------------------------

func TestSeedPreexisting(t *testing.T) {
	requireRoot(t)
	ns := newNetNS(t)
	srv := startProc(t, ns, "tsl-seed-srv")
	cli := startProc(t, ns, "tsl-seed-cli")
	l4 := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
	l6 := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("[::1]:0")))

	pair(t, srv, cli, l4, l4.Local) // established, held
	// TIME_WAIT on the client.
	c, a := pair(t, srv, cli, l4, l4.Local)
	do(t, cli, "close", c.ID)
	waitEOF(t, srv, a, "eof")
	do(t, srv, "close", a.ID)
	// TIME_WAIT on the server, IPv6.
	c, a = pair(t, srv, cli, l6, l6.Local)
	do(t, srv, "close", a.ID)
	waitEOF(t, cli, c, "eof")
	do(t, cli, "close", c.ID)
	// Full FIN_WAIT2 (shutdown) against CLOSE_WAIT.
	c, a = pair(t, srv, cli, l4, l4.Local)
	do(t, cli, "shutdown", c.ID)
	waitEOF(t, srv, a, "eof")
	// Orphan FIN_WAIT2 (a timewait socket) against CLOSE_WAIT.
	c, a = pair(t, srv, cli, l6, l6.Local)
	do(t, cli, "close", c.ID)
	waitEOF(t, srv, a, "eof")

	want := counts{event.Listen: 2, event.Established: 2, event.TimeWait: 2, event.FinWait2: 2, event.CloseWait: 2}
	// The peer has read the FIN, but the ACK that moves FIN_WAIT1 on to
	// FIN_WAIT2 may still be on its way on a busy machine.
	for deadline := time.Now().Add(settle); ; time.Sleep(20 * time.Millisecond) {
		got := ssCounts(t, ns)
		if got.equal(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("before the tracer: ss %v, want %v", got, want)
		}
	}

	r := startLive(t, loader.Config{})
	r.agree(t, ns, want, settle)
	pids := map[uint32]string{uint32(srv.Pid()): srv.Comm(), uint32(cli.Pid()): cli.Comm()}
	for _, e := range r.entries(ns) {
		if !e.SeedOnly || e.Since != 0 || e.SinceBound == 0 {
			t.Errorf("%v %v->%v: SeedOnly=%v Since=%d SinceBound=%d, want a seed-only entry with unknown Since",
				e.State, e.Local, e.Remote, e.SeedOnly, e.Since, e.SinceBound)
		}
		if e.Inode != 0 {
			if comm, ok := pids[e.Owner.PID]; !e.OwnerKnown || !ok || string(e.Owner.CommBytes()) != comm {
				t.Errorf("%v %v->%v: owner %s[%d] known=%v, want one of the test's processes", e.State, e.Local, e.Remote, e.Owner.CommBytes(), e.Owner.PID, e.OwnerKnown)
			}
		}
	}
}

// ---- 2. workloads while running ---------------------------------------------

type wlEnv struct {
	ns       *netNS
	srv, cli *sockproc.Proc
}

func TestWorkloads(t *testing.T) {
	r := startLive(t, loader.Config{})
	lo4, lo6 := netip.MustParseAddrPort("127.0.0.1:0"), netip.MustParseAddrPort("[::1]:0")
	cases := []struct {
		name string
		run  func(t *testing.T, x *wlEnv) (want counts, twOwner *sockproc.Proc)
	}{
		{"client-first v4", func(t *testing.T, x *wlEnv) (counts, *sockproc.Proc) {
			l := must[sockproc.Sock](t)(x.srv.Listen(lo4))
			c, a := pair(t, x.srv, x.cli, l, l.Local)
			do(t, x.cli, "close", c.ID)
			waitEOF(t, x.srv, a, "eof")
			do(t, x.srv, "close", a.ID)
			return counts{event.Listen: 1, event.TimeWait: 1}, x.cli
		}},
		{"server-first v4", func(t *testing.T, x *wlEnv) (counts, *sockproc.Proc) {
			l := must[sockproc.Sock](t)(x.srv.Listen(lo4))
			c, a := pair(t, x.srv, x.cli, l, l.Local)
			do(t, x.srv, "close", a.ID)
			waitEOF(t, x.cli, c, "eof")
			do(t, x.cli, "close", c.ID)
			return counts{event.Listen: 1, event.TimeWait: 1}, x.srv
		}},
		{"rst", func(t *testing.T, x *wlEnv) (counts, *sockproc.Proc) {
			l := must[sockproc.Sock](t)(x.srv.Listen(lo4))
			c, a := pair(t, x.srv, x.cli, l, l.Local)
			do(t, x.cli, "linger0", c.ID)
			do(t, x.cli, "close", c.ID)
			waitEOF(t, x.srv, a, "reset")
			do(t, x.srv, "close", a.ID)
			return counts{event.Listen: 1}, nil
		}},
		{"close-wait held", func(t *testing.T, x *wlEnv) (counts, *sockproc.Proc) {
			l := must[sockproc.Sock](t)(x.srv.Listen(lo4))
			c, a := pair(t, x.srv, x.cli, l, l.Local)
			do(t, x.cli, "close", c.ID)
			waitEOF(t, x.srv, a, "eof")
			return counts{event.Listen: 1, event.CloseWait: 1, event.FinWait2: 1}, nil
		}},
		{"orphan fin-wait-2 then peer closes", func(t *testing.T, x *wlEnv) (counts, *sockproc.Proc) {
			// The client's orphan becomes a FIN_WAIT2 timewait socket (60 s
			// timer); the server's FIN re-arms it as TIME_WAIT (60 s).
			l := must[sockproc.Sock](t)(x.srv.Listen(lo4))
			var held []sockproc.Sock
			for i := 0; i < 5; i++ {
				c, a := pair(t, x.srv, x.cli, l, l.Local)
				do(t, x.cli, "close", c.ID)
				waitEOF(t, x.srv, a, "eof")
				held = append(held, a)
			}
			r.agree(t, x.ns, counts{event.Listen: 1, event.CloseWait: 5, event.FinWait2: 5}, settle)
			for _, a := range held {
				do(t, x.srv, "close", a.ID)
			}
			return counts{event.Listen: 1, event.TimeWait: 5}, x.cli
		}},
		{"shutdown fin-wait-2 full", func(t *testing.T, x *wlEnv) (counts, *sockproc.Proc) {
			l := must[sockproc.Sock](t)(x.srv.Listen(lo4))
			c, a := pair(t, x.srv, x.cli, l, l.Local)
			do(t, x.cli, "shutdown", c.ID)
			waitEOF(t, x.srv, a, "eof")
			return counts{event.Listen: 1, event.CloseWait: 1, event.FinWait2: 1}, nil
		}},
		{"ipv6 client-first", func(t *testing.T, x *wlEnv) (counts, *sockproc.Proc) {
			l := must[sockproc.Sock](t)(x.srv.Listen(lo6))
			c, a := pair(t, x.srv, x.cli, l, l.Local)
			do(t, x.cli, "close", c.ID)
			waitEOF(t, x.srv, a, "eof")
			do(t, x.srv, "close", a.ID)
			return counts{event.Listen: 1, event.TimeWait: 1}, x.cli
		}},
		{"v4-mapped server-first", func(t *testing.T, x *wlEnv) (counts, *sockproc.Proc) {
			l := must[sockproc.Sock](t)(x.srv.Listen(netip.MustParseAddrPort("[::]:0")))
			c, a := pair(t, x.srv, x.cli, l, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), l.Local.Port()))
			if !a.Local.Addr().Is4In6() {
				t.Errorf("accepted socket %v: want a v4-mapped address", a.Local)
			}
			do(t, x.srv, "close", a.ID)
			waitEOF(t, x.cli, c, "eof")
			do(t, x.cli, "close", c.ID)
			return counts{event.Listen: 1, event.TimeWait: 1}, x.srv
		}},
		{"many mixed", func(t *testing.T, x *wlEnv) (counts, *sockproc.Proc) {
			l := must[sockproc.Sock](t)(x.srv.Listen(lo4))
			for i := 0; i < 20; i++ {
				c, a := pair(t, x.srv, x.cli, l, l.Local)
				switch i % 4 {
				case 0:
					do(t, x.cli, "close", c.ID)
					waitEOF(t, x.srv, a, "eof")
					do(t, x.srv, "close", a.ID)
				case 1:
					do(t, x.srv, "close", a.ID)
					waitEOF(t, x.cli, c, "eof")
					do(t, x.cli, "close", c.ID)
				case 2:
					do(t, x.cli, "linger0", c.ID)
					do(t, x.cli, "close", c.ID)
					waitEOF(t, x.srv, a, "reset")
					do(t, x.srv, "close", a.ID)
				}
			}
			return counts{event.Listen: 1, event.TimeWait: 10, event.Established: 10}, nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNetNS(t)
			x := &wlEnv{ns: ns, srv: startProc(t, ns, "tsl-srv"), cli: startProc(t, ns, "tsl-cli")}
			want, owner := tc.run(t, x)
			r.agree(t, ns, want, settle)
			for _, e := range r.entries(ns) {
				if e.State != event.TimeWait {
					continue
				}
				if e.Since == 0 || e.SeedOnly {
					t.Errorf("TIME_WAIT %v->%v: Since=%d SeedOnly=%v, want a known Since", e.Local, e.Remote, e.Since, e.SeedOnly)
				}
				if owner != nil && (!e.OwnerKnown || !e.LastOwner || int(e.Owner.PID) != owner.Pid() || string(e.Owner.CommBytes()) != owner.Comm()) {
					t.Errorf("TIME_WAIT %v->%v: owner %s[%d] known=%v last=%v, want last owner %v",
						e.Local, e.Remote, e.Owner.CommBytes(), e.Owner.PID, e.OwnerKnown, e.LastOwner, owner)
				}
			}
		})
	}
}

// ---- packet filter (tcx on the namespace's loopback) -------------------------

type dropMode int

const (
	dropAllTCP dropMode = iota // every IPv4 TCP segment
	dropNoFIN                  // IPv4 TCP segments without FIN (or, with sport, not from sport)
	dropSynAck                 // IPv4 TCP SYN-ACKs
)

// dropFilter attaches a tcx program dropping packets on the namespace's
// loopback egress; it is detached by the returned func (and at the end of
// the test). Attach the next filter before detaching the previous one: both
// run meanwhile, so nothing passes unfiltered.
func dropFilter(t testing.TB, ns *netNS, mode dropMode, sport uint16) func() {
	t.Helper()
	// load reads one or two bytes at base+off (base R7, or none) into R8.
	load := func(base bool, off int32, size asm.Size) asm.Instructions {
		var in asm.Instructions
		in = append(in, asm.Mov.Reg(asm.R1, asm.R6))
		if base {
			in = append(in, asm.Mov.Reg(asm.R2, asm.R7), asm.Add.Imm(asm.R2, off))
		} else {
			in = append(in, asm.Mov.Imm(asm.R2, off))
		}
		in = append(in,
			asm.Mov.Reg(asm.R3, asm.R10),
			asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, int32(size.Sizeof())),
			asm.FnSkbLoadBytes.Call(),
			asm.JNE.Imm(asm.R0, 0, "pass"),
			asm.LoadMem(asm.R8, asm.R10, -8, size),
		)
		return in
	}
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	insns = append(insns, load(false, 14, asm.Byte)...) // version, IHL
	insns = append(insns,
		asm.Mov.Reg(asm.R7, asm.R8),
		asm.RSh.Imm(asm.R8, 4),
		asm.JNE.Imm(asm.R8, 4, "pass"))
	insns = append(insns, load(false, 23, asm.Byte)...) // protocol
	insns = append(insns, asm.JNE.Imm(asm.R8, unix.IPPROTO_TCP, "pass"),
		asm.And.Imm(asm.R7, 0xf),
		asm.LSh.Imm(asm.R7, 2))
	if sport != 0 {
		insns = append(insns, load(true, 14, asm.Half)...) // source port, network order
		insns = append(insns, asm.JNE.Imm(asm.R8, int32(sport>>8|sport<<8), "drop"))
	}
	insns = append(insns, load(true, 14+13, asm.Byte)...) // TCP flags
	switch mode {
	case dropAllTCP:
		insns = append(insns, asm.Ja.Label("drop"))
	case dropNoFIN:
		insns = append(insns, asm.And.Imm(asm.R8, 0x01), asm.JEq.Imm(asm.R8, 0, "drop"), asm.Ja.Label("pass"))
	case dropSynAck:
		insns = append(insns, asm.And.Imm(asm.R8, 0x12), asm.JEq.Imm(asm.R8, 0x12, "drop"), asm.Ja.Label("pass"))
	}
	insns = append(insns,
		asm.Mov.Imm(asm.R0, 2).WithSymbol("drop"), // TCX_DROP
		asm.Return(),
		asm.Mov.Imm(asm.R0, -1).WithSymbol("pass"), // TCX_NEXT
		asm.Return(),
	)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: insns})
	if err != nil {
		t.Skipf("cannot load a packet filter program: %v", err)
	}
	var l link.Link
	ns.in(t, func() {
		l, err = link.AttachTCX(link.TCXOptions{Interface: 1, Program: prog, Attach: ebpf.AttachTCXEgress})
	})
	if err != nil {
		prog.Close()
		t.Skipf("cannot attach a tcx packet filter to the namespace's loopback (needed to hold CLOSING/SYN_RECV; netem and iptables are not available): %v", err)
	}
	var once sync.Once
	detach := func() {
		once.Do(func() {
			l.Close()
			prog.Close()
		})
	}
	t.Cleanup(detach)
	return detach
}

// TestClosing holds a socket in CLOSING: both ends close while every segment
// is dropped; then only the client's FIN passes (the server, in FIN_WAIT1,
// sees it before the ACK of its own FIN: CLOSING); then only FINs pass (the
// server's FIN, acking the client's, puts the client in TIME_WAIT; the ACK
// of the server's FIN never passes, so the server stays in CLOSING).
func TestClosing(t *testing.T) {
	r := startLive(t, loader.Config{})
	ns := newNetNS(t)
	srv, cli := startProc(t, ns, "tsl-cl-srv"), startProc(t, ns, "tsl-cl-cli")
	l := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
	c, a := pair(t, srv, cli, l, l.Local)
	r.agree(t, ns, counts{event.Listen: 1, event.Established: 2}, settle)

	undrop := dropFilter(t, ns, dropAllTCP, 0)
	do(t, cli, "close", c.ID)
	do(t, srv, "close", a.ID)
	r.agree(t, ns, counts{event.Listen: 1, event.FinWait1: 2}, settle)
	undrop2 := dropFilter(t, ns, dropNoFIN, c.Local.Port())
	undrop()
	r.agree(t, ns, counts{event.Listen: 1, event.Closing: 1, event.FinWait1: 1}, 10*time.Second)
	dropFilter(t, ns, dropNoFIN, 0)
	undrop2()
	r.agree(t, ns, counts{event.Listen: 1, event.Closing: 1, event.TimeWait: 1}, 10*time.Second)
	for _, e := range r.entries(ns) {
		if e.State == event.Closing && (e.Since == 0 || e.SeedOnly || e.Local != a.Local) {
			t.Errorf("CLOSING entry %v: Since=%d SeedOnly=%v, want the server's %v", e.Local, e.Since, e.SeedOnly, a.Local)
		}
	}
}

// ---- 6. request sockets -----------------------------------------------------

// connectNB starts a non-blocking connect from a socket of the namespace,
// optionally bound to local (with SO_REUSEADDR), and returns its fd.
func connectNB(t testing.TB, ns *netNS, local, to netip.AddrPort) int {
	t.Helper()
	fam := unix.AF_INET
	if to.Addr().Is6() && !to.Addr().Is4In6() {
		fam = unix.AF_INET6
	}
	var fd int
	var err error
	ns.in(t, func() { fd, err = unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0) })
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if local.IsValid() {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(fd, sockaddr(local)); err != nil {
			t.Fatalf("bind %v: %v", local, err)
		}
	}
	if err := unix.Connect(fd, sockaddr(to)); err != nil && err != unix.EINPROGRESS {
		t.Fatalf("connect %v: %v", to, err)
	}
	return fd
}

// connectFrom connects like connectNB and waits for the result.
func connectFrom(t testing.TB, ns *netNS, local, to netip.AddrPort) int {
	t.Helper()
	fd := connectNB(t, ns, local, to)
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := unix.Poll(pfd, 100)
		if err == nil && n > 0 {
			break
		}
		if err != nil && err != unix.EINTR {
			t.Fatalf("poll: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect %v -> %v: not done within 5s", local, to)
		}
	}
	if soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soerr != 0 {
		t.Fatalf("connect %v -> %v: %v %v", local, to, unix.Errno(soerr), err)
	}
	return fd
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func localOf(t testing.TB, fd int) netip.AddrPort {
	t.Helper()
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	t.Fatalf("getsockname: %T", sa)
	return netip.AddrPort{}
}

// readEOF reads fd (non-blocking) until end of stream, bounded.
func readEOF(t testing.TB, fd int) {
	t.Helper()
	buf := make([]byte, 4096)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		n, err := unix.Read(fd, buf)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			time.Sleep(5 * time.Millisecond)
		case err != nil:
			t.Fatalf("read: %v", err)
		case n == 0:
			return
		}
	}
	t.Fatal("no end of stream within 5s")
}

func TestRequestSockets(t *testing.T) {
	const n = 5
	r := startLive(t, loader.Config{})
	ns := newNetNS(t)
	srv := startProc(t, ns, "tsl-rq-srv")
	l := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
	undrop := dropFilter(t, ns, dropSynAck, 0)
	for i := 0; i < n; i++ {
		connectNB(t, ns, netip.AddrPort{}, l.Local)
	}
	r.agree(t, ns, counts{event.Listen: 1, event.SynSent: n, event.SynRecv: n}, settle)
	// Let SYN-ACK retransmits re-arm the request timers (1 s, then 3 s).
	time.Sleep(1500 * time.Millisecond)
	r.agree(t, ns, counts{event.Listen: 1, event.SynSent: n, event.SynRecv: n}, settle)
	for _, e := range r.entries(ns) {
		if e.State == event.SynRecv && (e.Since == 0 || e.Kind != event.RequestSocket) {
			t.Errorf("request %v<-%v: kind %v Since %d", e.Local, e.Remote, e.Kind, e.Since)
		}
	}
	undrop()
	// The next SYN-ACK retransmit (or the client's SYN retransmit)
	// completes the handshakes; nobody accepts.
	r.agree(t, ns, counts{event.Listen: 1, event.Established: 2 * n}, 10*time.Second)
}

// ---- 3. expiry ---------------------------------------------------------------

// watchZero polls ss and the table every interval until both count no
// socket in st (or timeout), and returns when each first did.
func (r *liveRun) watchZero(t testing.TB, ns *netNS, st event.State, interval, timeout time.Duration) (ssAt, tabAt time.Duration) {
	t.Helper()
	start := time.Now()
	ssAt, tabAt = -1, -1
	for time.Since(start) < timeout && (ssAt < 0 || tabAt < 0) {
		if ssAt < 0 && ssCounts(t, ns)[st] == 0 {
			ssAt = time.Since(start)
		}
		if tabAt < 0 && r.tableCounts(ns)[st] == 0 {
			tabAt = time.Since(start)
		}
		time.Sleep(interval)
	}
	return ssAt, tabAt
}

func TestFinWait2Expiry(t *testing.T) {
	r := startLive(t, loader.Config{})
	ns := newNetNS(t)
	ns.sysctl(t, "net.ipv4.tcp_fin_timeout=2")
	srv, cli := startProc(t, ns, "tsl-fw-srv"), startProc(t, ns, "tsl-fw-cli")
	l := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
	c, a := pair(t, srv, cli, l, l.Local)
	do(t, cli, "close", c.ID)
	waitEOF(t, srv, a, "eof")
	r.agree(t, ns, counts{event.Listen: 1, event.CloseWait: 1, event.FinWait2: 1}, time.Second)
	for _, e := range r.entries(ns) {
		if e.State == event.FinWait2 && e.Kind != event.TimewaitSocket {
			t.Errorf("orphan FIN_WAIT2 %v: kind %v, want timewait", e.Local, e.Kind)
		}
	}
	ssAt, tabAt := r.watchZero(t, ns, event.FinWait2, 100*time.Millisecond, 6*time.Second)
	t.Logf("FIN_WAIT2 gone: ss after %v, table after %v", ssAt, tabAt)
	if ssAt < 0 {
		t.Fatalf("the kernel kept the orphan FIN_WAIT2 over 6s with tcp_fin_timeout=2")
	}
	if tabAt < 0 || (tabAt-ssAt).Abs() > time.Second {
		t.Errorf("table dropped the expired FIN_WAIT2 at %v, ss at %v", tabAt, ssAt)
	}
	r.agree(t, ns, counts{event.Listen: 1, event.CloseWait: 1}, time.Second)
}

func TestTimewaitExpiry60s(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 60s; -short")
	}
	t.Parallel()
	r := startLive(t, loader.Config{})
	ns := newNetNS(t)
	srv, cli := startProc(t, ns, "tsl-tw-srv"), startProc(t, ns, "tsl-tw-cli")
	l := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
	for i := 0; i < 3; i++ {
		c, a := pair(t, srv, cli, l, l.Local)
		do(t, cli, "close", c.ID)
		waitEOF(t, srv, a, "eof")
		do(t, srv, "close", a.ID)
	}
	r.agree(t, ns, counts{event.Listen: 1, event.TimeWait: 3}, settle)
	ssAt, tabAt := r.watchZero(t, ns, event.TimeWait, 250*time.Millisecond, 70*time.Second)
	t.Logf("TIME_WAIT gone: ss after %v, table after %v", ssAt, tabAt)
	if ssAt < 0 {
		t.Fatalf("TIME_WAIT sockets still there after 70s")
	}
	if tabAt < 0 || (tabAt-ssAt).Abs() > time.Second {
		t.Errorf("table dropped the expired TIME_WAITs at %v, ss at %v\n%s", tabAt, ssAt, r.dump(ns))
	}
	r.agree(t, ns, counts{event.Listen: 1}, time.Second)
}

// ---- 4. 4-tuple reuse -----------------------------------------------------------

func TestTupleReuse(t *testing.T) {
	r := startLive(t, loader.Config{})
	for _, serverSide := range []bool{true, false} {
		name := "client-side timewait"
		if serverSide {
			name = "server-side timewait"
		}
		t.Run(name, func(t *testing.T) {
			ns := newNetNS(t)
			srv := startProc(t, ns, "tsl-ru-srv")
			l := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
			fd := connectFrom(t, ns, netip.MustParseAddrPort("127.0.0.1:0"), l.Local)
			local := localOf(t, fd)
			a := must[sockproc.Sock](t)(srv.Accept(l))
			if serverSide {
				do(t, srv, "close", a.ID)
				readEOF(t, fd)
				unix.Close(fd)
			} else {
				unix.Close(fd)
				waitEOF(t, srv, a, "eof")
				do(t, srv, "close", a.ID)
			}
			r.agree(t, ns, counts{event.Listen: 1, event.TimeWait: 1}, settle)
			var twKey uint64
			for _, e := range r.entries(ns) {
				if e.State == event.TimeWait {
					twKey = e.Key
				}
			}
			fd2 := connectFrom(t, ns, local, l.Local)
			if got := localOf(t, fd2); got != local {
				t.Fatalf("reconnected from %v, want %v", got, local)
			}
			must[sockproc.Sock](t)(srv.Accept(l))
			r.agree(t, ns, counts{event.Listen: 1, event.Established: 2}, settle)
			if e, ok := r.tab.Lookup(twKey); ok && e.State == event.TimeWait {
				t.Errorf("stale TIME_WAIT entry kept after its 4-tuple was reused: %+v", e)
			}
		})
	}
}

// ---- 5. forced overflow and resync ---------------------------------------------

const envChurn = "TCPSCOPE_LIVE_CHURN"

// runChurnChild runs churn.Run with the configuration in envChurn
// ("conns,milliseconds"), prints the result and exits.
func runChurnChild() {
	f := strings.Split(os.Getenv(envChurn), ",")
	conns, _ := strconv.Atoi(f[0])
	ms, _ := strconv.Atoi(f[1])
	res, err := churn.Run(context.Background(), churn.Config{Conns: conns, Duration: time.Duration(ms) * time.Millisecond, Close: churn.Mixed})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(res.String())
	os.Exit(0)
}

// runChurn runs a bounded churn inside the namespace in a child process.
func runChurn(t testing.TB, ns *netNS, conns int, d time.Duration) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.name, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d,%d", envChurn, conns, d.Milliseconds()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("churn: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestOverflowResync(t *testing.T) {
	r := startLive(t, loader.Config{RingBytes: os.Getpagesize()})
	ns := newNetNS(t)
	srv := startProc(t, ns, "tsl-ov-srv")
	l := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
	cli := startProc(t, ns, "tsl-ov-cli")
	pair(t, srv, cli, l, l.Local) // something established that must survive resyncs

	res := runChurn(t, ns, 30000, 2*time.Second)
	t.Logf("churn: %s", res)
	st := must[loader.Stats](t)(r.tr.Stats())
	t.Logf("tracer stats: lost=%d ring drops=%d transitions=%d timer misses=%d", st.Lost(), st.RingDrops, st.Transitions, st.TimerMisses)
	if st.Lost() == 0 {
		t.Errorf("a %d-byte ring under churn lost nothing: the overflow was not forced", os.Getpagesize())
	}
	deadline := time.Now().Add(settle)
	for r.lv.Resyncs() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if r.lv.Resyncs() == 0 {
		t.Errorf("no resync within %v of losing %d events", settle, st.Lost())
	}
	got := r.agree(t, ns, nil, 10*time.Second)
	t.Logf("after churn: %v; live resyncs %d; table stats %+v", got, r.lv.Resyncs(), r.tab.Stats())
	if got[event.TimeWait] == 0 {
		t.Errorf("no TIME_WAIT left after churn: the comparison proves little")
	}
	// Memory: the table holds about the sockets that exist.
	total := 0
	for _, c := range r.tab.CountsByNetNS() {
		total += c.Total()
	}
	if n := r.tab.Len(); n != total {
		t.Errorf("Len %d, sum of per-namespace counts %d", n, total)
	}
	// No leak in the namespace the churn ran in: its entries are exactly
	// the sockets ss has there. (The table also holds every other
	// namespace's sockets, which tests of other packages running at the
	// same time create and drop: a host-wide bound would measure them.)
	nsTotal := 0
	for _, v := range got {
		nsTotal += v
	}
	if n := r.tab.CountsByNetNS()[ns.inode].Total(); n != nsTotal {
		t.Errorf("the table holds %d entries of the churn's namespace, ss %d: entries leak", n, nsTotal)
	}
}

// ---- seeding time ---------------------------------------------------------------

// timewaits fills a namespace with about n TIME_WAIT sockets (no fds needed).
func timewaits(t testing.TB, ns *netNS, n int) {
	t.Helper()
	p := startProc(t, ns, "tsl-seed-churn")
	do(t, p, "churn", "127.0.0.1:0", n)
}

func sumCounts(c counts) int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

func TestSeedTime(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	const n = 20000
	requireRoot(t)
	ns := newNetNS(t)
	start := time.Now()
	timewaits(t, ns, n)
	t.Logf("made %d TIME_WAIT sockets in %v", n, time.Since(start).Round(time.Millisecond))
	tr, err := loader.New(loader.Config{Sockets: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tab := table.New()
	ctx, cancel := context.WithCancel(context.Background())
	start = time.Now()
	lv, err := live.Start(ctx, tr, tab, live.Options{})
	seed := time.Since(start)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	socks := tab.Len()
	inNS := tab.CountsByNetNS()[ns.inode].Total()
	cancel()
	lv.Wait()
	t.Logf("live.Start seeded %d sockets (%d in the test namespace) in %v: %.0f ns/socket (includes starting Run)",
		socks, inNS, seed.Round(time.Microsecond), float64(seed.Nanoseconds())/float64(socks))
	if ss := ssCounts(t, ns); inNS != len(ss) && inNS != sumCounts(ss) {
		t.Errorf("seeded %d sockets of the namespace, ss shows %v", inNS, ss)
	}
}

func BenchmarkSeed(b *testing.B) {
	const n = 20000
	requireRoot(b)
	ns := newNetNS(b)
	timewaits(b, ns, n)
	// full: what -c and trace walk; bare: one-shot views without timers or
	// ages (loader.Config.BareWalks).
	for _, mode := range []struct {
		name string
		bare bool
	}{{"full", false}, {"bare", true}} {
		bare := mode.bare
		b.Run(mode.name, func(b *testing.B) {
			tr, err := loader.New(loader.Config{Sockets: true, BareWalks: bare, Owners: loader.OwnersNone})
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Close()
			var buf []event.Socket
			socks := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				tab := table.New()
				tab.BeginSync()
				snap, walked, err := tr.AllSockets(buf[:0])
				if err != nil {
					b.Fatal(err)
				}
				tab.EndSync(snap, ktime.Now(), walked)
				socks = len(snap)
				buf = snap
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(socks), "ns/socket")
			b.ReportMetric(float64(socks), "sockets")
		})
	}
}

// TestTimewaitAssassinated: a RST that reaches a TIME_WAIT socket with the
// right sequence number kills it (RFC 1337 "TIME_WAIT assassination", the
// kernel's default, net.ipv4.tcp_rfc1337=0). The socket is gone for ss at
// once, and must be gone from the table too: the packet that killed it is
// freed after the kill, through a tracepoint that still sees the dead
// socket's memory reading TIME_WAIT.
func TestTimewaitAssassinated(t *testing.T) {
	r := startLive(t, loader.Config{})
	ns := newNetNS(t)
	ns.sysctl(t, "net.ipv4.tcp_rfc1337=0")
	srv := startProc(t, ns, "tsl-rst-srv")
	l := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
	fd := connectFrom(t, ns, netip.MustParseAddrPort("127.0.0.1:0"), l.Local)
	local := localOf(t, fd)
	a := must[sockproc.Sock](t)(srv.Accept(l))
	rcvNxt := recvSeq(t, fd)

	// Client closes first: the client's side becomes the TIME_WAIT socket,
	// whose next expected sequence number is the server's FIN + 1.
	unix.Close(fd)
	waitEOF(t, srv, a, "eof")
	do(t, srv, "close", a.ID)
	r.agree(t, ns, counts{event.Listen: 1, event.TimeWait: 1}, settle)

	ns.in(t, func() { sendRST(t, l.Local, local, rcvNxt+1) })
	r.agree(t, ns, counts{event.Listen: 1}, settle)
}

// recvSeq returns the next sequence number the connected TCP socket fd
// expects (rcv_nxt), read through TCP_REPAIR (CAP_NET_ADMIN), which is left
// again without a window probe.
func recvSeq(t testing.TB, fd int) uint32 {
	t.Helper()
	const (
		tcpRepairOn      = 1
		tcpRepairOffNoWP = -1
		tcpRecvQueue     = 1
	)
	if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR, tcpRepairOn); err != nil {
		t.Fatalf("TCP_REPAIR on: %v", err)
	}
	defer func() {
		if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR, tcpRepairOffNoWP); err != nil {
			t.Fatalf("TCP_REPAIR off: %v", err)
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR_QUEUE, tcpRecvQueue); err != nil {
		t.Fatalf("TCP_REPAIR_QUEUE: %v", err)
	}
	seq, err := unix.GetsockoptInt(fd, unix.SOL_TCP, unix.TCP_QUEUE_SEQ)
	if err != nil {
		t.Fatalf("TCP_QUEUE_SEQ: %v", err)
	}
	return uint32(seq)
}

// sendRST sends one bare RST segment from src to dst (IPv4) with sequence
// number seq, through a raw socket of the calling thread's namespace.
func sendRST(t testing.TB, src, dst netip.AddrPort, seq uint32) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP)
	if err != nil {
		t.Fatalf("raw socket: %v", err)
	}
	defer unix.Close(fd)
	var h [20]byte
	be := binary.BigEndian
	be.PutUint16(h[0:], src.Port())
	be.PutUint16(h[2:], dst.Port())
	be.PutUint32(h[4:], seq)
	h[12] = 5 << 4 // header length: 5 words, no options
	h[13] = 0x04   // RST
	// Checksum over the pseudo-header (addresses, protocol, length) and
	// the header, ones' complement of the ones' complement sum.
	var sum uint32
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	for _, w := range [][]byte{s4[:], d4[:], {0, unix.IPPROTO_TCP, 0, byte(len(h))}, h[:]} {
		for i := 0; i+1 < len(w); i += 2 {
			sum += uint32(be.Uint16(w[i:]))
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	be.PutUint16(h[16:], ^uint16(sum))
	if err := unix.Sendto(fd, h[:], 0, &unix.SockaddrInet4{Addr: d4}); err != nil {
		t.Fatalf("send RST: %v", err)
	}
}
