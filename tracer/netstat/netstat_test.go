package netstat

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
)

type fakeResolver map[netip.Addr]string

func (f fakeResolver) LookupAddr(ctx context.Context, a netip.Addr) (string, bool) {
	n, ok := f[a]
	return n, ok
}

// hangResolver never answers: Write must still finish within its budget.
type hangResolver struct{}

func (hangResolver) LookupAddr(ctx context.Context, a netip.Addr) (string, bool) {
	<-ctx.Done()
	return "", false
}

var testServices = ServicesFile{22: "ssh", 8080: "http-alt", 9999: "a-very-long-service-name-here"}

func row(fam event.Family, l, r string, st event.State) Row {
	return Row{Socket: event.Socket{Family: fam, Local: netip.MustParseAddrPort(l), Remote: netip.MustParseAddrPort(r), State: st, FD: -1}}
}

func numeric() Options {
	return Options{All: true, NumericHosts: true, NumericPorts: true, NumericUsers: true, Services: testServices}
}

func body(t *testing.T, rows []Row, o Options) []string {
	t.Helper()
	var sb strings.Builder
	if err := Write(&sb, rows, o); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(sb.String(), "\n"), "\n")
	if !o.NoHeader && !o.JSON {
		lines = lines[2:]
	}
	return lines
}

