package main

// closewait, timewait and life: the diagnostics of tracer/diag on top of
// the same tracer, table, filters and output writers as trace and netstat.

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcpscope/tcpscope/tracer/api"
	"github.com/tcpscope/tcpscope/tracer/diag"
	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/ktime"
	"github.com/tcpscope/tcpscope/tracer/live"
	"github.com/tcpscope/tcpscope/tracer/loader"
	"github.com/tcpscope/tcpscope/tracer/output"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// thresholdError: closewait found a process over --threshold.
type thresholdError struct {
	pid       uint32
	comm      string
	count, n  int
	processes int
}

func (e thresholdError) Error() string {
	return fmt.Sprintf("%d process(es) over the CLOSE_WAIT threshold %d; worst: %d/%s with %d", e.processes, e.n, e.pid, e.comm, e.count)
}

// tableFlags are the flags of the commands that run a live table.
type tableFlags struct {
	json, watch, allNetNS bool
	ringSize, btf         string
	serverFlags
}

func (f *tableFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.json, "json", false, "one JSON object per report, on one line")
	fl.BoolVar(&f.watch, "watch", false, "keep running and print a new report as sockets change, until interrupted")
	fl.BoolVar(&f.allNetNS, "all-netns", false, "every network namespace, not only tcpscope's own")
	fl.StringVar(&f.ringSize, "ring-size", "8M", "size of the ring buffers, one per CPU, together: a power of two (e.g. 4M, 64M)")
	fl.StringVar(&f.btf, "btf", "", "kernel BTF file to use instead of /sys/kernel/btf/vmlinux")
	f.serverFlags.register(fl)
}

func (f *tableFlags) check() error {
	if f.allNetNS && f.netnsID != 0 {
		return usagef("--all-netns and --netns-id exclude each other")
	}
	return f.serverFlags.check()
}

// liveTable is a tracer feeding a seeded table until ctx ends.
type liveTable struct {
	tr    *loader.Tracer
	tab   *table.Table
	lv    *live.Live
	netns uint32 // the namespace reported on, 0 = all
	stop  func()
}

// startTable loads the tracer, installs hook (may be nil) and seeds the
// table. stop detaches and waits for the reader. walksOnly: a report of one
// walk, which needs no events (loader.Config.WalksOnly).
func startTable(ctx context.Context, f tableFlags, stderr io.Writer, hook func(old, new *table.Entry, ev *event.Event), walksOnly bool) (*liveTable, error) {
	ring, err := parseSize(f.ringSize)
	if err != nil {
		return nil, usagef("--ring-size: %v", err)
	}
	lt := &liveTable{}
	if !f.allNetNS {
		if lt.netns, err = loader.OwnNetNS(); err != nil {
			return nil, err
		}
	}
	// A report on our own namespace follows that namespace alone, as a
	// continuous netstat does (liveSource): other namespaces' events
	// are dropped in the kernel and the walks read ours only.
	lt.tr, err = loadTracer(stderr, loader.Config{RingBytes: ring, BTFPath: f.btf, Sockets: true, WalksOnly: walksOnly, Holders: true,
		Filter: loader.KernelFilter{NetNS: lt.netns}})
	if err != nil {
		return nil, err
	}
	lt.tab = table.New()
	if hook != nil {
		lt.tab.AddOnChange(hook)
	}
	ctx, cancel := context.WithCancel(ctx)
	lt.lv, err = live.Start(ctx, liveSource(lt.tr, lt.netns), lt.tab, live.Options{
		Notify:     func(msg string) { fmt.Fprintf(stderr, "tcpscope: %s\n", msg) },
		ReaderNice: live.RaisedReaderNice,
	})
	if err != nil {
		cancel()
		lt.tr.Close()
		return nil, err
	}
	lt.stop = func() {
		cancel()
		lt.lv.Wait()
		lt.tr.Close()
	}
	return lt, nil
}

// watchLoop calls print at start and then whenever the table changes or
// every refresh, at most every minGap, until ctx ends or the tracer stops.
func watchLoop(ctx context.Context, lt *liveTable, refresh, minGap time.Duration, print func() error) error {
	tick := time.NewTicker(refresh)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-lt.lv.Done():
			return lt.lv.Wait()
		case <-lt.tab.Changed():
		case <-tick.C:
		}
		if gap := minGap - time.Since(last); gap > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(gap):
			}
		}
		last = time.Now()
		if err := print(); err != nil {
			return err
		}
	}
}

// ---- closewait ---------------------------------------------------------------

type closeWaitFlags struct {
	tableFlags
	minAge    time.Duration
	threshold int
	interval  time.Duration
}

