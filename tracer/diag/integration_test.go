package diag_test

// Root integration tests: the tcpscope binary, as an operator runs it
// (`ip netns exec NS tcpscope closewait ...`), against real processes
// (sockproc) in a network namespace made for each test, checked against what
// the test did and against ss inside that namespace.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/diag"
	"github.com/tcpscope/tcpscope/tracer/internal/sockproc"
	"github.com/tcpscope/tcpscope/tracer/ktime"
)

// settle bounds every wait for a report to show what the test did.
const settle = 10 * time.Second

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// tcpscopeBinary builds cmd/tcpscope once per test run.
func tcpscopeBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tcpscope-diag")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "tcpscope")
		_, file, _, _ := runtime.Caller(0)
		out, err := exec.Command("go", "build", "-o", binary, filepath.Join(filepath.Dir(file), "../../cmd/tcpscope")).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and creates network namespaces")
	}
	for _, tool := range []string{"ip", "ss", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

var nsSeq atomic.Int32

// newNetNS creates a namespace with loopback up, deleted when the test ends
// (after the processes in it, which are registered later).
func newNetNS(t *testing.T) (name string, inode uint64) {
	t.Helper()
	name = fmt.Sprintf("diag%d-%d", os.Getpid()%100000, nsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+name, &st); err != nil {
		t.Fatal(err)
	}
	return name, st.Ino
}

func startProc(t *testing.T, ns, comm string) *sockproc.Proc {
	t.Helper()
	p, err := sockproc.Start(sockproc.Options{Comm: comm, NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
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

func do(t *testing.T, p *sockproc.Proc, words ...any) []string {
	t.Helper()
	f, err := p.Do(words...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var lo = netip.MustParseAddrPort("127.0.0.1:0")

// cli is a running tcpscope.
type cli struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *bytes.Buffer
	done   chan struct{}
	last   string // for messages
}

// startCLI runs tcpscope (inside ns when ns is not empty) until the test
// ends; stdout lines arrive on lines.
func startCLI(t *testing.T, ns string, args ...string) *cli {
	t.Helper()
	argv := append([]string{tcpscopeBinary(t)}, args...)
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	c := &cli{cmd: exec.Command(argv[0], argv[1:]...), lines: make(chan string, 1024), stderr: &bytes.Buffer{}, done: make(chan struct{})}
	out, err := c.cmd.StdoutPipe()
	check(t, err)
	c.cmd.Stderr = c.stderr
	check(t, c.cmd.Start())
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	go func() { c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.cmd.Process.Signal(os.Interrupt)
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			c.cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// waitAttached waits until the tracer holds its BPF links.
func (c *cli) waitAttached(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(settle)
	for time.Now().Before(deadline) {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", c.cmd.Process.Pid))
		n := 0
		for _, fd := range fds {
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", c.cmd.Process.Pid, fd.Name())); l == "anon_inode:bpf_link" {
				n++
			}
		}
		if n >= 2 {
			return
		}
		select {
		case <-c.done:
			t.Fatalf("tcpscope exited: %s", c.stderr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("tcpscope did not attach; stderr: %s", c.stderr)
}

// next returns the next stdout line.
func (c *cli) next(t *testing.T) string {
	t.Helper()
	return c.nextWithin(t, settle)
}

// nextWithin returns the next stdout line, waiting at most d.
func (c *cli) nextWithin(t *testing.T, d time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatalf("tcpscope ended; stderr: %s", c.stderr)
		}
		return l
	case <-time.After(d):
		t.Fatalf("no output within %v; stderr: %s", d, c.stderr)
	}
	return ""
}

// runOnce runs tcpscope to its end inside ns; returns stdout and the exit status.
func runOnce(t *testing.T, ns string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, tcpscopeBinary(t)}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(errb.String(), "panic") {
		t.Fatalf("tcpscope panicked: %s", errb.String())
	}
	return out.String(), code
}

// ssCount counts sockets of one state (ss spelling) inside ns.
func ssCount(t *testing.T, ns, state string) int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "ss", "-Htan", "state", state).Output()
	check(t, err)
	return len(strings.Fields(strings.TrimSpace(string(out)))) / max(1, fieldsPerLine(string(out)))
}

func fieldsPerLine(out string) int {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			return len(f)
		}
	}
	return 1
}

// ssHolders returns "pid/fd" holders ss -p names for each socket of a state,
// by "local remote".
func ssHolders(t *testing.T, ns, state string) map[string][]string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "ss", "-Htanp", "state", state).Output()
	check(t, err)
	m := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 {
			continue
		}
		key := f[2] + " " + f[3]
		m[key] = nil
		if len(f) > 4 {
			for _, part := range strings.Split(f[4], "),(") {
				var pid, fd int
				if i := strings.Index(part, "pid="); i >= 0 {
					fmt.Sscanf(part[i:], "pid=%d,fd=%d", &pid, &fd)
					m[key] = append(m[key], fmt.Sprintf("%d/%d", pid, fd))
				}
			}
		}
	}
	return m
}

