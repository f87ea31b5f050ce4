// Command tcpscope-bench measures what tracing every TCP state change costs,
// in one bounded run (about five minutes by default), and writes a markdown
// report to stdout and to -out, with the raw numbers as JSON beside it and
// each goal of the benchmark report shown as met or not met:
//
//   - one-shot `tcpscope netstat -ant`/`-antp`/`--summary` against `ss -tan`,
//     `netstat -ant` and their -p forms with 1k, 10k and 50k sockets held
//     open in a network namespace of the phase's own (-scale), and the
//     resident memory of `tcpscope serve` with those sockets in its table;
//   - the loopback connection churn rate (tcpchurn, a separate process) with
//     no tracer, with `tcpscope trace > /dev/null`, with `tcpscope serve`
//     (not scraped, and scraped once a second), and with a bpftrace
//     equivalent of the classic tcpstates tool (tcpstates.bt) > /dev/null,
//     for server-first and client-first close, the median of -runs runs of
//     -duration each, interleaved so that outside load spreads evenly;
//   - the events each tracer lost;
//   - the events per second `tcpscope trace` takes before its first lost
//     event, with the default ring buffer and the largest --ring-size, by a
//     ramp of tcpchurn workers (-ramp) that stops at the first loss;
//   - the BPF programs' own cost per hit (kernel.bpf_stats_enabled);
//   - the kernel-to-user-space latency of events, measured in this process
//     with the loader and a sink that subtracts each event's timestamp from
//     CLOCK_MONOTONIC; the latency from a state change to the socket table
//     (loader, live and table in this process) and to a client of serve's
//     /api/v1/events stream;
//   - with -gobench, the Go benchmarks run before it (bytes per socket of
//     the table, decoding, formatting).
//
// It needs root for everything but the bare churn rate. Parts whose tool is
// missing are reported as skipped.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tcpscope/tcpscope/tracer/churn"
)

