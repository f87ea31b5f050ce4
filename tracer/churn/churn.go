// Package churn is a loopback TCP connection-churn load generator: it runs
// its own listeners and clients in-process and opens, and closes, as many
// connections per second as it can, in a chosen close order. Benchmarks use
// it to measure what a tracer costs the kernel's TCP path.
//
// Every socket is a plain blocking socket driven by raw system calls from a
// goroutine locked to its own OS thread. On loopback the kernel delivers each
// packet in the sender's own system call, so by default every worker drives
// both ends of its connections itself, in order: connect, accept, close one
// end, read the end of stream on the other, close it. Nothing ever waits on
// another thread, and the machine's CPUs go to the kernel's TCP path and to
// whatever traces it. Separate client and server threads (Config.Split),
// which wake each other the way a real client and server do, were slower on
// two CPUs: about 35k against 48k connections/s server-first, 43k against
// 46k client-first. Run raises GOMAXPROCS for its duration so that every
// thread keeps a P while it blocks in a system call.
//
// Only loopback addresses are accepted, and every run is bounded both in
// connections and in time.
package churn

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// CloseOrder says which end of each connection closes first, and so which
// end is left in TIME_WAIT.
type CloseOrder int

const (
	// ServerFirst: the server closes right after accept(); the client
	// reads the end of stream and closes. TIME_WAIT is on the server side.
	ServerFirst CloseOrder = iota
	// ClientFirst: the client closes right after connect(); the server
	// reads the end of stream and closes. TIME_WAIT is on the client side,
	// which holds an ephemeral port per connection until it expires.
	ClientFirst
	// Mixed: half the listeners work as ServerFirst, half as ClientFirst;
	// clients spread connections over them round robin.
	Mixed
)

func (c CloseOrder) String() string {
	switch c {
	case ServerFirst:
		return "server"
	case ClientFirst:
		return "client"
	case Mixed:
		return "mixed"
	}
	return fmt.Sprintf("CloseOrder(%d)", int(c))
}

// ParseCloseOrder accepts "client", "server" and "mixed" (also with a
// "-first" suffix).
func ParseCloseOrder(s string) (CloseOrder, error) {
	switch strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), "-first") {
	case "server":
		return ServerFirst, nil
	case "client":
		return ClientFirst, nil
	case "mixed":
		return Mixed, nil
	}
	return 0, fmt.Errorf("unknown close order %q (want client, server or mixed)", s)
}

// Config describes one run. The zero value is a bounded IPv4 server-first
// run of at most DefaultConns connections or DefaultDuration.
type Config struct {
	// Conns is the most connections to attempt, successful or not
	// (default DefaultConns).
	Conns int
	// Duration is the most time to run (default DefaultDuration). The run
	// ends at whichever of Conns and Duration comes first, or when the
	// context passed to Run is done.
	Duration time.Duration
	// Workers is the number of client threads (default DefaultWorkers()).
	Workers int
	// Servers is the number of server threads with Split (default:
	// Workers, at least one per listener).
	Servers int
	// Close is the close order.
	Close CloseOrder
	// IPv6 uses ::1 instead of 127.0.0.1 when Addrs is empty.
	IPv6 bool
	// Addrs are the loopback addresses to listen on and connect to
	// (default 127.0.0.1, or ::1 with IPv6). Several 127.0.0.x addresses,
	// like several ports, multiply the ephemeral ports available to
	// client-first churn.
	Addrs []netip.Addr
	// Ports is the number of listening ports per address, per worker
	// unless Split (default 1 for ServerFirst, 4 otherwise).
	Ports int
	// Split runs the servers on threads of their own (Servers of them,
	// sharing the listeners) instead of having each worker drive both ends
	// of its connections.
	Split bool
	// Rate paces the run to at most this many connection attempts per
	// second, all workers together (0: as fast as they can), for latency
	// measured under a steady load rather than a saturating one.
	Rate float64
}

// Defaults for Config fields left zero.
const (
	DefaultConns    = 100_000
	DefaultDuration = 10 * time.Second
	// MaxDuration bounds Config.Duration.
	MaxDuration = 10 * time.Minute
)

// DefaultWorkers is the worker count that gave the highest rate on a
// two-CPU machine: two per CPU, so that a worker stalled on a dropped SYN
// (the kernel retransmits it after a second) leaves the CPUs busy.
func DefaultWorkers() int { return 2 * runtime.NumCPU() }