func closeWaitReport(t *testing.T, line string) *diag.CloseWaitReport {
	t.Helper()
	var r diag.CloseWaitReport
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("closewait --json: %v: %s", err, line)
	}
	return &r
}

// ---- closewait -----------------------------------------------------------------

// A server that accepts and never closes: its sockets pile up in CLOSE_WAIT
// when the clients close. closewait must name exactly the server, with the
// count and the ages the test produced, and never the client.
func TestRootCloseWaitLeakingServer(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) { closeWaitLeak(t, netip.MustParseAddrPort(addr)) })
	}
}

func closeWaitLeak(t *testing.T, at netip.AddrPort) {
	requireRoot(t)
	ns, _ := newNetNS(t)
	srv := startProc(t, ns, "cwleak")
	cl := startProc(t, ns, "cwclient")
	l := must[sockproc.Sock](t)(srv.Listen(at))
	const n = 5
	var conns []sockproc.Sock
	for i := 0; i < n; i++ {
		conns = append(conns, must[sockproc.Sock](t)(cl.Connect(l.Local)))
		must[sockproc.Sock](t)(srv.Accept(l))
	}

	watch := startCLI(t, ns, "closewait", "--watch", "--json", "--interval", "300ms")
	if r := closeWaitReport(t, watch.next(t)); r.Total != 0 {
		t.Fatalf("CLOSE_WAIT before the clients closed: %+v", r)
	}
	closeStart := ktime.Now()
	for _, c := range conns {
		do(t, cl, "close", c.ID)
	}
	closeEnd := ktime.Now()

	var r *diag.CloseWaitReport
	deadline := time.Now().Add(settle)
	for r == nil || r.Total < n {
		if time.Now().After(deadline) {
			t.Fatalf("closewait never showed %d sockets; last: %+v", n, r)
		}
		r = closeWaitReport(t, watch.next(t))
	}
	if got := ssCount(t, ns, "close-wait"); got != n || r.Total != n {
		t.Fatalf("closewait total %d, ss %d, want %d", r.Total, got, n)
	}
	if len(r.Processes) != 1 || len(r.Orphans) != 0 || len(r.Shared) != 0 {
		t.Fatalf("want exactly one process, got %+v", r)
	}
	p := r.Processes[0]
	if p.PID != uint32(srv.Pid()) || p.Comm != "cwleak" || p.Count != n {
		t.Fatalf("blamed %d/%s for %d, want %d/cwleak for %d (client is %d)", p.PID, p.Comm, p.Count, srv.Pid(), n, cl.Pid())
	}
	// Ages: each socket entered CLOSE_WAIT between closeStart and closeEnd
	// (plus the loopback FIN's flight, well under a millisecond).
	const slack = int64(2 * time.Millisecond)
	minAge, maxAge := int64(r.Mono-closeEnd)-slack, int64(r.Mono-closeStart)+slack
	for _, a := range []diag.Age{p.Oldest, p.Median} {
		if a.AtLeast || a.Ns < minAge || a.Ns > maxAge {
			t.Errorf("age %v (at least: %v), want exact, in [%v, %v]", time.Duration(a.Ns), a.AtLeast, time.Duration(minAge), time.Duration(maxAge))
		}
	}
	if len(p.FDs) != n || len(p.LocalPorts) != 1 || p.LocalPorts[0].Port != l.Local.Port() || !p.LocalPorts[0].Listener {
		t.Errorf("fds %v local ports %+v", p.FDs, p.LocalPorts)
	}
	ssh := ssHolders(t, ns, "close-wait")
	for _, c := range conns {
		hs := ssh[c.Remote.String()+" "+c.Local.String()]
		if len(hs) != 1 || !strings.HasPrefix(hs[0], fmt.Sprintf("%d/", srv.Pid())) {
			t.Errorf("ss holders of %v: %v", c, hs)
		}
	}

	// One-shot runs: threshold exit status and --min-age.
	for _, tc := range []struct {
		args  []string
		code  int
		total int
	}{
		{[]string{"--threshold", fmt.Sprint(n - 1)}, 5, n},
		{[]string{"--threshold", fmt.Sprint(n)}, 0, n},
		{[]string{"--min-age", "300ms"}, 0, n}, // waits 300ms: the sockets predate this run
	} {
		out, code := runOnce(t, ns, append([]string{"closewait", "--json"}, tc.args...)...)
		if code != tc.code {
			t.Errorf("closewait %v: exit status %d, want %d", tc.args, code, tc.code)
		}
		if r := closeWaitReport(t, strings.TrimSpace(out)); r.Total != tc.total {
			t.Errorf("closewait %v: total %d, want %d", tc.args, r.Total, tc.total)
		} else if tc.total > 0 && (len(r.Processes) != 1 || r.Processes[0].PID != uint32(srv.Pid())) {
			t.Errorf("closewait %v: processes %+v", tc.args, r.Processes)
		}
	}
}

