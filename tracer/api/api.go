// Package api serves tcpscope's socket table and event stream over HTTP for
// tools and dashboards:
//
//	GET /api/v1/sockets   sockets, one JSON object per line, as `tcpscope netstat --json`
//	GET /api/v1/summary   sockets per state, for the host and per network namespace
//	GET /api/v1/events    live transitions, one JSON object per line, as `tcpscope trace --json`
//	GET /api/v1/closewait who is leaking sockets, as `tcpscope closewait --json`
//	GET /api/v1/timewait  who is churning, as `tcpscope timewait --json`
//	GET /api/v1/info      the agent's version and network namespace
//	GET /healthz          the process is serving
//	GET /readyz           the table has been seeded
//
// Sockets and events carry their owner's cgroup path and container (see
// package cgroup) when Options.Cgroups is set.
//
// Query parameters filter as the CLI flags of the same name do (state, port,
// pid, netns, container; events also comm, laddr, raddr; closewait min_age, threshold,
// netns; timewait interval, warn, netns). Unknown or malformed
// parameters get HTTP 400 with {"error": "..."}.
//
// The event stream never holds up the tracer: Publish copies each batch of
// events into a bounded queue without waiting, and a goroutine of the API's
// own offers them to every client's bounded queue; a client whose queue is
// full loses what does not fit, and is told how many it lost by a
// {"dropped": N} line before its next event.
package api

import (
	"context"
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

	"github.com/tcpscope/tcpscope/tracer/cgroup"
	"github.com/tcpscope/tcpscope/tracer/diag"
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
	// Holders walks every process's fd table for the holders of sockets
	// in states (closewait).
	Holders(states event.StateMask) ([]loader.Holder, error)
	// Barrier returns once the events the kernel committed before the call
	// have reached the table (timewait reports what happened until now).
	Barrier(ctx context.Context) error
}

// HoldersOf turns a holder walk into diag's form (the CLI's closewait and
// /api/v1/closewait read it the same way).
func HoldersOf(hs []loader.Holder) diag.Holders {
	holders := diag.Holders{}
	for i := range hs {
		holders.Add(hs[i].Key, hs[i].PID, hs[i].FD, hs[i].Comm[:])
	}
	return holders
}

// Options configure the API.
type Options struct {
	Table  *table.Table
	Walker Walker
	Clock  *ktime.Clock
	// StreamQueue is how many events one stream client may have waiting
	// (default 4096); beyond that its events are dropped. A client holds
	// up to twice that, the queue and the batch being written: about
	// 2 MiB at the default.
	StreamQueue int
	// FanOutQueue is how many events Publish holds for the stream clients
	// before the API's own goroutine offers them to each (default four
	// times StreamQueue; the goroutine holds up to as many again while it
	// offers them); beyond that they are dropped for every client,
	// before its query is known, and counted in each one's next
	// {"dropped": N} as events it may have matched.
	FanOutQueue int
	// Namespaces lists the network namespaces a walk can enter
	// (default loader.Namespaces).
	Namespaces func() ([]loader.Namespace, error)
	// WriteTimeout ends a stream whose client has not taken a write for
	// this long (default 30s).
	WriteTimeout time.Duration

	// TimeWait is the tracker installed on Table for /api/v1/timewait
	// (nil: the route answers 404). It keeps TimeWaitKeep of entries: the
	// longest interval a request may ask for (default 1m).
	TimeWait     *diag.TimeWaitTracker
	TimeWaitKeep time.Duration
	// PortRange and TwReuse read net.ipv4.ip_local_port_range and
	// net.ipv4.tcp_tw_reuse of the agent's namespace for timewait (nil:
	// not known). Cmdline reads a process's command line for closewait.
	PortRange func() ([2]uint16, error)
	TwReuse   func() int
	Cmdline   func(pid uint32) ([]byte, error)
	// OwnNetNS is the agent's network namespace and Version its build, for
	// /api/v1/info (clients default to the agent's namespace, as the CLI
	// defaults to its own).
	OwnNetNS uint32
	Version  string
	// Cgroups, when set, adds each owner's cgroup and container to sockets
	// and events, and lets them be filtered by ?container= (an id, a
	// 12-digit prefix of one, or a systemd unit).
	Cgroups *cgroup.Resolver

	// MaxHeavy is how many answers of the heavy routes (sockets,
	// closewait, timewait) are built at once (default 1), and MaxWaiting
	// how many requests for them may wait (default 64; more get 503 with
	// Retry-After). Requests with the same route and query that wait
	// together share one answer. See heavy.go.
	MaxHeavy   int
	MaxWaiting int
}

