package netstat

import (
	"bufio"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// procRows parses /proc/net/tcp and /proc/net/tcp6 into rows: the test's
// input, read the way netstat reads it.
func procRows(t *testing.T) []Row {
	t.Helper()
	var rows []Row
	for _, f := range []struct {
		path string
		fam  event.Family
	}{{"/proc/net/tcp", event.IPv4}, {"/proc/net/tcp6", event.IPv6}} {
		data, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			fs := strings.Fields(line)
			if i == 0 || len(fs) < 10 {
				continue
			}
			var r Row
			r.Family, r.FD = f.fam, -1
			r.Local = procAddr(t, fs[1])
			r.Remote = procAddr(t, fs[2])
			st, _ := strconv.ParseUint(fs[3], 16, 8)
			r.State = event.State(st)
			tx, rx, _ := strings.Cut(fs[4], ":")
			v, _ := strconv.ParseUint(tx, 16, 32)
			r.SendQ = uint32(v)
			v, _ = strconv.ParseUint(rx, 16, 32)
			r.RecvQ = uint32(v)
			tr, when, _ := strings.Cut(fs[5], ":")
			v, _ = strconv.ParseUint(tr, 16, 8)
			r.Timer = event.TimerKind(v)
			v, _ = strconv.ParseUint(when, 16, 64)
			// ticks plus a little, to check that conversion rounds down
			r.TimerLeft = time.Duration(v)*10*time.Millisecond + 7*time.Millisecond
			v, _ = strconv.ParseUint(fs[6], 16, 8)
			r.Retransmits = uint8(v)
			v, _ = strconv.ParseUint(fs[7], 10, 32)
			r.UID = uint32(v)
			v, _ = strconv.ParseUint(fs[8], 10, 8)
			r.Probes = uint8(v)
			r.Inode, _ = strconv.ParseUint(fs[9], 10, 64)
			rows = append(rows, r)
		}
	}
	return rows
}

func procAddr(t *testing.T, s string) netip.AddrPort {
	h, p, _ := strings.Cut(s, ":")
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		t.Fatalf("bad address %q", s)
	}
	var b [16]byte
	for i := 0; i < len(h)/8; i++ {
		w, _ := strconv.ParseUint(h[8*i:8*i+8], 16, 32)
		// each 32-bit word is printed as a host-order (little-endian) int
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(w), byte(w>>8), byte(w>>16), byte(w>>24)
	}
	if len(h) == 8 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), uint16(port))
	}
	return netip.AddrPortFrom(netip.AddrFrom16(b), uint16(port))
}

const childEnv = "TCPSCOPE_NETSTAT_CHILD"

// inFreshNetns re-runs the named test inside a new network namespace (as
// root) so that only the test's own sockets exist; it reports whether the
// caller is that child and should do the work.
func inFreshNetns(t *testing.T, name string) bool {
	if os.Getenv(childEnv) == "1" {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("ip link set lo up: %v %s", err, out)
		}
		return true
	}
	if _, err := exec.LookPath("netstat"); err != nil {
		t.Skip("netstat (net-tools) not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	cmd := exec.Command("unshare", "-n", os.Args[0], "-test.run=^"+name+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("child failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+name) {
		t.Fatalf("child did not pass")
	}
	return false
}

func mustListen(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func dialAccept(t *testing.T, l net.Listener, network, addr string) (net.Conn, net.Conn) {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	a, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); a.Close() })
	return c, a
}

var timerNum = regexp.MustCompile(`(on|keepalive|timewait|probe) \(\d+\.\d\d/`)

