package main

// Integration tests of `tcpscope serve` (root): the real binary runs as a
// subprocess on a loopback port, every workload runs in a network namespace
// the test creates, and what the agent serves (API, /metrics, a real
// Prometheus scraping it) is compared with `ss` inside that namespace.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/tcpscope/tcpscope/tracer/churn"
)

// serveChurnEnv makes the test binary a churn workload ("conns,ms").
const serveChurnEnv = "TCPSCOPE_SERVE_TEST_CHURN"

func init() {
	if v := os.Getenv(serveChurnEnv); v != "" {
		f := strings.Split(v, ",")
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
}

// serveProc is a running `tcpscope serve`.
type serveProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	base   string // http(s)://127.0.0.1:PORT
	stderr lockedBuffer
	done   chan struct{}
	code   int
}

var listeningRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startServe starts the agent (in ns unless "") and waits until it is
// listening; with ready it also waits for /readyz (bounded).
func startServe(t testing.TB, ns string, scheme string, ready bool, args ...string) *serveProc {
	t.Helper()
	needRoot(t)
	s := &serveProc{t: t, done: make(chan struct{})}
	s.cmd = inNS(ns, append([]string{binary, "serve"}, args...)...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	s.cmd.Stderr = pw
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			s.stderr.Write([]byte(sc.Text() + "\n"))
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		err := s.cmd.Wait()
		pw.Close()
		s.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			s.code = ee.ExitCode()
		}
		close(s.done)
	}()
	t.Cleanup(func() { s.stop() })
	select {
	case a := <-addr:
		s.base = scheme + "://" + a
	case <-s.done:
		t.Fatalf("serve exited with %d before listening:\n%s", s.code, s.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("serve not listening after 30s:\n%s", s.stderr.String())
	}
	if ready {
		deadline := time.Now().Add(60 * time.Second)
		for {
			resp, err := http.Get(s.base + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("not ready after 60s (%v):\n%s", err, s.stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return s
}

// stop sends SIGTERM and checks for a clean, bounded shutdown.
func (s *serveProc) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		s.cmd.Process.Signal(syscall.SIGQUIT) // goroutine dump into the log below
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
		time.Sleep(100 * time.Millisecond) // let the reader take the last lines
		s.t.Errorf("serve did not stop within 20s of SIGTERM:\n%s", s.stderr.String())
		return
	}
	if s.code != 0 || !regexp.MustCompile(`msg="?stopped`).MatchString(s.stderr.String()) {
		s.t.Errorf("serve after SIGTERM: exit %d, log:\n%s", s.code, s.stderr.String())
	}
}

func getJSON(t testing.TB, u string, v any) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %d, not JSON (%v): %q", u, resp.StatusCode, err, body)
	}
	return resp.StatusCode
}

// ssStateNames maps ss's state names to tcpscope's (netstat's).
var ssStateNames = map[string]string{
	"ESTAB": "ESTABLISHED", "SYN-SENT": "SYN_SENT", "SYN-RECV": "SYN_RECV",
	"FIN-WAIT-1": "FIN_WAIT1", "FIN-WAIT-2": "FIN_WAIT2", "TIME-WAIT": "TIME_WAIT",
	"CLOSE-WAIT": "CLOSE_WAIT", "LAST-ACK": "LAST_ACK", "LISTEN": "LISTEN", "CLOSING": "CLOSING",
}

// ssCounts counts the namespace's TCP sockets per state, as ss sees them.
func ssCounts(t testing.TB, ns string) map[string]int {
	t.Helper()
	c := map[string]int{}
	for _, line := range strings.Split(runIn(t, ns, "ss", "-Htan"), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "UNCONN" {
			continue
		}
		name, ok := ssStateNames[f[0]]
		if !ok {
			t.Fatalf("ss: unknown state in %q", line)
		}
		c[name]++
	}
	return c
}

