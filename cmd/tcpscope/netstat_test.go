package main

// Root integration tests for `tcpscope netstat`: real sockets, held by child
// processes, compared line for line with net-tools netstat and, for state
// counts and expiry, with ss. Most scenarios run in a network namespace of
// their own, so that nothing else on the host shows up in either tool.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ---- child processes ---------------------------------------------------------

// The test binary doubles as a socket-holding child process: started
// through a symlink named like the process should be, so that its comm (the
// executable's base name) and netstat -p's name (argv[0]'s base name) agree.
// The test binary doubles as a socket-holding child process: started
// through a symlink named like the process should be, so that its comm (the
// executable's base name) and netstat -p's name (argv[0]'s base name) agree.
// The test binary doubles as a socket-holding child process: started
// through a symlink named like the process should be, so that its comm (the
// executable's base name) and netstat -p's name (argv[0]'s base name) agree.
// The test binary doubles as a socket-holding child process: started
// through a symlink named like the process should be, so that its comm (the
// executable's base name) and netstat -p's name (argv[0]'s base name) agree.
const nstChildEnv = "TCPSCOPE_NETSTAT_TEST_CHILD"

func init() {
	if os.Getenv(nstChildEnv) == "1" {
		nstChildMain()
	}
}

// nstChildMain reads one command per line and answers "ok ..." or "err ...":
//
//	listen NET ADDR        -> ok ID PORT
//	dial NET ADDR [nokeep] -> ok ID LOCALPORT
//	dialnb ADDR            -> ok ID   (non-blocking IPv4 connect, left pending)
//	accept ID              -> ok ID REMOTEPORT
//	close ID | linger0 ID | shutdown ID | waiteof ID | exit
//	rename HEX             -> ok   (every thread's comm set to the hex-decoded name)
func nstChildMain() {
	socks := map[int]any{}
	next := 1
	add := func(s any) int { id := next; next++; socks[id] = s; return id }
	out := bufio.NewWriter(os.Stdout)
	reply := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...); out.Flush() }
	reply("ready %d", os.Getpid())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		id := 0
		if len(f) > 1 {
			id, _ = strconv.Atoi(f[1])
		}
		conn, _ := socks[id].(*net.TCPConn)
		var err error
		switch f[0] {
		case "exit":
			reply("ok")
			os.Exit(0)
		case "listen":
			// Go listens with MPTCP by default (the kernel then keeps a
			// TCP subflow without an fd behind the fd's MPTCP socket): say
			// which, so that the scenario covers both.
			var lc net.ListenConfig
			lc.SetMultipathTCP(len(f) > 3 && f[3] == "mptcp")
			var l net.Listener
			if l, err = lc.Listen(context.Background(), f[1], f[2]); err == nil {
				reply("ok %d %d", add(l), l.Addr().(*net.TCPAddr).Port)
				continue
			}
		case "dial":
			d := net.Dialer{Timeout: 5 * time.Second}
			if len(f) > 3 && f[3] == "nokeep" {
				d.KeepAlive = -1
			}
			d.SetMultipathTCP(len(f) > 3 && f[3] == "mptcp")
			var c net.Conn
			if c, err = d.Dial(f[1], f[2]); err == nil {
				reply("ok %d %d", add(c), c.LocalAddr().(*net.TCPAddr).Port)
				continue
			}
		case "dialnb":
			var fd int
			if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0); err == nil {
				ap, perr := net.ResolveTCPAddr("tcp4", f[1])
				if perr != nil {
					err = perr
					break
				}
				sa := &unix.SockaddrInet4{Port: ap.Port}
				copy(sa.Addr[:], ap.IP.To4())
				if err = unix.Connect(fd, sa); err == unix.EINPROGRESS {
					reply("ok %d", add(fd))
					continue
				}
			}
		case "accept":
			l, ok := socks[id].(*net.TCPListener)
			if !ok {
				err = fmt.Errorf("no listener %d", id)
				break
			}
			l.SetDeadline(time.Now().Add(5 * time.Second))
			var c net.Conn
			if c, err = l.Accept(); err == nil {
				reply("ok %d %d", add(c), c.RemoteAddr().(*net.TCPAddr).Port)
				continue
			}
		case "close":
			if c, ok := socks[id].(io.Closer); ok {
				err = c.Close()
			} else if fd, ok := socks[id].(int); ok {
				err = unix.Close(fd)
			} else {
				err = fmt.Errorf("no socket %d", id)
			}
			delete(socks, id)
		case "linger0", "shutdown", "waiteof":
			if conn == nil {
				err = fmt.Errorf("no connection %d", id)
				break
			}
			switch f[0] {
			case "linger0":
				err = conn.SetLinger(0)
			case "shutdown":
				err = conn.CloseWrite()
			default:
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err = io.Copy(io.Discard, conn); errors.Is(err, syscall.ECONNRESET) {
					err = nil // an RST ends it too
				}
			}
		case "rename": // rename HEX: every thread's comm, as prctl(PR_SET_NAME) sets it
			err = renameThreads(f[1])
		default:
			err = fmt.Errorf("unknown command %q", f[0])
		}
		if err != nil {
			reply("err %s", strings.ReplaceAll(err.Error(), "\n", " "))
		} else {
			reply("ok")
		}
	}
	os.Exit(0)
}