// Sockets held by several processes: a connection shared with a forked
// child, one passed over a unix socket to an unrelated process, one handed
// to a forked child that is its only holder, and one never accepted.
func TestRootCloseWaitHolders(t *testing.T) {
	requireRoot(t)
	ns, _ := newNetNS(t)
	srv := startProc(t, ns, "cwsrv")
	peer := startProc(t, ns, "cwpeer")
	cl := startProc(t, ns, "cwcli")
	l := must[sockproc.Sock](t)(srv.Listen(lo))

	cShared := must[sockproc.Sock](t)(cl.Connect(l.Local))
	aShared := must[sockproc.Sock](t)(srv.Accept(l))
	kid := must[sockproc.Child](t)(srv.Share(aShared, "cwkid"))

	cPassed := must[sockproc.Sock](t)(cl.Connect(l.Local))
	aPassed := must[sockproc.Sock](t)(srv.Accept(l))
	must[sockproc.Sock](t)(srv.PassFD(aPassed, peer, filepath.Join(t.TempDir(), "fd.sock")))

	cForked := must[sockproc.Sock](t)(cl.Connect(l.Local))
	forked := must[sockproc.Child](t)(srv.ForkAccept(l, "cwfork"))

	cQueued := must[sockproc.Sock](t)(cl.Connect(l.Local)) // never accepted

	for _, c := range []sockproc.Sock{cShared, cPassed, cForked, cQueued} {
		do(t, cl, "close", c.ID)
	}
	var r *diag.CloseWaitReport
	deadline := time.Now().Add(settle)
	for r == nil || r.Total < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("closewait never showed 4 sockets; last: %+v", r)
		}
		out, _ := runOnce(t, ns, "closewait", "--json")
		r = closeWaitReport(t, strings.TrimSpace(out))
	}
	if got := ssCount(t, ns, "close-wait"); got != 4 {
		t.Fatalf("ss shows %d CLOSE_WAIT sockets, want 4", got)
	}
	procs := map[uint32]diag.CloseWaitProcess{}
	for _, p := range r.Processes {
		procs[p.PID] = p
	}
	for _, want := range []struct {
		pid          int
		comm         string
		count, share int
	}{
		{srv.Pid(), "cwsrv", 2, 2},
		{kid.Pid, "cwkid", 1, 1},
		{peer.Pid(), "cwpeer", 1, 1},
		{forked.Pid, "cwfork", 1, 0},
	} {
		p, ok := procs[uint32(want.pid)]
		if !ok || p.Comm != want.comm || p.Count != want.count || p.Shared != want.share {
			t.Errorf("process %d/%s: got %+v, want count %d shared %d", want.pid, want.comm, p, want.count, want.share)
		}
	}
	if len(r.Processes) != 4 {
		t.Errorf("%d processes, want 4: %+v", len(r.Processes), r.Processes)
	}
	if _, blamed := procs[uint32(cl.Pid())]; blamed {
		t.Errorf("the client is blamed")
	}
	// Shared sockets name the same holders as ss -p.
	ssh := ssHolders(t, ns, "close-wait")
	if len(r.Shared) != 2 {
		t.Fatalf("shared %+v, want 2 sockets", r.Shared)
	}
	for _, s := range r.Shared {
		var got []string
		for _, h := range s.Holders {
			got = append(got, fmt.Sprintf("%d/%d", h.PID, h.FD))
		}
		want := ssh[s.Local.String()+" "+s.Remote.String()]
		if strings.Join(sorted(got), ",") != strings.Join(sorted(want), ",") {
			t.Errorf("holders of %v <- %v: tcpscope %v, ss %v", s.Local, s.Remote, got, want)
		}
	}
	if len(r.Orphans) != 1 || r.Orphans[0].Remote != cQueued.Local || r.Orphans[0].Reason != diag.ReasonNotAccepted ||
		r.Orphans[0].LastOwner == nil || r.Orphans[0].LastOwner.PID != uint32(srv.Pid()) {
		t.Errorf("orphans %+v, want the never-accepted %v in cwsrv's queue", r.Orphans, cQueued.Local)
	}
	// The text view names them too.
	out, code := runOnce(t, ns, "closewait")
	if code != 0 || !strings.Contains(out, "cwfork") || !strings.Contains(out, "not accepted (listener owned by") {
		t.Errorf("closewait text (exit %d):\n%s", code, out)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// ---- timewait ------------------------------------------------------------------

// Client-first and server-first churn: the side that closes first keeps
// the TIME_WAIT socket; timewait must say which side and which process,
// and count what ss counts.
func TestRootTimeWaitSides(t *testing.T) {
	requireRoot(t)
	ns, _ := newNetNS(t)
	srv := startProc(t, ns, "twsrv")
	cl := startProc(t, ns, "twcli")
	l := must[sockproc.Sock](t)(srv.Listen(lo))

	tw := startCLI(t, ns, "timewait", "--json", "--interval", "6s")
	tw.waitAttached(t)
	const clientFirst, serverFirst = 12, 5
	for i := 0; i < clientFirst+serverFirst; i++ {
		c := must[sockproc.Sock](t)(cl.Connect(l.Local))
		a := must[sockproc.Sock](t)(srv.Accept(l))
		first, fs, second, ss := cl, c, srv, a
		if i >= clientFirst {
			first, fs, second, ss = srv, a, cl, c
		}
		do(t, first, "close", fs.ID)
		if f, err := second.Do("waiteof", ss.ID); err != nil || len(f) != 1 || f[0] != "eof" {
			t.Fatalf("waiteof: %v %v", f, err)
		}
		do(t, second, "close", ss.ID)
	}
	// The report comes after the interval plus the time to seed the table
	// (a walk of every namespace on the host).
	line := tw.nextWithin(t, 6*time.Second+3*settle)
	var r diag.TimeWaitReport
	check(t, json.Unmarshal([]byte(line), &r))
	if got := ssCount(t, ns, "time-wait"); r.Current != got || got != clientFirst+serverFirst {
		t.Errorf("TIME_WAIT now: tcpscope %d, ss %d, want %d", r.Current, got, clientFirst+serverFirst)
	}
	if r.Entered != clientFirst+serverFirst || r.ClientFirst != clientFirst || r.ServerFirst != serverFirst || r.UnknownSide != 0 {
		t.Errorf("entered %d, client first %d, server first %d, unknown %d; want %d, %d, %d, 0; stderr: %s",
			r.Entered, r.ClientFirst, r.ServerFirst, r.UnknownSide, clientFirst+serverFirst, clientFirst, serverFirst, tw.stderr)
	}
	want := []diag.Closer{
		{PID: uint32(cl.Pid()), Comm: "twcli", Side: diag.Client, Count: clientFirst},
		{PID: uint32(srv.Pid()), Comm: "twsrv", Side: diag.Server, Count: serverFirst},
	}
	if fmt.Sprint(r.Closers) != fmt.Sprint(want) {
		t.Errorf("closers %+v, want %+v", r.Closers, want)
	}
	if r.Lifetimes.Known != clientFirst+serverFirst || r.Lifetimes.MaxNs <= 0 || r.Lifetimes.MaxNs > int64(6*time.Second) {
		t.Errorf("lifetimes %+v", r.Lifetimes)
	}
	if len(r.Destinations) != 1 || r.Destinations[0].Remote != l.Local || r.Destinations[0].TimeWait != clientFirst {
		t.Errorf("destinations %+v, want %d towards %v", r.Destinations, clientFirst, l.Local)
	}
	if len(r.TopLocalPorts) == 0 || r.TopLocalPorts[0] != (diag.PortCount{Port: l.Local.Port(), Count: serverFirst, Listener: true}) {
		t.Errorf("top local ports %+v", r.TopLocalPorts)
	}
}

// ---- life ----------------------------------------------------------------------

type lifeLine struct {
	PID    *uint32  `json:"pid"`
	Comm   *string  `json:"comm"`
	Laddr  string   `json:"laddr"`
	Lport  uint16   `json:"lport"`
	Raddr  string   `json:"raddr"`
	Rport  uint16   `json:"rport"`
	MS     *float64 `json:"ms"`
	TX     uint64   `json:"tx_bytes"`
	RX     uint64   `json:"rx_bytes"`
	End    string   `json:"end"`
	NetNS  uint64   `json:"netns"`
	Cookie uint64   `json:"cookie"`
	LastSt string   `json:"last_state"`
}

// life: durations and byte counts of what the test did, the owner of each
// end, and how each connection ended.
func TestRootLifeReportsWhatWasSent(t *testing.T) {
	requireRoot(t)
	ns, ino := newNetNS(t)
	srv := startProc(t, ns, "lfsrv")
	cl := startProc(t, ns, "lfcli")
	l := must[sockproc.Sock](t)(srv.Listen(lo))

	life := startCLI(t, "", "life", "--json", "--netns", fmt.Sprint(ino))
	life.waitAttached(t)
	// trace's filters: only the server's ends.
	srvOnly := startCLI(t, "", "life", "--json", "--comm", "lfsrv", "--netns", fmt.Sprint(ino))
	srvOnly.waitAttached(t)

	// A normal connection: 100000 bytes up, 3000 down, held open 200 ms.
	const up, down, hold = 100000, 3000, 200 * time.Millisecond
	t0 := ktime.Now()
	c := must[sockproc.Sock](t)(cl.Connect(l.Local))
	a := must[sockproc.Sock](t)(srv.Accept(l))
	check(t, cl.Send(c, up))
	check(t, srv.Recv(a, up))
	check(t, srv.Send(a, down))
	check(t, cl.Recv(c, down))
	time.Sleep(hold)
	do(t, cl, "close", c.ID)
	if f, err := srv.Do("waiteof", a.ID); err != nil || f[0] != "eof" {
		t.Fatalf("waiteof: %v %v", f, err)
	}
	do(t, srv, "close", a.ID)
	t1 := ktime.Now()

	// An abortive close (SO_LINGER 0): reset sent by the client, received
	// by the server.
	c2 := must[sockproc.Sock](t)(cl.Connect(l.Local))
	a2 := must[sockproc.Sock](t)(srv.Accept(l))
	check(t, cl.Send(c2, 7))
	check(t, srv.Recv(a2, 7))
	do(t, cl, "linger0", c2.ID)
	do(t, cl, "close", c2.ID)
	if f, err := srv.Do("waiteof", a2.ID); err != nil || f[0] != "reset" {
		t.Fatalf("waiteof after RST: %v %v", f, err)
	}
	do(t, srv, "close", a2.ID)

	// Refused: nothing listens on the port any more.
	do(t, srv, "close", l.ID)
	if _, err := cl.Connect(l.Local); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("connect to a closed port: %v", err)
	}

	got := map[string]lifeLine{} // by "comm end"
	deadline := time.Now().Add(settle)
	var lines []string
	for len(got) < 5 && time.Now().Before(deadline) {
		var line string
		select {
		case line = <-life.lines:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("after %v: %d lines:\n%s\nstderr: %s", settle, len(lines), strings.Join(lines, "\n"), life.stderr)
		}
		lines = append(lines, line)
		var ll lifeLine
		check(t, json.Unmarshal([]byte(line), &ll))
		if ll.NetNS != ino || ll.Comm == nil || ll.PID == nil {
			t.Errorf("line without owner or from another namespace: %s", line)
			continue
		}
		got[*ll.Comm+" "+ll.End] = ll
	}
	for _, w := range []struct {
		key    string
		pid    int
		local  netip.AddrPort
		tx, rx uint64
		timed  bool
	}{
		{"lfcli normal", cl.Pid(), c.Local, up, down, true},
		{"lfsrv normal", srv.Pid(), a.Local, down, up, true},
		{"lfcli reset-sent", cl.Pid(), c2.Local, 7, 0, false},
		{"lfsrv reset-received", srv.Pid(), a2.Local, 0, 7, false},
		{"lfcli refused", cl.Pid(), netip.AddrPort{}, 0, 0, false},
	} {
		ll, ok := got[w.key]
		if !ok {
			t.Errorf("no %q line; got %v", w.key, got)
			continue
		}
		if *ll.PID != uint32(w.pid) {
			t.Errorf("%s: pid %d, want %d", w.key, *ll.PID, w.pid)
		}
		if w.local.IsValid() && (ll.Laddr != w.local.Addr().String() || ll.Lport != w.local.Port()) {
			t.Errorf("%s: local %s:%d, want %v", w.key, ll.Laddr, ll.Lport, w.local)
		}
		if ll.TX != w.tx || ll.RX != w.rx {
			t.Errorf("%s: tx %d rx %d, want %d %d", w.key, ll.TX, ll.RX, w.tx, w.rx)
		}
		if w.timed {
			maxMS := float64(t1-t0) / 1e6
			if ll.MS == nil || *ll.MS < float64(hold)/1e6 || *ll.MS > maxMS {
				t.Errorf("%s: duration %v ms, want between %v and %.3f", w.key, ll.MS, hold, maxMS)
			}
		}
	}
	// The server's two ends, and nothing of the client's (whose normal end
	// comes first).
	checkOnly(t, srvOnly, "lfsrv", 2)
}