// API is the HTTP handler set. Create it with New.
type API struct {
	opts     Options
	ready    atomic.Bool
	seedMono atomic.Uint64

	walkMu sync.Mutex

	// cwHist remembers the counts of earlier closewait reports per
	// (netns, min_age), for their growth rates.
	cwMu   sync.Mutex
	cwHist map[cwQuery]*diag.CloseWaitHistory

	mu      sync.RWMutex
	clients map[*client]struct{}
	dropped atomic.Uint64 // events dropped for slow stream clients, summed over the clients

	fan fanOut // Publish's queue for the stream clients (fanout.go)

	// Heavy routes (heavy.go): slots bounds the answers being built,
	// pending holds the answers not yet started, by route and query.
	slots    chan struct{}
	waiting  atomic.Int64
	rejected atomic.Uint64
	shareMu  sync.Mutex
	pending  map[string]*answer
}

// client is one event stream. Publish appends the events it matches to
// queue (at most limit) and wakes the handler; the handler swaps the queue
// for its spare and writes it. A loss is noted at the first event queued
// after it, so that the stream says where the gap is.
type client struct {
	spec      filter.Spec
	container string
	limit     int
	wake      chan struct{} // capacity 1

	mu    sync.Mutex
	queue []event.Event
	gaps  []gap  // losses before queue[gap.at]
	lost  uint64 // lost since the last event queued
	spare []event.Event
}

// gap is n events lost just before the event at index at of a queue.
type gap struct {
	at int
	n  uint64
}

// offer queues the events of evs that match c and returns how many of them
// did not fit.
func (c *client) offer(evs []event.Event, match func(*client, *event.Event) bool) (lost uint64) {
	c.mu.Lock()
	n0 := len(c.queue)
	for i := range evs {
		e := &evs[i]
		if !match(c, e) {
			continue
		}
		if len(c.queue) >= c.limit {
			c.lost++
			lost++
			continue
		}
		if c.lost > 0 {
			c.gaps = append(c.gaps, gap{len(c.queue), c.lost})
			c.lost = 0
		}
		c.queue = append(c.queue, *e)
	}
	added := len(c.queue) > n0
	c.mu.Unlock()
	if added {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	return lost
}

// take returns what is queued and the losses in it, leaving an empty queue
// (the spare of the previous take, given back with done).
func (c *client) take() ([]event.Event, []gap) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q, g := c.queue, c.gaps
	c.queue, c.spare, c.gaps = c.spare[:0], nil, nil
	return q, g
}

// done gives back the queue of the last take for reuse.
func (c *client) done(q []event.Event) {
	c.mu.Lock()
	c.spare = q[:0]
	c.mu.Unlock()
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
	if opts.TimeWaitKeep <= 0 {
		opts.TimeWaitKeep = time.Minute
	}
	if opts.MaxHeavy <= 0 {
		opts.MaxHeavy = 1
	}
	if opts.MaxWaiting <= 0 {
		opts.MaxWaiting = 64
	}
	if opts.FanOutQueue <= 0 {
		opts.FanOutQueue = 4 * opts.StreamQueue
	}
	return &API{opts: opts, clients: map[*client]struct{}{}, cwHist: map[cwQuery]*diag.CloseWaitHistory{},
		slots: make(chan struct{}, opts.MaxHeavy), pending: map[string]*answer{},
		fan: fanOut{limit: opts.FanOutQueue, wake: make(chan struct{}, 1)}}
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

// offerAll offers a batch to every stream client, in order.
func (a *API) offerAll(evs []event.Event) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	for c := range a.clients {
		if lost := c.offer(evs, a.matches); lost > 0 {
			a.dropped.Add(lost)
		}
	}
}

// loseAll tells every stream client that n events went missing here.
func (a *API) loseAll(n uint64) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	for c := range a.clients {
		c.mu.Lock()
		c.lost += n
		c.mu.Unlock()
		a.dropped.Add(n)
	}
}