type nstProc struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	pid   int
}

// startProc starts a child named name (at most 15 bytes) in namespace ns
// ("" for the test's own).
func startProc(t *testing.T, ns, name string) *nstProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), name)
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	p := &nstProc{t: t, name: name, cmd: inNS(ns, link), lines: make(chan string, 16)}
	p.cmd.Env = append(os.Environ(), nstChildEnv+"=1")
	p.cmd.Stderr = os.Stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	f := strings.Fields(p.read())
	if len(f) != 2 || f[0] != "ready" {
		t.Fatalf("%s: bad greeting %q", name, f)
	}
	p.pid, _ = strconv.Atoi(f[1])
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.pid))
	if got := strings.TrimSpace(string(comm)); got != name {
		t.Fatalf("child comm %q, want %q", got, name)
	}
	return p
}

func (p *nstProc) read() string {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			p.t.Fatalf("%s exited", p.name)
		}
		return l
	case <-time.After(10 * time.Second):
		p.t.Fatalf("%s: no reply in 10s", p.name)
	}
	return ""
}

// do runs a command and returns the numbers of its "ok" reply.
func (p *nstProc) do(words ...any) []int {
	p.t.Helper()
	s := strings.TrimSpace(fmt.Sprintln(words...))
	if _, err := io.WriteString(p.in, s+"\n"); err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, s, err)
	}
	r := p.read()
	if r != "ok" && !strings.HasPrefix(r, "ok ") {
		p.t.Fatalf("%s: %s: %s", p.name, s, r)
	}
	var n []int
	for _, f := range strings.Fields(r)[1:] {
		v, _ := strconv.Atoi(f)
		n = append(n, v)
	}
	return n
}

// ---- namespaces and commands -------------------------------------------------

