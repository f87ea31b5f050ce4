package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Report is everything one bench run measured; it is written as JSON and
// rendered as markdown.
type Report struct {
	Date        string            `json:"date"`
	Host        HostInfo          `json:"host"`
	Sysctls     map[string]string `json:"sysctls"`
	Tools       Tools             `json:"tools"`
	RunsPerCell int               `json:"runs_per_cell"`
	Duration    string            `json:"run_duration"`

	Summary      []CloseSummary `json:"summary"`
	BpftraceLoss *BpftraceLoss  `json:"bpftrace_loss,omitempty"`
	InProcess    []InProcResult `json:"in_process,omitempty"`
	RawRuns      []RunResult    `json:"raw_runs"`
	Ramp         *RampReport    `json:"ramp,omitempty"`
	Latency      []ViewLatency  `json:"latency,omitempty"`
	Scale        *ScaleReport   `json:"scale,omitempty"`
	GoBench      []GoBench      `json:"go_bench,omitempty"`
	Goals        []Goal         `json:"goals,omitempty"`
	ScaleOnly    bool           `json:"scale_only,omitempty"`
	Notes        []string       `json:"notes,omitempty"`
	TotalSec     float64        `json:"total_s"`
}

type HostInfo struct {
	Kernel    string  `json:"kernel"`
	CPUs      int     `json:"cpus"`
	MemGiB    float64 `json:"mem_gib"`
	GoVersion string  `json:"go"`
	LoadAvg   float64 `json:"loadavg1_at_start"`
}

type Tools struct {
	Tcpscope        string `json:"tcpscope,omitempty"`
	Tcpchurn        string `json:"tcpchurn"`
	Bpftrace        string `json:"bpftrace,omitempty"`
	BpftraceVersion string `json:"bpftrace_version,omitempty"`
	Bpftool         string `json:"bpftool,omitempty"`
}

// RunResult is one churn run under one tracer.
type RunResult struct {
	Close        string  `json:"close"`
	Tracer       string  `json:"tracer"`
	Round        int     `json:"round"`
	Conns        uint64  `json:"conns"`
	Errors       uint64  `json:"errors"`
	Rate         float64 `json:"rate"`
	ElapsedSec   float64 `json:"elapsed_s"`
	ChurnCPUSec  float64 `json:"churn_cpu_s"`
	TracerCPUSec float64 `json:"tracer_cpu_s,omitempty"`
	IdleFrac     float64 `json:"idle_frac"`        // of all CPUs during the churn
	IdleBefore   float64 `json:"idle_frac_before"` // in the 300 ms before the run
	LoadAvg      float64 `json:"loadavg1_before"`
	// serve: its peak RSS, and the /metrics scrapes made during the churn.
	TracerRSS    uint64  `json:"tracer_peak_rss_bytes,omitempty"`
	Scrapes      int     `json:"scrapes,omitempty"`
	ScrapeErrors int     `json:"scrape_errors,omitempty"`
	ScrapeMeanMs float64 `json:"scrape_mean_ms,omitempty"`

	// tcpscope's summary line (trace), or serve's /metrics (events are its
	// transitions_total).
	Events          *uint64 `json:"events,omitempty"`
	Lost            *uint64 `json:"lost,omitempty"`
	RingDrops       *uint64 `json:"ring_drops,omitempty"`
	NestedMissed    *uint64 `json:"nested_missed,omitempty"`
	NestedRecovered *uint64 `json:"nested_recovered,omitempty"`

	Error string `json:"error,omitempty"`
}

// CloseSummary is the medians for one close order.
type CloseSummary struct {
	Close   string          `json:"close"`
	Tracers []TracerSummary `json:"tracers"`
}

type TracerSummary struct {
	Tracer     string    `json:"tracer"`
	Runs       int       `json:"runs"`
	Rates      []float64 `json:"rates"`
	MedianRate float64   `json:"median_rate"`
	// Ratio is MedianRate over the no-tracer median; Overhead is 1-Ratio.
	Ratio    float64 `json:"ratio,omitempty"`
	Overhead float64 `json:"overhead,omitempty"`
	// TracerCPU is the tracer process's CPU time per second of churn, in
	// CPUs (median).
	TracerCPU float64 `json:"tracer_cpus,omitempty"`
	// EventsPerConn is the tracer's events per completed connection
	// (tcpscope; median).
	EventsPerConn float64  `json:"events_per_conn,omitempty"`
	Lost          []uint64 `json:"lost,omitempty"`
}

