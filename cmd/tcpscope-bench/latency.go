package main

// Change-to-view latency: from a state change in the kernel (the event's
// kernel timestamp) to the moment the change is in the socket table (in
// this process: loader, live and table as `tcpscope serve` runs them), and
// to the moment a client of serve's /api/v1/events stream reads it.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpscope/tcpscope/tracer/live"
	"github.com/tcpscope/tcpscope/tracer/loader"
	"github.com/tcpscope/tcpscope/tracer/sockstat"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// ViewLatency is one latency run: where it was measured and its quantiles.
type ViewLatency struct {
	Path       string  `json:"path"` // "table" or "api"
	Close      string  `json:"close"`
	Workers    int     `json:"workers,omitempty"`    // tcpchurn's; 0: its default
	Paced      float64 `json:"paced_rate,omitempty"` // tcpchurn -rate; 0: as fast as it can
	Conns      uint64  `json:"conns"`
	Rate       float64 `json:"rate"`
	IdleBefore float64 `json:"idle_frac_before"`
	Events     uint64  `json:"events"`
	Lost       uint64  `json:"lost"`    // by the tracer
	Dropped    uint64  `json:"dropped"` // api: by the stream for this client
	Resyncs    uint64  `json:"resyncs"` // table: re-reads of the kernel's sockets during the run
	// TimeWait is the host namespace's TIME_WAIT sockets when the run
	// started. Wave marks the run timed to overlap the expiry of a full
	// TIME_WAIT table (see timeWaitWave).
	TimeWait int  `json:"time_wait_at_start"`
	Wave     bool `json:"time_wait_wave,omitempty"`
	// churnStart is when the run's churn began.
	churnStart time.Time
	// Major page faults during the run: of the process that applies the
	// events (this one for table, serve for api), and of the whole host. A
	// page the kernel evicted (this VM pages out cold file pages on its
	// own) costs a read from disk when touched again: a stall of its own.
	MajorFaults     uint64 `json:"major_faults"`
	HostMajorFaults uint64 `json:"host_major_faults"`
	Latency
	Error string `json:"error,omitempty"`
}

// Latency is the quantiles of a set of delays.
type Latency struct {
	Samples int     `json:"latency_samples"`
	P50us   float64 `json:"latency_p50_us"`
	P90us   float64 `json:"latency_p90_us"`
	P99us   float64 `json:"latency_p99_us"`
	P999us  float64 `json:"latency_p999_us"`
	Maxus   float64 `json:"latency_max_us"`
}

// quantiles sorts the delays (ns) and reads their quantiles.
func quantiles(ns []uint64) Latency {
	l := Latency{Samples: len(ns)}
	if len(ns) == 0 {
		return l
	}
	slices.Sort(ns)
	q := func(p float64) float64 { return float64(ns[int(p*float64(len(ns)-1))]) / 1e3 }
	l.P50us, l.P90us, l.P99us, l.P999us = q(0.50), q(0.90), q(0.99), q(0.999)
	l.Maxus = float64(ns[len(ns)-1]) / 1e3
	return l
}

// loadString says what churn ran: "saturating churn", "1 churn worker(s)"
// or "churn paced at 10,000 conn/s".
func (l ViewLatency) loadString() string {
	switch {
	case l.Paced > 0:
		return fmt.Sprintf("churn paced at %s conn/s", groupDigits(int64(l.Paced)))
	case l.Workers > 0:
		return fmt.Sprintf("%d churn worker(s)", l.Workers)
	}
	return "saturating churn"
}

// load is the churn of a latency run: tcpchurn's workers (0: its default,
// which saturates the CPUs) and a pace in connections per second (0: none).
type load struct {
	workers int
	rate    float64
}

// steadyRate is the pace of the steady-load latency runs: 10,000
// connections a second, ~100,000 transitions, a busy server's churn that
// leaves the CPUs mostly free, against the saturating runs that leave the
// tracer only what it can take from the churn.
const steadyRate = 10_000

// serveRingBytes is `tcpscope serve --ring-size`'s default.
const serveRingBytes = 32 << 20

