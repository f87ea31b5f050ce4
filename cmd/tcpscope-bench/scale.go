package main

// The scale phase: how long the one-shot socket views take with many
// sockets open. Holder processes (this binary in its scale-holder mode) each
// open a loopback listener and connect to it K times, keeping both ends, and
// at each size the views are timed with their output to /dev/null:
// `tcpscope netstat -ant` (and its BPF-iterator form), `-antp`, `--summary`, `ss -tan`, `ss -tanp`,
// `netstat -ant` and `netstat -antp`, and the floor of a one-shot view
// (floor.go).

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// scaleHolderArg makes this binary hold loopback connections open.
const scaleHolderArg = "scale-holder"

// holderMaxConns is the most connections one holder makes: two fds each,
// under the 20000 fds a process may have here.
const holderMaxConns = 9500

// ScaleReport is the scale phase's results.
type ScaleReport struct {
	Sizes    []int         `json:"sizes"`
	PTimeout string        `json:"p_timeout"`
	Results  []ScaleResult `json:"results"`
}

// ScaleResult is every view timed at one size.
type ScaleResult struct {
	Sockets        int     `json:"sockets"`   // asked for: both ends of Sockets/2 connections
	NetNS          bool    `json:"own_netns"` // holders and views ran in a network namespace of their own
	Holders        int     `json:"holders"`
	ConnsPerHolder int     `json:"conns_per_holder_max"`
	CreateSec      float64 `json:"create_s"`
	CreateLimitSec float64 `json:"create_limit_s"`
	// Data lines of `tcpscope netstat -ant` and `ss -tan` (headers left
	// out), one run each right after the other: they differ only by host
	// noise.
	TcpscopeLines int         `json:"tcpscope_lines"`
	SsLines       int         `json:"ss_lines"`
	LineDiff      int         `json:"line_diff"`
	MemUsedGiB    float64     `json:"mem_used_gib"` // MemTotal-MemAvailable with the sockets open
	Cmds          []ScaleTime `json:"cmds"`
	// tcpscope serve started with the sockets open: its table's size,
	// time to ready and resident memory once ready.
	Serve       *ServeMem `json:"serve,omitempty"`
	TeardownSec float64   `json:"teardown_s"`
	Error       string    `json:"error,omitempty"`
}

// ScaleTime is one view's wall-clock times at one size.
type ScaleTime struct {
	Cmd      string    `json:"cmd"`
	Tool     string    `json:"tool"`
	Runs     []float64 `json:"runs_s"`
	BestSec  float64   `json:"best_s,omitempty"` // 0 when no run finished
	TimedOut bool      `json:"timed_out,omitempty"`
	// Ratio is this peer's best time over tcpscope's for the same view
	// (-ant or -antp); with a timed-out peer, the timeout over it (a lower
	// bound).
	Ratio float64 `json:"ratio_vs_tcpscope,omitempty"`
	Error string  `json:"error,omitempty"`
}

// scaleView is one command of the scale phase.
type scaleView struct {
	tool string   // tcpscope, ss or netstat
	args []string // after the binary
	slow bool     // one run only
	vs   string   // tcpscope's args this is compared with
}

var scaleViews = []scaleView{
	{tool: "tcpscope", args: []string{"netstat", "-ant"}},
	// The same view through the BPF iterator, as -antp walks (plain views
	// read a sock_diag dump).
	{tool: "tcpscope", args: []string{"netstat", "-ant", "--bpf-walk"}},
	{tool: "tcpscope", args: []string{"netstat", "-antp"}},
	{tool: "tcpscope", args: []string{"netstat", "--summary"}},
	{tool: "ss", args: []string{"-tan"}, vs: "netstat -ant"},
	{tool: "ss", args: []string{"-tanp"}, slow: true, vs: "netstat -antp"},
	{tool: "netstat", args: []string{"-ant"}, vs: "netstat -ant"},
	{tool: "netstat", args: []string{"-antp"}, slow: true, vs: "netstat -antp"},
	// The least a one-shot view through cilium/ebpf and iter/tcp costs:
	// load and attach one tiny program, read a byte per socket, print a
	// count per state, as `tcpscope netstat --summary` prints.
	{tool: "floor", args: []string{floorWalkArg}, vs: "netstat --summary"},
}

func (v scaleView) name() string { return v.tool + " " + strings.Join(v.args, " ") }