// Result is the outcome of a run.
type Result struct {
	Close   CloseOrder
	Family  string // "ipv4" or "ipv6"
	Workers int
	Servers int // server threads; 0 unless Split
	// Conns is the number of connections that completed: connected,
	// closed in the configured order, and closed by both ends.
	Conns uint64
	// Errors counts attempts that failed at any step (with Split, a
	// server-side failure of a connection the client completed counts in
	// both).
	Errors uint64
	// Elapsed is the time from the first connection attempt to the last
	// client finishing.
	Elapsed time.Duration
	// FirstError describes the first failure, if any.
	FirstError string
	// Listeners are the addresses the servers listened on.
	Listeners []netip.AddrPort
}

// Summary is a Result as tcpchurn -json prints it and the benchmark reads
// it.
type Summary struct {
	Close      string   `json:"close"`
	Family     string   `json:"family"`
	Workers    int      `json:"workers"`
	Servers    int      `json:"servers,omitempty"`
	Conns      uint64   `json:"conns"`
	Errors     uint64   `json:"errors"`
	ElapsedSec float64  `json:"elapsed_s"`
	Rate       float64  `json:"rate"`
	FirstError string   `json:"first_error,omitempty"`
	Listeners  []string `json:"listeners,omitempty"`
}

// Summary returns r for JSON.
func (r Result) Summary() Summary {
	s := Summary{
		Close: r.Close.String(), Family: r.Family, Workers: r.Workers, Servers: r.Servers,
		Conns: r.Conns, Errors: r.Errors, ElapsedSec: r.Elapsed.Seconds(), Rate: r.Rate(),
		FirstError: r.FirstError,
	}
	for _, l := range r.Listeners {
		s.Listeners = append(s.Listeners, l.String())
	}
	return s
}

// Rate is completed connections per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Conns) / r.Elapsed.Seconds()
}

func (r Result) String() string {
	s := fmt.Sprintf("close=%s family=%s workers=%d conns=%d errors=%d elapsed=%.3fs rate=%.0f/s",
		r.Close, r.Family, r.Workers, r.Conns, r.Errors, r.Elapsed.Seconds(), r.Rate())
	if r.FirstError != "" {
		s += " first_error=" + fmt.Sprintf("%q", r.FirstError)
	}
	return s
}

// rcvTimeout bounds every wait in accept() and for an end of stream, so
// that a lost packet or a bug cannot hang a run.
const rcvTimeout = 2 * time.Second

type listener struct {
	fd    int
	addr  netip.AddrPort
	order CloseOrder // ServerFirst or ClientFirst
	sa    unix.Sockaddr
}

// Run opens the listeners, runs the workers until the connection budget,
// the duration or ctx runs out, and tears everything down. An error is
// returned only when the run could not start; failures of single
// connections are counted in Result.Errors.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.normalize(); err != nil {
		return Result{}, err
	}
	res := Result{Close: cfg.Close, Family: "ipv4", Workers: cfg.Workers, Servers: cfg.Servers}
	if cfg.Addrs[0].Is6() {
		res.Family = "ipv6"
	}

	// Split: one set of listeners shared by all; otherwise one set per
	// worker, which drives them alone.
	sets := cfg.Workers
	if cfg.Split {
		sets = 1
	}
	lns, err := openListeners(cfg, sets)
	if err != nil {
		return res, err
	}
	defer func() {
		for _, l := range lns {
			unix.Close(l.fd)
		}
	}()
	for _, l := range lns {
		res.Listeners = append(res.Listeners, l.addr)
	}
	perSet := len(lns) / sets

	// One P per thread, so that a thread blocked in a system call never
	// holds up another (a P left in a system call is otherwise only handed
	// on by the runtime's monitor, tens of microseconds later); restored
	// afterwards.
	if want := cfg.Workers + cfg.Servers + 2; runtime.GOMAXPROCS(0) < want {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(want))
	}

	r := &runner{cfg: cfg}
	r.budget.Store(int64(cfg.Conns))

	// Split servers: at least one thread per listener, the rest spread
	// evenly.
	var srvWG sync.WaitGroup
	for i := 0; i < cfg.Servers; i++ {
		srvWG.Add(1)
		go func(l *listener) {
			defer srvWG.Done()
			r.serve(l)
		}(&lns[i%len(lns)])
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	stopWatch := context.AfterFunc(ctx, func() { r.stop.Store(true) })
	defer stopWatch()

	start := time.Now()
	r.start = start
	var wg sync.WaitGroup
	counts := make([]workerCount, cfg.Workers)
	for i := 0; i < cfg.Workers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if cfg.Split {
				r.client(lns, i, &counts[i])
			} else {
				r.inline(lns[i*perSet:(i+1)*perSet], &counts[i])
			}
		}(i)
	}
	wg.Wait()
	r.stop.Store(true)
	if cfg.Split {
		// Clients closing first do not wait for the server: let the
		// servers take what is still queued, which shutting the listeners
		// down would reset.
		waitAccepted(lns, time.Now().Add(rcvTimeout))
	}
	res.Elapsed = time.Since(start)

	// No connection waits on a server any more: wake the servers blocked
	// in accept() (shutdown of a listener makes accept fail with EINVAL)
	// and wait for them.
	r.closing.Store(true)
	for _, l := range lns {
		unix.Shutdown(l.fd, unix.SHUT_RDWR)
	}
	srvWG.Wait()

	for _, c := range counts {
		res.Conns += c.ok
		res.Errors += c.errs
	}
	res.Errors += r.srvErrs.Load()
	if e := r.firstErr.Load(); e != nil {
		res.FirstError = *e
	}
	return res, nil
}