func newReport(o options) *Report {
	r := &Report{
		Date:        time.Now().UTC().Format(time.RFC3339),
		RunsPerCell: o.runs,
		Duration:    o.duration.String(),
		Sysctls:     map[string]string{},
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		r.Host.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	r.Host.CPUs = runtime.NumCPU()
	r.Host.GoVersion = runtime.Version()
	r.Host.LoadAvg = loadAvg()
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		r.Host.MemGiB = float64(si.Totalram) * float64(si.Unit) / (1 << 30)
	}
	for _, k := range []string{
		"net.ipv4.tcp_tw_reuse", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_max_tw_buckets",
		"net.core.somaxconn", "kernel.bpf_stats_enabled",
	} {
		if b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(k, ".", "/")); err == nil {
			r.Sysctls[k] = strings.Join(strings.Fields(string(b)), " ")
		}
	}
	return r
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *Report) summarize() {
	var orders, tracers []string
	for _, run := range r.RawRuns {
		if !slices.Contains(orders, run.Close) {
			orders = append(orders, run.Close)
		}
		if !slices.Contains(tracers, run.Tracer) {
			tracers = append(tracers, run.Tracer)
		}
	}
	r.Summary = nil
	for _, order := range orders {
		cs := CloseSummary{Close: order}
		var base float64
		for _, tr := range tracers {
			ts := TracerSummary{Tracer: tr}
			var cpu, epc []float64
			for _, run := range r.RawRuns {
				if run.Close != order || run.Tracer != tr || run.Error != "" || run.Conns == 0 {
					continue
				}
				ts.Runs++
				ts.Rates = append(ts.Rates, run.Rate)
				if run.ElapsedSec > 0 && tr != tracerNone {
					cpu = append(cpu, run.TracerCPUSec/run.ElapsedSec)
				}
				if run.Events != nil {
					epc = append(epc, float64(*run.Events)/float64(run.Conns))
				}
				if run.Lost != nil {
					ts.Lost = append(ts.Lost, *run.Lost)
				}
			}
			ts.MedianRate = median(ts.Rates)
			ts.TracerCPU = median(cpu)
			ts.EventsPerConn = median(epc)
			if tr == tracerNone {
				base = ts.MedianRate
			} else if base > 0 && ts.MedianRate > 0 {
				ts.Ratio = ts.MedianRate / base
				ts.Overhead = 1 - ts.Ratio
			}
			cs.Tracers = append(cs.Tracers, ts)
		}
		r.Summary = append(r.Summary, cs)
	}
}

// Baseline is the no-tracer server-first median rate, 0 if none worked.
func (r *Report) Baseline() float64 {
	for _, cs := range r.Summary {
		for _, ts := range cs.Tracers {
			if ts.Tracer == tracerNone && ts.MedianRate > 0 {
				return ts.MedianRate
			}
		}
	}
	return 0
}

func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// cpuStat is the aggregate line of /proc/stat.
type cpuStat struct{ idle, total uint64 }

func readCPUStat() cpuStat {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuStat{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return cpuStat{}
	}
	var s cpuStat
	for i, x := range f[1:] {
		v, _ := strconv.ParseUint(x, 10, 64)
		if i >= 8 { // guest time is already in user time
			break
		}
		s.total += v
		if i == 3 || i == 4 { // idle, iowait
			s.idle += v
		}
	}
	return s
}

// sampleIdle is the idle fraction of all CPUs over d.
func sampleIdle(ctx context.Context, d time.Duration) float64 {
	a := readCPUStat()
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	return readCPUStat().idleSince(a)
}

func (s cpuStat) idleSince(prev cpuStat) float64 {
	if s.total <= prev.total {
		return 0
	}
	return float64(s.idle-prev.idle) / float64(s.total-prev.total)
}

