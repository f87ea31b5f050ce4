package main

// /api/v1/closewait and /api/v1/timewait of a real agent against the
// kernel's view (ss in the test's namespace), and the CLI's --server mode
// against the CLI's local mode.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/api"
	"github.com/tcpscope/tcpscope/tracer/diag"
)

// ssStateCount counts the namespace's sockets in one state (ss's name, as
// `ss -tan state close-wait`).
func ssStateCount(t testing.TB, ns, state string) int {
	t.Helper()
	n := 0
	for _, l := range strings.Split(runIn(t, ns, "ss", "-Htan", "state", state), "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return n
}

// leakCloseWait makes a server in ns that accepts n connections and never
// closes them, their clients closing: n CLOSE_WAIT sockets held by srv.
func leakCloseWait(t *testing.T, srv, cli *nstProc, n int) {
	t.Helper()
	l := srv.do("listen", "tcp4", "127.0.0.1:0")
	addr := fmt.Sprintf("127.0.0.1:%d", l[1])
	for range n {
		d := cli.do("dial", "tcp4", addr)
		srv.do("accept", l[0])
		cli.do("close", d[0])
	}
}

// churnClientFirst makes n connections whose client closes first: n client
// sockets in TIME_WAIT owned (last) by cli.
func churnClientFirst(t *testing.T, srv, cli *nstProc, n int) int {
	t.Helper()
	l := srv.do("listen", "tcp4", "127.0.0.1:0")
	addr := fmt.Sprintf("127.0.0.1:%d", l[1])
	for range n {
		d := cli.do("dial", "tcp4", addr)
		a := srv.do("accept", l[0])
		cli.do("close", d[0])
		srv.do("waiteof", a[0])
		srv.do("close", a[0])
	}
	return l[1]
}

func closeWaitOf(t *testing.T, s *serveProc, query string) (*diag.CloseWaitReport, http.Header) {
	t.Helper()
	var rep diag.CloseWaitReport
	resp, err := http.Get(s.base + "/api/v1/closewait" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("closewait%s: HTTP %d, %v", query, resp.StatusCode, err)
	}
	return &rep, resp.Header
}

// TestServeCloseWait: a server that never closes → /api/v1/closewait names
// its pid and comm with the count ss has, never the client; threshold and
// bad parameters.
func TestServeCloseWait(t *testing.T) {
	needNetstatTools(t)
	ns := newNS(t, "srvcw")
	ino := netnsInode(t, ns)
	s := startServe(t, "", "http", true, "--listen", "127.0.0.1:0")
	srv := startProc(t, ns, "tcw-leaky")
	cli := startProc(t, ns, "tcw-client")
	const n = 7
	leakCloseWait(t, srv, cli, n)

	q := fmt.Sprintf("?netns=%d&threshold=5", ino)
	deadline := time.Now().Add(10 * time.Second)
	var rep *diag.CloseWaitReport
	var hdr http.Header
	for {
		want := ssStateCount(t, ns, "close-wait")
		rep, hdr = closeWaitOf(t, s, q)
		if want == n && rep.Total == n && len(rep.Processes) == 1 && rep.Processes[0].Count == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ss has %d CLOSE_WAIT (workload %d); /api/v1/closewait: %+v", want, n, rep)
		}
		time.Sleep(100 * time.Millisecond)
	}
	p := rep.Processes[0]
	if p.PID != uint32(srv.pid) || p.Comm != "tcw-leaky" || !rep.HoldersWalked || len(p.FDs) != n || p.FromTable {
		t.Errorf("closewait process %+v (holders walked %v), want pid %d tcw-leaky with %d fds from the walk", p, rep.HoldersWalked, srv.pid, n)
	}
	if !strings.Contains(p.Cmdline, "tcw-leaky") {
		t.Errorf("cmdline %q", p.Cmdline)
	}
	if len(rep.Orphans) != 0 || rep.NetNS != uint32(ino) {
		t.Errorf("orphans %v, netns %d", rep.Orphans, rep.NetNS)
	}
	if got := hdr.Get(api.OverThresholdHeader); got != "1" {
		t.Errorf("%s = %q with threshold 5 and %d sockets, want 1", api.OverThresholdHeader, got, n)
	}
	// /metrics classifies with the same code (from the table's owners).
	series := fmt.Sprintf(`tcpscope_close_wait_sockets_by_process{comm="tcw-leaky",pid="%d"}`, srv.pid)
	if m := scrape(t, s.base, ""); m[series] != n {
		t.Errorf("%s = %v, want %d", series, m[series], n)
	}
	// min_age: they are younger than an hour.
	if old, _ := closeWaitOf(t, s, fmt.Sprintf("?netns=%d&min_age=1h", ino)); old.Total != 0 || old.Younger != n {
		t.Errorf("min_age=1h: total %d younger %d, want 0 and %d", old.Total, old.Younger, n)
	}

	for _, q := range []string{
		"/api/v1/closewait?min_age=soon", "/api/v1/closewait?min_age=-1s", "/api/v1/closewait?threshold=-2",
		"/api/v1/closewait?threshold=x", "/api/v1/closewait?netns=0", "/api/v1/closewait?port=1",
		"/api/v1/timewait?interval=0s", "/api/v1/timewait?interval=2h", "/api/v1/timewait?warn=2",
		"/api/v1/timewait?interval=1s&interval=2s", "/api/v1/timewait?netns=x", "/api/v1/info?x=1",
	} {
		var e map[string]string
		if code := getJSON(t, s.base+q, &e); code != http.StatusBadRequest || e["error"] == "" {
			t.Errorf("GET %s: HTTP %d %v, want 400 with an error", q, code, e)
		}
	}
}

