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
	"github.com/tcpscope/tcpscope/tracer/loader"
)

const (
	// floorTraceArg makes this binary the floor tracer: it runs until
	// SIGINT or SIGTERM and then prints floorSummaryRE's line on stderr.
	floorTraceArg = "floor-trace"
	// floorWalkArg makes this binary the floor one-shot view: one iter/tcp
	// walk of its network namespace, printed as a count per state.
	floorWalkArg = "floor-walk"
	// floorBatch is how long the floor's reader sleeps between polls of the
	// rings: tcpscope's default batch.
	floorBatch = time.Millisecond
	// floorRingBytes is the rings' size together: tcpscope's default, each
	// CPU's share as tcpscope computes it.
	floorRingBytes = 8 << 20
)

var floorSummaryRE = regexp.MustCompile(`(?m)^floor: records=(\d+) drops=(\d+) missed=(\d+)\s*$`)

// floorTraceObjects is what floor-trace loads of the object (LoadAndAssign
// loads only what it names: not the walk).
type floorTraceObjects struct {
	State *ebpf.Program `ebpf:"floor_state"`
	Rings *ebpf.Map     `ebpf:"floor_rings"`
	Drops *ebpf.Map     `ebpf:"floor_drops"`
}

func (o *floorTraceObjects) Close() {
	for _, c := range []io.Closer{o.State, o.Rings, o.Drops} {
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
	res, err := runFloorTrace(ctx, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "floor: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "floor: records=%d drops=%d missed=%d\n", res.records, res.drops, res.missed)
	return 0
}

// floorResult is what the floor tracer counted.
type floorResult struct {
	records uint64 // read from the ring
	drops   uint64 // refused by the full ring
	missed  uint64 // firings the kernel skipped: the program was already running on that CPU
}

// runFloorTrace attaches the floor tracer, closes attached (when not nil)
// once it is, and reads and discards records until ctx ends; then it takes
// what the ring still holds and returns its counts.
func runFloorTrace(ctx context.Context, attached chan<- struct{}) (res floorResult, err error) {
	spec, err := loadFloor()
	if err != nil {
		return res, fmt.Errorf("load floor spec: %w", err)
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return res, fmt.Errorf("count CPUs: %w", err)
	}
	ringSpec := spec.Maps["floor_rings"]
	ringSpec.MaxEntries = uint32(cpus)
	var objs floorTraceObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return res, fmt.Errorf("load floor_state: %w", err)
	}
	defer objs.Close()
	maps, readers, err := loader.NewCPURingMaps(objs.Rings, ringSpec.InnerMap, cpus, loader.CPURingBytes(floorRingBytes, cpus))
	if err != nil {
		return res, fmt.Errorf("floor rings: %w", err)
	}
	defer func() {
		for i, rd := range readers {
			rd.Close()
			maps[i].Close()
		}
	}()
	l, err := link.AttachTracing(link.TracingOptions{Program: objs.State})
	if err != nil {
		return res, fmt.Errorf("attach floor_state: %w", err)
	}
	if attached != nil {
		close(attached)
	}

	var rec ringbuf.Record
	// Records are counted, not merged into one order: the floor keeps no
	// table that would need it.
	drain := func() error {
		for _, rd := range readers {
			if rd.AvailableBytes() == 0 {
				continue
			}
			rd.SetDeadline(time.Now())
			for {
				err := rd.ReadInto(&rec)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break
				}
				if err != nil {
					return err
				}
				if len(rec.RawSample) != event.Size {
					return fmt.Errorf("floor record of %d bytes, want %d", len(rec.RawSample), event.Size)
				}
				res.records++
			}
		}
		return nil
	}
	t := time.NewTimer(floorBatch)
	defer t.Stop()
	for ctx.Err() == nil {
		start := time.Now()
		if err := drain(); err != nil {
			_ = l.Close()
			return res, fmt.Errorf("read floor ring: %w", err)
		}
		t.Reset(time.Until(start.Add(floorBatch)))
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	if err := l.Close(); err != nil {
		return res, fmt.Errorf("detach floor_state: %w", err)
	}
	if err := drain(); err != nil {
		return res, fmt.Errorf("read floor ring: %w", err)
	}
	var perCPU []uint64
	if err := objs.Drops.Lookup(uint32(0), &perCPU); err != nil {
		return res, fmt.Errorf("read floor_drops: %w", err)
	}
	for _, n := range perCPU {
		res.drops += n
	}
	st, err := objs.State.Stats()
	if err != nil {
		return res, fmt.Errorf("floor_state stats: %w", err)
	}
	res.missed = st.RecursionMisses
	return res, nil
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
func parseFloorSummary(stderr string) (res floorResult, ok bool) {
	all := floorSummaryRE.FindAllStringSubmatch(stderr, -1)
	if len(all) == 0 {
		return res, false
	}
	m := all[len(all)-1]
	res.records, _ = strconv.ParseUint(m[1], 10, 64)
	res.drops, _ = strconv.ParseUint(m[2], 10, 64)
	res.missed, _ = strconv.ParseUint(m[3], 10, 64)
	return res, true
}

// startFloor runs this binary's floor tracer and waits until its program is
// attached (a BPF link in its fd table).
func startFloor(ctx context.Context) (*tracerProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this binary: %w", err)
	}
	return startAttached(ctx, "floor", 1, self, floorTraceArg)
}