func fmtRate(r float64) string {
	if r == 0 {
		return "–"
	}
	return fmt.Sprintf("%s/s", groupDigits(int64(r+0.5)))
}

func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	var out []byte
	for i, c := range []byte(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, c)
	}
	return string(out)
}

func tracerLabel(t string) string {
	switch t {
	case tracerNone:
		return "no tracer"
	case tracerTcpscope:
		return "`tcpscope trace > /dev/null`"
	case tracerBpftrace:
		return "`bpftrace tcpstates.bt > /dev/null`"
	case tracerServe:
		return "`tcpscope serve` (not scraped)"
	case tracerServeScrape:
		return "`tcpscope serve`, /metrics scraped 1/s"
	case tracerFloor:
		return "floor: ring buffer only (`bpf/floor.bpf.c`)"
	}
	return t
}

func closeLabel(c string) string {
	switch c {
	case "server":
		return "server closes first"
	case "client":
		return "client closes first"
	}
	return c
}

func renderMarkdown(r *Report) string {
	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }

	p("# tcpscope benchmark\n\n")
	p("%s · Linux %s · %d CPUs · %.0f GiB · %s · load average %.2f at start · %.0f s in all\n\n",
		r.Date, r.Host.Kernel, r.Host.CPUs, r.Host.MemGiB, r.Host.GoVersion, r.Host.LoadAvg, r.TotalSec)
	var keys []string
	for k := range r.Sysctls {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			p(" · ")
		}
		p("%s=%s", k, r.Sysctls[k])
	}
	p("\n\nChurn: `%s`, %s per run, median of %d runs per cell; the cells are interleaved round by round. "+
		"Each connection is opened and closed on loopback in the given order (10 state transitions each), both ends driven by the same thread with raw blocking system calls; the churn saturates every CPU, so a tracer's cost shows as a lower rate.\n",
		r.Tools.Tcpchurn, r.Duration, r.RunsPerCell)
	if r.Tools.BpftraceVersion != "" {
		p("Peer: %s running tcpstates.bt (the classic tcpstates: one printf per transition, a per-socket timestamp map).\n", r.Tools.BpftraceVersion)
	}

	p("%s", renderGoals(r.Goals))
	p("\n## Connection churn rate\n\n")
	p("| close order | tracer | median rate | vs no tracer | overhead | tracer CPU | events/conn | runs |\n")
	p("|---|---|--:|--:|--:|--:|--:|--:|\n")
	for _, cs := range r.Summary {
		for _, ts := range cs.Tracers {
			ratio, over, cpu, epc := "", "", "", ""
			if ts.Tracer != tracerNone {
				if ts.Ratio > 0 {
					ratio = fmt.Sprintf("%.2f", ts.Ratio)
					over = fmt.Sprintf("%.0f%%", 100*ts.Overhead)
				}
				cpu = fmt.Sprintf("%.2f", ts.TracerCPU)
			}
			if ts.EventsPerConn > 0 {
				epc = fmt.Sprintf("%.1f", ts.EventsPerConn)
			}
			rates := make([]string, len(ts.Rates))
			for i, x := range ts.Rates {
				rates[i] = fmt.Sprintf("%.0f", x)
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %d (%s) |\n", closeLabel(cs.Close), tracerLabel(ts.Tracer),
				fmtRate(ts.MedianRate), ratio, over, cpu, epc, ts.Runs, strings.Join(rates, ", "))
		}
	}
	p("\n*vs no tracer* is the median rate with the tracer over the median without; *tracer CPU* is the tracer process's CPU time per second of churn, in CPUs.\n")

	p("\n## Events lost\n\n")
	anyRun := false
	for _, run := range r.RawRuns {
		if run.Tracer == tracerTcpscope && run.Lost != nil {
			if !anyRun {
				p("tcpscope, from its exit summary (`events lost ring_drops nested_missed nested_recovered`):\n\n")
				p("| close order | round | conns | events | lost | ring drops | nested missed | nested recovered |\n|---|--:|--:|--:|--:|--:|--:|--:|\n")
				anyRun = true
			}
			p("| %s | %d | %d | %d | %d | %d | %d | %d |\n", run.Close, run.Round, run.Conns, *run.Events, *run.Lost,
				*run.RingDrops, *run.NestedMissed, *run.NestedRecovered)
		}
	}
	if !anyRun {
		p("tcpscope: not measured.\n")
	}
	anyServe := false
	for _, run := range r.RawRuns {
		if (run.Tracer == tracerServe || run.Tracer == tracerServeScrape) && run.Lost != nil {
			if !anyServe {
				p("\n`tcpscope serve`, from its /metrics at the end of each run (events: `tcpscope_transitions_total`; lost: `tcpscope_lost_events_total`), its peak RSS, and the scrapes made during the run:\n\n")
				p("| close order | variant | round | conns | events | lost | peak RSS | scrapes (mean time) |\n|---|---|--:|--:|--:|--:|--:|--:|\n")
				anyServe = true
			}
			scr := ""
			if run.Tracer == tracerServeScrape {
				scr = fmt.Sprintf("%d (%.1f ms)", run.Scrapes, run.ScrapeMeanMs)
				if run.ScrapeErrors > 0 {
					scr += fmt.Sprintf(", %d failed", run.ScrapeErrors)
				}
			}
			p("| %s | %s | %d | %d | %d | %d | %.0f MiB | %s |\n", run.Close, run.Tracer, run.Round, run.Conns, *run.Events, *run.Lost, mib(run.TracerRSS), scr)
		}
	}
	var floorRuns []string
	for _, run := range r.RawRuns {
		if run.Tracer == tracerFloor && run.Lost != nil && run.Events != nil {
			floorRuns = append(floorRuns, fmt.Sprintf("%s-first round %d: %d records for %d connections, %d lost (refused by the full ring or skipped nested runs)",
				run.Close, run.Round, *run.Events, run.Conns, *run.Lost))
		}
	}
	if len(floorRuns) > 0 {
		p("\nThe floor, from its exit line: %s.\n", strings.Join(floorRuns, "; "))
	}
	if bl := r.BpftraceLoss; bl != nil {
		p("\nbpftrace, in one more server-first run with its output to a file in memory (its \"Lost N events\" lines are in the output):\n\n")
		if bl.Error != "" {
			p("- error: %s\n", bl.Error)
		}
		missing := int64(bl.ProgramHits) - int64(bl.EventLines)
		p("- %d connections (%s; CPUs %.0f%% idle before); its program ran %d times; it printed %d event lines (%.1f%% of the runs) and reported %d lost (%.1f%%); %d more were neither printed nor reported lost (still buffered at exit).\n",
			bl.Conns, fmtRate(bl.Rate), 100*bl.IdleBefore, bl.ProgramHits, bl.EventLines, pct(bl.EventLines, bl.ProgramHits),
			bl.ReportedLost, pct(bl.ReportedLost, bl.ProgramHits), missing-int64(bl.ReportedLost))
	} else {
		p("\nbpftrace: not measured.\n")
	}

	p("\n## BPF program cost\n\n")
	if len(r.InProcess) == 0 && (r.BpftraceLoss == nil || r.BpftraceLoss.NsPerHit == 0) {
		p("Not measured.\n")
	} else {
		p("Run time per hit with BPF statistics on (`BPF_ENABLE_STATS`), over one churn run each:\n\n")
		p("| close order | program | runs | ns/hit | recursion misses |\n|---|---|--:|--:|--:|\n")
		for _, ip := range r.InProcess {
			for _, pc := range ip.Programs {
				p("| %s | tcpscope `%s` | %d | %.0f | %d |\n", ip.Close, pc.Name, pc.Runs, pc.NsPerHit, pc.Misses)
			}
		}
		if bl := r.BpftraceLoss; bl != nil && bl.NsPerHit > 0 {
			p("| %s | bpftrace tcpstates.bt | %d | %.0f | |\n", bl.Close, bl.ProgramHits, bl.NsPerHit)
		}
		p("\nEvery transition runs both `on_state_change` and `on_state_change_nested` (the recovery program returns at once unless the main one was skipped).\n")
	}

	p("\n## Event latency, kernel to user space\n\n")
	if len(r.InProcess) == 0 {
		p("Not measured.\n")
	} else {
		p("The loader in this process with a sink taking CLOCK_MONOTONIC minus each event's kernel timestamp, during a churn run in another process (while events flow the reader takes what the ring holds every millisecond, its default batch):\n\n")
		p("| close order | conns | rate | events | transitions/conn | lost | p50 | p90 | p99 | p99.9 | max | idle before |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, ip := range r.InProcess {
			p("| %s | %d | %s | %d | %.2f | %d | %s | %s | %s | %s | %s | %.0f%% |\n", ip.Close, ip.Conns, fmtRate(ip.Rate), ip.Events, ip.PerConn, ip.Lost,
				fmtUs(ip.LatP50us), fmtUs(ip.LatP90us), fmtUs(ip.LatP99us), fmtUs(ip.LatP999us), fmtUs(ip.LatMaxus), 100*ip.IdleBefore)
		}
	}

	p("%s", renderRamp(r.Ramp))
	p("%s", renderLatency(r.Latency))
	p("%s", renderScale(r.Scale))
	p("%s", renderGoBench(r.GoBench))
	p("\n## All runs\n\n")
	p("| round | close | tracer | rate | conns | errors | churn CPU s | tracer CPU s | idle before | idle during | load avg | error |\n|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, run := range r.RawRuns {
		p("| %d | %s | %s | %.0f | %d | %d | %.2f | %.2f | %.0f%% | %.0f%% | %.2f | %s |\n", run.Round, run.Close, run.Tracer, run.Rate, run.Conns,
			run.Errors, run.ChurnCPUSec, run.TracerCPUSec, 100*run.IdleBefore, 100*run.IdleFrac, run.LoadAvg, strings.ReplaceAll(run.Error, "|", "/"))
	}
	if len(r.Notes) > 0 {
		p("\n## Notes\n\n")
		for _, n := range r.Notes {
			p("- %s\n", n)
		}
	}
	return w.String()
}

