package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/filter"
	"github.com/tcpscope/tcpscope/tracer/ktime"
	"github.com/tcpscope/tcpscope/tracer/live"
	"github.com/tcpscope/tcpscope/tracer/loader"
	"github.com/tcpscope/tcpscope/tracer/output"
)

type traceFlags struct {
	json, wide, noHeader, ipv4, ipv6, quiet bool
	pid                                     uint32
	comm, laddr, raddr                      string
	port                                    uint16
	states                                  []string
	netns                                   uint32
	ringSize                                string
	btf                                     string
}

func newTraceCommand() *cobra.Command {
	var f traceFlags
	cmd := &cobra.Command{
		Use:   "trace [flags]",
		Short: "Log TCP state transitions live, like tcpstates, with correct owners",
		Long: `Log every TCP state transition as it happens: time, owning process, local and
remote address, OLD -> NEW state, and milliseconds spent in the old state
("-" when the socket predates tcpscope). Lines are flushed as they come, so
piping into grep or jq works live. Lost events are reported on stderr.`,
		Example: `  tcpscope trace
  tcpscope trace --port 443 --state close-wait
  tcpscope trace --json | jq 'select(.new == "CLOSE")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			markRan(cmd)
			return runTrace(cmd.Context(), f, os.Stdout, os.Stderr)
		},
	}
	f.register(cmd.Flags(), true)
	return cmd
}

// register adds the flags of trace to fl; life shares them but for the
// transition-only ones (--state, -w).
func (f *traceFlags) register(fl *pflag.FlagSet, transitions bool) {
	fl.BoolVar(&f.json, "json", false, "print one JSON object per line")
	if transitions {
		fl.BoolVarP(&f.wide, "wide", "w", false, "add thread id, on-CPU task, network namespace and socket cookie")
	}
	fl.BoolVar(&f.noHeader, "no-header", false, "omit the header line")
	fl.Uint32Var(&f.pid, "pid", 0, "only sockets owned by this process id")
	fl.StringVar(&f.comm, "comm", "", "only sockets owned by processes with this exact name")
	fl.Uint16Var(&f.port, "port", 0, "only this local or remote port")
	fl.StringVar(&f.laddr, "laddr", "", "only this local address or prefix (e.g. 10.0.0.0/8)")
	fl.StringVar(&f.raddr, "raddr", "", "only this remote address or prefix")
	if transitions {
		fl.StringSliceVar(&f.states, "state", nil, "only transitions from or to these states (repeatable, comma-separated; TIME_WAIT or time-wait)")
	}
	fl.BoolVarP(&f.ipv4, "ipv4", "4", false, "only IPv4 sockets")
	fl.BoolVarP(&f.ipv6, "ipv6", "6", false, "only IPv6 sockets")
	fl.Uint32Var(&f.netns, "netns", 0, "only this network namespace (inode, as in /proc/PID/ns/net)")
	fl.StringVar(&f.ringSize, "ring-size", "8M", "size of the ring buffers, one per CPU, together: a power of two (e.g. 4M, 64M)")
	fl.StringVar(&f.btf, "btf", "", "kernel BTF file to use instead of /sys/kernel/btf/vmlinux")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "no summary on stderr at exit")
	fl.SortFlags = false
}

func (f *traceFlags) spec() (filter.Spec, error) {
	s := filter.Spec{PID: f.pid, Comm: f.comm, Port: f.port, NetNS: f.netns}
	var err error
	if f.laddr != "" {
		if s.Local, err = filter.ParsePrefix(f.laddr); err != nil {
			return s, usagef("--laddr: %v", err)
		}
	}
	if f.raddr != "" {
		if s.Remote, err = filter.ParsePrefix(f.raddr); err != nil {
			return s, usagef("--raddr: %v", err)
		}
	}
	if s.States, err = filter.ParseStates(f.states); err != nil {
		return s, usagef("--state: %v", err)
	}
	switch {
	case f.ipv4 && f.ipv6:
		return s, usagef("-4 and -6 exclude each other")
	case f.ipv4:
		s.Family = event.IPv4
	case f.ipv6:
		s.Family = event.IPv6
	}
	return s, nil
}

// parseSize reads sizes such as 8M, 512K, 1G or plain bytes.
func parseSize(s string) (int, error) {
	mult := 1
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	switch {
	case strings.HasSuffix(t, "K"):
		mult, t = 1<<10, strings.TrimSuffix(t, "K")
	case strings.HasSuffix(t, "M"):
		mult, t = 1<<20, strings.TrimSuffix(t, "M")
	case strings.HasSuffix(t, "G"):
		mult, t = 1<<30, strings.TrimSuffix(t, "G")
	}
	var n int
	if _, err := fmt.Sscanf(t, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != t {
		return 0, fmt.Errorf("bad size %q: want e.g. 8M", s)
	}
	if n > (1<<31)/mult {
		return 0, fmt.Errorf("size %q too large", s)
	}
	n *= mult
	if n&(n-1) != 0 {
		return 0, fmt.Errorf("size %q is not a power of two", s)
	}
	return n, nil
}

// traceSink prints events that pass the user-space part of the filter.
type traceSink struct {
	spec    filter.Spec
	out     *output.TraceWriter
	stderr  io.Writer
	events  uint64
	lastErr error
	cancel  context.CancelFunc
}

func (s *traceSink) Event(e *event.Event) {
	s.events++
	if s.lastErr != nil || !s.spec.Match(e) {
		return
	}
	if err := s.out.Write(e); err != nil {
		s.fail(err)
	}
}

func (s *traceSink) Drained() {
	if s.lastErr == nil {
		if err := s.out.Flush(); err != nil {
			s.fail(err)
		}
	}
}

func (s *traceSink) Lost(st loader.Stats) {
	fmt.Fprintf(s.stderr, "tcpscope: lost events: %d so far (ring buffer full: %d, nested runs not recovered: %d)\n",
		st.Lost(), st.RingDrops, st.Unrecovered())
}

// fail stops the trace on an output error; a closed pipe is a normal end.
func (s *traceSink) fail(err error) {
	s.lastErr = err
	s.cancel()
}

func runTrace(ctx context.Context, f traceFlags, stdout, stderr io.Writer) error {
	spec, err := f.spec()
	if err != nil {
		return err
	}
	ring, err := parseSize(f.ringSize)
	if err != nil {
		return usagef("--ring-size: %v", err)
	}

	tr, err := loadTracer(stderr, loader.Config{
		RingBytes: ring,
		BTFPath:   f.btf,
		Filter: loader.KernelFilter{
			PID: spec.PID, Port: spec.Port, Family: spec.Family, NetNS: spec.NetNS, States: spec.States,
		},
	})
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
	sink := &traceSink{
		spec:   spec,
		out:    output.NewTraceWriter(stdout, ktime.NewClock(), output.TraceOptions{Format: format, Wide: f.wide, NoHeader: f.noHeader}),
		stderr: stderr,
		cancel: cancel,
	}
	runErr := live.RunReader(live.RaisedReaderNice, func() error { return tr.Run(ctx, sink) })
	sink.Drained()

	if !f.quiet {
		if st, err := tr.Stats(); err == nil {
			fmt.Fprintf(stderr, "tcpscope: summary: events=%d lost=%d ring_drops=%d nested_missed=%d nested_recovered=%d\n",
				sink.events, st.Lost(), st.RingDrops, st.MainMisses, st.Recovered)
		}
	}
	if runErr != nil {
		return runErr
	}
	if sink.lastErr != nil && !errors.Is(sink.lastErr, syscall.EPIPE) {
		return fmt.Errorf("write output: %w", sink.lastErr)
	}
	return nil
}

// commandContext is the context of a command that runs until Ctrl-C or
// SIGTERM. SIGPIPE is caught, so a write to a closed pipe returns EPIPE
// instead of killing the process; with watchPipe the context also ends when
// stdout is a pipe whose reader has gone, even if nothing is written.
func commandContext(parent context.Context, stdout io.Writer, watchPipe bool) (context.Context, context.CancelFunc) {
	if parent == nil {
		parent = context.Background()
	}
	sigCtx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(sigCtx)
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	if file, ok := stdout.(*os.File); ok && watchPipe {
		go watchClosedPipe(ctx, file, cancel)
	}
	return ctx, func() { cancel(); stop() }
}

// watchClosedPipe ends the trace when stdout is a pipe whose reader has
// gone, even if no event comes to make a write fail.
func watchClosedPipe(ctx context.Context, f *os.File, cancel context.CancelFunc) {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return
	}
	fds := []unix.PollFd{{Fd: int32(f.Fd())}}
	for ctx.Err() == nil {
		n, err := unix.Poll(fds, 200)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		if n > 0 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0 {
			cancel()
			return
		}
	}
}
