// Package metrics exports tcpscope's socket table as Prometheus metrics.
//
// Almost everything is read from the table when Prometheus scrapes (counts
// per state and namespace, the transition matrix, CLOSE_WAIT ages and
// owners), so the event path pays nothing for it. Two things cannot be read
// afterwards and are counted as the table changes, through table change
// hooks: connection lifetimes (the socket is gone at scrape time) and
// TIME_WAIT entries by side. Both cost a few integer operations per change.
//
// TIME_WAIT sides and CLOSE_WAIT owners are tracer/diag's (the tracker's
// counters, diag.TimeWaitBySide, diag.CloseWaitCounts), so that the metrics, the
// API and the CLI classify alike. CLOSE_WAIT owners come from the table
// (no fd-table walk at scrape time): a socket shared by several processes
// counts for the one that used it last.
package metrics

import (
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcpscope/tcpscope/tracer/diag"
	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/ktime"
	"github.com/tcpscope/tcpscope/tracer/loader"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// Tracer is what the collector reads from the loaded tracer.
type Tracer interface {
	Stats() (loader.Stats, error)
	RingUsage() (used, size int)
}

// Options configure a Collector.
type Options struct {
	Table  *table.Table
	Tracer Tracer // nil: no lost-event and ring metrics
	// Resyncs returns how many times the table was resynced after its
	// seed (nil: not exported).
	Resyncs func() uint64
	// TopProcesses bounds the processes named in the CLOSE_WAIT-per-process
	// metric; the others are summed under comm="other" (default 10).
	TopProcesses int
	Version      string
	// Since is the CLOCK_MONOTONIC time the tracer started: lifetimes are
	// observed only for sockets first seen after it (so they are whole).
	Since uint64
	// TimeWait is the TIME_WAIT tracker installed on Table (the agent's,
	// shared with /api/v1/timewait); nil: New installs one of its own.
	TimeWait *diag.TimeWaitTracker
}

// Bucket bounds, in seconds. CLOSE_WAIT leaks are a matter of minutes to
// days; connection lifetimes range from sub-millisecond loopback requests to
// long-lived sessions.
var (
	closeWaitBuckets = []float64{1, 10, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600}
	lifetimeBuckets  = prometheus.ExponentialBuckets(0.001, 4, 12) // 1 ms .. ~70 min
)

// Collector is a prometheus.Collector over a table.
type Collector struct {
	opts Options

	sockets, transitions, twEntries, twSockets   *prometheus.Desc
	closeWaitAge, closeWaitByProc, lost, resyncs *prometheus.Desc
	ringUsed, ringSize, buildInfo, tableSockets  *prometheus.Desc
	lifetime                                     prometheus.Histogram
}

// New returns a collector and installs its change hook on the table
// (Table.AddOnChange), and a TIME_WAIT tracker unless opts has one.
func New(opts Options) *Collector {
	if opts.TopProcesses <= 0 {
		opts.TopProcesses = 10
	}
	if opts.TimeWait == nil {
		// Only its counters are read: it need keep no entries.
		opts.TimeWait = diag.NewTimeWaitTracker(0)
		opts.Table.AddOnChange(opts.TimeWait.OnChange)
	}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tcpscope_"+name, help, labels, nil)
	}
	c := &Collector{
		opts:            opts,
		sockets:         d("sockets", "TCP sockets per state and network namespace (inode), from the live table. Request sockets count as SYN_RECV, as in ss and netstat.", "netns", "state"),
		transitions:     d("transitions_total", "TCP state transitions since the agent started, from -> to (NEW_SYN_RECV: request sockets).", "from", "to"),
		twEntries:       d("time_wait_entries_total", "Sockets that entered TIME_WAIT since the agent started, by side: server if the local port had a listener in the namespace, else client; unknown if the agent had not seen the connection.", "side"),
		twSockets:       d("time_wait_sockets", "Sockets now in TIME_WAIT, by side (server: the local port has a listener in the namespace).", "side"),
		closeWaitAge:    d("close_wait_age_seconds", "Time the sockets now in CLOSE_WAIT have spent in it (a lower bound for sockets older than the agent)."),
		closeWaitByProc: d("close_wait_sockets_by_process", "Sockets in CLOSE_WAIT per owning process; the processes beyond the top N are summed under comm=\"other\", pid=\"\"; sockets no process holds (never accepted, or orphaned) under comm=\"orphan\", pid=\"\".", "pid", "comm"),
		lost:            d("lost_events_total", "Events that did not reach the agent (ring buffer full, skipped BPF runs, bad records); each forces a resync."),
		resyncs:         d("resyncs_total", "Times the table was re-read from the kernel after its seed (lost events or a disagreement)."),
		ringUsed:        d("ring_buffer_used_bytes", "Bytes of the BPF ring buffer holding events not read yet."),
		ringSize:        d("ring_buffer_size_bytes", "Size of the BPF ring buffer."),
		buildInfo:       d("build_info", "Build of the tcpscope agent; the value is always 1.", "version", "goversion"),
		tableSockets:    d("table_sockets", "Sockets in the agent's table, all states and namespaces."),
		lifetime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tcpscope_connection_lifetime_seconds",
			Help:    "Lifetime of TCP connections the agent saw begin: from the first state change (SYN) until TIME_WAIT or CLOSE, whichever comes first.",
			Buckets: lifetimeBuckets,
		}),
	}
	opts.Table.AddOnChange(c.onChange)
	return c
}