func sameCounts(a, b map[string]int) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// agreeWithSS polls got (the agent's or Prometheus's counts) until they equal
// ss's, sampled before and after, or the bound runs out.
func agreeWithSS(t testing.TB, ns string, what string, bound time.Duration, got func() map[string]int) map[string]int {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		s1 := ssCounts(t, ns)
		g := got()
		s2 := ssCounts(t, ns)
		if sameCounts(s1, s2) && sameCounts(s1, g) {
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s disagrees with ss after %v: ss %v (then %v), %s %v", what, bound, s1, s2, what, g)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type apiSummary struct {
	Total  int            `json:"total"`
	States map[string]int `json:"states"`
	NetNS  map[string]struct {
		Total  int            `json:"total"`
		States map[string]int `json:"states"`
	} `json:"netns"`
}

func (s *serveProc) summary(t testing.TB, ino uint64) map[string]int {
	t.Helper()
	var sum apiSummary
	if code := getJSON(t, fmt.Sprintf("%s/api/v1/summary?netns=%d", s.base, ino), &sum); code != http.StatusOK {
		t.Fatalf("summary: HTTP %d", code)
	}
	got := sum.NetNS[strconv.FormatUint(ino, 10)].States
	if got == nil {
		got = map[string]int{}
	}
	return got
}

// stream is a client of /api/v1/events collecting its lines.
type stream struct {
	mu    sync.Mutex
	lines []string
	done  chan struct{}
	body  io.Closer
}

func openStream(t *testing.T, u string) *stream {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: HTTP %d", u, resp.StatusCode)
	}
	st := &stream{done: make(chan struct{}), body: resp.Body}
	go func() {
		defer close(st.done)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			st.mu.Lock()
			st.lines = append(st.lines, sc.Text())
			st.mu.Unlock()
		}
	}()
	t.Cleanup(func() { resp.Body.Close(); <-st.done })
	return st
}