// waitAccepted waits until no listener has a connection waiting to be
// accepted, or until the deadline.
func waitAccepted(lns []listener, deadline time.Time) {
	fds := make([]unix.PollFd, len(lns))
	for time.Now().Before(deadline) {
		for i, l := range lns {
			fds[i] = unix.PollFd{Fd: int32(l.fd), Events: unix.POLLIN}
		}
		if n, err := unix.Poll(fds, 0); err == nil && n == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func (cfg *Config) normalize() error {
	if cfg.Conns < 0 || cfg.Duration < 0 || cfg.Workers < 0 || cfg.Servers < 0 || cfg.Ports < 0 || cfg.Rate < 0 {
		return errors.New("churn: negative count or duration")
	}
	if cfg.Conns == 0 {
		cfg.Conns = DefaultConns
	}
	if cfg.Duration == 0 {
		cfg.Duration = DefaultDuration
	}
	if cfg.Duration > MaxDuration {
		return fmt.Errorf("churn: duration %v is over the limit of %v", cfg.Duration, MaxDuration)
	}
	if cfg.Workers == 0 {
		cfg.Workers = DefaultWorkers()
	}
	switch cfg.Close {
	case ServerFirst, ClientFirst, Mixed:
	default:
		return fmt.Errorf("churn: unknown close order %d", int(cfg.Close))
	}
	if len(cfg.Addrs) == 0 {
		if cfg.IPv6 {
			cfg.Addrs = []netip.Addr{netip.IPv6Loopback()}
		} else {
			cfg.Addrs = []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1})}
		}
	}
	addrs := make([]netip.Addr, len(cfg.Addrs))
	for i, a := range cfg.Addrs {
		a = a.Unmap()
		addrs[i] = a
		if !a.IsLoopback() {
			return fmt.Errorf("churn: %v is not a loopback address", a)
		}
		if a.Is6() != addrs[0].Is6() {
			return errors.New("churn: addresses mix IPv4 and IPv6")
		}
	}
	cfg.Addrs = addrs
	if cfg.Ports == 0 {
		cfg.Ports = 1
		if cfg.Close != ServerFirst {
			cfg.Ports = 4
		}
	}
	perSet := cfg.Ports * len(cfg.Addrs)
	if cfg.Close == Mixed && perSet < 2 {
		return errors.New("churn: mixed close order needs at least two listeners (ports x addresses)")
	}
	if perSet > 1024 {
		return errors.New("churn: over 1024 listeners per worker")
	}
	if !cfg.Split {
		cfg.Servers = 0
		return nil
	}
	if cfg.Servers == 0 {
		cfg.Servers = cfg.Workers
	}
	cfg.Servers = max(cfg.Servers, perSet)
	return nil
}