// parseScaleSizes parses -scale: socket counts separated by commas, "" for
// none.
func parseScaleSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" || f == "0" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 2 || n > 4_000_000 {
			return nil, fmt.Errorf("-scale: %q is not a socket count from 2 to 4000000", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// createLimit bounds how long making n sockets may take.
func createLimit(n int) time.Duration {
	return 30*time.Second + time.Duration(n)*200*time.Microsecond
}

// scaleBudget is the most the scale phase may take: creation, every view
// (a fast one repeats only while it stays within the timeout), the line
// counts and teardown, at every size.
func scaleBudget(o options) time.Duration {
	var d time.Duration
	for _, n := range o.scaleSizes {
		d += createLimit(n) + time.Duration(2*len(scaleViews)+3)*(o.scalePTimeout+5*time.Second) + time.Minute
	}
	return d
}

// runScaleOnly is the whole bench with -scale-only: the scale phase alone.
func (b *bench) runScaleOnly(ctx context.Context) *Report {
	start := time.Now()
	b.rep = newReport(b.opts)
	b.rep.ScaleOnly = true
	b.rep.Scale = b.scalePhase(ctx)
	if ctx.Err() != nil {
		b.note("stopped early: %v", context.Cause(ctx))
	}
	b.rep.TotalSec = time.Since(start).Seconds()
	return b.rep
}

func (b *bench) scalePhase(ctx context.Context) *ScaleReport {
	sr := &ScaleReport{Sizes: b.opts.scaleSizes, PTimeout: b.opts.scalePTimeout.String()}
	if len(b.opts.scaleSizes) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		b.note("scale phase skipped: it needs root (tcpscope loads BPF; -p needs every process's fds)")
		return sr
	}
	bins := map[string]string{}
	if b.rep.Tools.Tcpscope == "" {
		if p, ok := b.findTcpscope(); ok {
			b.rep.Tools.Tcpscope = p
		}
	}
	if b.rep.Tools.Tcpscope != "" {
		bins["tcpscope"] = b.rep.Tools.Tcpscope
	}
	for _, t := range []string{"ss", "netstat"} {
		if p, err := exec.LookPath(t); err == nil {
			bins[t] = p
		} else {
			b.note("scale phase: %s not found (Debian package %s): its views skipped", t, map[string]string{"ss": "iproute2", "netstat": "net-tools"}[t])
		}
	}
	self, err := os.Executable()
	if err != nil {
		b.note("scale phase skipped: %v", err)
		return sr
	}
	bins["floor"] = self
	for _, n := range b.opts.scaleSizes {
		if ctx.Err() != nil {
			break
		}
		need := uint64(n)*4096 + 1<<30
		if avail := memAvailable(); avail > 0 && avail < need {
			b.note("scale phase: %d sockets skipped: %.1f GiB available, want %.1f GiB", n, gib(avail), gib(need))
			continue
		}
		var res ScaleResult
		if b.opts.scaleHostNS {
			res = b.scaleAt(ctx, self, bins, n)
		} else if err := inFreshNetNS(func() { res = b.scaleAt(ctx, self, bins, n) }); err != nil {
			res = ScaleResult{Sockets: n, Error: err.Error()}
		}
		res.NetNS = !b.opts.scaleHostNS
		if res.Error != "" {
			b.note("scale phase at %d sockets: %s", n, res.Error)
		}
		sr.Results = append(sr.Results, res)
	}
	return sr
}

