package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tcpscope/tcpscope/tracer/cgroup"
	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/filter"
	"github.com/tcpscope/tcpscope/tracer/ktime"
	"github.com/tcpscope/tcpscope/tracer/live"
	"github.com/tcpscope/tcpscope/tracer/loader"
	"github.com/tcpscope/tcpscope/tracer/netstat"
	"github.com/tcpscope/tcpscope/tracer/sockdiag"
	"github.com/tcpscope/tcpscope/tracer/table"
)

type netstatFlags struct {
	all, listening, tcp, udp, unix                   bool
	numeric, numHosts, numPorts, numUsers            bool
	program, timers, ipv4, ipv6, wide, continuous    bool
	statistics, age, json, summary, perNetNS, noName bool
	bpfWalk                                          bool
	extend                                           int
	states                                           []string
	sortBy                                           string
	ringSize, btf                                    string
	serverFlags
}

func newNetstatCommand() *cobra.Command {
	var f netstatFlags
	cmd := &cobra.Command{
		Use:   "netstat [flags]",
		Short: "The TCP part of netstat, from a live table: same lines, plus owners and ages",
		Long: `Print TCP sockets exactly as net-tools netstat prints them (same headers,
columns and names, so existing greps and scripts keep working), from tcpscope's
socket table: seeded from the kernel with a BPF iterator, then kept current by
events. Recv-Q, Send-Q and timers are read from the kernel at print time.
A plain one-shot list (no -c, -p, -o, --age, --json, --sort age|pid) reads
the kernel's sock_diag dump instead, as ss does: up to 40k sockets, where it
is the faster walk, and whenever BPF may not be loaded (a dump needs no
privilege).

Beyond netstat: --state, --age (time in the current state), --sort, --json,
--summary (per-state counts, instantly), and -c that reprints when the table
changes rather than every second.

Only TCP is traced; -u and -x are refused.`,
		Example: `  tcpscope netstat -antp
  tcpscope netstat -lnt
  tcpscope netstat -ant --state time-wait | wc -l
  tcpscope netstat --summary
  tcpscope netstat -antp --state close-wait --age --sort age`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			markRan(cmd)
			return runNetstat(cmd.Context(), f, os.Stdout, os.Stderr)
		},
	}
	bindNetstatFlags(cmd.Flags(), &f)
	return cmd
}

// bindNetstatFlags defines netstat's flags on fl, to be parsed into f.
func bindNetstatFlags(fl *pflag.FlagSet, f *netstatFlags) {
	fl.BoolVarP(&f.all, "all", "a", false, "listening and non-listening sockets")
	fl.BoolVarP(&f.listening, "listening", "l", false, "only listening sockets")
	fl.BoolVarP(&f.tcp, "tcp", "t", false, "TCP sockets (the only kind traced)")
	fl.BoolVarP(&f.udp, "udp", "u", false, "UDP sockets: not traced, refused")
	fl.BoolVarP(&f.unix, "unix", "x", false, "unix sockets: not traced, refused")
	fl.BoolVarP(&f.numeric, "numeric", "n", false, "numeric addresses, ports and users")
	fl.BoolVar(&f.numHosts, "numeric-hosts", false, "numeric host addresses")
	fl.BoolVar(&f.numPorts, "numeric-ports", false, "numeric ports")
	fl.BoolVar(&f.numUsers, "numeric-users", false, "numeric user ids")
	fl.BoolVarP(&f.program, "program", "p", false, "PID/Program name of the owning process")
	fl.CountVarP(&f.extend, "extend", "e", "User and Inode columns")
	fl.BoolVarP(&f.timers, "timers", "o", false, "socket timers, as netstat prints them")
	fl.BoolVarP(&f.ipv4, "inet", "4", false, "only IPv4 sockets")
	fl.BoolVarP(&f.ipv6, "inet6", "6", false, "only IPv6 sockets")
	fl.BoolVarP(&f.wide, "wide", "W", false, "do not truncate addresses")
	fl.BoolVarP(&f.continuous, "continuous", "c", false, "print again whenever the table changes, until interrupted")
	fl.BoolVarP(&f.statistics, "statistics", "s", false, "the kernel's Tcp: counters, transitions since start, sockets per state")
	fl.StringSliceVar(&f.states, "state", nil, "only sockets in these states (repeatable, comma-separated; TIME_WAIT or time-wait)")
	fl.BoolVar(&f.age, "age", false, "add a column: time in the current state (>= when it predates tcpscope)")
	fl.StringVar(&f.sortBy, "sort", "", "sort by age, state, local, remote or pid (default: kernel order, as netstat)")
	fl.BoolVar(&f.json, "json", false, "one JSON object per socket")
	fl.BoolVar(&f.summary, "summary", false, "socket counts per state for the whole host")
	fl.BoolVar(&f.perNetNS, "netns", false, "with --summary: also per network namespace")
	fl.StringVar(&f.ringSize, "ring-size", "8M", "size of the ring buffers, one per CPU, together: a power of two (e.g. 4M, 64M)")
	fl.StringVar(&f.btf, "btf", "", "kernel BTF file to use instead of /sys/kernel/btf/vmlinux")
	// Hidden: for comparing the two sources of a plain one-shot view.
	fl.BoolVar(&f.bpfWalk, "bpf-walk", false, "read a plain one-shot view's sockets with the BPF iterator, not sock_diag")
	fl.MarkHidden("bpf-walk")
	f.serverFlags.register(fl)
	fl.SortFlags = false
}

