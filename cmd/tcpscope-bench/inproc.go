package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/ktime"
	"github.com/tcpscope/tcpscope/tracer/loader"
)

// InProcResult is the in-process run: the loader with a sink that measures
// each event's delay from the kernel's transition to the sink, and the BPF
// programs' own statistics over the run.
type InProcResult struct {
	Close      string  `json:"close"`
	Conns      uint64  `json:"conns"`
	Rate       float64 `json:"rate"`
	IdleBefore float64 `json:"idle_frac_before"`

	Events          uint64  `json:"events"`      // delivered to the sink
	Transitions     uint64  `json:"transitions"` // seen by the programs during the run
	PerConn         float64 `json:"transitions_per_conn"`
	Lost            uint64  `json:"lost"`
	RingDrops       uint64  `json:"ring_drops"`
	NestedMissed    uint64  `json:"nested_missed"`
	NestedRecovered uint64  `json:"nested_recovered"`

	Programs []ProgCost `json:"programs"`

	LatencySamples int     `json:"latency_samples"`
	LatP50us       float64 `json:"latency_p50_us"`
	LatP90us       float64 `json:"latency_p90_us"`
	LatP99us       float64 `json:"latency_p99_us"`
	LatP999us      float64 `json:"latency_p999_us"`
	LatMaxus       float64 `json:"latency_max_us"`
}

// ProgCost is one BPF program's statistics over a run.
type ProgCost struct {
	Name     string  `json:"name"`
	Runs     uint64  `json:"runs"`
	NsPerHit float64 `json:"ns_per_hit"`
	Misses   uint64  `json:"recursion_misses"`
}

// maxSamples bounds the latency samples kept (8 bytes each); events past it
// are counted but not timed.
const maxSamples = 1 << 23

type latencySink struct {
	base    uint64    // CLOCK_MONOTONIC at baseT
	baseT   time.Time // with Go's monotonic reading, which is CLOCK_MONOTONIC
	events  uint64
	samples []uint64
}

// newLatencySink returns a sink that keeps its samples in the bench's
// buffer (made once), and collects garbage first so that no collection is
// due during the run.
func (b *bench) newLatencySink() *latencySink {
	if b.samples == nil {
		b.samples = make([]uint64, 0, maxSamples)
	}
	runtime.GC()
	// Pair the kernel clock with Go's monotonic clock once; reading Go's
	// clock (vDSO) per event is far cheaper than a clock_gettime system
	// call, and both count CLOCK_MONOTONIC.
	t0 := time.Now()
	m := ktime.Now()
	t1 := time.Now()
	return &latencySink{base: m, baseT: t0.Add(t1.Sub(t0) / 2), samples: b.samples[:0]}
}

func (s *latencySink) Event(e *event.Event) {
	now := s.base + uint64(time.Since(s.baseT))
	s.events++
	if len(s.samples) < cap(s.samples) {
		var d uint64
		if now > e.Mono {
			d = now - e.Mono
		}
		s.samples = append(s.samples, d)
	}
}

// Events is Event for each of a batch (live.Options.Events).
func (s *latencySink) Events(evs []event.Event) {
	for i := range evs {
		s.Event(&evs[i])
	}
}

func (s *latencySink) Drained()            {}
func (s *latencySink) Lost(_ loader.Stats) {}

// inProcess loads the tracer in this process, churns in a child process,
// and measures.
func (b *bench) inProcess(ctx context.Context, churnCmd []string, order string) (InProcResult, error) {
	res := InProcResult{Close: order}
	res.IdleBefore = b.waitQuiet(ctx)
	restore, err := enableBPFStats()
	if err != nil {
		b.note("BPF statistics could not be enabled, ns per hit unknown: %v", err)
	} else {
		defer restore()
	}
	tr, err := loader.New(loader.Config{})
	if err != nil {
		return res, err
	}
	defer tr.Close()

	sink := b.newLatencySink()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tr.Run(runCtx, sink) }()

	st0, err := tr.Stats()
	if err != nil {
		return res, err
	}
	ps0, err := tr.ProgramStats()
	if err != nil {
		return res, err
	}
	cr, churnErr := b.churn(ctx, churnCmd, order, b.opts.duration)
	ps1, err := tr.ProgramStats()
	if err != nil {
		return res, err
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			return res, fmt.Errorf("tracer: %w", err)
		}
	case <-time.After(20 * time.Second):
		return res, fmt.Errorf("tracer did not stop within 20 s")
	}
	if churnErr != nil {
		return res, churnErr
	}
	st1, err := tr.Stats()
	if err != nil {
		return res, err
	}

	res.Conns, res.Rate = cr.Conns, cr.Rate
	res.Events = sink.events
	res.Transitions = st1.Transitions - st0.Transitions
	if cr.Conns > 0 {
		res.PerConn = float64(res.Transitions) / float64(cr.Conns)
	}
	res.Lost = st1.Lost()
	res.RingDrops = st1.RingDrops
	res.NestedMissed = st1.MainMisses
	res.NestedRecovered = st1.Recovered
	for _, name := range []string{"on_state_change", "on_state_change_nested", "on_accept4_exit"} {
		a, z := ps0[name], ps1[name]
		if a == nil || z == nil {
			continue
		}
		pc := ProgCost{Name: name, Runs: z.RunCount - a.RunCount, Misses: z.RecursionMisses - a.RecursionMisses}
		if pc.Runs > 0 {
			pc.NsPerHit = float64(z.Runtime-a.Runtime) / float64(pc.Runs)
		}
		res.Programs = append(res.Programs, pc)
	}

	lat := sink.samples
	res.LatencySamples = len(lat)
	if len(lat) > 0 {
		slices.Sort(lat)
		q := func(p float64) float64 {
			i := int(p * float64(len(lat)-1))
			return float64(lat[i]) / 1e3
		}
		res.LatP50us, res.LatP90us, res.LatP99us, res.LatP999us = q(0.50), q(0.90), q(0.99), q(0.999)
		res.LatMaxus = float64(lat[len(lat)-1]) / 1e3
	}
	b.logf("in-process close=%s: conns=%d events=%d transitions/conn=%.2f lost=%d latency p50=%.0fus p99=%.0fus max=%.0fus",
		order, res.Conns, res.Events, res.PerConn, res.Lost, res.LatP50us, res.LatP99us, res.LatMaxus)
	return res, nil
}