func (b *bench) scaleAt(ctx context.Context, self string, bins map[string]string, n int) (res ScaleResult) {
	res = ScaleResult{Sockets: n, CreateLimitSec: createLimit(n).Seconds()}
	// Holders and views die with this context: on error, interrupt, or
	// memory running short.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopWatch := watchMemory(ctx, cancel)
	defer stopWatch()

	b.logf("scale: opening %d sockets (limit %v)", n, createLimit(n))
	t0 := time.Now()
	hs, err := startHolders(ctx, self, n, holderMaxConns, createLimit(n))
	res.CreateSec = time.Since(t0).Seconds()
	if hs != nil {
		res.Holders, res.ConnsPerHolder = len(hs.procs), hs.perHolder
		defer func() {
			t := time.Now()
			hs.stop()
			res.TeardownSec = time.Since(t).Seconds()
		}()
	}
	if err != nil {
		res.Error = fmt.Sprintf("opening the sockets: %v", err)
		return res
	}
	res.MemUsedGiB = gib(memUsed())
	b.logf("scale: %d sockets open in %.1f s by %d holders (%.1f GiB in use)", n, res.CreateSec, res.Holders, res.MemUsedGiB)

	to := b.opts.scalePTimeout
	if bins["tcpscope"] != "" && bins["ss"] != "" {
		var e1, e2 error
		res.TcpscopeLines, e1 = countLines(ctx, to, "tcp", bins["tcpscope"], "netstat", "-ant")
		res.SsLines, e2 = countLines(ctx, to, "", bins["ss"], "-tanH")
		res.LineDiff = res.TcpscopeLines - res.SsLines
		if err := errors.Join(e1, e2); err != nil {
			res.Error = fmt.Sprintf("line count: %v", err)
		}
		b.logf("scale: lines: tcpscope netstat -ant %d, ss -tan %d", res.TcpscopeLines, res.SsLines)
	}
	best := map[string]float64{}
	for _, v := range scaleViews {
		if ctx.Err() != nil {
			break
		}
		bin := bins[v.tool]
		if bin == "" {
			continue
		}
		st := ScaleTime{Cmd: v.name(), Tool: v.tool}
		runs := 3
		if v.slow {
			runs = 1
		}
		var spent time.Duration
		for i := 0; i < runs && ctx.Err() == nil; i++ {
			d, timedOut, err := timeView(ctx, to, bin, v.args...)
			if timedOut {
				st.TimedOut = true
				break
			}
			if err != nil {
				st.Error = err.Error()
				break
			}
			st.Runs = append(st.Runs, d.Seconds())
			if st.BestSec == 0 || d.Seconds() < st.BestSec {
				st.BestSec = d.Seconds()
			}
			// Repeat only while the repeats fit in the timeout.
			if spent += d; spent+d > to {
				break
			}
		}
		if v.tool == "tcpscope" {
			best[strings.Join(v.args, " ")] = st.BestSec
		} else if base := best[v.vs]; base > 0 {
			switch {
			case st.BestSec > 0:
				st.Ratio = st.BestSec / base
			case st.TimedOut:
				st.Ratio = to.Seconds() / base
			}
		}
		b.logf("scale: %d sockets: %-22s %s", n, st.Cmd, fmtScaleTime(st, to))
		res.Cmds = append(res.Cmds, st)
	}
	if bins["tcpscope"] != "" && ctx.Err() == nil {
		// From another goroutine, so from a thread in the bench's own
		// namespace: serve walks every namespace, and its port must be
		// reachable from here.
		done := make(chan *ServeMem)
		go func() { done <- b.serveMem(ctx, bins["tcpscope"]) }()
		res.Serve = <-done
	}
	if err := context.Cause(ctx); err != nil && res.Error == "" {
		res.Error = err.Error()
	}
	return res
}

// ServeMem is tcpscope serve's memory with many sockets in its table.
type ServeMem struct {
	TableSockets float64 `json:"table_sockets"`
	ReadySec     float64 `json:"ready_s"`
	RSSBytes     uint64  `json:"rss_bytes"`
	PeakRSSBytes uint64  `json:"peak_rss_bytes"`
	Error        string  `json:"error,omitempty"`
}

// serveMem starts serve, waits until it is ready and a second more (the
// seed's garbage collected), and reads its table size and memory.
func (b *bench) serveMem(ctx context.Context, bin string) *ServeMem {
	sm := &ServeMem{}
	t0 := time.Now()
	tp, err := startServe(ctx, bin, b.opts.scalePTimeout)
	if err != nil {
		sm.Error = err.Error()
		return sm
	}
	sm.ReadySec = time.Since(t0).Seconds()
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
	}
	m, err := scrape(tp.addr)
	if err != nil {
		sm.Error = err.Error()
	}
	sm.TableSockets = m["tcpscope_table_sockets"]
	pid := tp.cmd.Process.Pid
	sm.RSSBytes, sm.PeakRSSBytes = procStatusBytes(pid, "VmRSS"), procStatusBytes(pid, "VmHWM")
	if st := tp.stop(); st.err != nil && sm.Error == "" {
		sm.Error = fmt.Sprintf("serve: %v: %s", st.err, lastLines(st.stderr, 2))
	}
	b.logf("scale: serve: %.0f sockets in its table, ready in %.2f s, RSS %.0f MiB (peak %.0f MiB)",
		sm.TableSockets, sm.ReadySec, mib(sm.RSSBytes), mib(sm.PeakRSSBytes))
	return sm
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// inFreshNetNS runs fn on a thread of its own in a new network namespace
// with its loopback up: the processes fn starts from its goroutine are
// born there (a child inherits the namespace of the thread that forks it),
// so their sockets are alone in it and the views count exactly them. The
// thread is never unlocked: it exits with the goroutine, and the namespace
// goes with it and with the last of those processes, leaving nothing
// behind.
func inFreshNetNS(fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("new network namespace: %w", err)
			return
		}
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			errc <- fmt.Errorf("ip link set lo up: %v: %s", err, strings.TrimSpace(string(out)))
			return
		}
		fn()
		errc <- nil
	}()
	return <-errc
}