func needNetstatTools(t *testing.T) {
	t.Helper()
	needRoot(t)
	for _, tool := range []string{"netstat", "ss", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
}

// newNS creates a network namespace with loopback up, deleted at cleanup
// (after the processes in it are gone: cleanups run last-in first-out).
func newNS(t testing.TB, name string) string {
	t.Helper()
	ns := fmt.Sprintf("tsn-%s-%d", name, os.Getpid()) // concurrent runs must not share one
	exec.Command("ip", "netns", "del", ns).Run()      // left over from an earlier run
	for _, args := range [][]string{{"netns", "add", ns}, {"-n", ns, "link", "set", "lo", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	return ns
}

func inNS(ns string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.Command(args[0], args[1:]...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
}

// runIn runs a command in ns and returns its stdout; it fails on an error.
func runIn(t testing.TB, ns string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := inNS(ns, args...)
	cmd.Stderr = &stderr
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v; stderr: %s", args, err, stderr.String())
	}
	return string(out)
}

func tcpscopeNetstat(t *testing.T, ns string, args ...string) string {
	t.Helper()
	return runIn(t, ns, append([]string{binary, "netstat"}, args...)...)
}

// countdown masks the time left in -o's timer column.
var countdown = regexp.MustCompile(`\b(on|keepalive|timewait|probe) \(\d+\.\d\d/`)

// lineSet splits netstat-like output into its two header lines and the
// sorted socket lines that keep(line) accepts.
func lineSet(s string, keep func(string) bool) []string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	var head, body []string
	for i, l := range lines {
		l = countdown.ReplaceAllString(l, "$1 (#.##/")
		if i < 2 {
			head = append(head, l)
		} else if keep == nil || keep(l) {
			body = append(body, l)
		}
	}
	sort.Strings(body)
	return append(head, body...)
}

// portFilter keeps lines whose local or foreign address has one of ports.
func portFilter(ports ...int) func(string) bool {
	return func(l string) bool {
		f := strings.Fields(l)
		if len(f) < 5 {
			return false
		}
		for _, a := range f[3:5] {
			i := strings.LastIndexByte(a, ':')
			p, _ := strconv.Atoi(a[i+1:])
			for _, want := range ports {
				if p == want {
					return true
				}
			}
		}
		return false
	}
}

// compareNetstat runs netstat and tcpscope netstat with the same flags
// right after each other and compares the sets of lines, a few times over
// if a timer moved between the two.
func compareNetstat(t *testing.T, ns string, keep func(string) bool, flags ...string) []string {
	t.Helper()
	return compareNetstatWith(t, ns, keep, nil, flags...)
}

// compareNetstatWith is compareNetstat with extra flags for tcpscope only
// (--bpf-walk).
func compareNetstatWith(t *testing.T, ns string, keep func(string) bool, extra []string, flags ...string) []string {
	t.Helper()
	var want, got []string
	for try := 0; try < 4; try++ {
		if try > 0 {
			time.Sleep(150 * time.Millisecond)
		}
		want = lineSet(runIn(t, ns, append([]string{"netstat"}, flags...)...), keep)
		got = lineSet(tcpscopeNetstat(t, ns, append(flags, extra...)...), keep)
		if strings.Join(want, "\n") == strings.Join(got, "\n") {
			t.Logf("netstat %s (tcpscope %s): %d lines identical", strings.Join(flags, " "), strings.Join(extra, " "), len(want))
			return want
		}
	}
	t.Errorf("tcpscope netstat %s differs from netstat:\n%s", strings.Join(append(flags, extra...), " "), diffLines(want, got))
	return want
}

func diffLines(want, got []string) string {
	var b strings.Builder
	in := func(s []string, l string) bool {
		for _, x := range s {
			if x == l {
				return true
			}
		}
		return false
	}
	for _, l := range want {
		if !in(got, l) {
			fmt.Fprintf(&b, "  only netstat:  %q\n", l)
		}
	}
	for _, l := range got {
		if !in(want, l) {
			fmt.Fprintf(&b, "  only tcpscope: %q\n", l)
		}
	}
	return b.String()
}

// stateOf finds, in netstat -ant style lines, the state of the socket with
// local port lport and foreign port rport (0: a listener's "*").
func stateOf(lines []string, lport, rport int) []string {
	var st []string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 6 || !strings.HasPrefix(f[0], "tcp") {
			continue
		}
		if portOf(f[3]) == lport && ((rport == 0 && strings.HasSuffix(f[4], ":*")) || (rport != 0 && portOf(f[4]) == rport)) {
			st = append(st, f[5])
		}
	}
	return st
}

func portOf(a string) int {
	p, _ := strconv.Atoi(a[strings.LastIndexByte(a, ':')+1:])
	return p
}

// ---- the scenario ------------------------------------------------------------

type scenario struct {
	ports  []int             // every port of the scenario
	expect map[[2]int]string // {local port, foreign port} -> state netstat must show
	gone   [][2]int          // connections that must not show at all
}

// buildScenario creates, in ns, sockets in the states the tests compare:
// listeners (v4, dual-stack v6, v6-only), established pairs (v4, v6,
// v4-mapped), TIME_WAIT on the client and on the server, an RST close,
// CLOSE_WAIT held open with an orphaned FIN_WAIT2 on the other side, and a
// held FIN_WAIT2 (shutdown) with its CLOSE_WAIT.
func buildScenario(t *testing.T, ns string) *scenario {
	srv := startProc(t, ns, "nst-srv")
	cli := startProc(t, ns, "nst-cli")
	sc := &scenario{expect: map[[2]int]string{}}
	listen := func(network, addr string, mptcp ...any) (int, int) {
		r := srv.do(append([]any{"listen", network, addr}, mptcp...)...)
		sc.ports = append(sc.ports, r[1])
		sc.expect[[2]int{r[1], 0}] = "LISTEN"
		return r[0], r[1]
	}
	l4, p4 := listen("tcp4", "127.0.0.1:0")
	l6, p6 := listen("tcp", "[::]:0", "mptcp") // dual stack
	l6o, p6o := listen("tcp6", "[::1]:0", "mptcp")
	type pair struct{ c, a, cport, sport int }
	connect := func(l, port int, network, addr string, extra ...any) pair {
		r := cli.do(append([]any{"dial", network, fmt.Sprintf(addr, port)}, extra...)...)
		a := srv.do("accept", l)
		if a[1] != r[1] {
			t.Fatalf("accepted port %d, dialled from %d", a[1], r[1])
		}
		return pair{c: r[0], a: a[0], cport: r[1], sport: port}
	}
	est := func(p pair, cs, ss string) {
		sc.expect[[2]int{p.cport, p.sport}] = cs
		sc.expect[[2]int{p.sport, p.cport}] = ss
	}
	est(connect(l4, p4, "tcp4", "127.0.0.1:%d"), "ESTABLISHED", "ESTABLISHED")
	est(connect(l4, p4, "tcp4", "127.0.0.1:%d", "nokeep"), "ESTABLISHED", "ESTABLISHED")
	est(connect(l6, p6, "tcp4", "127.0.0.1:%d"), "ESTABLISHED", "ESTABLISHED") // v4-mapped on the server
	est(connect(l6, p6, "tcp6", "[::1]:%d"), "ESTABLISHED", "ESTABLISHED")
	est(connect(l6o, p6o, "tcp6", "[::1]:%d"), "ESTABLISHED", "ESTABLISHED")
	// MPTCP at both ends: the fds hold MPTCP sockets, the TCP tables the
	// subflows.
	est(connect(l6o, p6o, "tcp6", "[::1]:%d", "mptcp"), "ESTABLISHED", "ESTABLISHED")

	// Client closes first: TIME_WAIT on the client.
	p := connect(l4, p4, "tcp4", "127.0.0.1:%d")
	cli.do("close", p.c)
	srv.do("waiteof", p.a)
	srv.do("close", p.a)
	sc.expect[[2]int{p.cport, p.sport}] = "TIME_WAIT"
	sc.gone = append(sc.gone, [2]int{p.sport, p.cport})
	// Server closes first: TIME_WAIT on the server (v6).
	p = connect(l6o, p6o, "tcp6", "[::1]:%d")
	srv.do("close", p.a)
	cli.do("waiteof", p.c)
	cli.do("close", p.c)
	sc.expect[[2]int{p.sport, p.cport}] = "TIME_WAIT"
	sc.gone = append(sc.gone, [2]int{p.cport, p.sport})
	// RST: no TIME_WAIT, and the server's socket (still open) is unhashed.
	p = connect(l4, p4, "tcp4", "127.0.0.1:%d")
	cli.do("linger0", p.c)
	cli.do("close", p.c)
	srv.do("waiteof", p.a)
	sc.gone = append(sc.gone, [2]int{p.cport, p.sport}, [2]int{p.sport, p.cport})
	// The client closes, the server never does: CLOSE_WAIT held open, the
	// orphaned client in FIN_WAIT2.
	p = connect(l6, p6, "tcp4", "127.0.0.1:%d")
	cli.do("close", p.c)
	srv.do("waiteof", p.a)
	est(p, "FIN_WAIT2", "CLOSE_WAIT")
	// The client shuts down but keeps its socket: FIN_WAIT2 held open.
	p = connect(l6, p6, "tcp6", "[::1]:%d")
	cli.do("shutdown", p.c)
	srv.do("waiteof", p.a)
	est(p, "FIN_WAIT2", "CLOSE_WAIT")
	for k := range sc.expect {
		sc.ports = append(sc.ports, k[0])
	}
	time.Sleep(100 * time.Millisecond) // the last ACKs
	return sc
}

// check verifies that netstat -ant lines show the scenario as built, so
// that a comparison of two empty outputs cannot pass.
func (sc *scenario) check(t *testing.T, what string, lines []string) {
	t.Helper()
	for k, want := range sc.expect {
		if got := stateOf(lines, k[0], k[1]); len(got) != 1 || got[0] != want {
			t.Errorf("%s: socket %d->%d: states %v, want [%s]", what, k[0], k[1], got, want)
		}
	}
	for _, k := range sc.gone {
		if got := stateOf(lines, k[0], k[1]); len(got) != 0 {
			t.Errorf("%s: socket %d->%d should not show, has states %v", what, k[0], k[1], got)
		}
	}
}

var ssStates = map[string]string{
	"ESTABLISHED": "established", "SYN_SENT": "syn-sent", "SYN_RECV": "syn-recv",
	"FIN_WAIT1": "fin-wait-1", "FIN_WAIT2": "fin-wait-2", "TIME_WAIT": "time-wait",
	"CLOSE_WAIT": "close-wait", "LAST_ACK": "last-ack", "LISTEN": "listening", "CLOSING": "closing",
}

// summaryBlock parses the --summary --netns block of namespace inode ino
// (the total block if there is no per-namespace block).
func summaryBlock(t *testing.T, out string, ino uint64) map[string]int {
	t.Helper()
	counts, ok := parseSummaryBlock(out, ino)
	if !ok {
		t.Fatalf("no block \"netns %d:\" in --summary --netns:\n%s", ino, out)
	}
	return counts
}

func parseSummaryBlock(out string, ino uint64) (map[string]int, bool) {
	counts := map[string]int{}
	head := fmt.Sprintf("netns %d:", ino)
	in, found := false, false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case l == head:
			in, found = true, true
			continue
		case strings.HasPrefix(l, "netns "):
			in = false
		}
		if in {
			f := strings.Fields(l)
			if len(f) == 2 {
				n, _ := strconv.Atoi(f[1])
				counts[f[0]] = n
			}
		}
	}
	return counts, found
}

