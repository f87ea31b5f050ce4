package main

// Root integration tests for `tcpscope netstat`: real sockets, held by child
// processes, compared line for line with net-tools netstat and, for state
// counts and expiry, with ss. Most scenarios run in a network namespace of
// their own, so that nothing else on the host shows up in either tool.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ---- child processes ---------------------------------------------------------

// The test binary doubles as a socket-holding child process: started
// through a symlink named like the process should be, so that its comm (the
// executable's base name) and netstat -p's name (argv[0]'s base name) agree.
// TestNetstatJSON: every line is a JSON object with the documented keys,
// and the scenario's sockets have the states netstat shows.
func TestNetstatJSON(t *testing.T) {
	needNetstatTools(t)
	ns := newNS(t, "json")
	sc := buildScenario(t, ns)
	out := tcpscopeNetstat(t, ns, "-ant", "--json")
	var lines []string
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("not JSON: %q: %v", l, err)
			continue
		}
		for _, k := range []string{"state", "recvq", "sendq", "uid", "inode", "lport", "rport"} {
			if _, ok := m[k]; !ok {
				t.Errorf("no %q in %s", k, l)
			}
		}
		lp, _ := m["lport"].(float64)
		rp, _ := m["rport"].(float64)
		st, _ := m["state"].(string)
		// as a netstat line, for check
		remote := fmt.Sprintf("x:%d", int(rp))
		if rp == 0 {
			remote = "x:*"
		}
		lines = append(lines, fmt.Sprintf("tcp 0 0 x:%d %s %s", int(lp), remote, st))
	}
	sc.check(t, "tcpscope netstat -ant --json", lines)
	if n, want := len(lines), len(lineSet(runIn(t, ns, "netstat", "-ant"), nil))-2; n != want {
		t.Errorf("%d JSON lines, netstat -ant has %d sockets", n, want)
	}
}

// TestNetstatHostNamespace: the same comparisons in the host's namespace,
// on the test's own ports only; and a namespace's sockets stay out of it.
func TestNetstatHostNamespace(t *testing.T) {
	needNetstatTools(t)
	overflows := twOverflows(t)
	sc := buildScenario(t, "")
	if n := twOverflows(t) - overflows; n > 0 {
		// The host's TIME_WAIT table was full (other churn on the host,
		// e.g. a benchmark): the kernel closed the scenario's closing
		// sockets at once instead of keeping them in TIME_WAIT or
		// FIN_WAIT2, and the check below will miss them.
		t.Logf("the host refused %d TIME_WAIT sockets while the scenario was built (TCPTimeWaitOverflow, net.ipv4.tcp_max_tw_buckets)", n)
	}
	keep := portFilter(sc.ports...)
	for _, flags := range [][]string{{"-ant"}, {"-lnt"}, {"-antp"}, {"-ante"}, {"-anto"}} {
		lines := compareNetstat(t, "", keep, flags...)
		if flags[0] == "-ant" {
			sc.check(t, "host netstat -ant", lines)
		}
	}
	// Another namespace's sockets: in its own netstat, not in the host's.
	ns := newNS(t, "other")
	srv := startProc(t, ns, "nst-ns")
	r := srv.do("listen", "tcp4", "127.0.0.1:0")
	c := srv.do("dial", "tcp4", fmt.Sprintf("127.0.0.1:%d", r[1]))
	srv.do("accept", r[0])
	inside := compareNetstat(t, ns, portFilter(r[1]), "-antp")
	if got := stateOf(inside, c[1], r[1]); len(got) != 1 || got[0] != "ESTABLISHED" {
		t.Errorf("namespace netstat: client %d: %v", c[1], got)
	}
	host := lineSet(tcpscopeNetstat(t, "", "-antp"), nil)
	for _, l := range host[2:] {
		if strings.Contains(l, "/nst-ns") {
			t.Errorf("host tcpscope netstat shows another namespace's socket: %q", l)
		}
	}
}