// timeView runs one view with its output to /dev/null and returns its wall
// time.
func timeView(ctx context.Context, timeout time.Duration, bin string, args ...string) (time.Duration, bool, error) {
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return 0, false, err
	}
	defer devNull.Close()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, args...)
	cmd.Stdout = devNull
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	cmd.WaitDelay = 2 * time.Second
	t := time.Now()
	err = cmd.Run()
	d := time.Since(t)
	if errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		return d, true, nil
	}
	if err != nil {
		return d, false, fmt.Errorf("%v: %s", err, lastLines(stderr.String(), 2))
	}
	return d, false, nil
}

// countLines counts the lines of a view's output that start with prefix.
func countLines(ctx context.Context, timeout time.Duration, prefix, bin string, args ...string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	n := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			n++
		}
	}
	if err := cmd.Wait(); err != nil {
		return n, fmt.Errorf("%s: %v", bin, err)
	}
	return n, nil
}

// holderSet is the holder processes of one size.
type holderSet struct {
	procs     []*holderProc
	perHolder int
}

type holderProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *lockedBuffer
	addr   string // listener, from its ready line
	done   chan struct{}
}

// startHolders starts holders for n sockets, at most perHolder connections
// each, and waits up to limit for them all to be ready. On error they are
// all stopped.
func startHolders(ctx context.Context, self string, n, perHolder int, limit time.Duration) (*holderSet, error) {
	conns := (n + 1) / 2
	count := (conns + perHolder - 1) / perHolder
	hs := &holderSet{}
	ready := make(chan error, count)
	for i := range count {
		k := conns / count
		if i < conns%count {
			k++
		}
		hs.perHolder = max(hs.perHolder, k)
		addr := fmt.Sprintf("127.0.0.%d", 1+i%250)
		cmd := exec.Command(self, scaleHolderArg, "-k", strconv.Itoa(k), "-addr", addr)
		// Dies with us, whatever happens to us.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		cmd.Env = append(os.Environ(), "GODEBUG=asyncpreemptoff=1")
		p := &holderProc{cmd: cmd, stderr: &lockedBuffer{}, done: make(chan struct{})}
		cmd.Stderr = p.stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			hs.stop()
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			hs.stop()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			hs.stop()
			return nil, fmt.Errorf("holder: %v", err)
		}
		p.stdin = stdin
		hs.procs = append(hs.procs, p)
		go func() {
			r := bufio.NewReader(stdout)
			line, err := r.ReadString('\n')
			f := strings.Fields(line)
			switch {
			case err != nil:
				err = fmt.Errorf("holder %d exited before it was ready: %s", i, lastLines(p.stderr.String(), 2))
			case len(f) != 3 || f[0] != "ready":
				err = fmt.Errorf("holder %d: unexpected %q", i, line)
			default:
				p.addr = f[2]
			}
			ready <- err
			io.Copy(io.Discard, r)
		}()
		go func() {
			cmd.Wait()
			close(p.done)
		}()
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for range count {
		select {
		case err := <-ready:
			if err != nil {
				hs.stop()
				return hs, err
			}
		case <-timer.C:
			hs.stop()
			return hs, fmt.Errorf("not all open after %v", limit)
		case <-ctx.Done():
			hs.stop()
			return hs, context.Cause(ctx)
		}
	}
	return hs, nil
}

// stop ends every holder: stdin closed, then killed if still there after a
// while. It returns once they have all exited.
func (hs *holderSet) stop() {
	for _, p := range hs.procs {
		p.stdin.Close()
	}
	deadline := time.After(20 * time.Second)
	for _, p := range hs.procs {
		select {
		case <-p.done:
			continue
		case <-deadline:
		}
		for _, p := range hs.procs {
			p.cmd.Process.Kill()
		}
		for _, p := range hs.procs {
			<-p.done
		}
		return
	}
}