// TestServeTimeWait: client-first churn → /api/v1/timewait counts the
// entries on the client side, names the client, and its current TIME_WAIT
// count agrees with ss.
func TestServeTimeWait(t *testing.T) {
	needNetstatTools(t)
	ns := newNS(t, "srvtw")
	ino := netnsInode(t, ns)
	s := startServe(t, "", "http", true, "--listen", "127.0.0.1:0")
	srv := startProc(t, ns, "ttw-server")
	cli := startProc(t, ns, "ttw-client")
	const n = 25
	start := time.Now()
	port := churnClientFirst(t, srv, cli, n)

	var rep diag.TimeWaitReport
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The window covers the whole workload (bounded by the agent's keep).
		iv := time.Since(start).Round(time.Second) + 2*time.Second
		before := ssStateCount(t, ns, "time-wait")
		if code := getJSON(t, fmt.Sprintf("%s/api/v1/timewait?netns=%d&interval=%s", s.base, ino, iv), &rep); code != http.StatusOK {
			t.Fatalf("timewait: HTTP %d", code)
		}
		after := ssStateCount(t, ns, "time-wait")
		if before == n && after == n && rep.Current == n && rep.Entered == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ss TIME_WAIT %d then %d (workload %d); /api/v1/timewait current %d entered %d", before, after, n, rep.Current, rep.Entered)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rep.ClientFirst != n || rep.ServerFirst != 0 || rep.UnknownSide != 0 {
		t.Errorf("sides: client %d server %d unknown %d, want %d client-first", rep.ClientFirst, rep.ServerFirst, rep.UnknownSide, n)
	}
	if len(rep.Closers) != 1 || rep.Closers[0].PID != uint32(cli.pid) || rep.Closers[0].Comm != "ttw-client" ||
		rep.Closers[0].Side != diag.Client || rep.Closers[0].Count != n {
		t.Errorf("closers %+v, want ttw-client (pid %d) on the client side, %d", rep.Closers, cli.pid, n)
	}
	if len(rep.TopRemotes) != 1 || int(rep.TopRemotes[0].Endpoint.Port()) != port || rep.TopRemotes[0].Count != n {
		t.Errorf("top remotes %+v, want 127.0.0.1:%d with %d", rep.TopRemotes, port, n)
	}
	if rep.Lifetimes.Known != n {
		t.Errorf("lifetimes known %d, want %d", rep.Lifetimes.Known, n)
	}
	var info api.Info
	if code := getJSON(t, s.base+"/api/v1/info", &info); code != http.StatusOK || !info.Ready || info.NetNS == 0 || info.NetNS == uint32(ino) {
		t.Errorf("info: HTTP %d %+v", code, info)
	}
}