type options struct {
	tcpscope string
	tcpchurn string
	bpftrace string
	bpftool  string
	out      string
	jsonOut  string
	runs     int
	duration time.Duration
	workers  int
	skipLat  bool
	quiet    time.Duration

	scaleSizes    []int // -scale: socket counts for the scale phase
	scalePTimeout time.Duration
	scaleOnly     bool
	scaleHostNS   bool // scale phase in the host's namespace instead of one of its own

	serveScrape  bool  // also the serve run with one /metrics scrape a second
	rampWorkers  []int // -ramp: tcpchurn workers per step of the loss ramp
	rampDuration time.Duration
	goBench      string // go test -bench output to include
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == churnChildArg {
		os.Exit(churnChild(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == scaleHolderArg {
		os.Exit(scaleHolder(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == floorTraceArg {
		os.Exit(floorTrace(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == floorWalkArg {
		os.Exit(floorWalk(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var o options
	fs := flag.NewFlagSet("tcpscope-bench", flag.ContinueOnError)
	fs.StringVar(&o.tcpscope, "tcpscope", "bin/tcpscope", "tcpscope binary (\"\" to skip its runs)")
	fs.StringVar(&o.tcpchurn, "tcpchurn", "bin/tcpchurn", "tcpchurn binary (when missing, this binary churns in a child of its own)")
	fs.StringVar(&o.bpftrace, "bpftrace", "bpftrace", "bpftrace binary (\"\" to skip its runs)")
	fs.StringVar(&o.bpftool, "bpftool", "bpftool", "bpftool, to see when bpftrace has attached")
	fs.StringVar(&o.out, "out", "out/bench.md", "markdown report file (\"\" for stdout only)")
	fs.StringVar(&o.jsonOut, "json", "", "raw results as JSON (default: -out with .json)")
	fs.IntVar(&o.runs, "runs", 3, "churn runs per close order and tracer (median reported)")
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "length of each churn run")
	fs.IntVar(&o.workers, "workers", 0, "tcpchurn -workers (default: its own)")
	fs.BoolVar(&o.skipLat, "skip-inprocess", false, "skip the in-process latency and BPF cost run")
	fs.DurationVar(&o.quiet, "wait-quiet", 0, "before each run, wait up to this long for the CPUs to be 90% idle (for shared machines)")
	scale := fs.String("scale", "1000,10000,50000", "socket counts for the one-shot view scaling phase, comma-separated (\"\" to skip; e.g. 100000,1000000 for larger ones: 1000000 needs ~4 GB and minutes)")
	fs.BoolVar(&o.serveScrape, "serve-scrape", true, "also churn under `tcpscope serve` scraped once a second")
	ramp := fs.String("ramp", "1,2,4", "tcpchurn workers per step of the loss ramp, rising (\"\" to skip)")
	fs.DurationVar(&o.rampDuration, "ramp-duration", 2*time.Second, "length of each ramp step")
	fs.StringVar(&o.goBench, "gobench", "", "`go test -bench` output to read B/socket and the other Go benchmarks from")
	fs.DurationVar(&o.scalePTimeout, "scale-p-timeout", 60*time.Second, "bound on each view run in the scaling phase (the -p forms of ss and netstat are slow)")
	fs.BoolVar(&o.scaleOnly, "scale-only", false, "run the scaling phase alone")
	fs.BoolVar(&o.scaleHostNS, "scale-host-netns", false, "hold the scale phase's sockets in the host's network namespace (views then count every socket of the host) instead of a fresh one")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var err error
	if o.scaleSizes, err = parseScaleSizes(*scale); err != nil || o.scalePTimeout < time.Second {
		fmt.Fprintln(os.Stderr, "tcpscope-bench: bad -scale or -scale-p-timeout (want >= 1s):", err)
		return 2
	}
	if o.rampWorkers, err = parseWorkers(*ramp); err != nil || o.rampDuration < 500*time.Millisecond || o.rampDuration > 30*time.Second {
		fmt.Fprintln(os.Stderr, "tcpscope-bench: bad -ramp or -ramp-duration (want 0.5s to 30s):", err)
		return 2
	}
	if o.runs < 1 || o.runs > 9 || o.duration < 500*time.Millisecond || o.duration > 30*time.Second || o.quiet < 0 || o.quiet > 10*time.Minute {
		fmt.Fprintln(os.Stderr, "tcpscope-bench: want 1 <= -runs <= 9, 0.5s <= -duration <= 30s and -wait-quiet <= 10m")
		return 2
	}
	if o.jsonOut == "" && o.out != "" {
		o.jsonOut = strings.TrimSuffix(o.out, filepath.Ext(o.out)) + ".json"
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A hard bound on the whole run, whatever happens.
	ctx, cancel := context.WithTimeout(ctx, budget(o))
	defer cancel()

	b := &bench{opts: o, log: os.Stderr}
	var rep *Report
	if o.scaleOnly {
		rep = b.runScaleOnly(ctx)
	} else {
		rep = b.run(ctx)
	}

	md := renderMarkdown(rep)
	if o.scaleOnly {
		md = renderScaleOnly(rep)
	}
	fmt.Print(md)
	status := 0
	if o.out != "" {
		if err := writeFile(o.out, []byte(md)); err != nil {
			fmt.Fprintf(os.Stderr, "tcpscope-bench: %v\n", err)
			status = 1
		}
	}
	if o.jsonOut != "" {
		raw, _ := json.MarshalIndent(rep, "", "  ")
		if err := writeFile(o.jsonOut, append(raw, '\n')); err != nil {
			fmt.Fprintf(os.Stderr, "tcpscope-bench: %v\n", err)
			status = 1
		}
	}
	if o.out != "" {
		fmt.Fprintf(os.Stderr, "tcpscope-bench: report in %s, raw results in %s\n", o.out, o.jsonOut)
	}
	if rep.Baseline() == 0 && !o.scaleOnly {
		status = 1 // not even the bare churn worked
	}
	return status
}

// budget is the most the whole run may take: every churn run with its
// tracer's start and stop, plus the fixed parts, with room to spare.
func budget(o options) time.Duration {
	perRun := o.duration + 12*time.Second + o.quiet
	rampSteps := time.Duration(4 * len(o.rampWorkers))
	// The latency phase waits up to a TIME_WAIT lifetime and a bit twice:
	// for the sockets of the phases before to expire, and for its wave.
	latencyWaits := 2*timeWaitLen + 20*time.Second
	return time.Duration(2*5*o.runs+14)*perRun + rampSteps*(o.rampDuration+30*time.Second) + latencyWaits + time.Minute + scaleBudget(o)
}

func writeFile(path string, data []byte) error {
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(path, data, 0o644)
}

type bench struct {
	opts   options
	log    io.Writer
	rep    *Report
	script string // tcpstates.bt written out for bpftrace
	// samples is the latency runs' buffer, reused run after run: a fresh
	// 64 MiB each time made the garbage collector run during the runs,
	// and its worker held a P while the CPUs were saturated, which stalled
	// the ring reader (it needs a P to run Go code) for tens of ms.
	samples []uint64
}

func (b *bench) logf(format string, a ...any) {
	fmt.Fprintf(b.log, "tcpscope-bench: "+format+"\n", a...)
}

func (b *bench) note(format string, a ...any) {
	s := fmt.Sprintf(format, a...)
	b.rep.Notes = append(b.rep.Notes, s)
	b.logf("%s", s)
}

var closeOrders = []string{"server", "client"}

const (
	tracerNone     = "none"
	tracerTcpscope = "tcpscope"
	tracerBpftrace = "bpftrace"
	// tcpscope serve on a loopback port, with nothing scraping it, and with
	// one /metrics scrape a second.
	tracerServe       = "serve"
	tracerServeScrape = "serve+scrape"
	// The floor (floor.go): the least any tracer that hands every
	// transition to user space can do.
	tracerFloor = "floor"
)

func (b *bench) run(ctx context.Context) *Report {
	start := time.Now()
	b.rep = newReport(b.opts)
	rep := b.rep
	if idle := sampleIdle(ctx, time.Second); idle < 0.9 {
		b.note("the machine was busy before the bench started: %.0f%% of its CPUs in use by other processes", 100*(1-idle))
	}

	// The tools.
	root := os.Geteuid() == 0
	if !root {
		b.note("not running as root: tracers and BPF measurements skipped; only the bare churn rate is measured")
	}
	churnCmd := b.churnCommand()
	tracers := []string{tracerNone}
	if root {
		if p, ok := b.findTcpscope(); ok {
			rep.Tools.Tcpscope = p
			tracers = append(tracers, tracerTcpscope, tracerServe)
			if b.opts.serveScrape {
				tracers = append(tracers, tracerServeScrape)
			}
		}
		if p, ok := b.findBpftrace(); ok {
			rep.Tools.Bpftrace = p
			tracers = append(tracers, tracerBpftrace)
		}
		tracers = append(tracers, tracerFloor)
	}
	if p, err := exec.LookPath(b.opts.bpftool); err == nil {
		rep.Tools.Bpftool = p
	}

	// One-shot views with many sockets open, first: the churn leaves up to
	// tcp_max_tw_buckets TIME_WAIT sockets in the host namespace for a
	// minute, which serve's table (every namespace) would hold too.
	if len(b.opts.scaleSizes) > 0 && ctx.Err() == nil {
		rep.Scale = b.scalePhase(ctx)
	}

	// Warm up: fill the time-wait table and caches to their steady state,
	// which back-to-back runs keep.
	b.logf("warm-up churn (%v)", min(2*time.Second, b.opts.duration))
	if _, err := b.churn(ctx, churnCmd, "server", min(2*time.Second, b.opts.duration)); err != nil {
		b.note("warm-up churn failed: %v", err)
	}

	// The rate matrix, interleaved: round after round of every close order
	// and tracer, so that drift and outside load hit all alike.
	for round := 1; round <= b.opts.runs && ctx.Err() == nil; round++ {
		for _, order := range closeOrders {
			for _, tr := range tracers {
				if ctx.Err() != nil {
					break
				}
				r := b.rateRun(ctx, churnCmd, order, tr, round)
				rep.RawRuns = append(rep.RawRuns, r)
				if r.Error != "" {
					b.logf("round %d close=%s tracer=%s: %s", round, order, tr, r.Error)
				} else {
					b.logf("round %d close=%-6s tracer=%-8s rate=%8.0f/s conns=%d lost=%s idle before=%.0f%%",
						round, order, tr, r.Rate, r.Conns, lostString(r), 100*r.IdleBefore)
				}
			}
		}
	}

	// bpftrace's losses: one more run writing to a file we can read.
	if root && rep.Tools.Bpftrace != "" && ctx.Err() == nil {
		rep.BpftraceLoss = b.bpftraceLossRun(ctx, churnCmd)
	}

	// Events per second before the first loss, per ring size.
	if root && rep.Tools.Tcpscope != "" && len(b.opts.rampWorkers) > 0 && ctx.Err() == nil {
		rep.Ramp = b.rampPhase(ctx, churnCmd)
	}

	// In-process: BPF cost per hit and delivery latency.
	if root && !b.opts.skipLat && ctx.Err() == nil {
		for _, order := range closeOrders {
			if ctx.Err() != nil {
				break
			}
			b.logf("in-process tracer: close=%s (%v)", order, b.opts.duration)
			ip, err := b.inProcess(ctx, churnCmd, order)
			if err != nil {
				b.note("in-process measurement (close=%s) failed: %v", order, err)
				continue
			}
			rep.InProcess = append(rep.InProcess, ip)
		}
	}
	// Change-to-table (in process) and change-to-API (serve) latency,
	// without a TIME_WAIT backlog from the phases before, then once more
	// while the TIME_WAIT sockets of the first run expire.
	if root && !b.opts.skipLat && ctx.Err() == nil {
		b.drainTimeWait(ctx, timeWaitLen+10*time.Second)
		// Under the churn that saturates the CPUs, under one worker, which
		// leaves the tracer a CPU, and under a steady paced churn.
		saturating, one := load{workers: b.opts.workers}, load{workers: 1}
		steady := load{rate: steadyRate}
		for _, order := range closeOrders {
			if ctx.Err() == nil {
				rep.Latency = append(rep.Latency, b.tableLatency(ctx, churnCmd, order, saturating, b.opts.duration))
			}
		}
		for _, ld := range []load{one, steady} {
			if ctx.Err() == nil {
				rep.Latency = append(rep.Latency, b.tableLatency(ctx, churnCmd, "server", ld, b.opts.duration))
			}
		}
		for _, ld := range []load{saturating, one, steady} {
			if rep.Tools.Tcpscope != "" && ctx.Err() == nil {
				rep.Latency = append(rep.Latency, b.apiLatency(ctx, churnCmd, "server", ld))
			}
		}
		if first, ok := firstChurnStart(rep.Latency); ok && ctx.Err() == nil {
			if l, ok := b.timeWaitWave(ctx, churnCmd, first); ok {
				rep.Latency = append(rep.Latency, l)
			}
		}
		for _, l := range rep.Latency {
			if l.Error != "" {
				b.note("latency to %s (close=%s): %s", l.Path, l.Close, l.Error)
			}
		}
	}
	if ctx.Err() != nil {
		b.note("stopped early: %v", context.Cause(ctx))
	}
	idles := []float64{}
	for _, r := range rep.RawRuns {
		idles = append(idles, r.IdleBefore)
	}
	for _, r := range rep.InProcess {
		idles = append(idles, r.IdleBefore)
	}
	for _, r := range rep.Latency {
		idles = append(idles, r.IdleBefore)
	}
	if rep.Ramp != nil {
		for _, rr := range rep.Ramp.Rings {
			for _, st := range rr.Steps {
				idles = append(idles, st.IdleBefore)
			}
		}
	}
	if rep.BpftraceLoss != nil {
		idles = append(idles, rep.BpftraceLoss.IdleBefore)
	}
	busy := 0
	for _, idle := range idles {
		if idle < 0.8 {
			busy++
		}
	}
	if busy > 0 {
		b.note("other processes kept over 20%% of the CPUs busy just before %d of %d runs (*idle before*): those rates are low and noisy; rerun on a quiet machine, or with -wait-quiet", busy, len(idles))
	}
	if b.script != "" {
		os.Remove(b.script)
	}
	rep.summarize()
	b.readGoBench()
	rep.Goals = rep.evalGoals()
	rep.TotalSec = time.Since(start).Seconds()
	return rep
}

// readGoBench reads -gobench into the report.
func (b *bench) readGoBench() {
	if b.opts.goBench == "" {
		return
	}
	f, err := os.Open(b.opts.goBench)
	if err != nil {
		b.note("Go benchmarks not included: %v", err)
		return
	}
	defer f.Close()
	if b.rep.GoBench, err = parseGoBench(f); err != nil {
		b.note("Go benchmarks: %s: %v", b.opts.goBench, err)
	}
}

func lostString(r RunResult) string {
	if r.Tracer == tracerNone {
		return "-"
	}
	if r.Lost == nil {
		return "?"
	}
	return fmt.Sprint(*r.Lost)
}

func (b *bench) findTcpscope() (string, bool) {
	if b.opts.tcpscope == "" {
		b.note("tcpscope runs skipped (-tcpscope \"\")")
		return "", false
	}
	p, err := exec.LookPath(b.opts.tcpscope)
	if err != nil {
		b.note("tcpscope binary not found at %q (build it with `make build`): tcpscope runs skipped", b.opts.tcpscope)
		return "", false
	}
	abs, _ := filepath.Abs(p)
	return abs, true
}

func (b *bench) findBpftrace() (string, bool) {
	if b.opts.bpftrace == "" {
		b.note("bpftrace runs skipped (-bpftrace \"\")")
		return "", false
	}
	p, err := exec.LookPath(b.opts.bpftrace)
	if err != nil {
		b.note("bpftrace not found (%q; Debian package bpftrace): bpftrace runs skipped", b.opts.bpftrace)
		return "", false
	}
	if out, err := exec.Command(p, "--version").Output(); err == nil {
		b.rep.Tools.BpftraceVersion = strings.TrimSpace(string(out))
	}
	return p, true
}

// churnCommand is how a churn process is started: tcpchurn when it is
// there, else this binary in its churn mode.
func (b *bench) churnCommand() []string {
	if p, err := exec.LookPath(b.opts.tcpchurn); err == nil {
		abs, _ := filepath.Abs(p)
		b.rep.Tools.Tcpchurn = abs
		return []string{abs}
	}
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	b.note("tcpchurn not found at %q: churning with %s %s instead", b.opts.tcpchurn, filepath.Base(self), churnChildArg)
	b.rep.Tools.Tcpchurn = self + " " + churnChildArg
	return []string{self, churnChildArg}
}

// churnChildArg makes this binary act as tcpchurn -json.
const churnChildArg = "churn-child"

func churnChild(args []string) int {
	fs := flag.NewFlagSet(churnChildArg, flag.ContinueOnError)
	var (
		cfg     churn.Config
		closeBy string
	)
	fs.IntVar(&cfg.Conns, "n", churn.DefaultConns, "")
	fs.DurationVar(&cfg.Duration, "duration", churn.DefaultDuration, "")
	fs.IntVar(&cfg.Workers, "workers", 0, "")
	fs.StringVar(&closeBy, "close", "server", "")
	fs.Bool("json", true, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	order, err := churn.ParseCloseOrder(closeBy)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg.Close = order
	res, err := churn.Run(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out, _ := json.Marshal(res.Summary())
	fmt.Printf("%s\n", out)
	return 0
}

// churnResult is one churn process's outcome.
type churnResult struct {
	churn.Summary
	CPUSec float64 // user+system time of the churn process
}

// maxConns bounds every churn run by count as well as by time: far more
// than any machine reaches in the time given.
func maxConns(d time.Duration) int { return int(d.Seconds() * 1_000_000) }

func (b *bench) churn(ctx context.Context, cmdline []string, order string, d time.Duration) (churnResult, error) {
	return b.churnWorkers(ctx, cmdline, order, d, b.opts.workers, 0)
}

// churnWorkers is a churn run with this many workers (0: tcpchurn's
// default), paced to at most pace connections a second (0: unpaced).
func (b *bench) churnWorkers(ctx context.Context, cmdline []string, order string, d time.Duration, workers int, pace float64) (churnResult, error) {
	args := append(cmdline[1:len(cmdline):len(cmdline)],
		"-json", "-close", order, "-duration", d.String(), "-n", fmt.Sprint(maxConns(d)))
	if workers > 0 {
		args = append(args, "-workers", fmt.Sprint(workers))
	}
	if pace > 0 {
		args = append(args, "-rate", fmt.Sprint(pace))
	}
	ctx, cancel := context.WithTimeout(ctx, d+15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cmdline[0], args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var res churnResult
	if cmd.ProcessState != nil {
		res.CPUSec = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	if err != nil {
		return res, fmt.Errorf("churn: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(out, &res.Summary); err != nil {
		return res, fmt.Errorf("churn output %q: %v", out, err)
	}
	return res, nil
}

func (b *bench) rateRun(ctx context.Context, churnCmd []string, order, tracer string, round int) RunResult {
	r := RunResult{Close: order, Tracer: tracer, Round: round}
	r.IdleBefore = b.waitQuiet(ctx)
	var tp *tracerProc
	var err error
	switch tracer {
	case tracerTcpscope:
		tp, err = startTcpscope(ctx, b.rep.Tools.Tcpscope)
	case tracerBpftrace:
		tp, err = b.startBpftrace(ctx, os.DevNull)
	case tracerServe, tracerServeScrape:
		tp, err = startServe(ctx, b.rep.Tools.Tcpscope, 60*time.Second)
	case tracerFloor:
		tp, err = startFloor(ctx)
	}
	if err != nil {
		r.Error = err.Error()
		return r
	}
	var sc *scraper
	if tracer == tracerServeScrape {
		sc = startScraper(tp.addr)
	}
	load0 := loadAvg()
	cpu0 := readCPUStat()
	res, err := b.churn(ctx, churnCmd, order, b.opts.duration)
	r.IdleFrac = readCPUStat().idleSince(cpu0)
	if sc != nil {
		var mean time.Duration
		r.Scrapes, r.ScrapeErrors, mean = sc.end()
		r.ScrapeMeanMs = float64(mean.Microseconds()) / 1000
	}
	if tp != nil && tp.addr != "" {
		// serve's counters and memory, before it stops.
		if m, serr := scrape(tp.addr); serr == nil {
			ev, lost := uint64(m["tcpscope_transitions_total"]), uint64(m["tcpscope_lost_events_total"])
			r.Events, r.Lost = &ev, &lost
		} else if err == nil {
			err = fmt.Errorf("serve /metrics: %w", serr)
		}
		r.TracerRSS = procStatusBytes(tp.cmd.Process.Pid, "VmHWM")
	}
	r.LoadAvg = load0
	r.ChurnCPUSec = res.CPUSec
	if err != nil {
		r.Error = err.Error()
	}
	r.Conns, r.Errors, r.Rate, r.ElapsedSec = res.Conns, res.Errors, res.Rate, res.ElapsedSec
	if tp != nil {
		st := tp.stop()
		r.TracerCPUSec = st.cpuSec
		if st.err != nil && r.Error == "" {
			r.Error = fmt.Sprintf("%s: %v: %s", tracer, st.err, lastLines(st.stderr, 3))
		}
		if tracer == tracerTcpscope {
			if s, ok := parseSummary(st.stderr); ok {
				r.Events, r.Lost = &s.Events, &s.Lost
				r.RingDrops, r.NestedMissed, r.NestedRecovered = &s.RingDrops, &s.NestedMissed, &s.NestedRecovered
			} else if r.Error == "" {
				r.Error = "tcpscope printed no summary line: " + lastLines(st.stderr, 3)
			}
		}
		if tracer == tracerFloor {
			if fr, ok := parseFloorSummary(st.stderr); ok {
				lost := fr.drops + fr.missed
				r.Events, r.Lost = &fr.records, &lost
			} else if r.Error == "" {
				r.Error = "the floor printed no summary line: " + lastLines(st.stderr, 3)
			}
		}
		if tracer == tracerBpftrace {
			// Its output went to /dev/null, so losses (printed in the
			// output) are counted by the separate loss run.
			r.Lost = nil
		}
	}
	return r
}

// waitQuiet samples how idle the CPUs are while nothing of ours runs, which
// shows outside load, and with -wait-quiet waits a while for them to be
// idle.
func (b *bench) waitQuiet(ctx context.Context) float64 {
	idle := sampleIdle(ctx, 300*time.Millisecond)
	for deadline := time.Now().Add(b.opts.quiet); idle < 0.9 && time.Now().Before(deadline) && ctx.Err() == nil; {
		idle = sampleIdle(ctx, 500*time.Millisecond)
	}
	return idle
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