// matches says whether the client's query selects e.
func (a *API) matches(c *client, e *event.Event) bool {
	if e.Kind != event.Transition || !c.spec.Match(e) {
		return false
	}
	// A cached lookup; a new process costs one read of its cgroup file.
	return c.container == "" || (e.Flags&event.OwnerKnown != 0 && cgroup.Match(a.opts.Cgroups.Of(e.Owner.PID), c.container))
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
	mux.HandleFunc("GET /api/v1/closewait", a.closeWait)
	mux.HandleFunc("GET /api/v1/timewait", a.timeWait)
	mux.HandleFunc("GET /api/v1/info", a.info)
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

// checkParams refuses parameters a route does not take, and repeated ones
// (but state).
func checkParams(q url.Values, allowed ...string) error {
	for k, vs := range q {
		if !slices.Contains(allowed, k) {
			return fmt.Errorf("unknown parameter %q (want one of %v)", k, allowed)
		}
		if k != "state" && len(vs) > 1 {
			return fmt.Errorf("parameter %q given %d times", k, len(vs))
		}
	}
	return nil
}

// params parses the query parameters a route accepts into a filter spec.
func params(q url.Values, allowed ...string) (filter.Spec, error) {
	var s filter.Spec
	if err := checkParams(q, allowed...); err != nil {
		return s, err
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

// containerParam reads ?container=, which needs the agent's cgroup resolver.
func (a *API) containerParam(q url.Values) (string, error) {
	vs, ok := q["container"]
	if !ok {
		return "", nil
	}
	if vs[0] == "" {
		return "", fmt.Errorf("container: want a container id, a prefix of 12 or more of its digits, or a systemd unit")
	}
	if a.opts.Cgroups == nil {
		return "", fmt.Errorf("container: this agent does not read cgroups")
	}
	return vs[0], nil
}

// sockets walks the kernel's socket tables (for Recv-Q, Send-Q and timers,
// as netstat does) and joins each socket with its age from the table.
func (a *API) sockets(w http.ResponseWriter, r *http.Request) {
	spec, err := params(r.URL.Query(), "state", "port", "pid", "netns", "container")
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	container, err := a.containerParam(r.URL.Query())
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	if !a.ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "not seeded yet"})
		return
	}
	a.heavy(w, r, func(w http.ResponseWriter) {
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
				(spec.PID != 0 && (!s.OwnerKnown || s.Owner.PID != spec.PID)) ||
				(container != "" && (!s.OwnerKnown || !cgroup.Match(a.opts.Cgroups.Of(s.Owner.PID), container)))
		})
		rows := netstat.JoinRows(socks, a.opts.Table, a.seedMono.Load(), ktime.Now(), spec.States, true)
		w.Header().Set("Content-Type", "application/x-ndjson")
		opts := netstat.Options{All: true, JSON: true, Wall: a.opts.Clock.Wall}
		if a.opts.Cgroups != nil {
			opts.Cgroup = a.opts.Cgroups.Of
		}
		netstat.Write(w, rows, opts)
	})
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
	spec, err := params(r.URL.Query(), "state", "port", "pid", "netns", "comm", "laddr", "raddr", "container")
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	container, err := a.containerParam(r.URL.Query())
	if err != nil {
		badRequest(w, "%v", err)
		return
	}
	c := &client{spec: spec, container: container, limit: a.opts.StreamQueue, wake: make(chan struct{}, 1)}
	a.mu.Lock()
	a.clients[c] = struct{}{}
	a.fan.streams.Add(1)
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.clients, c)
		a.fan.streams.Add(-1)
		a.mu.Unlock()
		a.fan.signal() // the last one gone: the fan-out may end
	}()

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	topts := output.TraceOptions{Format: output.JSON}
	if a.opts.Cgroups != nil {
		topts.Cgroup = a.opts.Cgroups.Of
	}
	out := output.NewTraceWriter(w, a.opts.Clock, topts)
	var note []byte
	// write writes one queue, telling the client what it lost before the
	// event that follows each loss.
	write := func(q []event.Event, gaps []gap) error {
		for i := range q {
			if len(gaps) > 0 && gaps[0].at == i {
				note = strconv.AppendUint(append(note[:0], `{"dropped":`...), gaps[0].n, 10)
				note = append(note, "}\n"...)
				gaps = gaps[1:]
				if err := out.Flush(); err != nil {
					return err
				}
				if _, err := w.Write(note); err != nil {
					return err
				}
			}
			if err := out.Write(&q[i]); err != nil {
				return err
			}
		}
		return nil
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.wake:
		}
		q, gaps := c.take()
		if len(q) == 0 {
			c.done(q)
			continue
		}
		rc.SetWriteDeadline(time.Now().Add(a.opts.WriteTimeout))
		err := write(q, gaps)
		c.done(q)
		if err != nil || out.Flush() != nil || rc.Flush() != nil {
			return
		}
	}
}