func TestMatchesNetstat(t *testing.T) {
	if !inFreshNetns(t, "TestMatchesNetstat") {
		return
	}
	// A long global address, to see truncation with and without -W.
	long := "2001:db8:1234:5678:9abc:def0:1234:5678"
	if out, err := exec.Command("ip", "addr", "add", long+"/64", "dev", "lo", "nodad").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v %s", err, out)
	}
	l4 := mustListen(t, "tcp4", "127.0.0.1:22")    // service name: ssh
	l6 := mustListen(t, "tcp", "[::]:8080")        // dual stack: [::], http-alt
	lLong := mustListen(t, "tcp6", "["+long+"]:0") // ephemeral port
	dialAccept(t, l4, "tcp4", "127.0.0.1:22")
	dialAccept(t, l6, "tcp4", "127.0.0.1:8080") // v4-mapped on the server side
	dialAccept(t, l6, "tcp6", "[::1]:8080")
	dialAccept(t, lLong, "tcp6", lLong.Addr().String())
	// TIME_WAIT: the client closes first.
	c, a := dialAccept(t, l4, "tcp4", "127.0.0.1:22")
	c.Close()
	time.Sleep(50 * time.Millisecond)
	a.Close()
	// keepalive timer on one
	kc, _ := dialAccept(t, l4, "tcp4", "127.0.0.1:22")
	kc.(*net.TCPConn).SetKeepAlive(true)
	kc.(*net.TCPConn).SetKeepAlivePeriod(time.Hour)
	time.Sleep(100 * time.Millisecond)

	names := map[uint32]string{0: "root"}
	users := func(uid uint32) (string, bool) { n, ok := names[uid]; return n, ok }
	cases := []struct {
		args string
		opts Options
	}{
		{"-ant", Options{All: true, NumericHosts: true, NumericPorts: true, NumericUsers: true}},
		{"-lnt", Options{Listening: true, NumericHosts: true, NumericPorts: true, NumericUsers: true}},
		{"-nt", Options{NumericHosts: true, NumericPorts: true, NumericUsers: true}},
		{"-ante", Options{All: true, NumericHosts: true, NumericPorts: true, NumericUsers: true, Extend: 1}},
		{"-antee", Options{All: true, NumericHosts: true, NumericPorts: true, NumericUsers: true, Extend: 2}},
		{"-anto", Options{All: true, NumericHosts: true, NumericPorts: true, NumericUsers: true, Timers: true}},
		{"-antW", Options{All: true, NumericHosts: true, NumericPorts: true, NumericUsers: true, Wide: true}},
		{"-at", Options{All: true}},
		{"-ate", Options{All: true, Extend: 1, Users: users}},
		{"-atW", Options{All: true, Wide: true}},
		{"-lt", Options{Listening: true}},
		{"-4ant", Options{All: true, NumericHosts: true, NumericPorts: true, Family: event.IPv4}},
		{"-6at", Options{All: true, Family: event.IPv6}},
		{"-at --numeric-hosts", Options{All: true, NumericHosts: true}},
		{"-at --numeric-ports", Options{All: true, NumericPorts: true}},
	}
	for _, tc := range cases {
		var want, got []string
		for try := 0; try < 3; try++ {
			rows := procRows(t)
			out, err := exec.Command("netstat", strings.Fields(tc.args)...).Output()
			if err != nil {
				t.Fatalf("netstat %s: %v", tc.args, err)
			}
			var sb strings.Builder
			if err := Write(&sb, rows, tc.opts); err != nil {
				t.Fatal(err)
			}
			want = normLines(string(out), tc.opts.Timers)
			got = normLines(sb.String(), tc.opts.Timers)
			if strings.Join(want, "\n") == strings.Join(got, "\n") {
				break
			}
		}
		if strings.Join(want, "\n") != strings.Join(got, "\n") {
			t.Errorf("netstat %s differs:\n--- netstat\n%s\n--- ours\n%s", tc.args, strings.Join(want, "\n"), strings.Join(got, "\n"))
		} else {
			t.Logf("netstat %s: %d lines identical", tc.args, len(want))
			if tc.args == "-at" || tc.args == "-anto" || tc.args == "-antW" {
				t.Logf("%s", strings.Join(want, "\n"))
			}
		}
	}
}

// normLines returns the header lines first and then the sorted socket lines
// (the set of lines; netstat's order within a family is the kernel's hash
// order). Timer values that run down are masked.
func normLines(s string, timers bool) []string {
	var head, body []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for i := 0; sc.Scan(); i++ {
		line := sc.Text()
		if timers {
			line = timerNum.ReplaceAllString(line, "$1 (T/")
		}
		if i < 2 {
			head = append(head, line)
		} else {
			body = append(body, line)
		}
	}
	sort.Strings(body)
	return append(head, body...)
}

func TestTCPStatsMatchNetstat(t *testing.T) {
	if !inFreshNetns(t, "TestTCPStatsMatchNetstat") {
		return
	}
	// Make the counters non-zero, then let the namespace go idle.
	l := mustListen(t, "tcp4", "127.0.0.1:0")
	for i := 0; i < 3; i++ {
		c, a := dialAccept(t, l, "tcp4", l.Addr().String())
		c.Write([]byte("hello"))
		buf := make([]byte, 5)
		a.Read(buf)
		c.Close()
		a.Close()
	}
	net.Dial("tcp4", "127.0.0.1:1") // refused: a reset
	time.Sleep(300 * time.Millisecond)
	for try := 0; ; try++ {
		snmp, err1 := os.ReadFile("/proc/net/snmp")
		nst, err2 := os.ReadFile("/proc/net/netstat")
		out, err3 := exec.Command("netstat", "-st").Output()
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatal(err1, err2, err3)
		}
		var sb strings.Builder
		if err := WriteTCPStats(&sb, strings.NewReader(string(snmp)), strings.NewReader(string(nst))); err != nil {
			t.Fatal(err)
		}
		if sb.String() == string(out) {
			t.Logf("netstat -st identical (%d lines):\n%s", strings.Count(sb.String(), "\n"), out)
			return
		}
		if try == 3 {
			t.Fatalf("netstat -st differs:\n--- netstat\n%s\n--- ours\n%s", out, sb.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
