package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSummary(t *testing.T) {
	stderr := "tcpscope: warning: x\ntcpscope: summary: events=3021 lost=7 ring_drops=5 nested_missed=4 nested_recovered=2\n"
	s, ok := parseSummary(stderr)
	if !ok || s != (tcpscopeSummary{Events: 3021, Lost: 7, RingDrops: 5, NestedMissed: 4, NestedRecovered: 2}) {
		t.Errorf("parseSummary = %+v, %v", s, ok)
	}
	if _, ok := parseSummary("tcpscope: summary: events=1\n"); ok {
		t.Error("accepted a partial summary")
	}
}

func TestCountBpftraceOutput(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	text := "Attaching 3 probes...\n" +
		"SKADDR           C-PID   C-COMM  LADDR LPORT RADDR RPORT OLDSTATE    -> NEWSTATE    MS\n" +
		"ffff888105693780 22779   tcpchurn 127.0.0.1 50199 0.0.0.0 0 CLOSE       -> LISTEN      0.000\n" +
		"\nLost 42 events\n" +
		"ffff888105692e40 22779   tcpchurn 127.0.0.1 0 127.0.0.1 50199 CLOSE       -> SYN_SENT    0.000\n" +
		"Lost 8 events\n\n"
	if err := os.WriteFile(out, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var res BpftraceLoss
	if err := countBpftraceOutput(out, &res); err != nil {
		t.Fatal(err)
	}
	if res.EventLines != 2 || res.ReportedLost != 50 || res.OutputBytes != int64(len(text)) {
		t.Errorf("got %+v", res)
	}
}

func TestEmbeddedScript(t *testing.T) {
	s := string(tcpstatesScript)
	for _, want := range []string{"tracepoint:sock:inet_sock_set_state", "printf(", "delete(@last"} {
		if !strings.Contains(s, want) {
			t.Errorf("tcpstates.bt lacks %q", want)
		}
	}
}

func TestSummaryAndMarkdown(t *testing.T) {
	u := func(v uint64) *uint64 { return &v }
	r := newReport(options{runs: 3})
	for i, rate := range []float64{100, 300, 200} {
		r.RawRuns = append(r.RawRuns,
			RunResult{Close: "server", Tracer: tracerNone, Round: i + 1, Rate: rate, Conns: 10, ElapsedSec: 1},
			RunResult{Close: "server", Tracer: tracerTcpscope, Round: i + 1, Rate: rate / 2, Conns: 10, ElapsedSec: 1,
				TracerCPUSec: 0.25, Events: u(100), Lost: u(0), RingDrops: u(0), NestedMissed: u(0), NestedRecovered: u(0)},
			RunResult{Close: "server", Tracer: tracerBpftrace, Round: i + 1, Error: "boom"},
		)
	}
	r.summarize()
	if len(r.Summary) != 1 || len(r.Summary[0].Tracers) != 3 {
		t.Fatalf("summary %+v", r.Summary)
	}
	none, ts, bt := r.Summary[0].Tracers[0], r.Summary[0].Tracers[1], r.Summary[0].Tracers[2]
	if none.MedianRate != 200 || ts.MedianRate != 100 || ts.Ratio != 0.5 || ts.Overhead != 0.5 || ts.EventsPerConn != 10 || ts.TracerCPU != 0.25 {
		t.Errorf("none %+v tcpscope %+v", none, ts)
	}
	if bt.Runs != 0 || bt.Ratio != 0 {
		t.Errorf("failed runs counted: %+v", bt)
	}
	if r.Baseline() != 200 {
		t.Errorf("baseline %v", r.Baseline())
	}
	md := renderMarkdown(r)
	for _, want := range []string{"| server closes first | `tcpscope trace > /dev/null` | 100/s | 0.50 | 50% |", "boom"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1}, 2}, {[]float64{5, 1, 3}, 3}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