func TestRows(t *testing.T) {
	long := "[2001:db8:1234:5678:9abc:def0:1234:5678]"
	res := fakeResolver{
		netip.MustParseAddr("10.1.2.3"):  "a-rather-long-host-name.example.org",
		netip.MustParseAddr("127.0.0.1"): "localhost",
	}
	tests := []struct {
		name string
		row  Row
		opts Options
		want string
	}{
		{"listen v4", row(event.IPv4, "0.0.0.0:22", "0.0.0.0:0", event.Listen), numeric(),
			"tcp        0      0 0.0.0.0:22              0.0.0.0:*               LISTEN     "},
		{"listen v6 numeric", row(event.IPv6, "[::]:22", "[::]:0", event.Listen), numeric(),
			"tcp6       0      0 :::22                   :::*                    LISTEN     "},
		{"listen v6 names", row(event.IPv6, "[::]:22", "[::]:0", event.Listen), Options{All: true, Services: testServices, Resolver: res},
			"tcp6       0      0 [::]:ssh                [::]:*                  LISTEN     "},
		{"v4-mapped", row(event.IPv6, "[::ffff:127.0.0.1]:8080", "[::ffff:127.0.0.1]:40000", event.Established), Options{All: true, Services: testServices, Resolver: res},
			"tcp6       0      0 127.0.0.1:http-alt      127.0.0.1:40000         ESTABLISHED"},
		{"long v6 cut", row(event.IPv6, long+":35361", long+":443", event.Established), numeric(),
			"tcp6       0      0 2001:db8:1234:567:35361 2001:db8:1234:5678::443 ESTABLISHED"},
		{"long v6 wide", row(event.IPv6, long+":35361", "[::1]:443", event.Established), func() Options { o := numeric(); o.Wide = true; return o }(),
			"tcp6       0      0 2001:db8:1234:5678:9abc:def0:1234:5678:35361 ::1:443                 ESTABLISHED"},
		{"long names cut", row(event.IPv4, "127.0.0.1:9999", "10.1.2.3:9999", event.SynSent), Options{All: true, Services: testServices, Resolver: res},
			"tcp        0      0 loca:a-very-long-servic a-ra:a-very-long-servic SYN_SENT   "},
		{"request sock", func() Row {
			r := row(event.IPv4, "127.0.0.1:22", "127.0.0.1:5555", event.NewSynRecv)
			r.RecvQ, r.SendQ = 123456, 7
			return r
		}(), numeric(), "tcp   123456      7 127.0.0.1:22            127.0.0.1:5555          SYN_RECV   "},
		{"timers", func() Row {
			r := row(event.IPv4, "127.0.0.1:22", "127.0.0.1:5555", event.Established)
			r.Timer, r.TimerLeft, r.Retransmits, r.Probes = event.TimerRetransmit, 209999*time.Microsecond, 3, 1
			return r
		}(), func() Options { o := numeric(); o.Timers = true; return o }(),
			"tcp        0      0 127.0.0.1:22            127.0.0.1:5555          ESTABLISHED on (0.20/3/1)"},
		{"keepalive", func() Row {
			r := row(event.IPv4, "127.0.0.1:22", "127.0.0.1:5555", event.Established)
			r.Timer, r.TimerLeft = event.TimerKeepalive, 7199989*time.Millisecond
			return r
		}(), func() Options { o := numeric(); o.Timers = true; return o }(),
			"tcp        0      0 127.0.0.1:22            127.0.0.1:5555          ESTABLISHED keepalive (7199.98/0/0)"},
		{"hostile comm", func() Row {
			r := row(event.IPv4, "127.0.0.1:22", "127.0.0.1:5555", event.Established)
			r.Inode, r.OwnerKnown, r.Owner.PID = 42, true, 7
			copy(r.Owner.Comm[:], "\x1b[2Jevil\"\\")
			return r
		}(), func() Options { o := numeric(); o.Program = true; o.Extend = 1; return o }(),
			"tcp        0      0 127.0.0.1:22            127.0.0.1:5555          ESTABLISHED 0          42         7/\\x1b[2Jevil\"\\\\    "},
		{"orphan prog", func() Row {
			r := row(event.IPv4, "127.0.0.1:22", "127.0.0.1:5555", event.FinWait2)
			r.OwnerKnown, r.Owner.PID = true, 7
			return r
		}(), func() Options { o := numeric(); o.Program = true; return o }(),
			"tcp        0      0 127.0.0.1:22            127.0.0.1:5555          FIN_WAIT2   -                   "},
		{"prog cut to 19", func() Row {
			r := row(event.IPv4, "127.0.0.1:22", "127.0.0.1:5555", event.Established)
			r.Inode, r.OwnerKnown, r.Owner.PID = 1, true, 4194304
			copy(r.Owner.Comm[:], "abcdefghijklmno")
			return r
		}(), func() Options { o := numeric(); o.Program = true; return o }(),
			"tcp        0      0 127.0.0.1:22            127.0.0.1:5555          ESTABLISHED 4194304/abcdefghijk "},
		{"age", func() Row {
			r := row(event.IPv4, "127.0.0.1:22", "127.0.0.1:5555", event.Established)
			r.Age, r.AgeAtLeast = 62*time.Second+300*time.Millisecond, true
			return r
		}(), func() Options { o := numeric(); o.Age = true; return o }(),
			"tcp        0      0 127.0.0.1:22            127.0.0.1:5555          ESTABLISHED >=1m2s"},
	}
	for _, tc := range tests {
		got := body(t, []Row{tc.row}, tc.opts)
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

func TestFilterAndOrder(t *testing.T) {
	rows := []Row{
		row(event.IPv6, "[::]:22", "[::]:0", event.Listen),
		row(event.IPv4, "127.0.0.1:1", "127.0.0.1:2", event.Established),
		row(event.IPv6, "[::1]:1", "[::1]:2", event.Established),
		row(event.IPv4, "0.0.0.0:22", "0.0.0.0:0", event.Listen),
	}
	short := func(o Options) string {
		var s []string
		for _, l := range body(t, rows, o) {
			f := strings.Fields(l)
			s = append(s, f[0]+" "+f[3])
		}
		return strings.Join(s, ",")
	}
	o := numeric()
	if got := short(o); got != "tcp 127.0.0.1:1,tcp 0.0.0.0:22,tcp6 :::22,tcp6 ::1:1" {
		t.Errorf("all: %s", got)
	}
	o.All, o.Listening = false, true
	if got := short(o); got != "tcp 0.0.0.0:22,tcp6 :::22" {
		t.Errorf("listening: %s", got)
	}
	o.Listening, o.Family = false, event.IPv6
	if got := short(o); got != "tcp6 ::1:1" {
		t.Errorf("connected v6: %s", got)
	}
}

func TestHeaders(t *testing.T) {
	var sb strings.Builder
	Write(&sb, nil, Options{Listening: true, Extend: 1, Program: true, Timers: true})
	want := "Active Internet connections (only servers)\n" +
		"Proto Recv-Q Send-Q Local Address           Foreign Address         State       User       Inode      PID/Program name     Timer\n"
	if sb.String() != want {
		t.Errorf("got %q", sb.String())
	}
	sb.Reset()
	Write(&sb, nil, Options{NoHeader: true})
	if sb.Len() != 0 {
		t.Errorf("NoHeader wrote %q", sb.String())
	}
}

func TestResolverBudget(t *testing.T) {
	rows := []Row{row(event.IPv4, "10.0.0.1:1", "10.0.0.2:2", event.Established)}
	start := time.Now()
	got := body(t, rows, Options{All: true, Resolver: hangResolver{}, LookupBudget: 100 * time.Millisecond, Services: testServices})
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Write took %v", d)
	}
	if !strings.Contains(got[0], "10.0.0.1:1") {
		t.Errorf("want numeric fallback: %q", got[0])
	}
}

func TestJSON(t *testing.T) {
	r := row(event.IPv6, "[::ffff:127.0.0.1]:22", "[2001:db8::1]:5555", event.TimeWait)
	r.Kind, r.Timer, r.TimerLeft, r.Since, r.Age, r.FD = event.TimewaitSocket, event.TimerTimewait, time.Second, 5, time.Minute, -1
	r2 := row(event.IPv4, "127.0.0.1:22", "127.0.0.1:5555", event.Established)
	r2.OwnerKnown, r2.Owner.PID, r2.Inode, r2.FD = true, 9, 77, 3
	copy(r2.Owner.Comm[:], "\x1b]0;\"x\\\xff\n")
	o := Options{All: true, JSON: true, Wall: func(m uint64) time.Time { return time.Unix(1, int64(m)).UTC() }}
	lines := body(t, []Row{r, r2}, o)
	if len(lines) != 2 {
		t.Fatalf("got %d lines", len(lines))
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("invalid JSON %q: %v", l, err)
		}
		if strings.ContainsAny(l, "\x1b\n") {
			t.Errorf("control bytes in %q", l)
		}
	}
	var m0, m1 map[string]any
	json.Unmarshal([]byte(lines[0]), &m0)
	json.Unmarshal([]byte(lines[1]), &m1)
	if m0["family"] != "ipv4" || m0["state"] != "ESTABLISHED" || m0["comm"] != `\x1b]0;"x\\\xff\x0a` || m0["fd"] != 3.0 {
		t.Errorf("row 2: %v", m0)
	}
	if m1["kind"] != "timewait" || m1["since"] != "1970-01-01T00:00:01.000000005Z" || m1["pid"] != nil || m1["fd"] != nil ||
		m1["timer"].(map[string]any)["kind"] != "timewait" || m1["laddr"] != "::ffff:127.0.0.1" {
		t.Errorf("row 1: %v", m1)
	}
}