// scaleHolder is the holder mode: a listener on -addr and -k connections to
// it, both ends kept, then "ready K ADDR:PORT" on stdout; it exits when its
// stdin closes. Every socket lingers 0 so that exit resets them instead of
// leaving them in TIME_WAIT.
func scaleHolder(args []string) int {
	fs := flag.NewFlagSet(scaleHolderArg, flag.ContinueOnError)
	k := fs.Int("k", 100, "connections")
	addrFlag := fs.String("addr", "127.0.0.1", "listen address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, scaleHolderArg+": "+format+"\n", a...)
		return 1
	}
	addr, err := netip.ParseAddr(*addrFlag)
	if err != nil || !addr.Is4() {
		return fail("-addr %q: want an IPv4 address", *addrFlag)
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return fail("getrlimit: %v", err)
	}
	rl.Cur = rl.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return fail("setrlimit: %v", err)
	}
	if uint64(2**k+32) > rl.Cur {
		return fail("%d connections need %d fds; the limit is %d", *k, 2**k+32, rl.Cur)
	}
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("socket: %v", err)
	}
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: addr.As4()}); err != nil {
		return fail("bind %v: %v", addr, err)
	}
	if err := unix.Listen(lfd, 4096); err != nil {
		return fail("listen: %v", err)
	}
	sa, err := unix.Getsockname(lfd)
	if err != nil {
		return fail("getsockname: %v", err)
	}
	to := sa.(*unix.SockaddrInet4)
	linger := &unix.Linger{Onoff: 1, Linger: 0}
	const batch = 1024 // connections made before accepting them, under the backlog
	for made := 0; made < *k; {
		m := min(batch, *k-made)
		for range m {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return fail("socket after %d connections: %v", made, err)
			}
			unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, linger)
			if err := connectRetry(fd, to); err != nil {
				return fail("connect %v:%d after %d connections: %v", addr, to.Port, made, err)
			}
		}
		for range m {
			fd, err := acceptRetry(lfd)
			if err != nil {
				return fail("accept after %d connections: %v", made, err)
			}
			unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, linger)
		}
		made += m
	}
	fmt.Printf("ready %d %v:%d\n", *k, addr, to.Port)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// connectRetry connects a blocking socket; a signal may interrupt the wait,
// after which the connection goes on by itself.
func connectRetry(fd int, to unix.Sockaddr) error {
	err := unix.Connect(fd, to)
	if err != unix.EINTR {
		return err
	}
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(pfd, 10_000); err == unix.EINTR {
			continue
		} else if err != nil {
			return err
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}

func acceptRetry(lfd int) (int, error) {
	for {
		fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// watchMemory cancels ctx when the machine runs short of memory; the
// returned function stops the watch.
func watchMemory(ctx context.Context, cancel context.CancelCauseFunc) func() {
	stop := make(chan struct{})
	var once sync.Once
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if a := memAvailable(); a > 0 && a < 768<<20 {
					cancel(fmt.Errorf("aborted: only %.0f MiB of memory left", float64(a)/(1<<20)))
					return
				}
			}
		}
	}()
	return func() { once.Do(func() { close(stop) }) }
}

// meminfo reads one /proc/meminfo field, in bytes.
func meminfo(field string) uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseUint(f[0], 10, 64)
				return v << 10
			}
		}
	}
	return 0
}

func memAvailable() uint64 { return meminfo("MemAvailable") }