// tableLatency runs loader, live and table as serve does, with live's
// Event hook (called after the table applied each event) taking the delay
// since the event's kernel timestamp, during one churn run.
func (b *bench) tableLatency(ctx context.Context, churnCmd []string, order string, ld load, d time.Duration) ViewLatency {
	res := ViewLatency{Path: "table", Close: order, Workers: ld.workers, Paced: ld.rate}
	res.IdleBefore = b.waitQuiet(ctx)
	res.TimeWait = timeWaitCount()
	// serve's rings (its --ring-size default), not trace's: with a ring
	// per CPU, a one-worker churn fills one CPU's share, 4 MiB of trace's
	// 8M, within ~40 ms of a stalled reader (the 11:54 run lost 404 events
	// that way, 2026-12-06).
	tr, err := loader.New(loader.Config{Sockets: true, RingBytes: serveRingBytes})
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer tr.Close()
	sink := b.newLatencySink()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var resyncs []string
	lv, err := live.Start(runCtx, tr, table.New(), live.Options{
		Events:     sink.Events,
		Notify:     func(msg string) { resyncs = append(resyncs, msg) },
		ReaderNice: live.RaisedReaderNice, // as serve runs it
	})
	if err != nil {
		res.Error = fmt.Sprintf("live: %v", err)
		return res
	}
	lv.TakeSeed()
	runtime.GC() // the seed's garbage, before the run rather than in it
	st0, err := tr.Stats()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	self0, host0 := selfMajorFaults(), hostMajorFaults()
	res.churnStart = time.Now()
	cr, churnErr := b.churnWorkers(ctx, churnCmd, order, d, ld.workers, ld.rate)
	res.MajorFaults, res.HostMajorFaults = selfMajorFaults()-self0, hostMajorFaults()-host0
	st1, err := tr.Stats()
	cancel()
	if werr := lv.Wait(); werr != nil && err == nil && ctx.Err() == nil {
		err = fmt.Errorf("live: %w", werr)
	}
	if churnErr != nil {
		err = churnErr
	}
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.Conns, res.Rate = cr.Conns, cr.Rate
	res.Events, res.Lost = sink.events, st1.Lost()-st0.Lost()
	res.Resyncs = lv.Resyncs()
	if len(resyncs) > 0 {
		b.note("latency to table (close=%s): %d resyncs, the first: %s", order, len(resyncs), resyncs[0])
	}
	res.Latency = quantiles(sink.samples)
	b.logf("latency to table close=%s load=%q time_wait=%d: conns=%d events=%d lost=%d resyncs=%d p50=%.0fus p99=%.0fus max=%.0fus major faults=%d (host %d)",
		order, res.loadString(), res.TimeWait, res.Conns, res.Events, res.Lost, res.Resyncs, res.P50us, res.P99us, res.Maxus, res.MajorFaults, res.HostMajorFaults)
	return res
}

// apiLatency starts serve, reads its /api/v1/events stream during one
// churn run and takes, for each event line, the time it was read minus the
// event's time (the agent's wall-clock rendering of the kernel timestamp).
func (b *bench) apiLatency(ctx context.Context, churnCmd []string, order string, ld load) ViewLatency {
	res := ViewLatency{Path: "api", Close: order, Workers: ld.workers, Paced: ld.rate}
	res.IdleBefore = b.waitQuiet(ctx)
	res.TimeWait = timeWaitCount()
	tp, err := startServe(ctx, b.rep.Tools.Tcpscope, 60*time.Second)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer tp.stop()
	m0, err := scrape(tp.addr)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+tp.addr+"/api/v1/events", nil)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	// No client timeout: the stream lasts the run; the context ends it.
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		res.Error = fmt.Sprintf("GET /api/v1/events: HTTP %d", resp.StatusCode)
		return res
	}
	type streamOut struct {
		lat           []uint64
		events, drops uint64
		bad           int
	}
	done := make(chan streamOut, 1)
	go func() {
		var o streamOut
		o.lat = make([]uint64, 0, 1<<20)
		br := bufio.NewReaderSize(resp.Body, 1<<16)
		for {
			line, err := br.ReadSlice('\n')
			now := time.Now()
			if err != nil {
				break
			}
			t, dropped, ok := streamLine(line)
			switch {
			case !ok:
				o.bad++
			case dropped > 0:
				o.drops += dropped
			default:
				o.events++
				if len(o.lat) < maxSamples {
					o.lat = append(o.lat, uint64(max(0, now.Sub(t))))
				}
			}
		}
		done <- o
	}()
	pid := tp.cmd.Process.Pid
	serve0, host0 := procMajorFaults(pid), hostMajorFaults()
	res.churnStart = time.Now()
	cr, churnErr := b.churnWorkers(ctx, churnCmd, order, b.opts.duration, ld.workers, ld.rate)
	res.MajorFaults, res.HostMajorFaults = procMajorFaults(pid)-serve0, hostMajorFaults()-host0
	// Let the stream catch up before reading the counters and hanging up.
	time.Sleep(200 * time.Millisecond)
	m1, serr := scrape(tp.addr)
	cancel()
	o := <-done
	if churnErr != nil {
		res.Error = churnErr.Error()
		return res
	}
	if serr != nil {
		res.Error = serr.Error()
		return res
	}
	res.Conns, res.Rate = cr.Conns, cr.Rate
	res.Events, res.Dropped = o.events, o.drops
	res.Lost = uint64(m1["tcpscope_lost_events_total"] - m0["tcpscope_lost_events_total"])
	res.Resyncs = uint64(m1["tcpscope_resyncs_total"] - m0["tcpscope_resyncs_total"])
	res.Latency = quantiles(o.lat)
	if o.bad > 0 {
		b.note("API latency: %d stream lines without a time", o.bad)
	}
	b.logf("latency to API close=%s load=%q: conns=%d events=%d dropped=%d lost=%d p50=%.0fus p99=%.0fus max=%.0fus major faults=%d (host %d)",
		order, res.loadString(), res.Conns, res.Events, res.Dropped, res.Lost, res.P50us, res.P99us, res.Maxus, res.MajorFaults, res.HostMajorFaults)
	return res
}