// ---- state counts ------------------------------------------------------------

// TestNetstatSummaryMatchesSS compares the per-state counts of the
// scenario's namespace with ss, for every state, after adding SYN_SENT
// (a connect into a black hole), FIN_WAIT1 and LAST_ACK (peers whose link
// went down).
func TestNetstatSummaryMatchesSS(t *testing.T) {
	needNetstatTools(t)
	ns := newNS(t, "sum")
	buildScenario(t, ns)
	// SYN_SENT: the SYN waits for an ARP reply that never comes (the
	// veth's other end has no address).
	for _, args := range [][]string{
		{"-n", ns, "link", "add", "nstv0", "type", "veth", "peer", "name", "nstv1"},
		{"-n", ns, "addr", "add", "10.99.0.1/24", "dev", "nstv0"},
		{"-n", ns, "link", "set", "nstv0", "up"},
		{"-n", ns, "link", "set", "nstv1", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	bh := startProc(t, ns, "nst-bh")
	bh.do("dialnb", "10.99.0.2:80")
	bh.do("dialnb", "10.99.0.3:80")
	time.Sleep(200 * time.Millisecond)

	ino := netnsInode(t, ns)
	var want, got map[string]int
	for try := 0; try < 4; try++ {
		want, got = map[string]int{}, map[string]int{}
		for name, ss := range ssStates {
			out := strings.TrimSpace(runIn(t, ns, "ss", "-tanH", "state", ss))
			if out != "" {
				want[name] = strings.Count(out, "\n") + 1
			}
		}
		sum := summaryBlock(t, tcpscopeNetstat(t, ns, "--summary", "--netns"), ino)
		total := 0
		for name, n := range sum {
			if name == "total" {
				continue
			}
			total += n
			if name == "NEW_SYN_RECV" {
				name = "SYN_RECV"
				t.Logf("--summary prints NEW_SYN_RECV (%d) apart from SYN_RECV", n)
			}
			if _, ok := ssStates[name]; !ok {
				t.Errorf("--summary has a state ss does not count: %s %d", name, n)
				continue
			}
			got[name] += n
		}
		if total != sum["total"] {
			t.Errorf("--summary total %d, states add up to %d", sum["total"], total)
		}
		if fmt.Sprint(want) == fmt.Sprint(got) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for name := range ssStates {
		if want[name] != got[name] {
			t.Errorf("%s: tcpscope --summary %d, ss %d", name, got[name], want[name])
		}
	}
	t.Logf("ss: %v", want)
	if want["SYN_SENT"] != 2 || want["TIME_WAIT"] != 2 || want["CLOSE_WAIT"] != 2 || want["LISTEN"] != 3 {
		t.Errorf("scenario not as built: ss counts %v", want)
	}
}

// ---- -c ----------------------------------------------------------------------

// TestNetstatTimeWaitExpiry: a real TIME_WAIT lasts TCP_TIMEWAIT_LEN (60s);
// -c shows it before and drops it when ss does.
func TestNetstatTimeWaitExpiry(t *testing.T) {
	needNetstatTools(t)
	t.Parallel()
	ns := newNS(t, "tw")
	srv := startProc(t, ns, "nst-srv")
	cli := startProc(t, ns, "nst-cli")
	l := srv.do("listen", "tcp4", "127.0.0.1:0")
	// One TIME_WAIT from before tcpscope starts, one made while -c runs.
	mk := func() int {
		c := cli.do("dial", "tcp4", fmt.Sprintf("127.0.0.1:%d", l[1]))
		a := srv.do("accept", l[0])
		cli.do("close", c[0])
		srv.do("waiteof", a[0])
		srv.do("close", a[0])
		return c[1]
	}
	before := mk()
	made := time.Now()
	w := startWatch(t, ns, titleAllLine, "-ant")
	during := mk()
	for _, p := range []int{before, during} {
		isTW := func(f string) bool {
			st := stateOf(strings.Split(f, "\n"), p, l[1])
			return len(st) == 1 && st[0] == "TIME_WAIT"
		}
		f, ok := w.waitFrame(2*time.Second, isTW)
		if !ok && strings.Contains(w.stderr.String(), "events lost") {
			// The tracer sees the whole host, and other tests' churn can
			// overflow its ring: it says so and resyncs from the kernel,
			// which brings the socket back. Wait for that.
			t.Logf("-c lost events meanwhile: %s", w.stderr.String())
			f, ok = w.waitFrame(15*time.Second, isTW)
		}
		if !ok {
			t.Errorf("-c: no TIME_WAIT for %d; last print:\n%s\nstderr:\n%s", p, f, w.stderr.String())
		}
	}
	expiry(t, ns, w, "time-wait", [][2]int{{before, l[1]}, {during, l[1]}}, 70*time.Second-time.Since(made))
	t.Logf("TIME_WAIT lived about %v", time.Since(made).Round(time.Second))
	if out := runIn(t, ns, "ss", "-tanH", "state", "time-wait"); strings.TrimSpace(out) != "" {
		t.Errorf("ss still shows TIME_WAIT:\n%s", out)
	}
	w.stop()
}

// TestNetstatContinuousOwnNamespace: -c lists the caller's namespace, and
// follows that namespace alone: a churn in another namespace (another pod)
// must not reach it (no lost events, no resync), and its own namespace's
// connection still shows, through to TIME_WAIT. (This churn did not make
// the earlier -c, which followed every namespace, lose events; three 3 s
// churns of 150k connections in the host's namespace made it lose 340k
// and resync in a loop, and cost it most of a CPU.)
func TestNetstatContinuousOwnNamespace(t *testing.T) {
	needNetstatTools(t)
	ns, other := newNS(t, "own"), newNS(t, "other")
	srv := startProc(t, ns, "nst-srv")
	cli := startProc(t, ns, "nst-cli")
	l := srv.do("listen", "tcp4", "127.0.0.1:0")
	w := startWatch(t, ns, titleAllLine, "-ant")
	t.Logf("churn elsewhere: %s", runServeChurn(t, other, 30000, 3000))
	c := cli.do("dial", "tcp4", fmt.Sprintf("127.0.0.1:%d", l[1]))
	a := srv.do("accept", l[0])
	cli.do("close", c[0])
	srv.do("waiteof", a[0])
	srv.do("close", a[0])
	if f, ok := w.waitFrame(3*time.Second, func(f string) bool {
		st := stateOf(strings.Split(f, "\n"), c[1], l[1])
		return len(st) == 1 && st[0] == "TIME_WAIT"
	}); !ok {
		t.Errorf("-c: no TIME_WAIT for %d; last print:\n%s", c[1], f)
	}
	if e := w.stderr.String(); strings.Contains(e, "lost") || strings.Contains(e, "resynced") {
		t.Errorf("-c lost events or resynced for another namespace's churn:\n%s", e)
	}
	w.stop()
}

// ---- usage -------------------------------------------------------------------

// TestNetstatMatchesNetstat compares every line of the scenario, built
// before tcpscope starts, in a namespace of its own.
func TestNetstatMatchesNetstat(t *testing.T) {
	needNetstatTools(t)
	ns := newNS(t, "match")
	sc := buildScenario(t, ns)
	ant := compareNetstat(t, ns, nil, "-ant")
	sc.check(t, "netstat -ant", ant)
	sc.check(t, "tcpscope netstat -ant", lineSet(tcpscopeNetstat(t, ns, "-ant"), nil))
	// A plain view needs no privilege (as ss and netstat): run as nobody,
	// with no capabilities, it prints the same lines.
	var nobody []string
	for try := 0; try < 4; try++ {
		nobody = lineSet(runIn(t, ns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
			"--bounding-set=-all", binary, "netstat", "-ant"), nil)
		if ant = lineSet(runIn(t, ns, "netstat", "-ant"), nil); slices.Equal(nobody, ant) {
			break
		}
	}
	if !slices.Equal(nobody, ant) {
		t.Errorf("tcpscope netstat -ant as nobody differs from netstat -ant:\n%s", diffLines(ant, nobody))
	}
	for _, flags := range [][]string{
		{"-lnt"}, {"-nt"}, {"-antp"}, {"-ante"}, {"-anteW"}, {"-anto"}, {"-4ant"}, {"-6ant"}, {"-antpeo"},
		{"-antp", "-W"}, {"-tn", "-l", "-p"},
	} {
		lines := compareNetstat(t, ns, nil, flags...)
		if len(lines) < 3 {
			t.Errorf("netstat %v: no sockets at all", flags)
		}
		// Plain views read a sock_diag dump; the BPF iterator must print
		// them the same.
		if !strings.ContainsAny(strings.Join(flags, ""), "po") {
			compareNetstatWith(t, ns, nil, []string{"--bpf-walk"}, flags...)
		}
		if strings.Contains(strings.Join(flags, ""), "p") {
			if !strings.Contains(strings.Join(lines, "\n"), "/nst-srv") {
				t.Errorf("netstat %v shows no nst-srv program", flags)
			}
		}
		if strings.Contains(strings.Join(flags, ""), "o") {
			all := strings.Join(lines, "\n")
			for _, timer := range []string{"off (0.00/0/0)", "keepalive (#.##/0/0)", "timewait (#.##/0/0)"} {
				if !strings.Contains(all, timer) {
					t.Errorf("netstat %v: no %q line to compare", flags, timer)
				}
			}
		}
	}
}

// TestNetstatContinuous: -c reprints after a change, promptly, with the new
// state (sockets created while it runs), and stays quiet while nothing
// changes.
func TestNetstatContinuous(t *testing.T) {
	needNetstatTools(t)
	ns := newNS(t, "cont")
	srv := startProc(t, ns, "nst-srv")
	cli := startProc(t, ns, "nst-cli")
	l := srv.do("listen", "tcp4", "127.0.0.1:0")
	w := startWatch(t, ns, titleAllLine, "-ant")
	sum := startWatch(t, ns, "Sockets by state:", "--summary", "--netns")
	ino := netnsInode(t, ns)

	idle := func(what string) {
		time.Sleep(300 * time.Millisecond)
		n0, s0 := w.count(), sum.count()
		time.Sleep(2 * time.Second)
		// --summary also shows the host's totals, which other processes
		// change: only this namespace's block must stay put.
		block := func(f string) string { c, _ := parseSummaryBlock(f, ino); return fmt.Sprint(c) }
		nb := sum.changes(s0, block)
		t.Logf("%s: %d and %d reprints (-ant, --summary; %d changed this namespace's block) in 2 idle seconds",
			what, w.count()-n0, sum.count()-s0, nb)
		if n := w.count() - n0; n > 0 {
			t.Errorf("%s: -c -ant printed %d times in 2 idle seconds", what, n)
		}
		if nb > 0 {
			t.Errorf("%s: -c --summary --netns printed this namespace's counts changed %d times in 2 idle seconds", what, nb)
		}
	}
	idle("at start")

	// A connection made and closed while -c runs: TIME_WAIT on the client.
	c := cli.do("dial", "tcp4", fmt.Sprintf("127.0.0.1:%d", l[1]))
	a := srv.do("accept", l[0])
	n0 := w.count()
	start := time.Now()
	f, ok := w.waitFrame(2*time.Second, func(f string) bool {
		return len(stateOf(strings.Split(f, "\n"), c[1], l[1])) == 1
	})
	if !ok {
		t.Errorf("-c: no reprint with the new connection within 2s; last print:\n%s", f)
	}
	cli.do("close", c[0])
	srv.do("waiteof", a[0])
	srv.do("close", a[0])
	f, ok = w.waitFrame(2*time.Second, func(f string) bool {
		lines := strings.Split(f, "\n")
		st := stateOf(lines, c[1], l[1])
		return len(st) == 1 && st[0] == "TIME_WAIT" && len(stateOf(lines, l[1], c[1])) == 0
	})
	if !ok {
		t.Errorf("-c: TIME_WAIT of client %d not shown within 2s; last print:\n%s", c[1], f)
	} else {
		t.Logf("-c: reprinted %d times; TIME_WAIT shown %v after the connection", w.count()-n0, time.Since(start).Round(time.Millisecond))
		// The print is what netstat shows now.
		want := lineSet(runIn(t, ns, "netstat", "-ant"), nil)
		if got := lineSet(f, nil); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("-c print differs from netstat -ant:\n%s", diffLines(want, got))
		}
	}
	if f, ok := sum.waitFrame(2*time.Second, func(f string) bool {
		c, ok := parseSummaryBlock(f, ino)
		return ok && c["TIME_WAIT"] == 1 && c["LISTEN"] == 1 && c["total"] == 2
	}); !ok {
		t.Errorf("-c --summary --netns: no netns %d block with TIME_WAIT 1, LISTEN 1, total 2 within 2s; last print:\n%s", ino, f)
	}
	idle("after the change")
	w.stop()
	sum.stop()
}

// ---- expiry --------------------------------------------------------------------

// TestNetstatFinWait2Expiry: an orphaned FIN_WAIT2 with tcp_fin_timeout=2
// becomes a timewait socket that expires after ~2s; -c must drop it when ss
// does.
func TestNetstatFinWait2Expiry(t *testing.T) {
	needNetstatTools(t)
	t.Parallel()
	ns := newNS(t, "fw2")
	runIn(t, ns, "sysctl", "-q", "-w", "net.ipv4.tcp_fin_timeout=2")
	srv := startProc(t, ns, "nst-srv")
	cli := startProc(t, ns, "nst-cli")
	l := srv.do("listen", "tcp4", "127.0.0.1:0")
	w := startWatch(t, ns, titleAllLine, "-ant")
	c := cli.do("dial", "tcp4", fmt.Sprintf("127.0.0.1:%d", l[1]))
	a := srv.do("accept", l[0])
	cli.do("close", c[0])
	srv.do("waiteof", a[0]) // and never closes: CLOSE_WAIT
	closed := time.Now()
	// The server saw the FIN; the client reaches FIN_WAIT2 when the ACK of
	// it is processed, which can come a moment later.
	for !ssHas(t, ns, "fin-wait-2", c[1]) {
		if time.Since(closed) > 2*time.Second {
			t.Fatalf("ss shows no FIN_WAIT2 on %d:\n%s", c[1], runIn(t, ns, "ss", "-tan"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if f, ok := w.waitFrame(2*time.Second, func(f string) bool {
		st := stateOf(strings.Split(f, "\n"), c[1], l[1])
		return len(st) == 1 && st[0] == "FIN_WAIT2"
	}); !ok {
		t.Errorf("-c: no FIN_WAIT2 for %d within 2s; last print:\n%s", c[1], f)
	}
	expiry(t, ns, w, "fin-wait-2", [][2]int{{c[1], l[1]}}, 10*time.Second)
	t.Logf("FIN_WAIT2 lived %v", time.Since(closed).Round(100*time.Millisecond))
	if f, _ := w.latest(); len(stateOf(strings.Split(f, "\n"), l[1], c[1])) != 1 {
		t.Errorf("the server's CLOSE_WAIT is gone from -c:\n%s", f)
	}
	w.stop()
}

// twOverflows returns the host namespace's TcpExt TCPTimeWaitOverflow: the
// timewait sockets the kernel did not create because its table was full.
func twOverflows(t *testing.T) uint64 {
	t.Helper()
	raw, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(string(raw), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "TcpExt:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "TCPTimeWaitOverflow" && i < len(f) {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}