func TestNtop6(t *testing.T) {
	for in, want := range map[string]string{
		"::": "::", "::1": "::1", "1::": "1::", "::1.2.3.4": "::1.2.3.4", "::ffff:1.2.3.4": "::ffff:1.2.3.4",
		"1:0:0:2:0:0:0:3": "1:0:0:2::3", "1:0:2:3:4:5:6:7": "1:0:2:3:4:5:6:7", "fe80::abcd": "fe80::abcd",
	} {
		if got := ntop6(netip.MustParseAddr(in).As16()); got != want {
			t.Errorf("ntop6(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestTCPStatsUnsortedTable(t *testing.T) {
	snmp := "Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens InCsumErrors\nTcp: 1 200 120000 -1 5 2\n"
	// TCPTimeouts is in netstat's table, but out of order ("TCPTimeouts" >
	// "TCPTSReorder"), so its bsearch misses it and prints it as unknown.
	ext := "TcpExt: TW TCPHPHits TCPTimeouts Unknown Zero\nTcpExt: 4 0 2 7 0\n"
	var sb strings.Builder
	if err := WriteTCPStats(&sb, strings.NewReader(snmp), strings.NewReader(ext)); err != nil {
		t.Fatal(err)
	}
	want := "Tcp:\n    5 active connection openings\n    InCsumErrors: 2\nTcpExt:\n" +
		"    4 TCP sockets finished time wait in fast timer\n    0 packet headers predicted\n    TCPTimeouts: 2\n    Unknown: 7\n"
	if sb.String() != want {
		t.Errorf("got\n%s\nwant\n%s", sb.String(), want)
	}
}

func TestTransitionsAndSummary(t *testing.T) {
	var m [event.MaxState + 1][event.MaxState + 1]uint64
	m[event.SynSent][event.Established] = 3
	m[event.Established][event.FinWait1] = 12
	var c [event.MaxState + 1]int
	c[event.Established] = 2
	c[event.Listen] = 1
	var sb strings.Builder
	WriteTransitions(&sb, m, c)
	want := "Transitions since start (from -> to):\n" +
		"from \\ to    ESTABLISHED  FIN_WAIT1\n" +
		"ESTABLISHED            .         12\n" +
		"SYN_SENT               3          .\n" +
		"\nSockets by state:\n  ESTABLISHED  2\n  LISTEN       1\n  total        3\n"
	if sb.String() != want {
		t.Errorf("got\n%s\nwant\n%s", sb.String(), want)
	}
	rows := []Row{row(event.IPv4, "1.1.1.1:1", "1.1.1.2:2", event.Established), row(event.IPv4, "1.1.1.1:1", "0.0.0.0:0", event.Listen)}
	rows[1].NetNS = 5
	sb.Reset()
	WriteSummary(&sb, CountStates(rows), true)
	want = "Sockets by state:\n  ESTABLISHED  1\n  LISTEN       1\n  total        2\n" +
		"\nnetns 0:\n    ESTABLISHED  1\n    total        1\n\nnetns 5:\n    LISTEN  1\n    total   1\n"
	if sb.String() != want {
		t.Errorf("got\n%s\nwant\n%s", sb.String(), want)
	}
}
