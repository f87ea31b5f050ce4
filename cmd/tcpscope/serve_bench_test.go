package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// serveHoldEnv makes the test binary hold N established loopback
// connections (2N sockets) until its stdin closes.
const serveHoldEnv = "TCPSCOPE_SERVE_BENCH_HOLD"

func init() {
	if v := os.Getenv(serveHoldEnv); v != "" {
		os.Exit(holdConns(v))
	}
}

func holdConns(v string) int {
	n, _ := strconv.Atoi(v)
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	if need := uint64(2*n + 100); lim.Cur < need {
		fmt.Fprintf(os.Stderr, "need %d file descriptors, the limit is %d\n", need, lim.Cur)
		return 1
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	conns := make([]net.Conn, 0, 2*n)
	for range n {
		c, err := net.Dial("tcp4", l.Addr().String())
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			return 1
		}
		a, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "accept:", err)
			return 1
		}
		conns = append(conns, c, a)
	}
	fmt.Println("ready", len(conns)+1)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// BenchmarkServeSockets: GET /api/v1/sockets?netns= for a namespace holding
// 50k sockets (25k connections), the agent running as in production.
func BenchmarkServeSockets(b *testing.B) {
	needRoot(b)
	ns := newNS(b, "srvbench")
	ino := netnsInode(b, ns)
	s := startServe(b, "", "http", true, "--listen", "127.0.0.1:0")
	// 25k connections, in holders of at most 8334 each (the hard limit on
	// open files here is 20000 per process).
	const conns, perHolder = 25000, 8334
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	want := 0
	for left := conns; left > 0; left -= perHolder {
		holder := inNS(ns, exe, "-test.run=^$")
		holder.Env = append(os.Environ(), fmt.Sprintf("%s=%d", serveHoldEnv, min(left, perHolder)))
		holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stdin, _ := holder.StdinPipe()
		out, _ := holder.StdoutPipe()
		holder.Stderr = os.Stderr
		if err := holder.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { stdin.Close(); holder.Wait() })
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "ready") {
			b.Fatalf("holder: %q %v", line, err)
		}
		n, _ := strconv.Atoi(strings.Fields(line)[1])
		want += n
	}
	got := agreeWithSS(b, ns, "/api/v1/summary", 60*time.Second, func() map[string]int { return s.summary(b, ino) })
	b.Logf("namespace holds %v", got)

	u := fmt.Sprintf("%s/api/v1/sockets?netns=%d", s.base, ino)
	var lines int
	b.ResetTimer()
	for b.Loop() {
		resp, err := http.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("HTTP %d %v", resp.StatusCode, err)
		}
		lines = bytes.Count(body, []byte{'\n'})
	}
	b.StopTimer()
	if lines != want {
		b.Errorf("/api/v1/sockets returned %d sockets, the namespace has %d", lines, want)
	}
	b.ReportMetric(float64(lines), "sockets/op")
	// The summary, for comparison: read from the table, no walk.
	start := time.Now()
	const sums = 100
	for range sums {
		s.summary(b, ino)
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/sums, "µs/summary")
}

// BenchmarkServeChurn: the agent's CPU and memory while a bounded churn
// (20k connections at most, 5 s at most) runs in a test namespace, with a
// stream client attached; reported next to the churn rate.
func BenchmarkServeChurn(b *testing.B) {
	needRoot(b)
	ns := newNS(b, "srvchurn")
	ino := netnsInode(b, ns)
	s := startServe(b, "", "http", true, "--listen", "127.0.0.1:0")
	resp, err := http.Get(fmt.Sprintf("%s/api/v1/events?netns=%d", s.base, ino))
	if err != nil {
		b.Fatal(err)
	}
	go io.Copy(io.Discard, resp.Body)
	defer resp.Body.Close()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	pid := s.cmd.Process.Pid
	for b.Loop() {
		cpu0, wall0 := procCPU(b, pid), time.Now()
		c := inNS(ns, exe, "-test.run=^$")
		c.Env = append(os.Environ(), serveChurnEnv+"=200000,5000")
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := c.CombinedOutput()
		if err != nil {
			b.Fatalf("churn: %v: %s", err, out)
		}
		cpu, wall := procCPU(b, pid)-cpu0, time.Since(wall0)
		b.Logf("churn: %s", strings.TrimSpace(string(out)))
		if m := churnConnsRE.FindStringSubmatch(string(out)); m != nil {
			n, _ := strconv.Atoi(m[1])
			b.ReportMetric(float64(n)/wall.Seconds(), "conns/s")
		}
		b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "agent-cpu-%")
		b.ReportMetric(float64(procStatusKB(b, pid, "VmRSS:"))/1024, "agent-rss-MiB")
		b.ReportMetric(float64(procStatusKB(b, pid, "VmHWM:"))/1024, "agent-peak-rss-MiB")
		m := scrape(b, s.base, "")
		b.ReportMetric(m["tcpscope_lost_events_total"], "lost-events")
		b.ReportMetric(m["tcpscope_event_stream_dropped_events_total"], "stream-dropped")
	}
}

var churnConnsRE = regexp.MustCompile(`conns=(\d+)`)

// procCPU is the user+system CPU time of a process.
func procCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func procStatusKB(t testing.TB, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field) {
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