func pct(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

func fmtUs(us float64) string {
	switch {
	case us >= 10000:
		return fmt.Sprintf("%.0f ms", us/1000)
	case us >= 1000:
		return fmt.Sprintf("%.2f ms", us/1000)
	}
	return fmt.Sprintf("%.0f µs", us)
}

func renderRamp(rr *RampReport) string {
	if rr == nil {
		return ""
	}
	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	p("\n## Events per second before the first loss\n\n")
	p("`tcpscope trace --ring-size R > /dev/null` and `tcpscope serve --ring-size R` (table, metrics and API; nothing scraping it) under server-first churn with more and more tcpchurn workers (%v), %s per step, a fresh tracer each step; each ramp stops at the first step that lost an event. "+
		"The default ring is 8M for trace and 32M for serve; %s is the largest `--ring-size` accepts. Events: trace's count, serve's `tcpscope_transitions_total`.\n\n", rr.Workers, rr.Duration, maxRingFlag)
	p("| pipeline | ring | workers | conns/s | events/s | events | lost | idle before |\n|---|---|--:|--:|--:|--:|--:|--:|\n")
	for _, res := range rr.Rings {
		for _, st := range res.Steps {
			if st.Error != "" {
				p("| %s | %s | %d | error: %s | | | | %.0f%% |\n", res.Pipeline, res.Ring, st.Workers, strings.ReplaceAll(st.Error, "|", "/"), 100*st.IdleBefore)
				continue
			}
			p("| %s | %s | %d | %s | %s | %d | %d | %.0f%% |\n", res.Pipeline, res.Ring, st.Workers, fmtRate(st.Rate), groupDigits(int64(st.EventsPerSec)), st.Events, st.Lost, 100*st.IdleBefore)
		}
	}
	p("\n")
	for _, res := range rr.Rings {
		if res.FirstLoss >= 0 {
			p("- %s, ring %s: %s events/s sustained; first loss at %d workers (%s events/s).\n", res.Pipeline, res.Ring, groupDigits(int64(res.SustainedEPS)),
				res.Steps[res.FirstLoss].Workers, groupDigits(int64(res.Steps[res.FirstLoss].EventsPerSec)))
		} else if len(res.Steps) > 0 {
			p("- %s, ring %s: no loss at any step; peak %s events/s (the churn, not the tracer, set the limit).\n", res.Pipeline, res.Ring, groupDigits(int64(res.SustainedEPS)))
		}
	}
	return w.String()
}

func renderLatency(ls []ViewLatency) string {
	if len(ls) == 0 {
		return ""
	}
	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	p("\n## Change-to-table and change-to-API latency\n\n")
	p("From the kernel timestamp of a state change to: *table*, the moment the socket table (loader, live and table in this process, as `tcpscope serve` runs them) has applied it; *api*, the moment a client of `tcpscope serve`'s `/api/v1/events` stream has read its line (the event's `time`, the agent's wall-clock rendering of the kernel timestamp, against this process's clock). Both under a churn run in another process: with tcpchurn's default workers, which saturate the CPUs; with one worker, which leaves the tracer about a CPU; and with the default workers paced to a steady %s connections a second (*paced*), a busy server's churn that leaves the CPUs mostly free. The runs start once the TIME_WAIT sockets of the phases before have expired (*TIME_WAIT at start*); the last, marked *wave*, is timed to span the expiry of the TIME_WAIT sockets the first run made, a full table of them (`net.ipv4.tcp_max_tw_buckets`): the kernel expires them in one timer-wheel bucket, and its timer softirq then holds each CPU for milliseconds at a time, stalling every process, the churn included. *major faults*: page faults that had to read from disk during the run, in the process that applies the events (this one for *table*, serve for *api*) and, in parentheses, on the whole host; each is a stall of its own.\n\n", groupDigits(steadyRate))
	p("| path | close order | workers | TIME_WAIT at start | conns | rate | events | lost | resyncs | stream dropped | p50 | p90 | p99 | p99.9 | max | major faults | idle before |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, l := range ls {
		path := l.Path
		if l.Wave {
			path += ", wave"
		}
		workers := "default"
		if l.Workers > 0 {
			workers = fmt.Sprint(l.Workers)
		}
		if l.Paced > 0 {
			workers += ", paced " + groupDigits(int64(l.Paced)) + "/s"
		}
		if l.Error != "" {
			p("| %s | %s | %s | %d | error: %s | | | | | | | | | | | | %.0f%% |\n", path, l.Close, workers, l.TimeWait, strings.ReplaceAll(l.Error, "|", "/"), 100*l.IdleBefore)
			continue
		}
		dropped := "–"
		if l.Path == "api" {
			dropped = fmt.Sprint(l.Dropped)
		}
		p("| %s | %s | %s | %d | %d | %s | %d | %d | %d | %s | %s | %s | %s | %s | %s | %d (%d) | %.0f%% |\n", path, l.Close, workers, l.TimeWait, l.Conns, fmtRate(l.Rate), l.Events, l.Lost, l.Resyncs, dropped,
			fmtUs(l.P50us), fmtUs(l.P90us), fmtUs(l.P99us), fmtUs(l.P999us), fmtUs(l.Maxus), l.MajorFaults, l.HostMajorFaults, 100*l.IdleBefore)
	}
	return w.String()
}

func renderGoBench(bs []GoBench) string {
	if len(bs) == 0 {
		return ""
	}
	var w strings.Builder
	w.WriteString("\n## Go benchmarks\n\nFrom `go test -bench` in the same `make bench`:\n\n| package | benchmark | results |\n|---|---|---|\n")
	for _, b := range bs {
		units := make([]string, 0, len(b.Metrics))
		for u := range b.Metrics {
			units = append(units, u)
		}
		slices.Sort(units)
		var parts []string
		for _, u := range units {
			parts = append(parts, fmt.Sprintf("%s %s", strconv.FormatFloat(b.Metrics[u], 'g', 4, 64), u))
		}
		fmt.Fprintf(&w, "| %s | %s | %s |\n", strings.TrimPrefix(b.Pkg, "github.com/tcpscope/tcpscope/"), b.Name, strings.Join(parts, ", "))
	}
	return w.String()
}