// onChange runs with the table's write lock held, for every change.
func (c *Collector) onChange(old, new *table.Entry, ev *event.Event) {
	if ev == nil || old == nil {
		return // a resync merge, or a socket never seen begin
	}
	// A connection's life ends when it enters TIME_WAIT (the timewait
	// socket keeps the full socket's key) or leaves the table without it.
	enteredTW := new != nil && new.State == event.TimeWait && old.State != event.TimeWait
	ended := enteredTW || (new == nil && old.State != event.TimeWait)
	if ended && old.Kind != event.RequestSocket && old.State != event.Listen &&
		old.SeenAt > c.opts.Since && ev.Mono >= old.SeenAt {
		c.lifetime.Observe(time.Duration(ev.Mono - old.SeenAt).Seconds())
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sockets, c.transitions, c.twEntries, c.twSockets,
		c.closeWaitAge, c.closeWaitByProc, c.lost, c.resyncs, c.ringUsed, c.ringSize, c.buildInfo, c.tableSockets} {
		ch <- d
	}
	c.lifetime.Describe(ch)
}

// Collect implements prometheus.Collector: it reads the table now.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	tab := c.opts.Table
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}

	total := 0
	for ns, counts := range tab.CountsByNetNS() {
		counts[event.SynRecv] += counts[event.NewSynRecv]
		counts[event.NewSynRecv] = 0
		nsLabel := strconv.FormatUint(uint64(ns), 10)
		for s := event.Established; s <= event.MaxState; s++ {
			if n := counts[s]; n != 0 && s != event.Close {
				gauge(c.sockets, float64(n), nsLabel, s.String())
				total += n
			}
		}
	}
	gauge(c.tableSockets, float64(tab.Len()))

	m := tab.Transitions()
	for from := range m {
		for to, n := range m[from] {
			if n != 0 {
				counter(c.transitions, float64(n), event.State(from).String(), event.State(to).String())
			}
		}
	}

	for side, n := range c.opts.TimeWait.EnteredBySide() {
		counter(c.twEntries, float64(n), string(side))
	}
	for side, n := range diag.TimeWaitBySide(tab, 0) {
		gauge(c.twSockets, float64(n), string(side))
	}

	now := ktime.Now()
	var cwCount uint64
	var cwSum float64
	cwBuckets := make(map[float64]uint64, len(closeWaitBuckets))
	tab.Each(event.StateMask(0).With(event.CloseWait), func(e *table.Entry) bool {
		age := diag.StateAge(e, now).Duration().Seconds()
		cwCount++
		cwSum += age
		for _, b := range closeWaitBuckets {
			if age <= b {
				cwBuckets[b]++
			}
		}
		return true
	})
	ch <- prometheus.MustNewConstHistogram(c.closeWaitAge, cwCount, cwSum, cwBuckets)

	// Counted by diag's rules, worst first; without an fd-table walk it
	// takes the table's owners.
	procs, orphans := diag.CloseWaitCounts(tab, now)
	other := 0
	for i, p := range procs {
		if i >= c.opts.TopProcesses {
			other += p.Count
			continue
		}
		gauge(c.closeWaitByProc, float64(p.Count), strconv.FormatUint(uint64(p.PID), 10), p.Comm)
	}
	if other > 0 {
		gauge(c.closeWaitByProc, float64(other), "", "other")
	}
	if orphans > 0 {
		gauge(c.closeWaitByProc, float64(orphans), "", "orphan")
	}

	if c.opts.Tracer != nil {
		if st, err := c.opts.Tracer.Stats(); err == nil {
			counter(c.lost, float64(st.Lost()))
		} else {
			ch <- prometheus.NewInvalidMetric(c.lost, err)
		}
		used, size := c.opts.Tracer.RingUsage()
		gauge(c.ringUsed, float64(used))
		gauge(c.ringSize, float64(size))
	}
	if c.opts.Resyncs != nil {
		counter(c.resyncs, float64(c.opts.Resyncs()))
	}
	gauge(c.buildInfo, 1, c.opts.Version, runtime.Version())
	c.lifetime.Collect(ch)
}