// summaryText returns the raw lines of one namespace's --summary --netns block.
func summaryText(out string, ino uint64) string {
	var b strings.Builder
	in := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case l == fmt.Sprintf("netns %d:", ino):
			in = true
		case strings.HasPrefix(l, "netns "), l == "":
			in = false
		}
		if in {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// stableJSON drops what two views at two moments cannot agree on (ages,
// entry wall times, timers' countdowns, how the owner was learned: the
// agent saw the sockets made, a one-shot run finds them in fd tables).
func stableJSON(t *testing.T, ndjson string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(ndjson), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("bad JSON %q: %v", line, err)
		}
		for _, k := range []string{"since", "age_ns", "age_at_least", "source", "fd", "tid"} {
			delete(m, k)
		}
		delete(m["timer"].(map[string]any), "left_ns")
		b, _ := json.Marshal(m)
		out = append(out, string(b))
	}
	return out
}

// TestServerFlag: netstat, closewait and timewait with --server URL print
// what the same commands print locally (a run inside the namespace at the
// same moment), and agree with ss.
func TestServerFlag(t *testing.T) {
	needNetstatTools(t)
	ns := newNS(t, "srvflag")
	ino := netnsInode(t, ns)
	s := startServe(t, "", "http", true, "--listen", "127.0.0.1:0")
	srv := startProc(t, ns, "tsf-server")
	cli := startProc(t, ns, "tsf-client")
	l := srv.do("listen", "tcp4", "127.0.0.1:0")
	addr := fmt.Sprintf("127.0.0.1:%d", l[1])
	for range 3 {
		cli.do("dial", "tcp4", addr)
		srv.do("accept", l[0])
	}
	leakCloseWait(t, srv, cli, 4)
	churnClientFirst(t, srv, cli, 6)
	l6 := srv.do("listen", "tcp6", "[::1]:0")
	cli.do("dial", "tcp6", fmt.Sprintf("[::1]:%d", l6[1]))
	srv.do("accept", l6[0])
	remote := []string{"--server", s.base, "--netns-id", strconv.FormatUint(ino, 10)}

	// Local, remote, local again: the remote view must equal a local one
	// that did not change around it. Bounded retries for the agent's table
	// to catch up with the kernel.
	same := func(what string, local func() string, server func() string, eq func(a, b string) bool) string {
		t.Helper()
		var l1, r, l2 string
		for range 50 {
			l1, r, l2 = local(), server(), local()
			if l1 == l2 && eq(l1, r) {
				return r
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("%s: --server differs from local:\nlocal:\n%s\nserver:\n%s\nlocal again:\n%s", what, l1, r, l2)
		return r
	}
	byteEq := func(a, b string) bool { return a == b }
	for _, args := range [][]string{
		{"-ant"}, {"-lnt"}, {"-ante"}, {"-antW", "--state", "time-wait"}, {"-an", "--state", "close-wait,listen"},
		{"-ant6"}, {"-antp", "--state", "established", "--sort", "local"},
	} {
		out := same(strings.Join(args, " "),
			func() string { return tcpscopeNetstat(t, ns, args...) },
			func() string { return runIn(t, "", append(append([]string{binary, "netstat"}, args...), remote...)...) },
			byteEq)
		if len(strings.Split(out, "\n")) < 4 {
			t.Errorf("netstat %v: hardly any output:\n%s", args, out)
		}
	}
	// (-p: the agent's comm; locally argv[0]'s base name: the children are
	// symlinks named as their comm, so the two agree here.)
	// JSON: the same sockets with the same owners.
	same("--json",
		func() string { return strings.Join(stableJSON(t, tcpscopeNetstat(t, ns, "-an", "--json")), "\n") },
		func() string {
			return strings.Join(stableJSON(t, runIn(t, "", append([]string{binary, "netstat", "-an", "--json"}, remote...)...)), "\n")
		}, byteEq)
	// --summary: the namespace's block of a host-wide summary.
	same("--summary --netns",
		func() string { return summaryText(runIn(t, "", binary, "netstat", "--summary", "--netns"), ino) },
		func() string {
			return summaryText(runIn(t, "", binary, "netstat", "--summary", "--netns", "--server", s.base), ino)
		}, func(a, b string) bool { return a == b && a != "" })
	// And both as ss.
	if n := ssStateCount(t, ns, "time-wait"); n != 6 {
		t.Errorf("ss: %d TIME_WAIT, want the workload's 6", n)
	}

	// closewait: the same processes, counts, fds, ports and peers; ss's count.
	type cwView struct {
		Total     int
		Processes []diag.CloseWaitProcess
	}
	cwOf := func(out string) string {
		var rep diag.CloseWaitReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("closewait --json: %v: %q", err, out)
		}
		v := cwView{Total: rep.Total, Processes: rep.Processes}
		for i := range v.Processes {
			v.Processes[i].Oldest, v.Processes[i].Median, v.Processes[i].GrowthPerSec = diag.Age{}, diag.Age{}, nil
		}
		b, _ := json.Marshal(v)
		return string(b)
	}
	cw := same("closewait --json",
		func() string { return cwOf(runIn(t, ns, binary, "closewait", "--json")) },
		func() string {
			return cwOf(runIn(t, "", append([]string{binary, "closewait", "--json"}, remote...)...))
		},
		byteEq)
	if want := fmt.Sprintf(`"pid":%d,"comm":"tsf-server"`, srv.pid); !strings.Contains(cw, want) || !strings.Contains(cw, `"count":4`) {
		t.Errorf("closewait: %s, want %s with 4", cw, want)
	}
	if n := ssStateCount(t, ns, "close-wait"); !strings.Contains(cw, fmt.Sprintf(`{"Total":%d,`, n)) {
		t.Errorf("closewait total %s, ss %d", cw, n)
	}
	// --threshold works on the agent's report as on a local one.
	r := runCLI(t, exec.Command(binary, append([]string{"closewait", "--threshold", "3"}, remote...)...))
	if r.code != exitThreshold || !strings.Contains(r.stderr, "tsf-server") {
		t.Errorf("closewait --server --threshold 3: exit %d, stderr %q", r.code, r.stderr)
	}

	// timewait: the TIME_WAIT sockets now, as ss and a local run see them.
	type twView struct {
		Current       int
		TopRemotes    []diag.EndpointCount
		TopLocalPorts []diag.PortCount
	}
	twOf := func(out string) string {
		var rep diag.TimeWaitReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("timewait --json: %v: %q", err, out)
		}
		b, _ := json.Marshal(twView{rep.Current, rep.TopRemotes, rep.TopLocalPorts})
		return string(b)
	}
	tw := same("timewait --json",
		func() string { return twOf(runIn(t, ns, binary, "timewait", "--json", "--interval", "200ms")) },
		func() string {
			return twOf(runIn(t, "", append([]string{binary, "timewait", "--json", "--interval", "30s"}, remote...)...))
		}, byteEq)
	if n := ssStateCount(t, ns, "time-wait"); !strings.Contains(tw, fmt.Sprintf(`{"Current":%d,`, n)) {
		t.Errorf("timewait %s, ss %d TIME_WAIT", tw, n)
	}
	// The agent saw the churn happen: its side and closer, which a run
	// started afterwards cannot know.
	var rep diag.TimeWaitReport
	if err := json.Unmarshal([]byte(runIn(t, "", append([]string{binary, "timewait", "--json", "--interval", "1m"}, remote...)...)), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.ClientFirst != 6 || len(rep.Closers) != 1 || rep.Closers[0].Comm != "tsf-client" {
		t.Errorf("timewait --server over 1m: client first %d, closers %+v; want 6 by tsf-client", rep.ClientFirst, rep.Closers)
	}

	// Errors: an agent that is not there, a bad URL, -c.
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"netstat", "-ant", "--server", "http://127.0.0.1:1"}, exitFailure},
		{[]string{"netstat", "-ant", "--server", "ftp://x"}, exitUsage},
		{[]string{"netstat", "-c", "--server", s.base}, exitUsage},
		{[]string{"netstat", "--netns-id", "5"}, exitUsage},
		{[]string{"timewait", "--interval", "2h", "--server", s.base}, exitUsage},
		{[]string{"closewait", "--all-netns", "--netns-id", "5", "--server", s.base}, exitUsage},
	} {
		r := runCLI(t, exec.Command(binary, tc.args...))
		if r.code != tc.code || strings.Count(strings.TrimSpace(r.stderr), "\n") > 1 {
			t.Errorf("%v: exit %d (want %d), stderr %q", tc.args, r.code, tc.code, r.stderr)
		}
		noStackTrace(t, r)
	}
}