func netnsInode(t testing.TB, ns string) uint64 {
	t.Helper()
	l := strings.TrimSpace(runIn(t, ns, "readlink", "/proc/self/ns/net"))
	var ino uint64
	if _, err := fmt.Sscanf(l, "net:[%d]", &ino); err != nil {
		t.Fatalf("netns link %q", l)
	}
	return ino
}

// watch is a running `tcpscope netstat -c ...`, its output split into the
// prints it made (each starts with a header line).
type watch struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr lockedBuffer
	first  string // the first line of a print

	mu     sync.Mutex
	buf    []string
	frames []int       // indexes into buf where prints start
	times  []time.Time // when each print started arriving
	last   time.Time   // when output last arrived
	done   chan struct{}
}

func startWatch(t *testing.T, ns, first string, args ...string) *watch {
	t.Helper()
	w := &watch{t: t, first: first, done: make(chan struct{})}
	w.cmd = inNS(ns, append([]string{binary, "netstat", "-c"}, args...)...)
	w.cmd.Stderr = &w.stderr
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.cmd.Process.Kill(); <-w.done; w.cmd.Wait() })
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			w.mu.Lock()
			if strings.HasPrefix(sc.Text(), first) {
				w.frames = append(w.frames, len(w.buf))
				w.times = append(w.times, time.Now())
			}
			w.buf = append(w.buf, sc.Text())
			w.last = time.Now()
			w.mu.Unlock()
		}
	}()
	if _, ok := w.waitFrame(10*time.Second, func(string) bool { return true }); !ok {
		t.Fatalf("no first print; stderr: %s", w.stderr.String())
	}
	return w
}