// netstatView is what one print needs, checked once.
type netstatView struct {
	opts   netstat.Options
	states event.StateMask
	sortBy string
}

func (f *netstatFlags) view() (netstatView, error) {
	v := netstatView{sortBy: f.sortBy}
	if (f.udp || f.unix) && !f.tcp {
		return v, usagef("only TCP sockets are traced: -u (UDP) and -x (unix) are not supported; use ss -u/-x")
	}
	if f.ipv4 && f.ipv6 {
		return v, usagef("-4 and -6 exclude each other")
	}
	states, err := filter.ParseStates(f.states)
	if err != nil {
		return v, usagef("--state: %v", err)
	}
	v.states = states
	switch f.sortBy {
	case "", "age", "state", "local", "remote", "pid":
	default:
		return v, usagef("--sort %q: want age, state, local, remote or pid", f.sortBy)
	}
	if f.perNetNS && !f.summary {
		return v, usagef("--netns goes with --summary")
	}
	if err := f.serverFlags.check(); err != nil {
		return v, err
	}
	o := &v.opts
	o.All, o.Listening = f.all, f.listening
	// --state picks its own sockets: a LISTEN state implies listeners.
	if states != 0 {
		o.All = true
	}
	o.NumericHosts = f.numeric || f.numHosts
	o.NumericPorts = f.numeric || f.numPorts
	o.NumericUsers = f.numeric || f.numUsers
	o.Wide, o.Extend, o.Program, o.Timers, o.Age, o.JSON = f.wide, f.extend, f.program, f.timers, f.age, f.json
	switch {
	case f.ipv4:
		o.Family = event.IPv4
	case f.ipv6:
		o.Family = event.IPv6
	}
	clock := ktime.NewClock()
	o.Wall = clock.Wall
	return v, nil
}

// plainOneShot says whether the view is a one-shot socket list that prints
// only what the kernel's sock_diag dump has for every socket (no owners,
// ages, timers or JSON's extras): such a view can read the sockets as ss
// does, with no BPF program, so no kernel BTF to decode (which alone took
// longer than ss's whole run below ~40k sockets) and no privilege. --btf
// asks for the BPF iterator, as does --bpf-walk.
func (f *netstatFlags) plainOneShot(v netstatView) bool {
	o := v.opts
	return !f.continuous && !f.summary && !f.statistics && f.btf == "" && !f.bpfWalk &&
		!o.Program && !o.Timers && !o.JSON && !o.Age && v.sortBy != "age" && v.sortBy != "pid"
}

// diagSocketsMax is the number of sockets up to which a sock_diag dump is
// the cheaper walk. A dump has no fixed cost to speak of, but the kernel
// fills a netlink message per socket (~1.7 us each here, on our CPU); the
// BPF iterator costs ~30 ms before its first socket (BTF decoding, program
// load) and then ~1 us per socket, its kernel walk overlapping the decoding
// on another CPU. Measured 2026-12-06 (2 vCPUs), whole command: 1k sockets
// 14 ms against 43, 10k 32 against 50, 36.5k 94 against 106, 50k 113
// against 90.
const diagSocketsMax = 40000

