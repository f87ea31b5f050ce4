package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/filter"
	"github.com/tcpscope/tcpscope/tracer/ktime"
	"github.com/tcpscope/tcpscope/tracer/live"
	"github.com/tcpscope/tcpscope/tracer/loader"
	"github.com/tcpscope/tcpscope/tracer/table"
	"github.com/tcpscope/tcpscope/tracer/topview"
	"github.com/tcpscope/tcpscope/tracer/topview/tui"
)

type topFlags struct {
	netns, state, process, sortBy string
	batch                         bool
	iterations, rows              int
	interval                      time.Duration
	ringSize, btf                 string
}

func newTopCommand() *cobra.Command {
	var f topFlags
	cmd := &cobra.Command{
		Use:   "top [flags]",
		Short: "Full-screen live view: sockets per state, rates, top processes, CLOSE_WAIT and TIME_WAIT hot spots",
		Long: `Show the live socket table full screen: sockets per state with a sparkline of
how many entered each state per second, transitions per second, the processes
holding the most sockets in each state, the local ports and peers shared by
many CLOSE_WAIT or TIME_WAIT sockets, and the lost-event and resync counters.
The screen is redrawn when the table changes (at most 4 times a second), not
on a timer.

Keys: f/F cycle the state filter, / filters by process (pid or name),
s changes the sort, c clears the filters, ? shows help, q quits.

When stdout is not a terminal (or with --batch) it prints a plain text
snapshot every --interval instead, until interrupted or -n prints.`,
		Example: `  tcpscope top
  tcpscope top --netns myns --state close-wait
  tcpscope top --batch -n 1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			markRan(cmd)
			return runTop(cmd.Context(), f, os.Stdin, os.Stdout, os.Stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.netns, "netns", "", "only this network namespace: its inode (as in /proc/PID/ns/net) or its name under /run/netns")
	fl.StringVar(&f.state, "state", "", "start with the process panel filtered to this state (e.g. close-wait)")
	fl.StringVar(&f.process, "process", "", "start filtered to this process: a pid, or part of its name")
	fl.StringVar(&f.sortBy, "sort", "count", "sort processes by count, pid, name or state")
	fl.BoolVarP(&f.batch, "batch", "b", false, "plain text output even on a terminal")
	fl.IntVarP(&f.iterations, "iterations", "n", 0, "plain output: stop after this many prints (0: until interrupted)")
	fl.DurationVarP(&f.interval, "interval", "d", 2*time.Second, "plain output: time between prints")
	fl.IntVar(&f.rows, "rows", 10, "plain output: processes and hot spots printed per section")
	fl.StringVar(&f.ringSize, "ring-size", "8M", "size of the ring buffers, one per CPU, together: a power of two (e.g. 4M, 64M)")
	fl.StringVar(&f.btf, "btf", "", "kernel BTF file to use instead of /sys/kernel/btf/vmlinux")
	fl.SortFlags = false
	return cmd
}

// query checks the flags that pick what is shown.
func (f *topFlags) query() (topview.Query, error) {
	var q topview.Query
	if f.state != "" {
		mask, err := filter.ParseStates([]string{f.state})
		if err != nil {
			return q, usagef("--state: %v", err)
		}
		for _, st := range topview.States {
			if mask.Has(st) {
				q.State = st
				break
			}
		}
		if mask.Has(event.NewSynRecv) {
			q.State = event.SynRecv
		}
		if q.State == 0 {
			return q, usagef("--state %s: no socket is ever shown in that state", f.state)
		}
	}
	q.Process = f.process
	s, ok := topview.ParseSort(f.sortBy)
	if !ok {
		return q, usagef("--sort %q: want count, pid, name or state", f.sortBy)
	}
	q.Sort = s
	if f.iterations < 0 {
		return q, usagef("-n %d: want 0 or more", f.iterations)
	}
	if f.interval <= 0 {
		return q, usagef("--interval %v: want a positive duration", f.interval)
	}
	if f.rows <= 0 {
		return q, usagef("--rows %d: want 1 or more", f.rows)
	}
	return q, nil
}

// parseNetNS reads --netns: an inode number, or a name that `ip netns`
// created under /run/netns.
func parseNetNS(s string) (uint32, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.ParseUint(s, 10, 32); err == nil && n > 0 {
		return uint32(n), nil
	}
	if s == "." || s == ".." || filepath.Base(s) != s {
		return 0, usagef("--netns %q: want an inode number or a name under /run/netns", s)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join("/run/netns", s), &st); err != nil {
		return 0, usagef("--netns %q: not an inode number, and no such namespace under /run/netns", s)
	}
	return uint32(st.Ino), nil
}

func runTop(ctx context.Context, f topFlags, stdin io.Reader, stdout, stderr io.Writer) error {
	q, err := f.query()
	if err != nil {
		return err
	}
	ns, err := parseNetNS(f.netns)
	if err != nil {
		return err
	}
	ring, err := parseSize(f.ringSize)
	if err != nil {
		return usagef("--ring-size: %v", err)
	}
	out, isFile := stdout.(*os.File)
	plain := f.batch || f.iterations > 0 || !isFile || !tui.IsTerminal(out)

	ctx, cancel := commandContext(ctx, stdout, plain)
	defer cancel()

	tr, err := loader.New(loader.Config{RingBytes: ring, BTFPath: f.btf, Sockets: true})
	if err != nil {
		return err
	}
	defer tr.Close()
	// On the full screen, stderr lines would be drawn over: they are kept
	// for after it closes.
	var later []string
	note := func(msg string) {
		if plain {
			fmt.Fprintf(stderr, "tcpscope: %s\n", msg)
		} else {
			later = append(later, msg)
		}
	}
	for _, w := range tr.Warnings() {
		note("warning: " + w)
	}

	tab := table.New()
	var lv *live.Live
	model := topview.New(tab, topview.Options{
		NetNS: ns,
		Now:   ktime.Now,
		Counters: func() topview.Counters {
			var c topview.Counters
			if st, err := tr.Stats(); err == nil {
				c.Lost = st.Lost()
			}
			if lv != nil {
				c.Resyncs = lv.Resyncs()
			}
			return c
		},
	})
	// Notify runs on the tracer's goroutine. With the screen up, resyncs
	// are counted on it and the messages (the first few) go to stderr when
	// it closes.
	msgs := make(chan string, 16)
	lv, err = live.Start(ctx, tr, tab, live.Options{
		ReaderNice: live.RaisedReaderNice,
		Notify: func(msg string) {
			if plain {
				fmt.Fprintf(stderr, "tcpscope: %s\n", msg)
				return
			}
			select {
			case msgs <- msg:
			default:
			}
		},
	})
	if err != nil {
		return err
	}
	wait := sync.OnceValue(lv.Wait) // Wait may be called once only
	defer func() {
		cancel()
		wait()
		close(msgs)
		for m := range msgs {
			later = append(later, m)
		}
		for _, m := range later {
			fmt.Fprintf(stderr, "tcpscope: %s\n", m)
		}
	}()

	if plain {
		err = tui.RunPlain(ctx, model, stdout, q, f.interval, f.iterations, f.rows, lv.Done(), wait)
		return outputError(err)
	}
	return tui.Run(ctx, model, tui.Options{Query: q, Done: lv.Done(), DoneErr: wait, Input: stdin, Output: stdout})
}
