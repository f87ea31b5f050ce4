package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v2"

	"github.com/tcpscope/tcpscope/tracer/api"
	"github.com/tcpscope/tcpscope/tracer/cgroup"
	"github.com/tcpscope/tcpscope/tracer/diag"
	"github.com/tcpscope/tcpscope/tracer/ktime"
	"github.com/tcpscope/tcpscope/tracer/live"
	"github.com/tcpscope/tcpscope/tracer/loader"
	"github.com/tcpscope/tcpscope/tracer/metrics"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// defaultListen is loopback only: the API shows every connection of the
// host, so exposing it is a decision (with --web.config.file for TLS/auth).
const defaultListen = "127.0.0.1:9477"

type serveFlags struct {
	listen, webConfig, ringSize, btf, logFormat string
	topProcesses, streamQueue                   int
	shutdownTimeout, timeWaitKeep               time.Duration
	pprof                                       bool
}

func newServeCommand() *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve [flags]",
		Short: "Run as an agent: Prometheus metrics, an HTTP API and a live event stream",
		Long: `Load and attach once, keep the live socket table, and serve it over HTTP:

  /metrics            Prometheus metrics (tcpscope_*)
  /api/v1/sockets     sockets as 'tcpscope netstat --json' (?state=&port=&pid=&netns=&container=)
  /api/v1/summary     sockets per state, host and per network namespace (?netns=)
  /api/v1/closewait   'tcpscope closewait --json' (?min_age=&threshold=&netns=)
  /api/v1/timewait    'tcpscope timewait --json' over the last interval
                      (?interval=&warn=&netns=; interval up to --timewait.keep)
  /api/v1/info        the agent's version and network namespace
  /api/v1/events      live transitions as 'tcpscope trace --json' (NDJSON stream;
                      ?state=&port=&pid=&netns=&comm=&laddr=&raddr=&container=)
  /healthz, /readyz   alive; ready once the table is seeded

TLS and basic auth follow the Prometheus exporter convention
(--web.config.file, see https://prometheus.io/docs/prometheus/latest/configuration/https/).
Stops cleanly on SIGTERM or Ctrl-C.`,
		Example: `  tcpscope serve
  tcpscope serve --listen :9477 --web.config.file /etc/tcpscope/web.yml
  curl -s localhost:9477/api/v1/summary`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			markRan(cmd)
			return runServe(cmd.Context(), f, os.Stderr, nil)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", defaultListen, "address to listen on (host:port)")
	fl.StringVar(&f.webConfig, "web.config.file", "", "TLS and basic-auth configuration (Prometheus exporter-toolkit format)")
	fl.IntVar(&f.topProcesses, "top-processes", 10, "processes named in tcpscope_close_wait_sockets_by_process; the rest are summed")
	fl.IntVar(&f.streamQueue, "events.queue", 4096, "events one /api/v1/events client may have waiting before its events are dropped")
	fl.DurationVar(&f.timeWaitKeep, "timewait.keep", time.Minute, "the longest interval /api/v1/timewait can report on (TIME_WAIT entries are kept this long)")
	fl.StringVar(&f.logFormat, "log.format", "text", "log format: text or json")
	fl.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 5*time.Second, "how long to let requests finish on SIGTERM")
	// 32M, not trace's 8M: the agent's reader is a goroutine among the API's,
	// and the Go scheduler can hold it back 5-100 ms while a burst of API
	// clients keeps every P busy (measured in TestServeBurst); at this
	// machine's top churn (600k+ events/s) 8M is ~80 ms of events.
	fl.StringVar(&f.ringSize, "ring-size", "32M", "size of the ring buffers, one per CPU, together: a power of two (e.g. 8M, 64M)")
	fl.StringVar(&f.btf, "btf", "", "kernel BTF file to use instead of /sys/kernel/btf/vmlinux")
	fl.BoolVar(&f.pprof, "debug.pprof", false, "also serve Go's profiles under /debug/pprof/ (behind the same TLS and auth)")
	fl.SortFlags = false
	return cmd
}

// addrInUseError: the listen address is taken (another agent running?).
type addrInUseError struct{ addr string }

func (e addrInUseError) Error() string {
	return fmt.Sprintf("listen %s: address already in use (is another tcpscope serve running?)", e.addr)
}