// checkOnly reads n lines of a filtered life and checks each is comm's.
func checkOnly(t *testing.T, c *cli, comm string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		var ll lifeLine
		line := c.next(t)
		check(t, json.Unmarshal([]byte(line), &ll))
		if ll.Comm == nil || *ll.Comm != comm {
			t.Errorf("life --comm %s printed %s", comm, line)
		}
	}
}

// A connection whose peer vanishes (its link goes down) ends by timeout:
// TCP_USER_TIMEOUT gives up on unacknowledged data with ETIMEDOUT.
func TestRootLifeTimeout(t *testing.T) {
	requireRoot(t)
	prefix := fmt.Sprintf("dgt%d", os.Getpid()%100000)
	pair, err := sockproc.NewVethPair(prefix, netip.MustParseAddr("10.231.77.0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pair.Delete(); err != nil {
			t.Error(err)
		}
	})
	var st syscall.Stat_t
	check(t, syscall.Stat("/run/netns/"+pair.A, &st))
	srv := startProc(t, pair.B, "tosrv")
	cl := startProc(t, pair.A, "tocli")
	l := must[sockproc.Sock](t)(srv.Listen(netip.AddrPortFrom(pair.AddrB, 0)))
	c := must[sockproc.Sock](t)(cl.Connect(l.Local))
	must[sockproc.Sock](t)(srv.Accept(l))

	life := startCLI(t, "", "life", "--json", "--netns", fmt.Sprint(st.Ino))
	life.waitAttached(t)
	do(t, cl, "usertimeout", c.ID, 300)
	if out, err := exec.Command("ip", "-n", pair.B, "link", "set", prefix+"b", "down").CombinedOutput(); err != nil {
		t.Fatalf("link down: %v: %s", err, out)
	}
	check(t, cl.Send(c, 1000))
	var ll lifeLine
	life.last = life.next(t)
	check(t, json.Unmarshal([]byte(life.last), &ll))
	// Never acknowledged. TX counts data the kernel transmitted, each byte
	// once over successful retransmissions; with the link down even the
	// first transmission fails locally, and the kernel counts each failed
	// attempt, so TX is at least what was sent. The connection predates the
	// tracer: its duration is unknown.
	if ll.End != "timeout" || ll.PID == nil || *ll.PID != uint32(cl.Pid()) || ll.Lport != c.Local.Port() || ll.TX < 1000 || ll.MS != nil {
		t.Errorf("got %s, want tocli[%d]'s connection from %v ended by timeout, >= 1000 bytes sent, no duration", life.last, cl.Pid(), c.Local)
	}
}
