package main

import (
	"context"
	"net"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/tcpscope/tcpscope/tracer/churn"
	"github.com/tcpscope/tcpscope/tracer/event"
)

// The floor moves as many bytes through its ring as tcpscope does.
func TestFloorRecordSize(t *testing.T) {
	if got := unsafe.Sizeof(floorFloorEvent{}); got != event.Size {
		t.Fatalf("floor record is %d bytes, tcpscope's event %d", got, event.Size)
	}
}

func TestParseFloorSummary(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want floorResult
		ok   bool
	}{
		{"floor: records=10 drops=2 missed=1\n", floorResult{10, 2, 1}, true},
		{"warning\nfloor: records=1 drops=0 missed=0\nfloor: records=7 drops=3 missed=4\n", floorResult{7, 3, 4}, true},
		{"floor: records=10 drops=2\n", floorResult{}, false},
		{"floor: load floor_state: operation not permitted\n", floorResult{}, false},
		{"", floorResult{}, false},
	} {
		got, ok := parseFloorSummary(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseFloorSummary(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs")
	}
}

// The floor tracer sees at least the 10 transitions of every connection of
// a churn (the tracepoint is host-wide, so other tests may add more) and
// loses none.
func TestFloorTraceCountsTransitions(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	traceCtx, stop := context.WithCancel(ctx)
	attached := make(chan struct{})
	type result struct {
		floorResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := runFloorTrace(traceCtx, attached)
		done <- result{r, err}
	}()
	select {
	case <-attached:
	case r := <-done:
		t.Fatalf("floor tracer ended before it attached: %v", r.err)
	}
	for _, order := range []churn.CloseOrder{churn.ServerFirst, churn.ClientFirst} {
		res, err := churn.Run(ctx, churn.Config{Conns: 500, Duration: 10 * time.Second, Workers: 2, Close: order})
		if err != nil {
			stop()
			t.Fatalf("churn: %v", err)
		}
		if res.Conns != 500 {
			stop()
			t.Fatalf("churn made %d connections, want 500", res.Conns)
		}
	}
	stop()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.records < 10*1000 {
		t.Errorf("floor read %d records for 1000 connections, want at least 10 000", r.records)
	}
	if r.drops != 0 {
		t.Errorf("floor ring refused %d records", r.drops)
	}
	t.Logf("%d records, %d nested runs skipped by the kernel", r.records, r.missed)
}

// The floor walk counts exactly the sockets of its namespace by state.
func TestFloorWalkCounts(t *testing.T) {
	needRoot(t)
	var (
		counts [256]uint64
		err    error
	)
	nsErr := inFreshNetNS(func() {
		ln, lerr := net.Listen("tcp4", "127.0.0.1:0")
		if lerr != nil {
			err = lerr
			return
		}
		defer ln.Close()
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for range 3 {
			c, derr := net.Dial("tcp4", ln.Addr().String())
			if derr != nil {
				err = derr
				return
			}
			s, aerr := ln.Accept()
			if aerr != nil {
				c.Close()
				err = aerr
				return
			}
			conns = append(conns, c, s)
		}
		counts, err = runFloorWalk()
	})
	if nsErr != nil {
		t.Fatal(nsErr)
	}
	if err != nil {
		t.Fatal(err)
	}
	want := map[event.State]uint64{event.Listen: 1, event.Established: 6}
	for s, n := range counts {
		if n != want[event.State(s)] {
			t.Errorf("%v: %d sockets, want %d (all counts: %v)", event.State(s), n, want[event.State(s)], nonZero(counts))
		}
	}
}

func nonZero(counts [256]uint64) map[event.State]uint64 {
	m := map[event.State]uint64{}
	for s, n := range counts {
		if n > 0 {
			m[event.State(s)] = n
		}
	}
	return m
}

func TestStatMajorFaults(t *testing.T) {
	for _, tc := range []struct {
		stat string
		want uint64
	}{
		{"1234 (tcpscope) S 1 1234 1234 0 -1 4194560 2117 0 7 0 12 3 0 0 20 0 9 0 100 1000 200", 7},
		{"77 (a b) (c)) R 1 77 77 0 -1 0 10 0 42 0 1 1 0 0 20 0 1 0 5 6 7", 42},
		{"garbage", 0},
		{"1 (x) S 1 2", 0},
	} {
		if got := statMajorFaults([]byte(tc.stat)); got != tc.want {
			t.Errorf("statMajorFaults(%q) = %d, want %d", tc.stat, got, tc.want)
		}
	}
	// This process's own count, read both ways.
	p, s := procMajorFaults(os.Getpid()), selfMajorFaults()
	if p > s || s-p > 100 {
		t.Errorf("/proc says %d major faults, getrusage %d", p, s)
	}
}
