package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseMetrics(t *testing.T) {
	text := `# HELP tcpscope_lost_events_total Events lost.
# TYPE tcpscope_lost_events_total counter
tcpscope_lost_events_total 3
tcpscope_transitions_total{from="CLOSE",to="SYN_SENT"} 10
tcpscope_transitions_total{from="SYN_SENT",to="ESTABLISHED"} 9.5
tcpscope_build_info{goversion="go1.26.8",version="a b}c"} 1
tcpscope_table_sockets 1.2e+06 1700000000000
`
	m, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"tcpscope_lost_events_total": 3, "tcpscope_transitions_total": 19.5,
		"tcpscope_build_info": 1, "tcpscope_table_sockets": 1.2e6,
	} {
		if m[name] != want {
			t.Errorf("%s = %v, want %v", name, m[name], want)
		}
	}
	for _, bad := range []string{"x{a=\"1\" 2\n", "tcpscope_x\n", "tcpscope_x abc\n"} {
		if _, err := parseMetrics(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestParseGoBench(t *testing.T) {
	text := `goos: linux
pkg: github.com/tcpscope/tcpscope/tracer/table
BenchmarkMemoryPerSocket-2   	       1	2345678901 ns/op	        97.50 B/socket
BenchmarkApply/Apply-2       	12345678	        95.1 ns/op	       0 B/op	       0 allocs/op
--- FAIL: BenchmarkBroken
BenchmarkLogLine
    bench_test.go:12: something
PASS
pkg: github.com/tcpscope/tcpscope/tracer/event
BenchmarkDecode   	100	12.5 ns/op	90000000 events/s
`
	bs, err := parseGoBench(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 3 {
		t.Fatalf("got %d benchmarks: %+v", len(bs), bs)
	}
	if bs[0].Pkg != "github.com/tcpscope/tcpscope/tracer/table" || bs[0].Name != "BenchmarkMemoryPerSocket" || bs[0].N != 1 {
		t.Errorf("first: %+v", bs[0])
	}
	if v, ok := goBenchMetric(bs, "BenchmarkMemoryPerSocket", "B/socket"); !ok || v != 97.5 {
		t.Errorf("B/socket = %v, %v", v, ok)
	}
	if v, ok := goBenchMetric(bs, "BenchmarkApply/Apply", "allocs/op"); !ok || v != 0 {
		t.Errorf("allocs/op = %v, %v", v, ok)
	}
	if bs[2].Pkg != "github.com/tcpscope/tcpscope/tracer/event" || bs[2].Name != "BenchmarkDecode" || bs[2].Metrics["events/s"] != 9e7 {
		t.Errorf("last: %+v", bs[2])
	}
	if _, ok := goBenchMetric(bs, "BenchmarkNone", "ns/op"); ok {
		t.Error("found a benchmark that is not there")
	}
}

func TestParseWorkers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		ok   bool
	}{
		{"1,2,4,8", []int{1, 2, 4, 8}, true},
		{" 2, 3 ,", []int{2, 3}, true},
		{"", nil, true},
		{"2,2", nil, false},
		{"4,2", nil, false},
		{"0", nil, false},
		{"1,x", nil, false},
		{"1000", nil, false},
	} {
		got, err := parseWorkers(tc.in)
		if (err == nil) != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("parseWorkers(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestRamp(t *testing.T) {
	workers := []int{1, 2, 4, 8}
	ok := func(w int, eps float64) RampStep { return RampStep{Workers: w, EventsPerSec: eps} }
	for _, tc := range []struct {
		name      string
		steps     []RampStep
		done      bool
		sustained float64
		firstLoss int
	}{
		{"not started", nil, false, 0, -1},
		{"rising, no loss yet", []RampStep{ok(1, 100), ok(2, 180)}, false, 180, -1},
		{"all without loss", []RampStep{ok(1, 100), ok(2, 180), ok(4, 170), ok(8, 160)}, true, 180, -1},
		{"loss stops it", []RampStep{ok(1, 100), {Workers: 2, EventsPerSec: 300, Lost: 5}}, true, 100, 1},
		{"loss at once", []RampStep{{Workers: 1, EventsPerSec: 300, Lost: 1}}, true, 0, 0},
		{"an error stops it, says nothing", []RampStep{ok(1, 100), {Workers: 2, Error: "boom"}}, true, 100, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rampDone(tc.steps, workers); got != tc.done {
				t.Errorf("rampDone = %v, want %v", got, tc.done)
			}
			r := RampResult{Steps: tc.steps}
			r.summarize()
			if r.SustainedEPS != tc.sustained || r.FirstLoss != tc.firstLoss {
				t.Errorf("sustained %v first loss %d, want %v %d", r.SustainedEPS, r.FirstLoss, tc.sustained, tc.firstLoss)
			}
		})
	}
}

func TestStreamLine(t *testing.T) {
	ev := `{"time":"2026-11-25T17:03:37.119102090Z","pid":1087,"comm":"x","old":"CLOSE_WAIT","new":"LAST_ACK"}` + "\n"
	tm, d, ok := streamLine([]byte(ev))
	if !ok || d != 0 || !tm.Equal(time.Date(2026, 11, 25, 17, 3, 37, 119102090, time.UTC)) {
		t.Errorf("event: %v %d %v", tm, d, ok)
	}
	if _, d, ok := streamLine([]byte(`{"dropped":42}` + "\n")); !ok || d != 42 {
		t.Errorf("dropped: %d %v", d, ok)
	}
	for _, bad := range []string{`{"dropped":0}`, `{"dropped":x}`, `{"pid":1}`, `{"time":"yesterday"}`, `{"time":"2026`, ""} {
		if _, _, ok := streamLine([]byte(bad)); ok {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestQuantiles(t *testing.T) {
	ns := make([]uint64, 1000)
	for i := range ns {
		ns[len(ns)-1-i] = uint64(i+1) * 1000 // 1..1000 µs, reversed
	}
	l := quantiles(ns)
	if l.Samples != 1000 || l.P50us != 500 || l.P90us != 900 || l.P99us != 990 || l.P999us != 999 || l.Maxus != 1000 {
		t.Errorf("%+v", l)
	}
	if l := quantiles(nil); l != (Latency{}) {
		t.Errorf("empty: %+v", l)
	}
}

// goalsReport is a report with every part measured, for the goals.
func goalsReport() *Report {
	u := func(v uint64) *uint64 { return &v }
	r := newReport(options{runs: 1})
	for _, o := range closeOrders {
		r.RawRuns = append(r.RawRuns,
			RunResult{Close: o, Tracer: tracerNone, Rate: 1000, Conns: 1000, ElapsedSec: 1},
			RunResult{Close: o, Tracer: tracerTcpscope, Rate: 970, Conns: 970, ElapsedSec: 1, Events: u(9700), Lost: u(0),
				RingDrops: u(0), NestedMissed: u(0), NestedRecovered: u(0)},
			RunResult{Close: o, Tracer: tracerServe, Round: 1, Rate: 800, Conns: 800, ElapsedSec: 1, Events: u(8000), Lost: u(0), TracerRSS: 64 << 20},
			RunResult{Close: o, Tracer: tracerBpftrace, Rate: 300, Conns: 300, ElapsedSec: 1},
		)
	}
	r.summarize()
	r.Ramp = &RampReport{Workers: []int{1, 2}, Duration: "2s", Rings: []RampResult{
		{Pipeline: "trace", Ring: defaultRingLabel("trace"), Steps: []RampStep{{Workers: 1, EventsPerSec: 100000}, {Workers: 2, EventsPerSec: 250000, Lost: 7}}},
		{Pipeline: "trace", Ring: "2G", Steps: []RampStep{{Workers: 1, EventsPerSec: 100000}, {Workers: 2, EventsPerSec: 260000}}},
		{Pipeline: "serve", Ring: defaultRingLabel("serve"), Steps: []RampStep{{Workers: 1, EventsPerSec: 90000}, {Workers: 2, EventsPerSec: 240000}}},
	}}
	for i := range r.Ramp.Rings {
		r.Ramp.Rings[i].summarize()
	}
	r.Scale = &ScaleReport{Results: []ScaleResult{
		{Sockets: 1000, Cmds: []ScaleTime{{Cmd: "ss -tan", Tool: "ss", BestSec: 0.03, Ratio: 0.2}},
			Serve: &ServeMem{TableSockets: 1000, RSSBytes: 40 << 20, PeakRSSBytes: 41 << 20}},
		{Sockets: 50000, Cmds: []ScaleTime{{Cmd: "ss -tan", Tool: "ss", BestSec: 0.5, Ratio: 1.5}, {Cmd: "ss -tanp", Tool: "ss", BestSec: 2, Ratio: 4}},
			Serve: &ServeMem{TableSockets: 51000, RSSBytes: 40<<20 + 50000*300, PeakRSSBytes: 60 << 20}},
	}}
	r.GoBench = []GoBench{{Name: "BenchmarkMemoryPerSocket", Metrics: map[string]float64{"B/socket": 120}}}
	r.Latency = []ViewLatency{
		{Path: "table", Close: "server", Latency: Latency{Samples: 10, P50us: 800, P99us: 7000}},
		{Path: "table", Close: "client", Latency: Latency{Samples: 10, P50us: 900, P99us: 12000}},
		{Path: "table", Close: "server", Workers: 1, Latency: Latency{Samples: 10, P50us: 500, P99us: 2000}},
		{Path: "api", Close: "server", Error: "boom"},
		{Path: "api", Close: "server", Paced: 10000, Latency: Latency{Samples: 10, P50us: 700, P99us: 3000}},
		{Path: "table", Close: "server", Workers: 1, TimeWait: 131072, Wave: true, Latency: Latency{Samples: 10, P50us: 600, P99us: 30000}},
	}
	return r
}

func TestGoals(t *testing.T) {
	r := goalsReport()
	gs := r.evalGoals()
	want := map[string]string{
		"`tcpscope trace > /dev/null`: overhead under 5% of the churn rate":          met,
		"`tcpscope trace > /dev/null`: overhead below bpftrace's":                    met,
		"`tcpscope serve` (not scraped): overhead under 5% of the churn rate":        notMet,
		"`tcpscope serve` (not scraped): overhead below bpftrace's":                  met,
		"`tcpscope serve`, /metrics scraped 1/s: overhead below bpftrace's":          notMeasured,
		"no lost events at the maximum churn rate this machine makes (default ring)": notMet,
		"trace: events/s before the first loss, largest ring (2G)":                   "",
		"one-shot `tcpscope netstat` faster than ss at 1,000 sockets":                notMet,
		"one-shot `tcpscope netstat` faster than ss at 50,000 sockets":               met,
		"≤ 200 B of memory per tracked socket (table)":                               met,
		"RSS of `tcpscope serve` at 50,000 sockets":                                  "",
		"`tcpscope serve` RSS per additional socket":                                 "",
		"p99 change-to-table latency under 10 ms":                                    notMet,
		"p99 change-to-API (`/api/v1/events`) latency under 10 ms":                   met,
	}
	got := map[string]Goal{}
	for _, g := range gs {
		got[g.Goal] = g
	}
	for goal, v := range want {
		g, ok := got[goal]
		if !ok {
			t.Errorf("no goal %q", goal)
			continue
		}
		if g.Verdict != v {
			t.Errorf("%q: verdict %q, want %q (measured %q)", goal, g.Verdict, v, g.Measured)
		}
	}
	for goal, sub := range map[string]string{
		"`tcpscope trace > /dev/null`: overhead under 5% of the churn rate":          "server-first 3.0%, client-first 3.0%",
		"no lost events at the maximum churn rate this machine makes (default ring)": "trace ramp: first loss at 2 workers (250,000 events/s, 7 lost), 100,000 events/s sustained before; serve ramp: 0 lost up to 2 workers (peak 240,000 events/s); tcpscope: 0 lost in 2 rate runs",
		"trace: events/s before the first loss, largest ring (2G)":                   "0 lost up to 2 workers (peak 260,000 events/s)",
		"`tcpscope serve` RSS per additional socket":                                 "300 B/socket",
		"p99 change-to-table latency under 10 ms":                                    "client-first, saturating churn: p50 900 µs, p99 12 ms; server-first, 1 churn worker(s): p50 500 µs, p99 2.00 ms",
	} {
		if !strings.Contains(got[goal].Measured, sub) {
			t.Errorf("%q: measured %q, want it to contain %q", goal, got[goal].Measured, sub)
		}
	}

	r.Goals = gs
	md := renderMarkdown(r)
	for _, sub := range []string{
		"| ≤ 200 B of memory per tracked socket (table) | 120 B/socket (1M sockets, Go heap) | **met** |",
		"| `tcpscope serve`, /metrics scraped 1/s: overhead under 5% of the churn rate |  | not measured |",
		"## Events per second before the first loss",
		"| trace | 8M (default) | 2 | – | 250,000 | 0 | 7 | 0% |",
		"- trace, ring 8M (default): 100,000 events/s sustained; first loss at 2 workers (250,000 events/s).",
		"- trace, ring 2G: no loss at any step; peak 260,000 events/s",
		"- serve, ring 32M (default): no loss at any step; peak 240,000 events/s",
		"| api | server | default | 0 | error: boom |",
		"| table | server | 1 | 0 | 0 | – | 0 | 0 | 0 | – | 500 µs |",
		"| api | server | default, paced 10,000/s | 0 | 0 | – | 0 | 0 | 0 | 0 | 700 µs |",
		"| table, wave | server | 1 | 131072 | 0 | – | 0 | 0 | 0 | – | 600 µs |",
		"| server | serve | 1 | 800 | 8000 | 0 | 64 MiB |  |",
		"`tcpscope serve` with these sockets open: ready in 0.00 s with 51,000 sockets in its table",
		"| tracer/table | BenchmarkMemoryPerSocket |",
	} {
		if !strings.Contains(md, strings.ReplaceAll(sub, "| tracer/table |", "|  |")) {
			t.Errorf("markdown lacks %q", sub)
		}
	}
}

// The run over a TIME_WAIT expiry wave is shown beside the latency verdict,
// not counted in it.
func TestLatencyGoalLeavesOutTheWave(t *testing.T) {
	for _, tc := range []struct {
		name string
		runs []ViewLatency
		want string
	}{
		{"clean runs under 10 ms", []ViewLatency{
			{Path: "table", Close: "server", Latency: Latency{Samples: 10, P99us: 5000}},
			{Path: "table", Close: "server", Workers: 1, Wave: true, Latency: Latency{Samples: 10, P99us: 40000}},
		}, met},
		{"a clean run over 10 ms", []ViewLatency{
			{Path: "table", Close: "server", Latency: Latency{Samples: 10, P99us: 11000}},
			{Path: "table", Close: "server", Workers: 1, Wave: true, Latency: Latency{Samples: 10, P99us: 4000}},
		}, notMet},
		{"only the wave", []ViewLatency{
			{Path: "table", Close: "server", Workers: 1, Wave: true, Latency: Latency{Samples: 10, P99us: 4000}},
		}, notMeasured},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReport(options{runs: 1})
			r.Latency = tc.runs
			for _, g := range r.evalGoals() {
				if g.Goal != "p99 change-to-table latency under 10 ms" {
					continue
				}
				if g.Verdict != tc.want {
					t.Errorf("verdict %q, want %q (measured %q)", g.Verdict, tc.want, g.Measured)
				}
				if tc.want != notMeasured && !strings.Contains(g.Measured, "not in the verdict, while a full TIME_WAIT table expires") {
					t.Errorf("measured %q does not show the wave run", g.Measured)
				}
			}
		})
	}
}

// A report with nothing measured says so for every goal, not met.
func TestGoalsNothingMeasured(t *testing.T) {
	r := newReport(options{runs: 1})
	r.summarize()
	for _, g := range r.evalGoals() {
		if g.Verdict == met || g.Verdict == notMet {
			t.Errorf("%q: %q with nothing measured", g.Goal, g.Verdict)
		}
	}
}

// The wave is timed from the first latency run that completed: one that
// failed made no TIME_WAIT sockets.
func TestFirstChurnStart(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name string
		runs []ViewLatency
		want time.Time
		ok   bool
	}{
		{"none", nil, time.Time{}, false},
		{"first completed", []ViewLatency{{churnStart: t0}, {churnStart: t0.Add(time.Second)}}, t0, true},
		{"first failed", []ViewLatency{{Error: "churn: boom", churnStart: t0}, {churnStart: t0.Add(time.Second)}}, t0.Add(time.Second), true},
		{"first never churned", []ViewLatency{{Error: "load: boom"}, {churnStart: t0.Add(2 * time.Second)}}, t0.Add(2 * time.Second), true},
		{"all failed", []ViewLatency{{Error: "x"}, {Error: "y", churnStart: t0}}, time.Time{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := firstChurnStart(tc.runs)
			if ok != tc.ok || !got.Equal(tc.want) {
				t.Errorf("firstChurnStart = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}