// openListeners opens sets x addresses x ports listeners. Within each set
// the close orders of Mixed alternate.
func openListeners(cfg Config, sets int) ([]listener, error) {
	var lns []listener
	for s := 0; s < sets; s++ {
		i := 0
		for _, a := range cfg.Addrs {
			for p := 0; p < cfg.Ports; p++ {
				l, err := listen(a)
				if err != nil {
					for _, l := range lns {
						unix.Close(l.fd)
					}
					return nil, err
				}
				l.order = cfg.Close
				if cfg.Close == Mixed {
					l.order = ServerFirst
					if i%2 == 1 {
						l.order = ClientFirst
					}
				}
				i++
				lns = append(lns, l)
			}
		}
	}
	return lns, nil
}

func sockaddr(ap netip.AddrPort) (unix.Sockaddr, int) {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}, unix.AF_INET
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}, unix.AF_INET6
}

func listen(a netip.Addr) (listener, error) {
	sa, fam := sockaddr(netip.AddrPortFrom(a, 0))
	fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return listener{}, fmt.Errorf("churn: socket: %w", err)
	}
	fail := func(what string, err error) (listener, error) {
		unix.Close(fd)
		return listener{}, fmt.Errorf("churn: %s %v: %w", what, a, err)
	}
	tv := unix.NsecToTimeval(rcvTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fail("SO_RCVTIMEO", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	// The kernel caps the backlog at net.core.somaxconn.
	if err := unix.Listen(fd, 65535); err != nil {
		return fail("listen", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	var port int
	switch s := got.(type) {
	case *unix.SockaddrInet4:
		port = s.Port
	case *unix.SockaddrInet6:
		port = s.Port
	}
	ap := netip.AddrPortFrom(a, uint16(port))
	sa, _ = sockaddr(ap)
	return listener{fd: fd, addr: ap, sa: sa}, nil
}

type workerCount struct {
	ok, errs uint64
	_        [48]byte // keep workers' counters on separate cache lines
}

type runner struct {
	cfg      Config
	budget   atomic.Int64 // attempts left
	stop     atomic.Bool  // no more attempts
	closing  atomic.Bool  // listeners are being shut down
	srvErrs  atomic.Uint64
	firstErr atomic.Pointer[string]
	start    time.Time // of the first attempt; Rate's schedule counts from it
}

func (r *runner) noteErr(err error) {
	s := err.Error()
	r.firstErr.CompareAndSwap(nil, &s)
}

// next reserves one attempt, or reports that the run is over. With a Rate
// it first waits for the attempt's turn: attempt n is due n/Rate seconds
// after the start, whichever worker takes it.
func (r *runner) next() bool {
	if r.stop.Load() {
		return false
	}
	left := r.budget.Add(-1)
	if left < 0 {
		return false
	}
	if r.cfg.Rate > 0 {
		// An open-loop schedule: a worker that fell behind (a stall of
		// the machine) catches up, as a server's clients would not wait
		// for it either. Sleep in steps, so a stop is seen within 10 ms.
		n := int64(r.cfg.Conns) - 1 - left
		due := r.start.Add(time.Duration(float64(n) / r.cfg.Rate * float64(time.Second)))
		for d := time.Until(due); d > 0; d = time.Until(due) {
			if r.stop.Load() {
				return false
			}
			time.Sleep(min(d, 10*time.Millisecond))
		}
		return !r.stop.Load()
	}
	return true
}

// backoff keeps a run of failures (ports exhausted, say) from spinning.
func backoff(consecutive *int, failed bool) {
	if !failed {
		*consecutive = 0
		return
	}
	if *consecutive++; *consecutive > 8 {
		time.Sleep(time.Millisecond)
	}
}

func (r *runner) family() int {
	if r.cfg.Addrs[0].Is6() {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// inline drives both ends of each connection on its own listeners, in
// turn.
func (r *runner) inline(lns []listener, c *workerCount) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var (
		buf         [64]byte
		fam         = r.family()
		next        = 0
		consecutive = 0
	)
	for r.next() {
		l := &lns[next]
		if next++; next == len(lns) {
			next = 0
		}
		err := inlineOnce(fam, l, buf[:])
		if err != nil {
			c.errs++
			r.noteErr(err)
			// A connection left in the accept queue would be taken for the
			// next one's server end: clear the queue.
			drain(l.fd)
		} else {
			c.ok++
		}
		backoff(&consecutive, err != nil)
	}
}

func inlineOnce(fam int, l *listener, buf []byte) error {
	cfd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(cfd, l.sa); err != nil {
		unix.Close(cfd)
		return fmt.Errorf("connect %v: %w", l.addr, err)
	}
	sfd, err := accept(l.fd)
	if err != nil {
		unix.Close(cfd)
		return fmt.Errorf("accept %v: %w", l.addr, err)
	}
	first, second := sfd, cfd
	if l.order == ClientFirst {
		first, second = cfd, sfd
	}
	unix.Close(first)
	// The FIN was delivered within close(): the read normally returns at
	// once.
	err = readEOF(second, buf)
	unix.Close(second)
	if err != nil {
		return fmt.Errorf("read end of stream from %v: %w", l.addr, err)
	}
	return nil
}

// accept4 with no address: unix.Accept4 would allocate one.
func accept(lfd int) (int, error) {
	for {
		nfd, _, errno := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(lfd), 0, 0, unix.SOCK_CLOEXEC, 0, 0)
		switch errno {
		case 0:
			return int(nfd), nil
		case unix.EINTR, unix.ECONNABORTED:
			continue
		}
		return -1, errno
	}
}

// drain closes whatever waits in a listener's accept queue.
func drain(lfd int) {
	for {
		fds := []unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, 0); err != nil || n == 0 {
			return
		}
		fd, err := accept(lfd)
		if err != nil {
			return
		}
		unix.Close(fd)
	}
}

// client opens connections to the shared listeners until the run is over.
// Worker i starts at listener i and goes round robin, so every listener gets
// the same share.
func (r *runner) client(lns []listener, i int, c *workerCount) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var (
		buf         [64]byte
		fam         = r.family()
		next        = i % len(lns)
		consecutive = 0
	)
	for r.next() {
		l := &lns[next]
		if next++; next == len(lns) {
			next = 0
		}
		err := clientOnce(fam, l, buf[:])
		if err != nil {
			c.errs++
			r.noteErr(err)
		} else {
			c.ok++
		}
		backoff(&consecutive, err != nil)
	}
}

func clientOnce(fam int, l *listener, buf []byte) error {
	fd, err := unix.Socket(fam, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(fd, l.sa); err != nil {
		unix.Close(fd)
		return fmt.Errorf("connect %v: %w", l.addr, err)
	}
	if l.order == ServerFirst {
		// Wait for the server's FIN, then close: we take the passive side.
		if err := readEOF(fd, buf); err != nil {
			unix.Close(fd)
			return fmt.Errorf("client read %v: %w", l.addr, err)
		}
	}
	if err := unix.Close(fd); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

// readEOF reads until the peer's end of stream, for at most rcvTimeout.
// The read does not block: on loopback the FIN has nearly always been
// delivered already, and when it has not, poll waits for it. That bounds
// the wait without a setsockopt per connection.
func readEOF(fd int, buf []byte) error {
	var deadline time.Time
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
			unix.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == unix.EINTR:
		case errno == unix.EAGAIN:
			now := time.Now()
			if deadline.IsZero() {
				deadline = now.Add(rcvTimeout)
			}
			if !now.Before(deadline) {
				return unix.ETIMEDOUT
			}
			fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds[:], int(deadline.Sub(now)/time.Millisecond)+1); err != nil && err != unix.EINTR {
				return err
			}
		case errno != 0:
			return errno
		case n == 0:
			return nil
		}
	}
}

// serve accepts on a shared listener until it is shut down.
func (r *runner) serve(l *listener) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var buf [64]byte
	for {
		fd, err := accept(l.fd)
		if err != nil {
			if r.closing.Load() {
				return // listener shut down
			}
			if errors.Is(err, unix.EAGAIN) {
				continue // accept timed out while clients were busy
			}
			r.srvErrs.Add(1)
			r.noteErr(fmt.Errorf("accept %v: %w", l.addr, err))
			if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) {
				time.Sleep(time.Millisecond)
				continue
			}
			return
		}
		if l.order == ClientFirst {
			if err := readEOF(fd, buf[:]); err != nil {
				r.srvErrs.Add(1)
				r.noteErr(fmt.Errorf("server read %v: %w", l.addr, err))
			}
		}
		unix.Close(fd)
	}
}