func memUsed() uint64 {
	t, a := meminfo("MemTotal"), memAvailable()
	if a > t {
		return 0
	}
	return t - a
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

func fmtScaleTime(st ScaleTime, to time.Duration) string {
	switch {
	case st.TimedOut && st.BestSec == 0:
		return fmt.Sprintf("> %.0f s", to.Seconds())
	case st.BestSec == 0 && st.Error != "":
		return "error"
	}
	return fmt.Sprintf("%.3f s", st.BestSec)
}

func fmtRatio(st ScaleTime) string {
	switch {
	case st.Ratio == 0:
		return ""
	case st.TimedOut && len(st.Runs) == 0:
		return fmt.Sprintf("> %.2f×", st.Ratio)
	}
	return fmt.Sprintf("%.2f×", st.Ratio)
}

// renderScale is the scale section of the markdown report.
func renderScale(sr *ScaleReport) string {
	if sr == nil {
		return ""
	}
	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	to, _ := time.ParseDuration(sr.PTimeout)
	p("\n## One-shot views at scale\n\n")
	p("Holder processes (this binary, `%s`) each open a listener on 127.0.0.x and up to %d loopback connections to it, keeping both ends, in a network namespace of their own (unless -scale-host-netns), where each view then runs with its output to /dev/null, so the views count exactly these sockets; `tcpscope serve` runs in the host namespace and walks every namespace. "+
		"Wall-clock seconds, best of 3 (`ss -tanp` and `netstat -antp`: 1 run); every run is bounded by -scale-p-timeout (%s). *vs tcpscope* is the peer's time over `tcpscope netstat` with the same flags (the floor's: over `--summary`).\n\n",
		scaleHolderArg, holderMaxConns, sr.PTimeout)
	p("Goals: the full `-antp` view at 1,000,000 sockets in at most 2 s; every one-shot view faster than ss.\n")
	if len(sr.Results) == 0 {
		p("\nNot measured.\n")
	}
	var at1M *ScaleResult
	for i := range sr.Results {
		r := &sr.Results[i]
		if r.Sockets == 1_000_000 {
			at1M = r
		}
		p("\n### %s sockets\n\n", groupDigits(int64(r.Sockets)))
		p("%d holders (up to %d connections each) opened them in %.1f s (limit %.0f s); %.1f GiB of memory in use; torn down in %.1f s. "+
			"Data lines: `tcpscope netstat -ant` %d, `ss -tan` %d (difference %+d).\n",
			r.Holders, r.ConnsPerHolder, r.CreateSec, r.CreateLimitSec, r.MemUsedGiB, r.TeardownSec, r.TcpscopeLines, r.SsLines, r.LineDiff)
		if r.Error != "" {
			p("\nError: %s\n", strings.ReplaceAll(r.Error, "|", "/"))
		}
		if sv := r.Serve; sv != nil {
			if sv.Error != "" {
				p("\n`tcpscope serve`: error: %s\n", strings.ReplaceAll(sv.Error, "|", "/"))
			} else {
				p("\n`tcpscope serve` with these sockets open: ready in %.2f s with %s sockets in its table; RSS %.0f MiB (peak %.0f MiB) a second after ready.\n",
					sv.ReadySec, groupDigits(int64(sv.TableSockets)), mib(sv.RSSBytes), mib(sv.PeakRSSBytes))
			}
		}
		if len(r.Cmds) == 0 {
			continue
		}
		p("\n| view | best s | vs tcpscope | runs (s) |\n|---|--:|--:|---|\n")
		for _, st := range r.Cmds {
			runs := make([]string, len(st.Runs))
			for i, x := range st.Runs {
				runs[i] = fmt.Sprintf("%.3f", x)
			}
			if st.TimedOut {
				runs = append(runs, fmt.Sprintf("> %.0f", to.Seconds()))
			}
			if st.Error != "" {
				runs = append(runs, "error: "+strings.ReplaceAll(st.Error, "|", "/"))
			}
			p("| `%s` | %s | %s | %s |\n", st.Cmd, fmtScaleTime(st, to), fmtRatio(st), strings.Join(runs, ", "))
		}
		var verdicts []string
		for _, st := range r.Cmds {
			if st.Tool == "ss" && st.Ratio > 0 {
				ok := "met"
				if st.Ratio < 1 {
					ok = "not met"
				}
				verdicts = append(verdicts, fmt.Sprintf("faster than `%s`: %s", st.Cmd, ok))
			}
		}
		if len(verdicts) > 0 {
			p("\nGoal, one-shot faster than ss: %s.\n", strings.Join(verdicts, "; "))
		}
	}
	switch {
	case at1M == nil:
		p("\nGoal, `-antp` at 1,000,000 sockets in ≤ 2 s: not measured in this run (`-scale 1000000`).\n")
	default:
		for _, st := range at1M.Cmds {
			if st.Cmd == "tcpscope netstat -antp" {
				verdict := "met"
				if st.BestSec == 0 || st.BestSec > 2 {
					verdict = "not met"
				}
				p("\nGoal, `-antp` at 1,000,000 sockets in ≤ 2 s: %s (%s).\n", verdict, fmtScaleTime(st, to))
			}
		}
	}
	return w.String()
}

// renderScaleOnly is the markdown report of a -scale-only run.
func renderScaleOnly(r *Report) string {
	var w strings.Builder
	fmt.Fprintf(&w, "# tcpscope benchmark (scale phase only)\n\n%s · Linux %s · %d CPUs · %.0f GiB · %s · load average %.2f at start · %.0f s in all\n",
		r.Date, r.Host.Kernel, r.Host.CPUs, r.Host.MemGiB, r.Host.GoVersion, r.Host.LoadAvg, r.TotalSec)
	w.WriteString(renderScale(r.Scale))
	if len(r.Notes) > 0 {
		w.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&w, "- %s\n", n)
		}
	}
	return w.String()
}
