package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tcpscope/tcpscope/tracer/diag"
	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/filter"
	"github.com/tcpscope/tcpscope/tracer/ktime"
	"github.com/tcpscope/tcpscope/tracer/output"
)

// OverThresholdHeader carries, on /api/v1/closewait?threshold=N, how many
// processes hold more than N CLOSE_WAIT sockets (the body stays the
// report, as `tcpscope closewait --json` prints it).
const OverThresholdHeader = "Tcpscope-Over-Threshold"

// cwQuery keys the growth history: reports of one namespace and minimum
// age are comparable with each other.
type cwQuery struct {
	netns  uint32
	minAge time.Duration
}

// maxHistories bounds the histories kept for distinct queries (a client
// varying min_age must not grow the agent without end).
const maxHistories = 64

func durationParam(q url.Values, name string, def time.Duration) (time.Duration, error) {
	v, ok := q[name]
	if !ok {
		return def, nil
	}
	d, err := time.ParseDuration(v[0])
	if err != nil {
		return 0, badParam(name, v[0], "a duration such as 30s or 5m")
	}
	return d, nil
}

type paramError struct{ name, value, want string }

func (e paramError) Error() string { return e.name + "=" + strconv.Quote(e.value) + ": want " + e.want }

func badParam(name, value, want string) error { return paramError{name, value, want} }

func (a *API) readyWalker(w http.ResponseWriter) (Walker, bool) {
	if !a.ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "not seeded yet"})
		return nil, false
	}
	a.walkMu.Lock()
	walker := a.opts.Walker
	a.walkMu.Unlock()
	return walker, true
}

// closeWait answers with diag's CLOSE_WAIT report, holders from a walk of
// every fd table, as `tcpscope closewait --json` does.
func (a *API) closeWait(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := checkParams(q, "min_age", "threshold", "netns"); err != nil {
		badRequest(w, "%v", err)
		return
	}
	spec, err := netnsParam(q)
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	minAge, err := durationParam(q, "min_age", 0)
	if err == nil && minAge < 0 {
		err = badParam("min_age", q.Get("min_age"), "a duration that is not negative")
	}
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	threshold := -1
	if v, ok := q["threshold"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 0 {
			badRequest(w, "%v", badParam("threshold", v[0], "a number from 0"))
			return
		}
		threshold = n
	}
	walker, ok := a.readyWalker(w)
	if !ok {
		return
	}
	a.heavy(w, r, func(w http.ResponseWriter) {
		var holders diag.Holders
		if walker != nil {
			hs, err := walker.Holders(event.StateMask(0).With(event.CloseWait))
			if err != nil {
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
				return
			}
			holders = HoldersOf(hs)
		}
		rep := diag.CloseWait(a.opts.Table, diag.CloseWaitOptions{Now: ktime.Now(), MinAge: minAge, NetNS: spec.NetNS,
			Holders: holders, Cmdline: a.opts.Cmdline, History: a.history(cwQuery{spec.NetNS, minAge})})
		if threshold >= 0 {
			over := 0
			for _, p := range rep.Processes {
				if p.Count > threshold {
					over++
				}
			}
			w.Header().Set(OverThresholdHeader, strconv.Itoa(over))
		}
		writeReport(w, rep)
	})
}

// writeReport writes a report as the CLI's --json does (output.WriteJSON),
// so that the two are the same bytes.
func writeReport(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	output.WriteJSON(w, v)
}

func (a *API) history(k cwQuery) *diag.CloseWaitHistory {
	a.cwMu.Lock()
	defer a.cwMu.Unlock()
	h := a.cwHist[k]
	if h == nil {
		if len(a.cwHist) >= maxHistories {
			clear(a.cwHist)
		}
		h = &diag.CloseWaitHistory{}
		a.cwHist[k] = h
	}
	return h
}

// timeWait answers with diag's TIME_WAIT report over the last interval,
// as `tcpscope timewait --json` does.
func (a *API) timeWait(w http.ResponseWriter, r *http.Request) {
	if a.opts.TimeWait == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no TIME_WAIT tracker in this agent"})
		return
	}
	q := r.URL.Query()
	if err := checkParams(q, "interval", "warn", "netns"); err != nil {
		badRequest(w, "%v", err)
		return
	}
	spec, err := netnsParam(q)
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	interval, err := durationParam(q, "interval", 5*time.Second)
	if err == nil && (interval <= 0 || interval > a.opts.TimeWaitKeep) {
		err = badParam("interval", q.Get("interval"), "a positive duration up to "+a.opts.TimeWaitKeep.String()+" (the agent's --timewait.keep)")
	}
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	warn := 0.5
	if v, ok := q["warn"]; ok {
		f, err := strconv.ParseFloat(v[0], 64)
		if err != nil || !(f > 0 && f <= 1) {
			badRequest(w, "%v", badParam("warn", v[0], "a fraction in (0, 1]"))
			return
		}
		warn = f
	}
	walker, ok := a.readyWalker(w)
	if !ok {
		return
	}
	a.heavy(w, r, func(w http.ResponseWriter) {
		if walker != nil {
			// What the kernel committed before the request belongs in it.
			// The answer is shared: not bounded by one client's context.
			ctx, cancel := context.WithTimeout(context.Background(), barrierTimeout)
			err := walker.Barrier(ctx)
			cancel()
			if err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the tracer did not catch up: " + err.Error()})
				return
			}
		}
		opts := diag.TimeWaitOptions{Now: ktime.Now(), Window: interval, NetNS: spec.NetNS, WarnFraction: warn, TwReuse: -1}
		if a.opts.PortRange != nil {
			opts.PortRange, _ = a.opts.PortRange() // unknown: no exhaustion check, as the CLI
		}
		if a.opts.TwReuse != nil {
			opts.TwReuse = a.opts.TwReuse()
		}
		writeReport(w, a.opts.TimeWait.Report(a.opts.Table, opts))
	})
}

// barrierTimeout bounds how long a timewait answer waits for the tracer to
// pass what the kernel committed before it.
const barrierTimeout = 10 * time.Second

// Info is the body of /api/v1/info.
type Info struct {
	Version string `json:"version"`
	NetNS   uint32 `json:"netns"` // the agent's own network namespace (inode)
	Ready   bool   `json:"ready"`
	// TimeWaitKeepNs is the longest interval /api/v1/timewait accepts.
	TimeWaitKeepNs int64 `json:"timewait_keep_ns"`
}

func (a *API) info(w http.ResponseWriter, r *http.Request) {
	if err := checkParams(r.URL.Query()); err != nil {
		badRequest(w, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, Info{Version: a.opts.Version, NetNS: a.opts.OwnNetNS, Ready: a.ready.Load(), TimeWaitKeepNs: int64(a.opts.TimeWaitKeep)})
}

// netnsParam parses the netns parameter as the other routes do.
func netnsParam(q url.Values) (filter.Spec, error) {
	if _, ok := q["netns"]; !ok {
		return filter.Spec{}, nil
	}
	return params(url.Values{"netns": q["netns"]}, "netns")
}
