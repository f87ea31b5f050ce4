package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// tcpstatesScript is the bpftrace peer: the classic tcpstates tool.
//
//go:embed tcpstates.bt
var tcpstatesScript []byte

// tracerProc is a tracer running as a child process.
type tracerProc struct {
	name    string
	cmd     *exec.Cmd
	stderr  *lockedBuffer
	exited  chan struct{}
	waitErr error
	progID  ebpf.ProgramID // bpftrace: its program on the tracepoint, when known
	addr    string         // serve: the address it listens on
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Keep the tail only: a tracer could print warnings at length.
	if l.b.Len() > 1<<20 {
		tail := append([]byte(nil), l.b.Bytes()[l.b.Len()-1<<19:]...)
		l.b.Reset()
		l.b.Write(tail)
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startProc(name string, stdout *os.File, path string, args ...string) (*tracerProc, error) {
	cmd := exec.Command(path, args...)
	cmd.Stdout = stdout
	p := &tracerProc{name: name, cmd: cmd, stderr: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// waitReady polls ready until it says yes, the process exits, or the time
// is up.
func (p *tracerProc) waitReady(ctx context.Context, limit time.Duration, ready func() bool) error {
	deadline := time.Now().Add(limit)
	for {
		if ready() {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before it was ready (%v): %s", p.name, p.waitErr, lastLines(p.stderr.String(), 3))
		case <-ctx.Done():
			p.stop()
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return fmt.Errorf("%s not attached after %v: %s", p.name, limit, lastLines(p.stderr.String(), 3))
		}
	}
}

type stopResult struct {
	stderr string
	cpuSec float64
	err    error
}

// stop sends SIGINT, as a user's Ctrl-C, and waits; a tracer that does not
// exit within 20 s is killed.
func (p *tracerProc) stop() stopResult {
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		if p.waitErr == nil {
			p.waitErr = errors.New("killed after 20 s")
		}
	}
	var r stopResult
	r.stderr = p.stderr.String()
	r.err = p.waitErr
	if st := p.cmd.ProcessState; st != nil {
		r.cpuSec = (st.UserTime() + st.SystemTime()).Seconds()
	}
	return r
}

// startTcpscope runs `tcpscope trace > /dev/null` and waits until its
// programs are attached: tcpscope attaches them with BPF links, so its
// fd table shows them.
func startTcpscope(ctx context.Context, path string, args ...string) (*tracerProc, error) {
	return startAttached(ctx, "tcpscope", 2, path, append([]string{"trace"}, args...)...)
}

// startAttached runs a tracer with its output to /dev/null and waits until
// its fd table holds links BPF links (it attaches its programs with them).
func startAttached(ctx context.Context, name string, links int, path string, args ...string) (*tracerProc, error) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer null.Close()
	p, err := startProc(name, null, path, args...)
	if err != nil {
		return nil, err
	}
	pid := p.cmd.Process.Pid
	if err := p.waitReady(ctx, 20*time.Second, func() bool { return countFDs(pid, "anon_inode:bpf_link") >= links }); err != nil {
		return nil, err
	}
	return p, nil
}

func countFDs(pid int, target string) int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == target {
			n++
		}
	}
	return n
}

// scriptPath writes the embedded tcpstates.bt once.
func (b *bench) scriptPath() (string, error) {
	if b.script != "" {
		return b.script, nil
	}
	f, err := os.CreateTemp("", "tcpstates-*.bt")
	if err != nil {
		return "", err
	}
	if _, err := f.Write(tcpstatesScript); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	b.script = f.Name()
	return b.script, nil
}