// fewSockets says whether the caller's namespace holds few enough sockets
// for a sock_diag dump to be the cheaper walk.
func fewSockets() bool {
	n, err := sockdiag.Count()
	return err == nil && n <= diagSocketsMax
}

// diagSockets is a sock_diag dump of the caller's network namespace.
func diagSockets() ([]event.Socket, error) {
	netns, err := loader.OwnNetNS()
	if err != nil {
		return nil, err
	}
	return sockdiag.TCP(nil, netns)
}

// printOneShot prints one walk's sockets, with no table behind them, straight
// to stdout (buffered by the writers); they are in their states at least
// since walkMono, when the walk began (0 for a view without ages).
func printOneShot(stdout io.Writer, socks []event.Socket, walkMono uint64, v netstatView) error {
	out := &recordErr{w: stdout}
	err := printSockets(out, socks, table.New(), walkMono, v)
	if out.err != nil {
		return outputError(out.err)
	}
	return err
}

// ownerSeed picks the cheapest way to know the owners of existing sockets
// that still gives this view what it prints: -c keeps them in the kernel
// (its events need them), a one-shot view joins them with its one walk, and
// views without owners skip them.
func (f *netstatFlags) ownerSeed(v netstatView) loader.OwnerSeed {
	switch {
	case f.continuous:
		return loader.OwnersOnEvents
	case f.summary || f.statistics:
		return loader.OwnersNone
	case v.opts.Program || v.opts.JSON || v.sortBy == "pid":
		return loader.OwnersAtWalk
	}
	return loader.OwnersNone
}

