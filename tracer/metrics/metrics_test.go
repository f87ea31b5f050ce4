package metrics

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/table"
)

var (
	srvAP = netip.MustParseAddrPort("10.0.0.2:80")
	anyAP = netip.MustParseAddrPort("0.0.0.0:0")
)

func cliAP(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port)
}

func owner(pid uint32, comm string) event.Task {
	t := event.Task{PID: pid, TID: pid}
	copy(t.Comm[:], comm)
	return t
}

func tr(cookie, mono uint64, old, new event.State, local, remote netip.AddrPort, o event.Task) *event.Event {
	e := &event.Event{Kind: event.Transition, Cookie: cookie, Mono: mono, Old: old, New: new,
		NetNS: 7, Family: event.IPv4, Local: local, Remote: remote, Owner: o}
	if o.PID != 0 {
		e.Flags |= event.OwnerKnown
		e.Inode = cookie + 1000 // held by a process: it has a file
	}
	return e
}

// scenario drives a table through a listener, two server-side connections
// (one ends in TIME_WAIT on the server side, one in CLOSE_WAIT) and client
// connections in CLOSE_WAIT owned by several processes.
func scenario(t *testing.T, top int) (*table.Table, *Collector) {
	t.Helper()
	tab := table.New()
	c := New(Options{Table: tab, TopProcesses: top, Version: "test", Since: 1})
	tab.BeginSync()
	tab.EndSync(nil, 1, nil)
	srv := owner(100, "server")
	tab.Apply(tr(1, 10, event.Close, event.Listen, srvAP, anyAP, srv))
	// Server side, closed first by the server: FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT.
	tab.Apply(tr(2, 20, event.Listen, event.SynRecv, srvAP, cliAP(1000), srv))
	tab.Apply(tr(2, 21, event.SynRecv, event.Established, srvAP, cliAP(1000), srv))
	tab.Apply(tr(2, 30, event.Established, event.FinWait1, srvAP, cliAP(1000), srv))
	tab.Apply(tr(2, 31, event.FinWait1, event.FinWait2, srvAP, cliAP(1000), srv))
	tw := tr(2, 1_000_000_032, 0, event.TimeWait, srvAP, cliAP(1000), event.Task{})
	tw.Kind = event.TimewaitStart
	tab.Apply(tw)
	// CLOSE_WAIT sockets: 3 of pid 200, 2 of pid 201, 1 of pid 202.
	cookie := uint64(10)
	for pid, n := range map[uint32]int{200: 3, 201: 2, 202: 1} {
		for range n {
			cookie++
			l := cliAP(uint16(2000 + cookie))
			o := owner(pid, fmt.Sprintf("app%d", pid))
			tab.Apply(tr(cookie, 40, event.Close, event.SynSent, l, srvAP, o))
			tab.Apply(tr(cookie, 41, event.SynSent, event.Established, l, srvAP, o))
			tab.Apply(tr(cookie, 42, event.Established, event.CloseWait, l, srvAP, o))
		}
	}
	// One never accepted (no file, no process): an orphan.
	tab.Apply(tr(90, 50, event.Listen, event.SynRecv, srvAP, cliAP(3000), event.Task{}))
	tab.Apply(tr(90, 51, event.SynRecv, event.Established, srvAP, cliAP(3000), event.Task{}))
	tab.Apply(tr(90, 52, event.Established, event.CloseWait, srvAP, cliAP(3000), event.Task{}))
	return tab, c
}