// checkListen rejects a --listen value that cannot be an address before
// anything is loaded: an empty one would listen on every interface.
func checkListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usagef("--listen %q: want host:port (e.g. 127.0.0.1:9477)", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return usagef("--listen %q: port %q: want a number from 0 to 65535", addr, port)
	}
	// A dotted quad that does not parse is a typo, not a host name: say so
	// without asking DNS (which may be slow or absent).
	if host != "" && strings.Trim(host, "0123456789.") == "" && net.ParseIP(host) == nil {
		return usagef("--listen %q: %q is not an IPv4 address", addr, host)
	}
	return nil
}

// runServe runs the agent until ctx ends or SIGTERM. listening, if set,
// receives the bound address once the server accepts connections (tests).
func runServe(ctx context.Context, f serveFlags, stderr io.Writer, listening func(net.Addr)) error {
	ring, err := parseSize(f.ringSize)
	if err != nil {
		return usagef("--ring-size: %v", err)
	}
	if f.streamQueue < 1 {
		return usagef("--events.queue %d: want at least 1", f.streamQueue)
	}
	if f.timeWaitKeep <= 0 {
		return usagef("--timewait.keep %v: must be positive", f.timeWaitKeep)
	}
	if f.topProcesses < 1 {
		return usagef("--top-processes %d: want at least 1", f.topProcesses)
	}
	var handler slog.Handler
	switch f.logFormat {
	case "text":
		handler = slog.NewTextHandler(stderr, nil)
	case "json":
		handler = slog.NewJSONHandler(stderr, nil)
	default:
		return usagef("--log.format %q: want text or json", f.logFormat)
	}
	if err := checkListen(f.listen); err != nil {
		return err
	}
	if f.shutdownTimeout <= 0 {
		return usagef("--shutdown-timeout %v: want a positive duration", f.shutdownTimeout)
	}
	log := slog.New(handler)
	secured, err := webConfigSecured(f.webConfig)
	if err != nil {
		return usagef("--web.config.file: %v", err)
	}

	// Bind before loading BPF: a taken port is the common mistake, and it
	// should not cost a load and a seed.
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return addrInUseError{f.listen}
		}
		if dnsErr, ok := errors.AsType[*net.DNSError](err); ok && dnsErr.IsNotFound {
			return usagef("--listen %q: no such host", f.listen)
		}
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() && !secured {
		log.Warn("listening on a non-loopback address without TLS or basic auth: anyone who can reach it sees every connection of this host; use --web.config.file",
			"addr", ln.Addr().String())
	}

	ctx, cancel := commandContext(ctx, nil, false)
	defer cancel()

	own, err := loader.OwnNetNS()
	if err != nil {
		return err
	}
	tab := table.New()
	// Installed before the seed, as the tracker needs to see every listener.
	tw := diag.NewTimeWaitTracker(f.timeWaitKeep)
	tab.AddOnChange(tw.OnChange)
	reg := prometheus.NewRegistry()
	a := api.New(api.Options{Table: tab, Clock: ktime.NewClock(), StreamQueue: f.streamQueue,
		TimeWait: tw, TimeWaitKeep: f.timeWaitKeep, PortRange: localPortRange, TwReuse: twReuse, Cmdline: readCmdline,
		OwnNetNS: own, Version: version, Cgroups: &cgroup.Resolver{}})
	mux := http.NewServeMux()
	mux.Handle("/", a.Handler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(handler, slog.LevelError)}))
	if f.pprof {
		// For memory and CPU questions in the field (and the soak, which
		// forces a GC with /debug/pprof/heap?gc=1 before it reads the live
		// heap: otherwise the last GC may be minutes old).
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}

	// Streams end when baseCtx does, so that Shutdown need not wait for them.
	baseCtx, endStreams := context.WithCancel(context.Background())
	defer endStreams()
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ErrorLog:          slog.NewLogLogger(handler, slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() {
		systemd := false
		serveErr <- web.Serve(ln, srv, &web.FlagConfig{
			WebListenAddresses: &[]string{f.listen},
			WebSystemdSocket:   &systemd,
			WebConfigFile:      &f.webConfig,
		}, log)
	}()
	log.Info("listening", "addr", ln.Addr().String(), "tls_or_auth", secured)
	if listening != nil {
		listening(ln.Addr())
	}
	shutdown := func() {
		endStreams()
		sctx, scancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
		defer scancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("shutdown", "err", err)
		}
	}

	start := time.Now()
	startMono := ktime.Now()
	tr, err := loader.New(loader.Config{RingBytes: ring, BTFPath: f.btf, Sockets: true})
	if err != nil {
		shutdown()
		return err
	}
	defer tr.Close()
	for _, w := range tr.Warnings() {
		log.Warn(w)
	}
	var started atomic.Pointer[live.Live] // set once seeded; read by scrapes
	reg.MustRegister(
		metrics.New(metrics.Options{
			Table: tab, Tracer: tr, TopProcesses: f.topProcesses, Version: version, Since: startMono, TimeWait: tw,
			Resyncs: func() uint64 {
				if lv := started.Load(); lv != nil {
					return lv.Resyncs()
				}
				return 0
			},
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tcpscope_event_stream_clients",
			Help: "Clients connected to /api/v1/events.",
		}, func() float64 { return float64(a.Clients()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tcpscope_event_stream_dropped_events_total",
			Help: "Events dropped for /api/v1/events clients that did not keep up.",
		}, func() float64 { return float64(a.Dropped()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tcpscope_api_rejected_requests_total",
			Help: "Requests for /api/v1/sockets, closewait or timewait answered 503 because too many were waiting.",
		}, func() float64 { return float64(a.Rejected()) }),
		// go_gc_heap_live_bytes too: the heap the last GC found live,
		// which a soak can compare without counting garbage.
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	a.SetWalker(tr)
	reserveReaderPs()
	lv, err := live.Start(ctx, tr, tab, live.Options{
		Notify: func(msg string) { log.Warn("table", "msg", msg) },
		Events: a.Publish,
		// The API's answers and the host's other work must not starve
		// the ring reader (TestServeBurst).
		ReaderNice: live.RaisedReaderNice,
	})
	if err != nil {
		shutdown()
		if ctx.Err() != nil { // SIGTERM while seeding: a normal stop
			log.Info("stopped before ready", "reason", context.Cause(ctx))
			return nil
		}
		return err
	}
	started.Store(lv)
	tw.SetSeedMono(lv.SeedMono())
	a.SetReady(lv.SeedMono())
	lv.TakeSeed() // not needed: free it
	log.Info("ready", "sockets", tab.Len(), "seed_time", time.Since(start).Round(time.Millisecond))

	// lv.Wait may be called only once: it hands over Run's error.
	var runErr error
	waited := false
	select {
	case <-ctx.Done():
	case <-lv.Done():
		runErr, waited = lv.Wait(), true
		if ctx.Err() == nil {
			log.Error("tracer stopped", "err", runErr)
			if runErr == nil {
				runErr = errors.New("tracer stopped")
			}
		}
	case err := <-serveErr:
		runErr = fmt.Errorf("serve: %w", err)
	}
	if ctx.Err() != nil {
		log.Info("stopping", "reason", context.Cause(ctx))
	}
	shutdown()
	cancel()
	if !waited {
		if err := lv.Wait(); err != nil && runErr == nil {
			runErr = err
		}
	}
	log.Info("stopped")
	return runErr
}

// webConfigSecured reads an exporter-toolkit web config and tells whether
// it turns on TLS or basic auth ("" is neither). web.Validate checks the
// file as the server will use it.
func webConfigSecured(path string) (bool, error) {
	if path == "" {
		return false, nil
	}
	if err := web.Validate(path); err != nil {
		return false, err
	}
	content, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	var c web.Config
	if err := yaml.UnmarshalStrict(content, &c); err != nil {
		return false, err
	}
	return c.TLSConfig.IsEnabled() || len(c.Users) > 0, nil
}

// reserveReaderPs gives the ring reader and the table applier, which run
// locked to threads of their own at a raised priority, two more Ps than the
// CPUs: the Go scheduler knows nothing of thread priorities, and with every
// P taken by the API's goroutines (event streams encoding JSON) the reader
// waited for one while the rings overflowed (TestServeBurst lost events in
// 1 run of 6 with 2 Ps, none in 7 with 4; 2026-12-06). With spare Ps the
// kernel, which knows the priorities, decides. A GOMAXPROCS the user set is
// kept, and so is one the runtime lowered to a container's CPU limit: more Ps
// than the quota would only get the whole cgroup, reader included,
// throttled (and setting it stops the runtime following the limit).
func reserveReaderPs() {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) >= runtime.NumCPU() {
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 2)
	}
}