func runNetstat(ctx context.Context, f netstatFlags, stdout, stderr io.Writer) error {
	v, err := f.view()
	if err != nil {
		return err
	}
	ring, err := parseSize(f.ringSize)
	if err != nil {
		return usagef("--ring-size: %v", err)
	}
	if f.udp || f.unix {
		fmt.Fprintln(stderr, "tcpscope: only TCP sockets are traced: UDP and unix sockets are not shown")
	}
	if f.server != "" {
		ctx, cancel := commandContext(ctx, stdout, false)
		defer cancel()
		return remoteNetstat(ctx, f, v, stdout)
	}
	if !f.continuous {
		// A one-shot view only grows its heap (a walk of every socket,
		// then its rows) and exits: collecting at every doubling would
		// rescan it for nothing.
		debug.SetGCPercent(400)
	}

	ctx, cancel := commandContext(ctx, stdout, f.continuous)
	defer cancel()

	// A plain view reads a sock_diag dump when that is the cheaper walk, or
	// when this process may not load BPF programs (a dump needs no
	// privilege, so a plain view works for anyone, as ss does).
	if f.plainOneShot(v) {
		capErr := loader.CheckCapabilities()
		if capErr != nil || fewSockets() {
			socks, err := diagSockets()
			if err == nil {
				return printOneShot(stdout, socks, 0, v)
			}
			// A kernel without tcp_diag, or netlink forbidden here: the
			// iterator may still work.
			if capErr != nil {
				return fmt.Errorf("%w; nor can the BPF iterator stand in: %w", err, capErr)
			}
		}
	}

	// A continuous socket list shows the caller's namespace only, as
	// netstat does: its table follows that namespace alone, with the
	// kernel dropping every other namespace's events before the ring
	// buffer, so that churn elsewhere on the host (other pods) cannot
	// overflow its ring (a 50k connections/s churn in another namespace
	// made -c lose 340k events a run before). --summary and --statistics
	// count the whole host.
	var filter loader.KernelFilter
	ownOnly := f.continuous && !f.summary && !f.statistics
	if ownOnly {
		if filter.NetNS, err = loader.OwnNetNS(); err != nil {
			return err
		}
	}
	// A one-shot view prints one walk: it loads only the iterators and
	// attaches nothing (the same table and printing code as -c).
	tr, err := loadTracer(stderr, loader.Config{RingBytes: ring, BTFPath: f.btf, Sockets: true, Owners: f.ownerSeed(v), Filter: filter,
		WalksOnly: !f.continuous,
		// A one-shot view that prints no timers and no ages needs neither in
		// its walk (-c walks again at each print).
		BareWalks: !f.continuous && !v.opts.Timers && !v.opts.JSON && !v.opts.Age && v.sortBy != "age"})
	if err != nil {
		return err
	}
	defer tr.Close()

	if !f.continuous && !f.summary && !f.statistics {
		// A one-shot socket list is one walk of our namespace, printed
		// by the same code as -c. Seeding a table from it would add
		// nothing: a socket no event was seen for is in its state at
		// least since the walk, table or not.
		mono := ktime.Now()
		socks, err := tr.Sockets(nil)
		if err != nil {
			return err
		}
		return printOneShot(stdout, socks, mono, v)
	}

	tab := table.New()
	lv, err := live.Start(ctx, liveSource(tr, filter.NetNS), tab, live.Options{
		Notify:     func(msg string) { fmt.Fprintf(stderr, "tcpscope: %s\n", msg) },
		ReaderNice: live.RaisedReaderNice,
	})
	if err != nil {
		return err
	}
	defer func() {
		cancel()
		lv.Wait()
	}()
	lv.TakeSeed() // views walk again at each print: free the seed's

	render := func(w io.Writer) error {
		switch {
		case f.summary:
			return writeSummary(w, tab, f.perNetNS)
		case f.statistics:
			return writeStatistics(w, tab)
		}
		return writeSockets(w, tr, tab, lv, v)
	}
	if !f.continuous {
		// One print: straight to stdout (buffered by the writers), not
		// through a copy of the whole output.
		out := &recordErr{w: stdout}
		err := render(out)
		if out.err != nil {
			return outputError(out.err)
		}
		return err
	}

	// -c: each print is rendered whole, then written; a print that would
	// repeat the previous one is skipped (the table changed in a way this
	// view does not show, e.g. a timer).
	var cur, prev bytes.Buffer
	if err := render(&cur); err != nil {
		return err
	}
	if _, err := stdout.Write(cur.Bytes()); err != nil {
		return outputError(err)
	}

	// -c: print again when the table changes, at most every minGap.
	const minGap = 250 * time.Millisecond
	last := time.Now()
	for {
		prev, cur = cur, prev
		select {
		case <-ctx.Done():
			return nil
		case <-lv.Done():
			return lv.Wait()
		case <-tab.Changed():
		}
		if gap := minGap - time.Since(last); gap > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(gap):
			}
		}
		last = time.Now()
		cur.Reset()
		if err := render(&cur); err != nil {
			return err
		}
		if bytes.Equal(cur.Bytes(), prev.Bytes()) {
			cur, prev = prev, cur // keep the last printed one as prev
			continue
		}
		sep := []byte("\n")
		if f.json {
			sep = nil
		}
		if _, err := stdout.Write(append(sep, cur.Bytes()...)); err != nil {
			return outputError(err)
		}
	}
}

// recordErr keeps the first write error, to tell a closed stdout (not an
// error of ours) from a failed walk.
type recordErr struct {
	w   io.Writer
	err error
}

func (r *recordErr) Write(p []byte) (int, error) {
	n, err := r.w.Write(p)
	if err != nil && r.err == nil {
		r.err = err
	}
	return n, err
}

func outputError(err error) error {
	if err == nil || errors.Is(err, syscall.EPIPE) {
		return nil
	}
	return fmt.Errorf("write output: %w", err)
}

// writeSockets prints -c's view: a walk at print time (Recv-Q, Send-Q and
// timers as the kernel has them now), ages from the table.
func writeSockets(w io.Writer, tr *loader.Tracer, tab *table.Table, lv *live.Live, v netstatView) error {
	socks, err := tr.Sockets(nil)
	if err != nil {
		return err
	}
	return printSockets(w, socks, tab, lv.SeedMono(), v)
}

// printSockets prints a walk's sockets in the view's format, with ages from
// tab; sockets tab has seen no event for are in their state at least since
// seedMono.
func printSockets(w io.Writer, socks []event.Socket, tab *table.Table, seedMono uint64, v netstatView) error {
	// Only these print ages; the table lookup costs a cache miss a row.
	needAge := v.opts.Age || v.opts.JSON || v.sortBy == "age"
	rows := netstat.JoinRows(socks, tab, seedMono, ktime.Now(), v.states, needAge)
	sortRows(rows, v.sortBy)
	opts := v.opts
	if opts.Program && !opts.JSON {
		opts.ProgramName = programNames()
	}
	if opts.JSON {
		// Each owner's cgroup and container, as the agent's API has them.
		opts.Cgroup = (&cgroup.Resolver{}).Of
	}
	return netstat.Write(w, rows, opts)
}