func newCloseWaitCommand() *cobra.Command {
	var f closeWaitFlags
	cmd := &cobra.Command{
		Use:   "closewait [flags]",
		Short: "Who is leaking sockets? CLOSE_WAIT sockets grouped by the processes holding them",
		Long: `A socket sits in CLOSE_WAIT when the peer has closed and the program holding it
has not called close(). closewait groups those sockets by the processes that
hold them (every process: after fork() or fd passing a socket has several
holders; the kernel's fd tables are walked for each report), worst first:
count, oldest and median time in CLOSE_WAIT, fds, local ports (L: a
listener's), peers, and with --watch the growth per second. Sockets no
process holds (connections never accepted) are listed as orphans.

Ages of sockets that were in CLOSE_WAIT before tcpscope started are lower
bounds (">="); --watch (or a long-running agent) times the ones that come
later exactly. So that --min-age can judge those, a one-shot run with
--min-age D watches for D before it reports: a socket still in CLOSE_WAIT then
has been there at least D.

With --threshold N the exit status is 5 when a process holds more than N.`,
		Example: `  tcpscope closewait
  tcpscope closewait --min-age 30s --threshold 100   # cron / health check: exit status 5 when over
  tcpscope closewait --watch --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			markRan(cmd)
			return runCloseWait(cmd.Context(), f, os.Stdout, os.Stderr)
		},
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.DurationVar(&f.minAge, "min-age", 0, "ignore sockets in CLOSE_WAIT for less than this (e.g. 5s)")
	fl.IntVar(&f.threshold, "threshold", -1, "exit status 5 when a process holds more than N CLOSE_WAIT sockets")
	fl.DurationVar(&f.interval, "interval", 2*time.Second, "with --watch: report at least this often")
	fl.SortFlags = false
	return cmd
}

func runCloseWait(ctx context.Context, f closeWaitFlags, stdout, stderr io.Writer) error {
	if f.minAge < 0 {
		return usagef("--min-age %v: must not be negative", f.minAge)
	}
	if f.threshold < -1 {
		return usagef("--threshold %d: must not be negative", f.threshold)
	}
	if f.interval <= 0 {
		return usagef("--interval %v: must be positive", f.interval)
	}
	if err := f.tableFlags.check(); err != nil {
		return err
	}
	ctx, cancel := commandContext(ctx, stdout, f.watch)
	defer cancel()
	var last *diag.CloseWaitReport
	print := func(rep *diag.CloseWaitReport, at time.Time) error {
		last = rep
		if f.json {
			return outputError(output.WriteJSON(stdout, rep))
		}
		if f.watch {
			fmt.Fprintf(stdout, "--- %s\n", at.Format("15:04:05"))
		}
		if err := output.WriteCloseWait(stdout, rep); err != nil {
			return outputError(err)
		}
		if f.watch {
			fmt.Fprintln(stdout)
		}
		return nil
	}
	if f.server != "" {
		if err := remoteCloseWait(ctx, f, print); err != nil {
			return err
		}
		return overThreshold(last, f.threshold)
	}

	// One report with no minimum age is one walk; --min-age waits for
	// events to see which sockets leave CLOSE_WAIT meanwhile.
	lt, err := startTable(ctx, f.tableFlags, stderr, nil, !f.watch && f.minAge == 0)
	if err != nil {
		return err
	}
	defer lt.stop()

	if !f.watch && f.minAge > 0 {
		// Sockets already in CLOSE_WAIT at the seed have an unknown age. Still
		// in CLOSE_WAIT (no event moved them) minAge after the seed, they
		// have been there at least that long: wait, then report.
		wait := time.Duration(lt.lv.SeedMono() + uint64(f.minAge) - min(ktime.Now(), lt.lv.SeedMono()+uint64(f.minAge)))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	hist := &diag.CloseWaitHistory{}
	clock := ktime.NewClock()
	report := func() error {
		hs, err := lt.tr.Holders(event.StateMask(0).With(event.CloseWait))
		if err != nil {
			return err
		}
		rep := diag.CloseWait(lt.tab, diag.CloseWaitOptions{Now: ktime.Now(), MinAge: f.minAge, NetNS: lt.netns,
			Holders: api.HoldersOf(hs), History: hist, Cmdline: readCmdline})
		return print(rep, clock.Wall(rep.Mono))
	}
	if err := report(); err != nil {
		return err
	}
	if f.watch {
		if err := watchLoop(ctx, lt, f.interval, time.Second, report); err != nil {
			return err
		}
	}
	return overThreshold(last, f.threshold)
}

func overThreshold(r *diag.CloseWaitReport, n int) error {
	if n < 0 || r == nil {
		return nil
	}
	var te thresholdError
	for _, p := range r.Processes {
		if p.Count > n {
			if te.processes == 0 {
				te = thresholdError{pid: p.PID, comm: p.Comm, count: p.Count, n: n}
			}
			te.processes++
		}
	}
	if te.processes > 0 {
		return te
	}
	return nil
}

func readCmdline(pid uint32) ([]byte, error) {
	return os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/cmdline")
}

// ---- timewait ----------------------------------------------------------------

type timeWaitFlags struct {
	tableFlags
	interval time.Duration
	warn     float64
}

func newTimeWaitCommand() *cobra.Command {
	var f timeWaitFlags
	cmd := &cobra.Command{
		Use:   "timewait [flags]",
		Short: "Who is churning? Connections entering TIME_WAIT, by side, process and destination",
		Long: `Watches connections enter TIME_WAIT for --interval and reports: entries per
second, which side closed first (the side that closes first keeps the
TIME_WAIT socket) and which process, the busiest remote endpoints and local
ports, client-side TIME_WAIT sockets per destination against the ephemeral
port range (net.ipv4.ip_local_port_range) with a warning when one nears
exhaustion, how long the connections lived, and a hint when the pattern is a
familiar one. --watch reports every --interval until interrupted.`,
		Example: `  tcpscope timewait
  tcpscope timewait --interval 10s --json
  tcpscope timewait --watch`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			markRan(cmd)
			return runTimeWait(cmd.Context(), f, os.Stdout, os.Stderr)
		},
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.DurationVar(&f.interval, "interval", 5*time.Second, "the window each report covers")
	fl.Float64Var(&f.warn, "warn", 0.5, "warn when a destination's TIME_WAIT sockets reach this fraction of the port range")
	fl.SortFlags = false
	return cmd
}

func runTimeWait(ctx context.Context, f timeWaitFlags, stdout, stderr io.Writer) error {
	if f.interval <= 0 {
		return usagef("--interval %v: must be positive", f.interval)
	}
	if f.warn <= 0 || f.warn > 1 {
		return usagef("--warn %v: want a fraction in (0, 1]", f.warn)
	}
	if err := f.tableFlags.check(); err != nil {
		return err
	}
	ctx, cancel := commandContext(ctx, stdout, f.watch)
	defer cancel()
	print := func(rep *diag.TimeWaitReport, at time.Time) error {
		if f.json {
			return outputError(output.WriteJSON(stdout, rep))
		}
		if f.watch {
			fmt.Fprintf(stdout, "--- %s\n", at.Format("15:04:05"))
		}
		err := output.WriteTimeWait(stdout, rep)
		if err == nil && f.watch {
			_, err = fmt.Fprintln(stdout)
		}
		return outputError(err)
	}
	if f.server != "" {
		return remoteTimeWait(ctx, f, print)
	}

	portRange, err := localPortRange()
	if err != nil {
		fmt.Fprintf(stderr, "tcpscope: warning: %v: no port exhaustion check\n", err)
	}
	// The first report covers everything since the programs were attached:
	// seeding the table (walking its namespaces) may take a while, and
	// connections that enter TIME_WAIT meanwhile belong in it.
	tw := diag.NewTimeWaitTracker(time.Hour)
	begin := ktime.Now()
	lt, err := startTable(ctx, f.tableFlags, stderr, tw.OnChange, false)
	if err != nil {
		return err
	}
	defer lt.stop()
	tw.SetSeedMono(lt.lv.SeedMono())
	first := true

	clock := ktime.NewClock()
	tick := time.NewTicker(f.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-lt.lv.Done():
			return lt.lv.Wait()
		case <-tick.C:
		}
		// Let the reader pass what the kernel committed up to now.
		if err := lt.tr.Barrier(ctx); err != nil {
			return nil
		}
		now, window := ktime.Now(), f.interval
		if first {
			window = max(window, time.Duration(now-begin))
		}
		rep := tw.Report(lt.tab, diag.TimeWaitOptions{Now: now, Window: window, NetNS: lt.netns,
			PortRange: portRange, WarnFraction: f.warn, TwReuse: twReuse()})
		if first {
			// From now on each report looks back one interval.
			tw.SetKeep(f.interval + time.Second)
			first = false
		}
		if err := print(rep, clock.Wall(rep.Mono)); err != nil || !f.watch {
			return err
		}
	}
}

// twReuse reads net.ipv4.tcp_tw_reuse of our namespace, -1 when unknown.
func twReuse() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_tw_reuse")
	if err != nil {
		return -1
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return v
}

// localPortRange reads net.ipv4.ip_local_port_range of our namespace.
func localPortRange() ([2]uint16, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return [2]uint16{}, fmt.Errorf("read ip_local_port_range: %w", err)
	}
	fs := strings.Fields(string(b))
	if len(fs) != 2 {
		return [2]uint16{}, fmt.Errorf("ip_local_port_range: %q", b)
	}
	lo, err1 := strconv.ParseUint(fs[0], 10, 16)
	hi, err2 := strconv.ParseUint(fs[1], 10, 16)
	if err1 != nil || err2 != nil || lo > hi {
		return [2]uint16{}, fmt.Errorf("ip_local_port_range: %q", b)
	}
	return [2]uint16{uint16(lo), uint16(hi)}, nil
}

// ---- life --------------------------------------------------------------------

func newLifeCommand() *cobra.Command {
	var f traceFlags
	cmd := &cobra.Command{
		Use:   "life [flags]",
		Short: "One line per finished connection: owner, duration, bytes, how it ended",
		Long: `Print one line when a TCP connection ends (like bcc's tcplife, with correct
owners on both sides): the process that owned it at the end, local and
remote address, its duration from SYN to close in milliseconds ("-" when it
began before tcpscope), bytes sent (acknowledged by the peer) and received,
read from the socket at close, and how it ended: normal, reset-sent,
reset-received, timeout, refused or failed (another error, or a handshake
that never completed). The filters are trace's.`,
		Example: `  tcpscope life
  tcpscope life --port 443 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			markRan(cmd)
			return runLife(cmd.Context(), f, os.Stdout, os.Stderr)
		},
	}
	f.register(cmd.Flags(), false)
	return cmd
}

// lifeGrace is how long a closed connection waits for a reset record the
// kernel sends just after the close.
const lifeGrace = 20 * time.Millisecond

// lifeSink feeds events to a diag.Life and prints what it settles.
type lifeSink struct {
	life    *diag.Life
	out     *output.LifeWriter
	stderr  io.Writer
	conns   uint64
	lastErr error
	cancel  context.CancelFunc
	emit    func(*diag.Conn)
	pending atomic.Bool // connections wait for their grace: flush later
}

func (s *lifeSink) Event(e *event.Event) { s.life.Observe(e, s.emit) }

func (s *lifeSink) Drained() {
	s.life.Flush(ktime.Now(), false, s.emit)
	s.pending.Store(s.life.Pending() > 0)
	if s.lastErr == nil {
		if err := s.out.Flush(); err != nil {
			s.lastErr = err
			s.cancel()
		}
	}
}

func (s *lifeSink) Lost(st loader.Stats) {
	fmt.Fprintf(s.stderr, "tcpscope: lost events: %d so far (ring buffer full: %d, nested runs not recovered: %d)\n",
		st.Lost(), st.RingDrops, st.Unrecovered())
}

func runLife(ctx context.Context, f traceFlags, stdout, stderr io.Writer) error {
	spec, err := f.spec()
	if err != nil {
		return err
	}
	ring, err := parseSize(f.ringSize)
	if err != nil {
		return usagef("--ring-size: %v", err)
	}
	// Only the per-socket criteria go to the kernel: the owner changes from
	// the listener's to the acceptor's during a connection, and the
	// connection's first transition must not be filtered away.
	tr, err := loadTracer(stderr, loader.Config{RingBytes: ring, BTFPath: f.btf, Resets: true,
		Filter: loader.KernelFilter{Port: spec.Port, Family: spec.Family, NetNS: spec.NetNS}})
	if err != nil {
		return err
	}
	defer tr.Close()
	ctx, cancel := commandContext(ctx, stdout, true)
	defer cancel()
	format := output.Text
	if f.json {
		format = output.JSON
	}
	s := &lifeSink{
		life:   diag.NewLife(diag.LifeOptions{Match: spec.Match, Grace: lifeGrace}),
		out:    output.NewLifeWriter(stdout, ktime.NewClock(), output.TraceOptions{Format: format, NoHeader: f.noHeader}),
		stderr: stderr,
		cancel: cancel,
	}
	s.emit = func(c *diag.Conn) {
		s.conns++
		if s.lastErr == nil {
			if err := s.out.Write(c); err != nil {
				s.lastErr = err
				s.cancel()
			}
		}
	}
	// Drained runs only when events come or on a Barrier: a connection
	// waiting for its grace with nothing after it needs a Barrier.
	go func() {
		tick := time.NewTicker(lifeGrace)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if s.pending.Load() {
					tr.Barrier(ctx)
				}
			}
		}
	}()
	runErr := live.RunReader(live.RaisedReaderNice, func() error { return tr.Run(ctx, s) })
	s.life.Flush(0, true, s.emit)
	s.Drained()
	if !f.quiet {
		if st, err := tr.Stats(); err == nil {
			fmt.Fprintf(stderr, "tcpscope: summary: connections=%d lost=%d ring_drops=%d\n", s.conns, st.Lost(), st.RingDrops)
		}
	}
	if runErr != nil {
		return runErr
	}
	return outputError(s.lastErr)
}
