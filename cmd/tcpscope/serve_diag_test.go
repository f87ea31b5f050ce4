package main

// /api/v1/closewait and /api/v1/timewait of a real agent against the
// kernel's view (ss in the test's namespace), and the CLI's --server mode
// against the CLI's local mode.

import (
	"encoding/json"
	"fmt"
	"net/http"
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
