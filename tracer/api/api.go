// Package api serves tcpscope's socket table and event stream over HTTP for
// tools and dashboards:
//
//	GET /api/v1/sockets   sockets, one JSON object per line, as `tcpscope netstat --json`
//	GET /api/v1/summary   sockets per state, for the host and per network namespace
//	GET /api/v1/events    live transitions, one JSON object per line, as `tcpscope trace --json`
//	GET /healthz          the process is serving
//	GET /readyz           the table has been seeded
//
// Query parameters filter as the CLI flags of the same name do (state, port,
// pid, netns; events also comm, laddr, raddr). Unknown or malformed
// parameters get HTTP 400 with {"error": "..."}.
//
// The event stream never holds up the tracer: Publish hands each event to
// every client's bounded queue without waiting; a client whose queue is full
// loses the event, and is told how many it lost by a {"dropped": N} line
// before its next event.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/filter"
	"github.com/tcpscope/tcpscope/tracer/ktime"
	"github.com/tcpscope/tcpscope/tracer/loader"
	"github.com/tcpscope/tcpscope/tracer/netstat"
	"github.com/tcpscope/tcpscope/tracer/output"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// Walker reads the kernel's current sockets (loader.Tracer).
type Walker interface {
	AllSockets(dst []event.Socket) ([]event.Socket, map[uint32]bool, error)
	Sockets(dst []event.Socket) ([]event.Socket, error)
	SocketsIn(nsPath string, dst []event.Socket) ([]event.Socket, error)
}

// Options configure the API.
type Options struct {
	Table  *table.Table
	Walker Walker
	Clock  *ktime.Clock
	// StreamQueue is how many events one stream client may have waiting
	// (default 4096, about 1 MiB); beyond that its events are dropped.
	StreamQueue int
	// Namespaces lists the network namespaces a walk can enter
	// (default loader.Namespaces).
	Namespaces func() ([]loader.Namespace, error)
	// WriteTimeout ends a stream whose client has not taken a write for
	// this long (default 30s).
	WriteTimeout time.Duration
}

// API is the HTTP handler set. Create it with New.
type API struct {
	opts     Options
	ready    atomic.Bool
	seedMono atomic.Uint64

	walkMu sync.Mutex

	mu      sync.RWMutex
	clients map[*client]struct{}
	dropped atomic.Uint64 // events dropped for slow stream clients, all clients
}

type client struct {
	spec    filter.Spec
	queue   chan event.Event
	dropped atomic.Uint64
}

// New returns an API that is not ready until SetReady.
func New(opts Options) *API {
	if opts.StreamQueue <= 0 {
		opts.StreamQueue = 4096
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	if opts.Namespaces == nil {
		opts.Namespaces = loader.Namespaces
	}
	if opts.Clock == nil {
		opts.Clock = ktime.NewClock()
	}
	return &API{opts: opts, clients: map[*client]struct{}{}}
}

// SetWalker sets the source of /api/v1/sockets once the tracer is loaded
// (the server starts before, to answer /healthz and /readyz).
func (a *API) SetWalker(w Walker) {
	a.walkMu.Lock()
	a.opts.Walker = w
	a.walkMu.Unlock()
}

// SetReady marks the table seeded; seedMono is the seed walk's time.
func (a *API) SetReady(seedMono uint64) {
	a.seedMono.Store(seedMono)
	a.ready.Store(true)
}

// Publish offers a table event to the stream clients. It never blocks.
// Only transitions are streamed (what `trace --json` prints).
func (a *API) Publish(e *event.Event) {
	if e.Kind != event.Transition {
		return
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	for c := range a.clients {
		if !c.spec.Match(e) {
			continue
		}
		select {
		case c.queue <- *e:
		default:
			c.dropped.Add(1)
			a.dropped.Add(1)
		}
	}
}

// Clients returns the number of connected stream clients.
func (a *API) Clients() int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return len(a.clients)
}

// Dropped returns how many events slow stream clients have lost in all.
func (a *API) Dropped() uint64 { return a.dropped.Load() }

// Handler returns the routes listed in the package documentation.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/sockets", a.sockets)
	mux.HandleFunc("GET /api/v1/summary", a.summary)
	mux.HandleFunc("GET /api/v1/events", a.events)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not seeded yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}

// badRequest answers 400 with a JSON error.
func badRequest(w http.ResponseWriter, format string, args ...any) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf(format, args...)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// params parses the query parameters a route accepts into a filter spec.
func params(q url.Values, allowed ...string) (filter.Spec, error) {
	var s filter.Spec
	for k, vs := range q {
		if !slices.Contains(allowed, k) {
			return s, fmt.Errorf("unknown parameter %q (want one of %v)", k, allowed)
		}
		if k != "state" && len(vs) > 1 {
			return s, fmt.Errorf("parameter %q given %d times", k, len(vs))
		}
	}
	uintParam := func(name string, bits int) (uint64, error) {
		vs, ok := q[name]
		if !ok {
			return 0, nil
		}
		v := vs[0]
		n, err := strconv.ParseUint(v, 10, bits)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("%s=%q: want a number from 1 to %d", name, v, uint64(1)<<bits-1)
		}
		return n, nil
	}
	var err error
	if s.States, err = filter.ParseStates(q["state"]); err != nil {
		return s, fmt.Errorf("state: %v", err)
	}
	port, err := uintParam("port", 16)
	if err != nil {
		return s, err
	}
	pid, err := uintParam("pid", 32)
	if err != nil {
		return s, err
	}
	netns, err := uintParam("netns", 32)
	if err != nil {
		return s, err
	}
	s.Port, s.PID, s.NetNS = uint16(port), uint32(pid), uint32(netns)
	s.Comm = q.Get("comm")
	if v := q.Get("laddr"); v != "" {
		if s.Local, err = filter.ParsePrefix(v); err != nil {
			return s, fmt.Errorf("laddr: %v", err)
		}
	}
	if v := q.Get("raddr"); v != "" {
		if s.Remote, err = filter.ParsePrefix(v); err != nil {
			return s, fmt.Errorf("raddr: %v", err)
		}
	}
	return s, nil
}