// waitFor waits (bounded) for a line for which ok holds.
func (st *stream) waitFor(bound time.Duration, ok func(map[string]any) bool) bool {
	deadline := time.Now().Add(bound)
	seen := 0
	for time.Now().Before(deadline) {
		st.mu.Lock()
		lines := st.lines[seen:]
		seen = len(st.lines)
		st.mu.Unlock()
		for _, l := range lines {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && ok(m) {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func transitionOf(lport int, old, new string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		return m["lport"] == float64(lport) && m["old"] == old && m["new"] == new
	}
}

// TestServeAPI: after a workload in a test namespace, /api/v1/summary equals
// ss; /api/v1/sockets lists the namespace's sockets; /api/v1/events streamed
// the workload's transitions; bad parameters get a JSON 400.
func TestServeAPI(t *testing.T) {
	needNetstatTools(t)
	ns := newNS(t, "srvapi")
	ino := netnsInode(t, ns)
	s := startServe(t, "", "http", true, "--listen", "127.0.0.1:0")
	st := openStream(t, fmt.Sprintf("%s/api/v1/events?netns=%d", s.base, ino))

	srv := startProc(t, ns, "tss-srv")
	cli := startProc(t, ns, "tss-cli")
	l := srv.do("listen", "tcp4", "127.0.0.1:0")
	port := l[1]
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var clientPorts []int
	for range 3 { // held open: ESTABLISHED on both sides
		d := cli.do("dial", "tcp4", addr)
		srv.do("accept", l[0])
		clientPorts = append(clientPorts, d[1])
	}
	// Client closes first: client side ends in TIME_WAIT.
	d := cli.do("dial", "tcp4", addr)
	a := srv.do("accept", l[0])
	cli.do("close", d[0])
	srv.do("waiteof", a[0])
	srv.do("close", a[0])
	twPort := d[1]
	// Server closes, client keeps its end: CLOSE_WAIT / FIN_WAIT2.
	d2 := cli.do("dial", "tcp4", addr)
	a2 := srv.do("accept", l[0])
	srv.do("close", a2[0])

	got := agreeWithSS(t, ns, "/api/v1/summary", 10*time.Second, func() map[string]int { return s.summary(t, ino) })
	t.Logf("summary for the namespace agrees with ss: %v", got)
	for _, want := range []string{"LISTEN", "ESTABLISHED", "TIME_WAIT", "CLOSE_WAIT", "FIN_WAIT2"} {
		if got[want] == 0 {
			t.Errorf("the workload left no %s: the comparison proves less than it should", want)
		}
	}

	for _, tr := range []struct {
		lport    int
		old, new string
	}{
		{clientPorts[0], "SYN_SENT", "ESTABLISHED"},
		{twPort, "FIN_WAIT1", "FIN_WAIT2"},
		{d2[1], "ESTABLISHED", "CLOSE_WAIT"},
	} {
		if !st.waitFor(5*time.Second, transitionOf(tr.lport, tr.old, tr.new)) {
			t.Errorf("event stream: no %s -> %s for local port %d", tr.old, tr.new, tr.lport)
		}
	}

	// /api/v1/sockets: the namespace's sockets, the same objects as
	// `tcpscope netstat -an --json` run inside it.
	apiSocks := socketSet(t, httpBody(t, fmt.Sprintf("%s/api/v1/sockets?netns=%d", s.base, ino)), ino, true)
	// (one-shot netstat may not know the owner of a listener it did not see created)
	cliSocks := socketSet(t, runIn(t, ns, binary, "netstat", "-an", "--json"), ino, false)
	if !sameCounts(apiSocks, cliSocks) {
		t.Errorf("/api/v1/sockets %v\nnetstat --json %v", apiSocks, cliSocks)
	}
	// Each is a socket ss has in that state (the walk misses the orphan
	// FIN_WAIT2 timewait socket here: TestServeSocketsMatchSS, pending).
	perState := map[string]int{}
	for k := range apiSocks {
		perState[k[strings.LastIndexByte(k, ' ')+1:]]++
	}
	ss := ssCounts(t, ns)
	for st, n := range perState {
		if n > ss[st] {
			t.Errorf("/api/v1/sockets has %d %s sockets, ss %d", n, st, ss[st])
		}
	}
	if perState["LISTEN"] != 1 || perState["ESTABLISHED"] != 6 || perState["CLOSE_WAIT"] != 1 {
		t.Errorf("/api/v1/sockets per state %v, want the workload's 1 LISTEN, 6 ESTABLISHED, 1 CLOSE_WAIT", perState)
	}
	var only []map[string]any
	resp, err := http.Get(fmt.Sprintf("%s/api/v1/sockets?netns=%d&state=listen&port=%d", s.base, ino, port))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(resp.Body)
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		only = append(only, m)
	}
	resp.Body.Close()
	if len(only) != 1 || only[0]["lport"] != float64(port) || only[0]["state"] != "LISTEN" {
		t.Errorf("sockets?state=listen&port=%d: %v, want the one listener", port, only)
	}

	for _, q := range []string{
		"/api/v1/sockets?state=bogus", "/api/v1/sockets?port=70000", "/api/v1/sockets?port=x",
		"/api/v1/sockets?pid=-1", "/api/v1/sockets?netns=", "/api/v1/sockets?color=red",
		"/api/v1/summary?netns=abc", "/api/v1/summary?state=listen",
		"/api/v1/events?laddr=not-an-ip", "/api/v1/events?port=1&port=2",
	} {
		var e map[string]string
		code := getJSON(t, s.base+q, &e)
		if code != http.StatusBadRequest || e["error"] == "" {
			t.Errorf("GET %s: HTTP %d %v, want 400 with an error", q, code, e)
		}
	}
	_ = cli
}

func httpBody(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d %v: %s", u, resp.StatusCode, err, body)
	}
	return string(body)
}

// socketSet reads netstat --json lines into "laddr:lport raddr:rport STATE"
// -> count, checking that every socket is in namespace ino and, with owners,
// that the listener's owner is the test's server process.
func socketSet(t *testing.T, ndjson string, ino uint64, owners bool) map[string]int {
	t.Helper()
	set := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(ndjson), "\n") {
		var m struct {
			LAddr string  `json:"laddr"`
			LPort int     `json:"lport"`
			RAddr string  `json:"raddr"`
			RPort int     `json:"rport"`
			State string  `json:"state"`
			NetNS uint64  `json:"netns"`
			Comm  *string `json:"comm"`
		}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("bad JSON line %q: %v", line, err)
		}
		if m.NetNS != ino {
			t.Errorf("socket of netns %d, want %d: %s", m.NetNS, ino, line)
		}
		if owners && m.State == "LISTEN" && (m.Comm == nil || *m.Comm != "tss-srv") {
			t.Errorf("listener owner %v, want tss-srv: %s", m.Comm, line)
		}
		set[fmt.Sprintf("%s:%d %s:%d %s", m.LAddr, m.LPort, m.RAddr, m.RPort, m.State)]++
	}
	return set
}

