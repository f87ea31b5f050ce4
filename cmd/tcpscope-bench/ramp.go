package main

// The loss ramp: how many events per second `tcpscope trace` and `tcpscope
// serve` take before they lose the first one. For each ring size, churn runs with more and more
// tcpchurn workers (the only knob that raises the rate: each worker churns
// as fast as it can), each under a fresh tracer, stopping at the first run
// that lost an event.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// maxRingFlag is the largest --ring-size the CLI accepts (its parser stops
// at 2 GiB).
const maxRingFlag = "2G"

// defaultRingLabel names the ring of a ramp run without --ring-size: the
// pipeline's default (serve's is larger, see its --ring-size flag).
func defaultRingLabel(pipe string) string {
	if pipe == "serve" {
		return "32M (default)"
	}
	return "8M (default)"
}

// isDefaultRing says whether a ramp result's ring label is a default's.
func isDefaultRing(label string) bool { return strings.HasSuffix(label, " (default)") }

// RampReport is the ramp at every ring size.
type RampReport struct {
	Workers  []int        `json:"workers"`
	Duration string       `json:"step_duration"`
	Rings    []RampResult `json:"rings"`
}

// RampResult is the ramp of one pipeline at one ring size.
type RampResult struct {
	Pipeline string     `json:"pipeline"` // "trace" or "serve"
	Ring     string     `json:"ring"`
	Steps    []RampStep `json:"steps"`
	// SustainedEPS is the highest events/s of a step without loss before
	// the first step with loss.
	SustainedEPS float64 `json:"sustained_events_per_s"`
	// FirstLoss is the index of the first step that lost events, -1 if
	// none did.
	FirstLoss int `json:"first_loss_step"`
}

// RampStep is one churn run of the ramp.
type RampStep struct {
	Workers      int     `json:"workers"`
	Conns        uint64  `json:"conns"`
	Rate         float64 `json:"rate"`
	Events       uint64  `json:"events"`
	EventsPerSec float64 `json:"events_per_s"`
	Lost         uint64  `json:"lost"`
	RingDrops    uint64  `json:"ring_drops"`
	IdleBefore   float64 `json:"idle_frac_before"`
	Error        string  `json:"error,omitempty"`
}

// parseWorkers parses -ramp: worker counts, comma-separated, rising.
func parseWorkers(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 256 {
			return nil, fmt.Errorf("-ramp: %q is not a worker count from 1 to 256", f)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, fmt.Errorf("-ramp: %d after %d: want rising worker counts", n, out[len(out)-1])
		}
		out = append(out, n)
	}
	return out, nil
}

// rampDone says whether the ramp stops after these steps: at the first
// loss, at an error (a failed step says nothing of the next), or when every
// worker count ran.
func rampDone(steps []RampStep, workers []int) bool {
	if len(steps) >= len(workers) {
		return true
	}
	if n := len(steps); n > 0 && (steps[n-1].Lost > 0 || steps[n-1].Error != "") {
		return true
	}
	return false
}

// summarize fills SustainedEPS and FirstLoss from the steps.
func (r *RampResult) summarize() {
	r.FirstLoss, r.SustainedEPS = -1, 0
	for i, s := range r.Steps {
		if s.Error != "" {
			break
		}
		if s.Lost > 0 {
			r.FirstLoss = i
			break
		}
		r.SustainedEPS = max(r.SustainedEPS, s.EventsPerSec)
	}
}

// rampPipelines are the pipelines ramped: the transition log, and the
// agent (table, metrics and API), whose reader does more per event.
var rampPipelines = []string{"trace", "serve"}

// rampPhase runs the ramp of each pipeline at the default ring size and
// the largest.
func (b *bench) rampPhase(ctx context.Context, churnCmd []string) *RampReport {
	d := b.opts.rampDuration
	rr := &RampReport{Workers: b.opts.rampWorkers, Duration: d.String()}
	for _, pipe := range rampPipelines {
		for _, ring := range []string{"", maxRingFlag} {
			res := RampResult{Pipeline: pipe, Ring: ring}
			if ring == "" {
				res.Ring = defaultRingLabel(pipe)
			}
			for !rampDone(res.Steps, b.opts.rampWorkers) && ctx.Err() == nil {
				w := b.opts.rampWorkers[len(res.Steps)]
				st := b.rampStep(ctx, churnCmd, pipe, ring, w, d)
				if st.Error != "" {
					b.note("ramp %s ring %s, %d workers: %s", pipe, res.Ring, w, st.Error)
				} else {
					b.logf("ramp %s ring=%s workers=%d rate=%.0f/s events=%.0f/s lost=%d", pipe, res.Ring, w, st.Rate, st.EventsPerSec, st.Lost)
				}
				res.Steps = append(res.Steps, st)
			}
			res.summarize()
			rr.Rings = append(rr.Rings, res)
		}
	}
	return rr
}

func (b *bench) rampStep(ctx context.Context, churnCmd []string, pipe, ring string, workers int, d time.Duration) RampStep {
	st := RampStep{Workers: workers}
	st.IdleBefore = b.waitQuiet(ctx)
	var args []string
	if ring != "" {
		args = []string{"--ring-size", ring}
	}
	if pipe == "serve" {
		return b.rampServeStep(ctx, churnCmd, args, st, d)
	}
	tp, err := startTcpscope(ctx, b.rep.Tools.Tcpscope, args...)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	cr, err := b.churnWorkers(ctx, churnCmd, "server", d, workers, 0)
	stop := tp.stop()
	if err != nil {
		st.Error = err.Error()
		return st
	}
	st.Conns, st.Rate = cr.Conns, cr.Rate
	s, ok := parseSummary(stop.stderr)
	if !ok {
		st.Error = "tcpscope printed no summary line: " + lastLines(stop.stderr, 3)
		return st
	}
	st.Events, st.Lost, st.RingDrops = s.Events, s.Lost, s.RingDrops
	if cr.ElapsedSec > 0 {
		st.EventsPerSec = float64(s.Events) / cr.ElapsedSec
	}
	return st
}

// rampServeStep is a ramp step under serve: its transitions and lost
// events from /metrics, before and after the churn.
func (b *bench) rampServeStep(ctx context.Context, churnCmd, args []string, st RampStep, d time.Duration) RampStep {
	tp, err := startServe(ctx, b.rep.Tools.Tcpscope, 60*time.Second, args...)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	defer tp.stop()
	m0, err := scrape(tp.addr)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	cr, err := b.churnWorkers(ctx, churnCmd, "server", d, st.Workers, 0)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	// The events of the churn's last milliseconds are read within the
	// reader's batch time.
	time.Sleep(100 * time.Millisecond)
	m1, err := scrape(tp.addr)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	st.Conns, st.Rate = cr.Conns, cr.Rate
	st.Events = uint64(m1["tcpscope_transitions_total"] - m0["tcpscope_transitions_total"])
	st.Lost = uint64(m1["tcpscope_lost_events_total"] - m0["tcpscope_lost_events_total"])
	if cr.ElapsedSec > 0 {
		st.EventsPerSec = float64(st.Events) / cr.ElapsedSec
	}
	return st
}