// sockets walks the kernel's socket tables (for Recv-Q, Send-Q and timers,
// as netstat does) and joins each socket with its age from the table.
func (a *API) sockets(w http.ResponseWriter, r *http.Request) {
	spec, err := params(r.URL.Query(), "state", "port", "pid", "netns")
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	if !a.ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "not seeded yet"})
		return
	}
	a.walkMu.Lock()
	walker := a.opts.Walker
	a.walkMu.Unlock()
	socks, err := a.walk(walker, spec.NetNS)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	socks = slices.DeleteFunc(socks, func(s event.Socket) bool {
		return (spec.NetNS != 0 && s.NetNS != spec.NetNS) ||
			(spec.Port != 0 && s.Local.Port() != spec.Port && s.Remote.Port() != spec.Port) ||
			(spec.PID != 0 && (!s.OwnerKnown || s.Owner.PID != spec.PID))
	})
	rows := netstat.JoinRows(socks, a.opts.Table, a.seedMono.Load(), ktime.Now(), spec.States, true)
	w.Header().Set("Content-Type", "application/x-ndjson")
	netstat.Write(w, rows, netstat.Options{All: true, JSON: true, Wall: a.opts.Clock.Wall})
}

// walk reads the sockets of one network namespace (netns != 0) or of all.
// A walk of one namespace still visits the kernel's whole (shared) hash
// table, so walking only the one asked for saves a pass per namespace.
func (a *API) walk(w Walker, netns uint32) ([]event.Socket, error) {
	if netns == 0 {
		socks, _, err := w.AllSockets(nil)
		if _, ok := errors.AsType[*loader.PartialWalkError](err); ok {
			err = nil // the namespaces it could walk; the agent logged the rest at seed
		}
		return socks, err
	}
	nss, err := a.opts.Namespaces()
	if err != nil {
		return nil, err
	}
	for _, ns := range nss {
		if ns.Inode != netns {
			continue
		}
		if ns.Path == "" {
			return w.Sockets(nil)
		}
		return w.SocketsIn(ns.Path, nil)
	}
	return nil, nil // no such namespace (any more): no sockets
}

// Summary is the body of /api/v1/summary. Request sockets count as
// SYN_RECV, as in ss and netstat.
type Summary struct {
	Total  int                     `json:"total"`
	States map[string]int          `json:"states"`
	NetNS  map[uint32]NetNSSummary `json:"netns"`
}

// NetNSSummary is one network namespace's part of a Summary.
type NetNSSummary struct {
	Total  int            `json:"total"`
	States map[string]int `json:"states"`
}

func (a *API) summary(w http.ResponseWriter, r *http.Request) {
	spec, err := params(r.URL.Query(), "netns")
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	if !a.ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "not seeded yet"})
		return
	}
	sum := Summary{States: map[string]int{}, NetNS: map[uint32]NetNSSummary{}}
	for ns, counts := range a.opts.Table.CountsByNetNS() {
		if spec.NetNS != 0 && ns != spec.NetNS {
			continue
		}
		nsSum := NetNSSummary{States: map[string]int{}}
		for s, n := range counts {
			st := event.State(s)
			if n == 0 || !st.Valid() || st == event.Close {
				continue
			}
			if st == event.NewSynRecv {
				st = event.SynRecv
			}
			nsSum.States[st.String()] += n
			nsSum.Total += n
			sum.States[st.String()] += n
			sum.Total += n
		}
		sum.NetNS[ns] = nsSum
	}
	writeJSON(w, http.StatusOK, sum)
}

// events streams transitions until the client goes away.
func (a *API) events(w http.ResponseWriter, r *http.Request) {
	spec, err := params(r.URL.Query(), "state", "port", "pid", "netns", "comm", "laddr", "raddr")
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	c := &client{spec: spec, queue: make(chan event.Event, a.opts.StreamQueue)}
	a.mu.Lock()
	a.clients[c] = struct{}{}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.clients, c)
		a.mu.Unlock()
	}()

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	out := output.NewTraceWriter(w, a.opts.Clock, output.TraceOptions{Format: output.JSON})
	var note []byte
	// write tells the client what it lost before the event that follows
	// the loss, so that the stream says where the gap is.
	write := func(e *event.Event) error {
		if n := c.dropped.Swap(0); n > 0 {
			note = strconv.AppendUint(append(note[:0], `{"dropped":`...), n, 10)
			note = append(note, "}\n"...)
			if err := out.Flush(); err != nil {
				return err
			}
			if _, err := w.Write(note); err != nil {
				return err
			}
		}
		return out.Write(e)
	}
	for {
		var e event.Event
		select {
		case <-r.Context().Done():
			return
		case e = <-c.queue:
		}
		rc.SetWriteDeadline(time.Now().Add(a.opts.WriteTimeout))
		if write(&e) != nil {
			return
		}
		// Take what else is queued before flushing: one write per burst.
		for more := true; more; {
			select {
			case e = <-c.queue:
				if write(&e) != nil {
					return
				}
			default:
				more = false
			}
		}
		if out.Flush() != nil || rc.Flush() != nil {
			return
		}
	}
}