// TestServeSlowClient: a stream client that stops reading, and one that goes
// away, do not stall the tracer; the slow one is told what it lost.
func TestServeSlowClient(t *testing.T) {
	needNetstatTools(t)
	ns := newNS(t, "srvslow")
	ino := netnsInode(t, ns)
	s := startServe(t, "", "http", true, "--listen", "127.0.0.1:0", "--events.queue", "64")
	host := strings.TrimPrefix(s.base, "http://")

	// The slow client: asks for the stream, then reads nothing, with a
	// small receive buffer so that the server's queue fills soon.
	slow, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(slow, "GET /api/v1/events?netns=%d HTTP/1.1\r\nHost: x\r\n\r\n", ino)
	// The vanished client: reads the header, then hangs up.
	gone := openStream(t, fmt.Sprintf("%s/api/v1/events?netns=%d", s.base, ino))
	gone.body.Close()

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	churnCmd := inNS(ns, exe, "-test.run=^$")
	churnCmd.Env = append(os.Environ(), serveChurnEnv+"=20000,3000")
	churnCmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := churnCmd.CombinedOutput()
	if err != nil {
		t.Fatalf("churn: %v: %s", err, out)
	}
	t.Logf("churn: %s", strings.TrimSpace(string(out)))

	// The tracer kept up: the table agrees with ss after the churn.
	got := agreeWithSS(t, ns, "/api/v1/summary", 15*time.Second, func() map[string]int { return s.summary(t, ino) })
	t.Logf("after churn, agent and ss agree: %v", got)
	if got["TIME_WAIT"] == 0 {
		t.Errorf("no TIME_WAIT left by the churn: the workload did not run")
	}
	m := scrape(t, s.base, "")
	if m["tcpscope_event_stream_dropped_events_total"] == 0 {
		t.Errorf("the slow client lost nothing: the test did not make it slow")
	}
	if n := m["tcpscope_event_stream_clients"]; n != 1 {
		t.Errorf("%v stream clients, want 1 (the slow one; the vanished one must be gone)", n)
	}
	// A new client still gets events live.
	fresh := openStream(t, fmt.Sprintf("%s/api/v1/events?netns=%d", s.base, ino))
	p := startProc(t, ns, "tss-fresh")
	l := p.do("listen", "tcp4", "127.0.0.1:0")
	if !fresh.waitFor(5*time.Second, transitionOf(l[1], "CLOSE", "LISTEN")) {
		t.Errorf("a new stream client saw no CLOSE -> LISTEN for port %d", l[1])
	}
	// The slow client, reading at last, is told how many events it lost.
	slow.SetReadDeadline(time.Now().Add(20 * time.Second))
	found := false
	sc := bufio.NewScanner(slow)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `{"dropped":`) {
			found = true
			t.Logf("slow client told: %s", sc.Text())
			break
		}
	}
	if !found {
		t.Errorf("the slow client was never told about its dropped events (%v)", sc.Err())
	}
}

// scrape returns /metrics as name{labels} -> value.
func scrape(t testing.TB, base string, auth string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}