func sortRows(rows []netstat.Row, by string) {
	cmpAddr := func(a, b netip.AddrPort) int { return a.Compare(b) }
	var order func(a, b *netstat.Row) int
	switch by {
	case "age":
		order = func(a, b *netstat.Row) int { return cmp.Compare(b.Age, a.Age) } // oldest first
	case "state":
		order = func(a, b *netstat.Row) int { return strings.Compare(a.State.String(), b.State.String()) }
	case "local":
		order = func(a, b *netstat.Row) int { return cmpAddr(a.Local, b.Local) }
	case "remote":
		order = func(a, b *netstat.Row) int { return cmpAddr(a.Remote, b.Remote) }
	case "pid":
		order = func(a, b *netstat.Row) int { return cmp.Compare(a.Owner.PID, b.Owner.PID) }
	default:
		return
	}
	slices.SortStableFunc(rows, func(a, b netstat.Row) int { return order(&a, &b) })
}

func writeSummary(w io.Writer, tab *table.Table, perNetNS bool) error {
	byNS := map[uint32]*netstat.StateCounts{}
	for ns, c := range tab.CountsByNetNS() {
		sc := netstat.StateCounts(c)
		byNS[ns] = &sc
	}
	return netstat.WriteSummary(w, byNS, perNetNS)
}

func writeStatistics(w io.Writer, tab *table.Table) error {
	snmp, err := os.Open("/proc/net/snmp")
	if err != nil {
		return fmt.Errorf("read TCP counters: %w", err)
	}
	defer snmp.Close()
	ext, err := os.Open("/proc/net/netstat")
	if err != nil {
		return fmt.Errorf("read TCP counters: %w", err)
	}
	defer ext.Close()
	if err := netstat.WriteTCPStats(w, snmp, ext); err != nil {
		return err
	}
	fmt.Fprintln(w)
	return netstat.WriteTransitions(w, tab.Transitions(), tab.Counts())
}

// programNames returns netstat's name for a process: the base name of its
// argv[0] (netstat strips the directory only from an absolute path), read
// once per process per print. Processes that have gone, or have an empty
// command line (kernel threads), keep the kernel's comm.
func programNames() func(pid uint32) ([]byte, bool) {
	cache := map[uint32][]byte{}
	return func(pid uint32) ([]byte, bool) {
		if name, ok := cache[pid]; ok {
			return name, name != nil
		}
		var name []byte
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && len(cmdline) > 0 {
			if i := bytes.IndexByte(cmdline, 0); i >= 0 {
				cmdline = cmdline[:i]
			}
			if len(cmdline) > 0 && cmdline[0] == '/' {
				cmdline = cmdline[bytes.LastIndexByte(cmdline, '/')+1:]
			}
			if len(cmdline) > 0 {
				name = cmdline
			}
		}
		cache[pid] = name
		return name, name != nil
	}
}

// liveSource is the live table's source for a tracer whose events are
// filtered to network namespace netns (the caller's) in the kernel: one
// that walks that namespace alone. netns 0: the tracer, walking them all.
func liveSource(tr *loader.Tracer, netns uint32) live.Source {
	if netns == 0 {
		return tr
	}
	return ownNetNSSource{tr: tr, ino: netns}
}

// ownNetNSSource is the tracer, walking only the caller's network namespace
// (Tracer.AllSockets would seed and resync the table with every namespace
// of the host).
type ownNetNSSource struct {
	tr  *loader.Tracer
	ino uint32
}

func (o ownNetNSSource) Run(ctx context.Context, sink loader.Sink) error { return o.tr.Run(ctx, sink) }
func (o ownNetNSSource) Barrier(ctx context.Context) error               { return o.tr.Barrier(ctx) }

func (o ownNetNSSource) AllSockets(dst []event.Socket) ([]event.Socket, map[uint32]bool, error) {
	socks, err := o.tr.Sockets(dst)
	return socks, map[uint32]bool{o.ino: true}, err
}
