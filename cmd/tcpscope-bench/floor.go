package main

// The floor (bpf/floor.bpf.c): the least any tool can do and still hand
// every TCP transition to user space, or walk every TCP socket. The bench
// runs it as one more peer, as a child of its own, so that the report can
// tell what share of tcpscope's cost any such tool would pay here.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/tcpscope/tcpscope/tracer/event"
)

const (
	// floorTraceArg makes this binary the floor tracer: it runs until
	// SIGINT or SIGTERM and then prints floorSummaryRE's line on stderr.
	floorTraceArg = "floor-trace"
	// floorWalkArg makes this binary the floor one-shot view: one iter/tcp
	// walk of its network namespace, printed as a count per state.
	floorWalkArg = "floor-walk"
	// floorBatch is how long the floor's reader sleeps between polls of the
	// ring: tcpscope's default batch.
	floorBatch = time.Millisecond
)

var floorSummaryRE = regexp.MustCompile(`(?m)^floor: records=(\d+) drops=(\d+)\s*$`)

// floorTraceObjects is what floor-trace loads of the object (LoadAndAssign
// loads only what it names: not the walk).
type floorTraceObjects struct {
	State  *ebpf.Program `ebpf:"floor_state"`
	Events *ebpf.Map     `ebpf:"floor_events"`
	Drops  *ebpf.Map     `ebpf:"floor_drops"`
}

func (o *floorTraceObjects) Close() {
	for _, c := range []io.Closer{o.State, o.Events, o.Drops} {
		if c != nil {
			_ = c.Close()
		}
	}
}

func floorTrace(args []string) int {
	fs := flag.NewFlagSet(floorTraceArg, flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	records, drops, err := runFloorTrace(ctx, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "floor: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "floor: records=%d drops=%d\n", records, drops)
	return 0
}

// runFloorTrace attaches the floor tracer, closes attached (when not nil)
// once it is, and reads and discards records until ctx ends; then it takes
// what the ring still holds and returns how many records it read and how
// many the full ring refused.
func runFloorTrace(ctx context.Context, attached chan<- struct{}) (records, drops uint64, err error) {
	spec, err := loadFloor()
	if err != nil {
		return 0, 0, fmt.Errorf("load floor spec: %w", err)
	}
	var objs floorTraceObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return 0, 0, fmt.Errorf("load floor_state: %w", err)
	}
	defer objs.Close()
	rd, err := ringbuf.NewReader(objs.Events)
	if err != nil {
		return 0, 0, fmt.Errorf("open floor ring: %w", err)
	}
	defer rd.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: objs.State})
	if err != nil {
		return 0, 0, fmt.Errorf("attach floor_state: %w", err)
	}
	if attached != nil {
		close(attached)
	}

	var rec ringbuf.Record
	drain := func() error {
		rd.SetDeadline(time.Now())
		for {
			if err := rd.ReadInto(&rec); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					return nil
				}
				return err
			}
			if len(rec.RawSample) != event.Size {
				return fmt.Errorf("floor record of %d bytes, want %d", len(rec.RawSample), event.Size)
			}
			records++
		}
	}
	t := time.NewTimer(floorBatch)
	defer t.Stop()
	for ctx.Err() == nil {
		start := time.Now()
		if err := drain(); err != nil {
			_ = l.Close()
			return records, 0, fmt.Errorf("read floor ring: %w", err)
		}
		t.Reset(time.Until(start.Add(floorBatch)))
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	if err := l.Close(); err != nil {
		return records, 0, fmt.Errorf("detach floor_state: %w", err)
	}
	if err := drain(); err != nil {
		return records, 0, fmt.Errorf("read floor ring: %w", err)
	}
	var perCPU []uint64
	if err := objs.Drops.Lookup(uint32(0), &perCPU); err != nil {
		return records, 0, fmt.Errorf("read floor_drops: %w", err)
	}
	for _, n := range perCPU {
		drops += n
	}
	return records, drops, nil
}

func floorWalk(args []string) int {
	fs := flag.NewFlagSet(floorWalkArg, flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	counts, err := runFloorWalk()
	if err != nil {
		fmt.Fprintf(os.Stderr, "floor: %v\n", err)
		return 1
	}
	for state, n := range counts {
		if n > 0 {
			fmt.Printf("%s %d\n", event.State(state), n)
		}
	}
	return 0
}

// runFloorWalk walks the TCP sockets of the calling thread's network
// namespace with floor_walk and counts them by state (index: the kernel's
// state number).
func runFloorWalk() (counts [256]uint64, err error) {
	spec, err := loadFloor()
	if err != nil {
		return counts, fmt.Errorf("load floor spec: %w", err)
	}
	var objs struct {
		Walk *ebpf.Program `ebpf:"floor_walk"`
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return counts, fmt.Errorf("load floor_walk: %w", err)
	}
	defer objs.Walk.Close()
	l, err := link.AttachIter(link.IterOptions{Program: objs.Walk})
	if err != nil {
		return counts, fmt.Errorf("attach floor_walk: %w", err)
	}
	defer l.Close()
	rd, err := l.Open()
	if err != nil {
		return counts, fmt.Errorf("open floor_walk: %w", err)
	}
	defer rd.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := rd.Read(buf)
		for _, s := range buf[:n] {
			counts[s]++
		}
		if err == io.EOF || (err == nil && n == 0) {
			return counts, nil
		}
		if err != nil {
			return counts, fmt.Errorf("read floor_walk: %w", err)
		}
	}
}

// parseFloorSummary reads the floor tracer's exit line.
func parseFloorSummary(stderr string) (records, drops uint64, ok bool) {
	all := floorSummaryRE.FindAllStringSubmatch(stderr, -1)
	if len(all) == 0 {
		return 0, 0, false
	}
	m := all[len(all)-1]
	records, _ = strconv.ParseUint(m[1], 10, 64)
	drops, _ = strconv.ParseUint(m[2], 10, 64)
	return records, drops, true
}

// startFloor runs this binary's floor tracer and waits until its program is
// attached (a BPF link in its fd table).
func startFloor(ctx context.Context) (*tracerProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this binary: %w", err)
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer null.Close()
	p, err := startProc("floor", null, self, floorTraceArg)
	if err != nil {
		return nil, err
	}
	pid := p.cmd.Process.Pid
	if err := p.waitReady(ctx, 20*time.Second, func() bool { return countFDs(pid, "anon_inode:bpf_link") >= 1 }); err != nil {
		return nil, err
	}
	return p, nil
}