// TestServeMetricsPromtool: /metrics passes `promtool check metrics`, and the
// per-state gauge of the test namespace equals ss.
func TestServeMetricsPromtool(t *testing.T) {
	needNetstatTools(t)
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (make deps installs Debian's prometheus package)")
	}
	ns := newNS(t, "srvprom")
	ino := netnsInode(t, ns)
	s := startServe(t, "", "http", true, "--listen", "127.0.0.1:0")
	srv := startProc(t, ns, "tss-msrv")
	cli := startProc(t, ns, "tss-mcli")
	l := srv.do("listen", "tcp4", "127.0.0.1:0")
	for range 2 {
		d := cli.do("dial", "tcp4", fmt.Sprintf("127.0.0.1:%d", l[1]))
		a := srv.do("accept", l[0])
		_ = d
		srv.do("close", a[0]) // CLOSE_WAIT on the client, FIN_WAIT2 on the server
	}
	agreeWithSS(t, ns, "/metrics", 10*time.Second, func() map[string]int {
		got := map[string]int{}
		prefix := fmt.Sprintf(`tcpscope_sockets{netns="%d",state="`, ino)
		for k, v := range scrape(t, s.base, "") {
			if strings.HasPrefix(k, prefix) {
				got[strings.TrimSuffix(strings.TrimPrefix(k, prefix), `"}`)] = int(v)
			}
		}
		return got
	})
	m := scrape(t, s.base, "")
	if m[`tcpscope_close_wait_sockets_by_process{comm="tss-mcli",pid="`+strconv.Itoa(cli.pid)+`"}`] != 2 {
		var lines []string
		for k, v := range m {
			if strings.HasPrefix(k, "tcpscope_close_wait") {
				lines = append(lines, fmt.Sprint(k, " ", v))
			}
		}
		t.Errorf("close_wait_sockets_by_process does not give tss-mcli (pid %d) its 2 CLOSE_WAIT sockets: %v", cli.pid, lines)
	}
	resp, err := http.Get(s.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(string(body))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestServePrometheus: a real Prometheus scrapes the agent; its query API
// returns per-state counts for the test namespace equal to ss.
func TestServePrometheus(t *testing.T) {
	needNetstatTools(t)
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (make deps installs Debian's prometheus package)")
	}
	ns := newNS(t, "srvpq")
	ino := netnsInode(t, ns)
	s := startServe(t, "", "http", true, "--listen", "127.0.0.1:0")
	srv := startProc(t, ns, "tss-psrv")
	cli := startProc(t, ns, "tss-pcli")
	l := srv.do("listen", "tcp4", "127.0.0.1:0")
	for i := range 3 {
		cli.do("dial", "tcp4", fmt.Sprintf("127.0.0.1:%d", l[1]))
		a := srv.do("accept", l[0])
		if i == 0 {
			srv.do("close", a[0])
		}
	}

	dir := t.TempDir()
	promPort := freePort(t)
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tcpscope\n    static_configs:\n      - targets: ['%s']\n",
		strings.TrimPrefix(s.base, "http://"))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var promLog lockedBuffer
	cmd := exec.Command(prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort))
	cmd.Stdout, cmd.Stderr = &promLog, &promLog
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	query := func() map[string]int {
		q := url.Values{"query": {fmt.Sprintf(`tcpscope_sockets{netns="%d"}`, ino)}}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?%s", promPort, q.Encode()))
		if err != nil {
			return map[string]int{"prometheus not answering": 1}
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
					Value  [2]any            `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return map[string]int{"bad answer": 1}
		}
		got := map[string]int{}
		for _, res := range r.Data.Result {
			v, _ := strconv.Atoi(fmt.Sprint(res.Value[1]))
			got[res.Metric["state"]] = v
		}
		return got
	}
	got := agreeWithSS(t, ns, "Prometheus", 60*time.Second, query)
	t.Logf("Prometheus query tcpscope_sockets{netns=\"%d\"} agrees with ss: %v", ino, got)
	if got["ESTABLISHED"] == 0 || got["CLOSE_WAIT"] != 1 {
		t.Errorf("workload shape not seen: %v", got)
	}
	if t.Failed() {
		t.Logf("prometheus log:\n%s", promLog.String())
	}
}

// TestServeTLSBasicAuth: with a web config, the agent speaks only TLS and
// wants the user's password; a real TLS client with the CA gets in.
func TestServeTLSBasicAuth(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	caPool := writeSelfSigned(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webCfg := filepath.Join(dir, "web.yml")
	os.WriteFile(webCfg, []byte(fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  scraper: %s\n",
		filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), hash)), 0o600)

	s := startServe(t, "", "https", false, "--listen", "127.0.0.1:0", "--web.config.file", webCfg)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool}}}
	get := func(base, user, pass string) (int, error) {
		req, _ := http.NewRequest("GET", base+"/healthz", nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for _, c := range []struct {
		name, user, pass string
		want             int
	}{
		{"no credentials", "", "", http.StatusUnauthorized},
		{"wrong password", "scraper", "nope", http.StatusUnauthorized},
		{"right password", "scraper", "s3cret", http.StatusOK},
	} {
		code, err := get(s.base, c.user, c.pass)
		if err != nil || code != c.want {
			t.Errorf("%s: HTTP %d (%v), want %d", c.name, code, err, c.want)
		}
	}
	// Plain HTTP is refused.
	if code, err := get(strings.Replace(s.base, "https://", "http://", 1), "scraper", "s3cret"); err == nil && code == http.StatusOK {
		t.Errorf("plain HTTP got 200 from a TLS-only agent")
	}
	if strings.Contains(s.stderr.String(), "without TLS") {
		t.Errorf("warned about missing TLS although TLS is on:\n%s", s.stderr.String())
	}
}

// writeSelfSigned writes cert.pem and key.pem for 127.0.0.1 into dir.
func writeSelfSigned(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tcpscope test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// TestServeListenErrors: a taken port is one line and exit 6, before any
// BPF is loaded; a non-loopback address without TLS/auth is warned about
// (the agent runs inside a test namespace, so nothing is exposed).
func TestServeListenErrors(t *testing.T) {
	needRoot(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := runCLI(t, exec.Command(binary, "serve", "--listen", l.Addr().String()))
	noStackTrace(t, r)
	if r.code != exitAddrInUse || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "already in use") {
		t.Errorf("taken port: exit %d, stderr %q; want exit %d and one line", r.code, r.stderr, exitAddrInUse)
	}
	for _, args := range [][]string{
		{"--web.config.file", "/nonexistent/web.yml"},
		{"--events.queue", "0"},
		{"--log.format", "xml"},
		{"--top-processes", "0"},
	} {
		r := runCLI(t, exec.Command(binary, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...))
		noStackTrace(t, r)
		if r.code != exitUsage {
			t.Errorf("serve %v: exit %d, want %d; stderr %q", args, r.code, exitUsage, r.stderr)
		}
	}

	ns := newNS(t, "srvwarn")
	s := startServe(t, ns, "http", false, "--listen", "0.0.0.0:0")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.stderr.String(), "without TLS or basic auth") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(s.stderr.String(), "level=WARN") || !strings.Contains(s.stderr.String(), "without TLS or basic auth") {
		t.Errorf("no warning for 0.0.0.0 without TLS/auth:\n%s", s.stderr.String())
	}
	s.stop()
}

// TestServeDebugPprof: Go's profiles are served only with --debug.pprof.
func TestServeDebugPprof(t *testing.T) {
	for _, c := range []struct {
		args []string
		want int
	}{
		{nil, http.StatusNotFound},
		{[]string{"--debug.pprof"}, http.StatusOK},
	} {
		s := startServe(t, "", "http", true, append([]string{"--listen", "127.0.0.1:0"}, c.args...)...)
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?gc=1"} {
			resp, err := http.Get(s.base + path)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("serve %v: GET %s: HTTP %d, want %d", c.args, path, resp.StatusCode, c.want)
			}
		}
		s.stop()
	}
}