// latest returns the last complete print (output quiet for 100ms) and how
// many prints there have been.
func (w *watch) latest() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.frames) == 0 || time.Since(w.last) < 100*time.Millisecond {
		return "", -1
	}
	return strings.Join(w.buf[w.frames[len(w.frames)-1]:], "\n"), len(w.frames)
}

// changes counts the prints after the first `from` whose key differs from
// the print before them.
func (w *watch) changes(from int, key func(frame string) string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for i := max(from, 1); i < len(w.frames); i++ {
		end := len(w.buf)
		if i+1 < len(w.frames) {
			end = w.frames[i+1]
		}
		prev := strings.Join(w.buf[w.frames[i-1]:w.frames[i]], "\n")
		if key(strings.Join(w.buf[w.frames[i]:end], "\n")) != key(prev) {
			n++
		}
	}
	return n
}

func (w *watch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.frames)
}

// waitFrame waits until the latest print satisfies ok.
func (w *watch) waitFrame(timeout time.Duration, ok func(string) bool) (string, bool) {
	deadline := time.Now().Add(timeout)
	var f string
	for time.Now().Before(deadline) {
		var n int
		if f, n = w.latest(); n > 0 && ok(f) {
			return f, true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return f, false
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (w *watch) stderrText() string { return w.stderr.String() }

// stop interrupts it: it must exit 0.
func (w *watch) stop() {
	w.t.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGINT); err != nil {
		w.t.Fatal(err)
	}
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		w.t.Fatalf("-c did not end within 5s of SIGINT")
	}
	if err := w.cmd.Wait(); err != nil {
		w.t.Errorf("-c after SIGINT: %v; stderr: %s", err, w.stderr.String())
	}
}

const titleAllLine = "Active Internet connections"

// ssHas reports whether ss in ns shows a socket in state with local port.
func ssHas(t *testing.T, ns, state string, lport int) bool {
	out := runIn(t, ns, "ss", "-tanH", "state", state)
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && portOf(f[2]) == lport {
			return true
		}
	}
	return false
}