func TestCollectorValues(t *testing.T) {
	_, c := scenario(t, 2)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	want := `
# HELP tcpscope_sockets TCP sockets per state and network namespace (inode), from the live table. Request sockets count as SYN_RECV, as in ss and netstat.
# TYPE tcpscope_sockets gauge
tcpscope_sockets{netns="7",state="CLOSE_WAIT"} 7
tcpscope_sockets{netns="7",state="LISTEN"} 1
tcpscope_sockets{netns="7",state="TIME_WAIT"} 1
# HELP tcpscope_time_wait_entries_total Sockets that entered TIME_WAIT since the agent started, by side: server if the local port had a listener in the namespace, else client; unknown if the agent had not seen the connection.
# TYPE tcpscope_time_wait_entries_total counter
tcpscope_time_wait_entries_total{side="client"} 0
tcpscope_time_wait_entries_total{side="server"} 1
tcpscope_time_wait_entries_total{side="unknown"} 0
# HELP tcpscope_time_wait_sockets Sockets now in TIME_WAIT, by side (server: the local port has a listener in the namespace).
# TYPE tcpscope_time_wait_sockets gauge
tcpscope_time_wait_sockets{side="client"} 0
tcpscope_time_wait_sockets{side="server"} 1
# HELP tcpscope_close_wait_sockets_by_process Sockets in CLOSE_WAIT per owning process; the processes beyond the top N are summed under comm="other", pid=""; sockets no process holds (never accepted, or orphaned) under comm="orphan", pid="".
# TYPE tcpscope_close_wait_sockets_by_process gauge
tcpscope_close_wait_sockets_by_process{comm="app200",pid="200"} 3
tcpscope_close_wait_sockets_by_process{comm="app201",pid="201"} 2
tcpscope_close_wait_sockets_by_process{comm="orphan",pid=""} 1
tcpscope_close_wait_sockets_by_process{comm="other",pid=""} 1
# HELP tcpscope_connection_lifetime_seconds Lifetime of TCP connections the agent saw begin: from the first state change (SYN) until TIME_WAIT or CLOSE, whichever comes first.
# TYPE tcpscope_connection_lifetime_seconds histogram
tcpscope_connection_lifetime_seconds_bucket{le="0.001"} 0
tcpscope_connection_lifetime_seconds_bucket{le="0.004"} 0
tcpscope_connection_lifetime_seconds_bucket{le="0.016"} 0
tcpscope_connection_lifetime_seconds_bucket{le="0.064"} 0
tcpscope_connection_lifetime_seconds_bucket{le="0.256"} 0
tcpscope_connection_lifetime_seconds_bucket{le="1.024"} 1
tcpscope_connection_lifetime_seconds_bucket{le="4.096"} 1
tcpscope_connection_lifetime_seconds_bucket{le="16.384"} 1
tcpscope_connection_lifetime_seconds_bucket{le="65.536"} 1
tcpscope_connection_lifetime_seconds_bucket{le="262.144"} 1
tcpscope_connection_lifetime_seconds_bucket{le="1048.576"} 1
tcpscope_connection_lifetime_seconds_bucket{le="4194.304"} 1
tcpscope_connection_lifetime_seconds_bucket{le="+Inf"} 1
tcpscope_connection_lifetime_seconds_sum 1.000000012
tcpscope_connection_lifetime_seconds_count 1
`
	names := []string{"tcpscope_sockets", "tcpscope_time_wait_entries_total", "tcpscope_time_wait_sockets",
		"tcpscope_close_wait_sockets_by_process", "tcpscope_connection_lifetime_seconds"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// Transitions come from the table's matrix.
	if n := value(t, reg, "tcpscope_transitions_total", map[string]string{"from": "ESTABLISHED", "to": "CLOSE_WAIT"}); n != 7 {
		t.Errorf("transitions ESTABLISHED -> CLOSE_WAIT = %v, want 7", n)
	}
}

// value returns the value of the gathered series name{labels}.
func value(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue series
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

func TestCollectorLint(t *testing.T) {
	_, c := scenario(t, 10)
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// BenchmarkCollect: one scrape of a table with n CLOSE_WAIT sockets over
// 100 processes and n TIME_WAIT sockets.
func BenchmarkCollect(b *testing.B) {
	for _, n := range []int{1000, 50000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tab := table.New()
			c := New(Options{Table: tab, Version: "bench", Since: 1})
			tab.BeginSync()
			tab.EndSync(nil, 1, nil)
			for i := range n {
				o := owner(uint32(100+i%100), fmt.Sprintf("app%d", i%100))
				l := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(1024+i%60000))
				r := netip.AddrPortFrom(netip.MustParseAddr("10.0.1.1"), uint16(1+i/60000))
				tab.Apply(tr(uint64(2*i+1), 10, event.SynSent, event.Established, l, r, o))
				tab.Apply(tr(uint64(2*i+1), 11, event.Established, event.CloseWait, l, r, o))
				tw := tr(uint64(2*i+2), 12, 0, event.TimeWait, l, netip.AddrPortFrom(netip.MustParseAddr("10.0.2.1"), uint16(1+i/60000)), event.Task{})
				tw.Kind = event.TimewaitStart
				tab.Apply(tw)
			}
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(c)
			b.ResetTimer()
			for range b.N {
				if _, err := reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