// startBpftrace runs `bpftrace tcpstates.bt > out` and waits until its
// program is on the tracepoint (bpftool perf show), or, without bpftool,
// for a few seconds.
func (b *bench) startBpftrace(ctx context.Context, out string) (*tracerProc, error) {
	script, err := b.scriptPath()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := startProc("bpftrace", f, b.rep.Tools.Bpftrace, script)
	if err != nil {
		return nil, err
	}
	pid := p.cmd.Process.Pid
	if b.rep.Tools.Bpftool == "" {
		select {
		case <-time.After(4 * time.Second):
		case <-p.exited:
			return nil, fmt.Errorf("bpftrace exited (%v): %s", p.waitErr, lastLines(p.stderr.String(), 3))
		}
		return p, nil
	}
	err = p.waitReady(ctx, 30*time.Second, func() bool {
		id, ok := perfAttached(b.rep.Tools.Bpftool, pid, "inet_sock_set_state")
		p.progID = id
		return ok
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// perfAttached asks bpftool whether pid has a program on the tracepoint.
func perfAttached(bpftool string, pid int, tracepoint string) (ebpf.ProgramID, bool) {
	out, err := exec.Command(bpftool, "-j", "perf", "show").Output()
	if err != nil {
		return 0, false
	}
	var ents []struct {
		PID        int    `json:"pid"`
		ProgID     uint32 `json:"prog_id"`
		Tracepoint string `json:"tracepoint"`
	}
	if json.Unmarshal(out, &ents) != nil {
		return 0, false
	}
	for _, e := range ents {
		if e.PID == pid && e.Tracepoint == tracepoint {
			return ebpf.ProgramID(e.ProgID), true
		}
	}
	return 0, false
}

// tcpscopeSummary is tcpscope's last stderr line.
type tcpscopeSummary struct {
	Events, Lost, RingDrops, NestedMissed, NestedRecovered uint64
}

var summaryRE = regexp.MustCompile(`(?m)^tcpscope: summary: events=(\d+) lost=(\d+) ring_drops=(\d+) nested_missed=(\d+) nested_recovered=(\d+)\s*$`)

func parseSummary(stderr string) (tcpscopeSummary, bool) {
	all := summaryRE.FindAllStringSubmatch(stderr, -1)
	if len(all) == 0 {
		return tcpscopeSummary{}, false
	}
	m := all[len(all)-1]
	var v [5]uint64
	for i := range v {
		v[i], _ = strconv.ParseUint(m[i+1], 10, 64)
	}
	return tcpscopeSummary{v[0], v[1], v[2], v[3], v[4]}, true
}

// BpftraceLoss is what the loss run found: how many transitions bpftrace's
// program saw, how many lines it printed, and what it said it lost.
type BpftraceLoss struct {
	Close        string  `json:"close"`
	Conns        uint64  `json:"conns"`
	Rate         float64 `json:"rate"`
	ProgramHits  uint64  `json:"program_hits"` // runs of its program (stats on)
	EventLines   uint64  `json:"event_lines"`  // lines it printed
	ReportedLost uint64  `json:"reported_lost"`
	NsPerHit     float64 `json:"ns_per_hit"`
	OutputBytes  int64   `json:"output_bytes"`
	IdleBefore   float64 `json:"idle_frac_before"`
	Error        string  `json:"error,omitempty"`
}

var lostRE = regexp.MustCompile(`Lost (\d+) events`)

// bpftraceLossRun repeats a server-first churn run with bpftrace's output
// going to a file in memory instead of /dev/null, counts what it printed and
// the "Lost N events" lines it wrote, and reads its program's run count and
// time with BPF statistics on.
func (b *bench) bpftraceLossRun(ctx context.Context, churnCmd []string) *BpftraceLoss {
	res := &BpftraceLoss{Close: "server"}
	b.logf("bpftrace loss run: output to a file (%v)", b.opts.duration)
	dir := os.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		dir = "/dev/shm"
	}
	f, err := os.CreateTemp(dir, "tcpstates-*.out")
	if err != nil {
		res.Error = err.Error()
		return res
	}
	out := f.Name()
	f.Close()
	defer os.Remove(out)

	res.IdleBefore = b.waitQuiet(ctx)
	restore, err := enableBPFStats()
	if err != nil {
		b.note("BPF statistics could not be enabled: %v", err)
	} else {
		defer restore()
	}
	tp, err := b.startBpftrace(ctx, out)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	var prog *ebpf.Program
	var st0 *ebpf.ProgramStats
	if tp.progID != 0 {
		if prog, err = ebpf.NewProgramFromID(tp.progID); err == nil {
			defer prog.Close()
			st0, _ = prog.Stats()
		}
	}
	cr, err := b.churn(ctx, churnCmd, res.Close, b.opts.duration)
	if err != nil {
		res.Error = err.Error()
	}
	res.Conns, res.Rate = cr.Conns, cr.Rate
	if prog != nil && st0 != nil {
		if st1, err := prog.Stats(); err == nil {
			res.ProgramHits = st1.RunCount - st0.RunCount
			if res.ProgramHits > 0 {
				res.NsPerHit = float64(st1.Runtime-st0.Runtime) / float64(res.ProgramHits)
			}
		}
	}
	st := tp.stop()
	if st.err != nil && res.Error == "" {
		res.Error = fmt.Sprintf("bpftrace: %v: %s", st.err, lastLines(st.stderr, 3))
	}
	if err := countBpftraceOutput(out, res); err != nil && res.Error == "" {
		res.Error = err.Error()
	}
	b.logf("bpftrace loss run: conns=%d program hits=%d lines=%d reported lost=%d",
		res.Conns, res.ProgramHits, res.EventLines, res.ReportedLost)
	return res
}

func countBpftraceOutput(path string, res *BpftraceLoss) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		res.OutputBytes = st.Size()
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case bytes.HasPrefix(line, []byte("Attaching ")), bytes.HasPrefix(line, []byte("SKADDR")), len(line) == 0:
		case bytes.Contains(line, []byte("Lost ")) && lostRE.Match(line):
			n, _ := strconv.ParseUint(string(lostRE.FindSubmatch(line)[1]), 10, 64)
			res.ReportedLost += n
		case bytes.Contains(line, []byte(" -> ")):
			res.EventLines++
		}
	}
	return sc.Err()
}

// enableBPFStats turns on run-time statistics for BPF programs, by
// BPF_ENABLE_STATS or else kernel.bpf_stats_enabled, and returns how to
// turn them off again.
func enableBPFStats() (func(), error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err == nil {
		return func() { c.Close() }, nil
	}
	const knob = "/proc/sys/kernel/bpf_stats_enabled"
	old, rerr := os.ReadFile(knob)
	if rerr != nil {
		return nil, fmt.Errorf("BPF_ENABLE_STATS: %v; %s: %v", err, knob, rerr)
	}
	if werr := os.WriteFile(knob, []byte("1\n"), 0o644); werr != nil {
		return nil, fmt.Errorf("BPF_ENABLE_STATS: %v; %s: %v", err, knob, werr)
	}
	return func() { _ = os.WriteFile(knob, []byte(strings.TrimSpace(string(old))+"\n"), 0o644) }, nil
}