var (
	timePrefix    = []byte(`{"time":"`)
	droppedPrefix = []byte(`{"dropped":`)
)

// streamLine reads one line of the event stream: an event's time, or the
// count of a {"dropped": N} line. Only the time is parsed, not the whole
// object: the reader must keep up with the stream.
func streamLine(line []byte) (t time.Time, dropped uint64, ok bool) {
	if rest, found := bytes.CutPrefix(line, droppedPrefix); found {
		n, err := strconv.ParseUint(string(bytes.TrimSpace(bytes.TrimRight(rest, "}\r\n "))), 10, 64)
		if err != nil || n == 0 {
			return t, 0, false
		}
		return t, n, true
	}
	rest, found := bytes.CutPrefix(line, timePrefix)
	if !found {
		return t, 0, false
	}
	i := bytes.IndexByte(rest, '"')
	if i < 0 {
		return t, 0, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(rest[:i]))
	if err != nil {
		return t, 0, false
	}
	return t, 0, true
}

// timeWaitLen is how long a TIME_WAIT socket lives (TCP_TIMEWAIT_LEN).
const timeWaitLen = 60 * time.Second

// timeWaitCount is the host namespace's TIME_WAIT sockets (the "tw" of
// /proc/net/sockstat, which counts both families), -1 when unreadable.
func timeWaitCount() int {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return -1
	}
	n, found, err := sockstat.Count(string(b), "TCP:", "tw")
	if err != nil || !found {
		return -1
	}
	return n
}

// drainTimeWait waits, at most limit, until the TIME_WAIT sockets earlier
// phases left have expired: when a full TIME_WAIT table (tcp_max_tw_buckets)
// expires, the kernel's timer softirq runs for 7-26 ms on each CPU at once
// (measured with bpftrace, README's Known issues), which stalls every
// process, ours included; the latency runs measure the pipeline without it,
// and one run (timeWaitWave) measures it with it.
func (b *bench) drainTimeWait(ctx context.Context, limit time.Duration) {
	start := time.Now()
	tw := timeWaitCount()
	for tw > 1000 && time.Since(start) < limit && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
		tw = timeWaitCount()
	}
	if ctx.Err() != nil {
		return
	}
	if tw > 1000 {
		b.note("latency runs: %d TIME_WAIT sockets still there after waiting %v for them to expire", tw, time.Since(start).Round(time.Second))
		return
	}
	b.logf("latency runs: waited %v for the TIME_WAIT sockets to expire (%d left)", time.Since(start).Round(time.Second), tw)
}

// timeWaitWave runs a one-worker table latency run over the moment the
// TIME_WAIT sockets made by the run whose churn started at first expire
// (timeWaitLen later; the timer wheel rounds a 60 s timeout up to 4 s). It
// returns false, and runs nothing, when the runs since first took so long
// that the wave has begun (the last of them may then have caught it) or
// when ctx ends.
func (b *bench) timeWaitWave(ctx context.Context, churnCmd []string, first time.Time) (ViewLatency, bool) {
	wait := time.Until(first.Add(timeWaitLen - 5*time.Second))
	if wait < 0 {
		b.note("latency runs: they took longer than a TIME_WAIT lifetime, so the last may have spanned the expiry of the first run's TIME_WAIT sockets; no run over the wave")
		return ViewLatency{}, false
	}
	b.logf("latency run over the TIME_WAIT expiry wave: starting in %v", wait.Round(time.Second))
	select {
	case <-ctx.Done():
		return ViewLatency{}, false
	case <-time.After(wait):
	}
	l := b.tableLatency(ctx, churnCmd, "server", load{workers: 1}, max(b.opts.duration, 12*time.Second))
	l.Wave = true
	return l, true
}

// firstChurnStart is when the churn of the first latency run that
// completed began: the run whose TIME_WAIT sockets make the wave.
func firstChurnStart(ls []ViewLatency) (time.Time, bool) {
	for _, l := range ls {
		if l.Error == "" && !l.churnStart.IsZero() {
			return l.churnStart, true
		}
	}
	return time.Time{}, false
}

// selfMajorFaults is this process's count of major page faults.
func selfMajorFaults() uint64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return uint64(ru.Majflt)
}

// procMajorFaults is a process's count of major page faults (majflt, the
// 12th field of /proc/PID/stat), 0 when it cannot be read.
func procMajorFaults(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	return statMajorFaults(b)
}

// statMajorFaults reads majflt from the text of /proc/PID/stat.
func statMajorFaults(b []byte) uint64 {
	// The command name (field 2) may hold spaces and parentheses: count
	// from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 10 {
		return 0
	}
	n, _ := strconv.ParseUint(f[9], 10, 64) // field 12: f[0] is field 3
	return n
}

// hostMajorFaults is the host's count of major page faults (pgmajfault in
// /proc/vmstat).
func hostMajorFaults() uint64 {
	b, err := os.ReadFile("/proc/vmstat")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "pgmajfault "); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