// expiry waits (up to limit) for ss to stop showing each socket (local
// port, foreign port), and for the -c print to drop each within a second of
// ss.
func expiry(t *testing.T, ns string, w *watch, ssState string, socks [][2]int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	ssGone := map[[2]int]time.Time{}
	ssAbsent := map[[2]int]time.Time{}
	done := map[[2]int]bool{}
	for len(done) < len(socks) {
		now := time.Now()
		if now.After(deadline) {
			t.Fatalf("after %v: ss gone %v, -c gone %v; tcpscope stderr: %q", limit, ssGone, done, w.stderrText())
		}
		for _, k := range socks {
			if _, ok := ssGone[k]; ok {
				continue
			}
			// Gone for ss when two dumps in a row lack it: a single ss
			// dump was seen to miss a TIME_WAIT that was still there.
			if ssHas(t, ns, ssState, k[0]) {
				delete(ssAbsent, k)
			} else if first, ok := ssAbsent[k]; ok {
				ssGone[k] = first
			} else {
				ssAbsent[k] = time.Now()
			}
		}
		f, n := w.latest()
		for _, k := range socks {
			at, gone := ssGone[k]
			if !gone || done[k] || n <= 0 {
				continue
			}
			if len(stateOf(strings.Split(f, "\n"), k[0], k[1])) == 0 {
				done[k] = true
				lag := time.Since(at)
				t.Logf("-c dropped %d->%d %v after ss did", k[0], k[1], lag.Round(10*time.Millisecond))
				if lag > time.Second+100*time.Millisecond {
					t.Errorf("-c dropped %d->%d %v after ss did (want within 1s); tcpscope stderr: %q", k[0], k[1], lag.Round(10*time.Millisecond), w.stderrText())
				}
			} else if time.Since(at) > 6*time.Second {
				t.Fatalf("-c still shows %d->%d 6s after ss stopped showing it; tcpscope stderr: %q; last print:\n%s", k[0], k[1], w.stderrText(), f)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	// and a fresh tcpscope agrees
	out := strings.Split(tcpscopeNetstat(t, ns, "-ant"), "\n")
	for _, k := range socks {
		if st := stateOf(out, k[0], k[1]); len(st) != 0 {
			t.Errorf("tcpscope netstat -ant still shows %d->%d as %v", k[0], k[1], st)
		}
	}
}

func TestNetstatUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-u"}, {"-x"}, {"-n", "-u"}, {"--sort", "bogus"}, {"--state", "bogus"}, {"-4", "-6"}, {"--netns"}, {"extra"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runCLI(t, exec.Command(binary, append([]string{"netstat"}, args...)...))
			if r.code != exitUsage {
				t.Errorf("exit %d, want %d; stderr:\n%s", r.code, exitUsage, r.stderr)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "tcpscope: ") || !strings.Contains(lines[1], "--help") {
				t.Errorf("want one error line and a pointer to --help, got:\n%s", r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout: %q", r.stdout)
			}
			noStackTrace(t, r)
		})
	}
}
