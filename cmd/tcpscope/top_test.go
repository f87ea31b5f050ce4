package main

// Root integration tests for `tcpscope top`: the full-screen view in a real
// terminal (tmux: start it, send keys, capture the pane) and the plain
// fallback on a pipe, both compared with ss in a namespace of their own.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ssPidCounts counts the TCP sockets of ns that ss -p attributes to pid.
func ssPidCounts(t *testing.T, ns string, pid int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, l := range strings.Split(runIn(t, ns, "ss", "-tanpH"), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.Contains(l, fmt.Sprintf(",pid=%d,", pid)) {
			counts[ssStateNames[f[0]]]++
		}
	}
	return counts
}

// stateRow matches a row of the state panel (and of the plain output).
var stateRow = regexp.MustCompile(`^(ESTABLISHED|SYN_SENT|SYN_RECV|FIN_WAIT1|FIN_WAIT2|TIME_WAIT|CLOSE_WAIT|LAST_ACK|LISTEN|CLOSING)\s+(\d+)\s+(\d+|-)`)

// screenCounts reads the state panel: nonzero counts by state, and
// whether all ten rows were found.
func screenCounts(screen string) (map[string]int, bool) {
	counts, rows := map[string]int{}, 0
	for _, l := range strings.Split(screen, "\n") {
		if m := stateRow.FindStringSubmatch(l); m != nil {
			rows++
			if n, _ := strconv.Atoi(m[2]); n != 0 {
				counts[m[1]] = n
			}
		}
	}
	return counts, rows == 10
}

// topWorkload holds, in ns, a listener with est established connections,
// cw connections the client shut down and the server never closes
// (CLOSE_WAIT, FIN_WAIT2 held open) and tw connections closed client first
// (TIME_WAIT on the client). It returns the server, the listening port and
// the server's ids of the CLOSE_WAIT sockets.
func topWorkload(t *testing.T, ns string, est, cw, tw int) (*nstProc, int, []int) {
	t.Helper()
	srv := startProc(t, ns, "top-srv")
	cli := startProc(t, ns, "top-cli")
	l := srv.do("listen", "tcp4", "127.0.0.1:0")
	port := l[1]
	connect := func() (c, a int) {
		r := cli.do("dial", "tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		return r[0], srv.do("accept", l[0])[0]
	}
	for range est {
		connect()
	}
	var cws []int
	for range cw {
		c, a := connect()
		cli.do("shutdown", c)
		srv.do("waiteof", a)
		cws = append(cws, a)
	}
	for range tw {
		c, a := connect()
		cli.do("close", c)
		srv.do("waiteof", a)
		srv.do("close", a)
	}
	return srv, port, cws
}

// tmuxTerm is a private tmux server (its own socket, so parallel runs do
// not meet) with one session running a command in a terminal of a given
// size.
type tmuxTerm struct {
	t      *testing.T
	socket string
	status string // file the command's exit status is written to
}

func needTmux(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux not installed (make deps installs it): cannot test the full-screen view")
	}
}

func startTmux(t *testing.T, w, h int, args ...string) *tmuxTerm {
	t.Helper()
	dir := t.TempDir()
	tm := &tmuxTerm{t: t, socket: fmt.Sprintf("tcpscope-top-%d-%d", os.Getpid(), time.Now().UnixNano()),
		status: filepath.Join(dir, "status")}
	// The shell writes the exit status of the command when it ends.
	script := fmt.Sprintf("%s; echo $? > %s", shellQuote(args), tm.status)
	tm.tmux("-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", strconv.Itoa(w), "-y", strconv.Itoa(h),
		"env", "TERM=tmux-256color", "sh", "-c", script)
	t.Cleanup(func() { exec.Command("tmux", "-L", tm.socket, "kill-server").Run() })
	// Keep the pane after the command ends, to see what it left on screen.
	tm.tmux("set-option", "-t", "top", "remain-on-exit", "on")
	return tm
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

func (tm *tmuxTerm) tmux(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", tm.socket}, args...)...).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return string(out)
}

func (tm *tmuxTerm) screen() string {
	tm.t.Helper()
	return tm.tmux("capture-pane", "-p", "-t", "top")
}

func (tm *tmuxTerm) keys(keys ...string) {
	tm.t.Helper()
	tm.tmux(append([]string{"send-keys", "-t", "top"}, keys...)...)
}

// waitScreen waits (up to 20 s) until the screen satisfies ok, and
// returns it.
func (tm *tmuxTerm) waitScreen(what string, ok func(string) bool) string {
	tm.t.Helper()
	var s string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if s = tm.screen(); ok(s) {
			return s
		}
	}
	tm.t.Fatalf("screen never showed %s:\n%s", what, s)
	return ""
}

// exitStatus waits for the command to end and returns its exit status.
func (tm *tmuxTerm) exitStatus() int {
	tm.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if b, err := os.ReadFile(tm.status); err == nil && strings.HasSuffix(string(b), "\n") {
			n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			return n
		}
	}
	tm.t.Fatalf("the command did not end within 10s; screen:\n%s", tm.screen())
	return -1
}

// commandPid is the pid of the command the session's shell runs.
func (tm *tmuxTerm) commandPid() int {
	tm.t.Helper()
	sh := strings.TrimSpace(tm.tmux("display-message", "-p", "-t", "top", "#{pane_pid}"))
	b, err := os.ReadFile(fmt.Sprintf("/proc/%s/task/%s/children", sh, sh))
	if err != nil {
		tm.t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		tm.t.Fatalf("shell %s has children %q", sh, f)
	}
	pid, _ := strconv.Atoi(f[0])
	return pid
}

func maxWidth(screen string) int {
	w := 0
	for _, l := range strings.Split(strings.TrimRight(screen, "\n"), "\n") {
		w = max(w, len([]rune(l)))
	}
	return w
}

func lineWith(screen, prefix string) string {
	for _, l := range strings.Split(screen, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func TestTopTerminal(t *testing.T) {
	needNetstatTools(t)
	needTmux(t)
	ns := newNS(t, "top")
	const est, cw, tw = 5, 3, 2
	srv, port, cws := topWorkload(t, ns, est, cw, tw)
	want := map[string]int{"LISTEN": 1, "ESTABLISHED": 2 * est, "CLOSE_WAIT": cw, "FIN_WAIT2": cw, "TIME_WAIT": tw}
	settled(t, ns, want)

	tm := startTmux(t, 80, 24, binary, "top", "--netns", ns)
	var counts map[string]int
	screen := tm.waitScreen("the namespace's sockets as ss counts them", func(s string) bool {
		c, all := screenCounts(s)
		counts = c
		return all && sameCounts(c, ssCounts(t, ns))
	})
	if !sameCounts(counts, want) {
		t.Errorf("screen counts %v, want %v", counts, want)
	}
	if n := len(strings.Split(strings.TrimRight(screen, "\n"), "\n")); n > 24 || maxWidth(screen) > 80 {
		t.Errorf("80x24 screen is %d lines, %d wide:\n%s", n, maxWidth(screen), screen)
	}
	inode := netnsInode(t, ns)
	if !strings.Contains(screen, fmt.Sprintf("netns %d", inode)) || !strings.Contains(screen, "lost events 0") {
		t.Errorf("title or counters missing:\n%s", screen)
	}
	// The CLOSE_WAIT hot spot is the server's port, held by the server.
	spot := regexp.MustCompile(fmt.Sprintf(`(?m)^:%d\s+%d %d/top-srv`, port, cw, srv.pid))
	if !spot.MatchString(screen) {
		t.Errorf("no CLOSE_WAIT hot spot :%d with %d sockets of %d/top-srv:\n%s", port, cw, srv.pid, screen)
	}
	procRow := regexp.MustCompile(fmt.Sprintf(`%d\s+top-srv\s+CLOSE_WAIT\s+%d`, srv.pid, cw))
	if !procRow.MatchString(screen) {
		t.Errorf("no process row for the server's CLOSE_WAIT:\n%s", screen)
	}

	// Filter by state: f cycles ESTABLISHED, SYN_SENT, ... CLOSE_WAIT.
	tm.keys("f", "f", "f", "f", "f", "f", "f")
	screen = tm.waitScreen("the CLOSE_WAIT filter", func(s string) bool {
		return strings.Contains(s, "state: CLOSE_WAIT")
	})
	procs := regexp.MustCompile(`(?m)^\S.{38}(\S+)\s+(\S+)\s+([A-Z_0-9]+)\s+(\d+)$`)
	for _, m := range procs.FindAllStringSubmatch(screen, -1) {
		if m[1] != "PID" && m[3] != "CLOSE_WAIT" {
			t.Errorf("process row in %s with the CLOSE_WAIT filter: %q", m[3], m[0])
		}
	}
	if !procRow.MatchString(screen) {
		t.Errorf("server row gone with the CLOSE_WAIT filter:\n%s", screen)
	}

	// Sort by pid, then filter by the server's pid: the state counts become
	// those of the sockets ss -p attributes to the server, its (MPTCP, as Go
	// listens) listener included.
	tm.keys("s")
	tm.waitScreen("sort by pid", func(s string) bool { return strings.Contains(s, "sort: pid") })
	tm.keys("c", "/")
	tm.keys("-l", strconv.Itoa(srv.pid))
	tm.keys("Enter")
	ssSrv := ssPidCounts(t, ns, srv.pid)
	if !sameCounts(ssSrv, map[string]int{"LISTEN": 1, "ESTABLISHED": est, "CLOSE_WAIT": cw}) {
		t.Fatalf("ss -p counts the server's sockets as %v", ssSrv)
	}
	screen = tm.waitScreen("the server's sockets", func(s string) bool {
		c, all := screenCounts(s)
		return all && strings.Contains(s, fmt.Sprintf("process: %d", srv.pid)) && sameCounts(c, ssSrv)
	})
	if !strings.Contains(screen, "state: all") {
		t.Errorf("c did not clear the state filter:\n%s", screen)
	}

	// Resize, larger then smaller: the view follows.
	tm.keys("c")
	for _, size := range [][2]int{{110, 32}, {60, 20}, {80, 24}} {
		tm.tmux("resize-window", "-t", "top", "-x", strconv.Itoa(size[0]), "-y", strconv.Itoa(size[1]))
		screen = tm.waitScreen(fmt.Sprintf("a %dx%d layout", size[0], size[1]), func(s string) bool {
			ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
			c, all := screenCounts(s)
			return len(ls) == size[1] && strings.HasPrefix(ls[size[1]-1], "f/F state") && all && sameCounts(c, want)
		})
		if w := maxWidth(screen); w > size[0] {
			t.Errorf("%dx%d: a line of %d cells:\n%s", size[0], size[1], w, screen)
		}
		twoCols := strings.Contains(lineWith(screen, "STATE"), "PID")
		if twoCols != (size[0] >= 80) {
			t.Errorf("%dx%d: two columns %v:\n%s", size[0], size[1], twoCols, screen)
		}
	}

	// Help, closed by any key.
	tm.keys("?")
	tm.waitScreen("help", func(s string) bool { return strings.Contains(s, "KEYS") })
	tm.keys("x")
	tm.waitScreen("the view again", func(s string) bool { _, all := screenCounts(s); return all })

	// A change in the namespace shows up with no key pressed: the server
	// closes a CLOSE_WAIT socket (LAST_ACK, then gone; its peer goes from
	// FIN_WAIT2 to TIME_WAIT).
	srv.do("close", cws[0])
	want2 := map[string]int{"LISTEN": 1, "ESTABLISHED": 2 * est, "CLOSE_WAIT": cw - 1, "FIN_WAIT2": cw - 1, "TIME_WAIT": tw + 1}
	screen = tm.waitScreen("the closed socket", func(s string) bool {
		c, all := screenCounts(s)
		return all && sameCounts(c, want2)
	})
	if got := ssCounts(t, ns); !sameCounts(got, want2) {
		t.Errorf("ss after the close: %v, want %v", got, want2)
	}
	if !regexp.MustCompile(`transitions/s \d+`).MatchString(screen) {
		t.Errorf("no transitions/s:\n%s", screen)
	}

	tm.keys("q")
	if code := tm.exitStatus(); code != 0 {
		t.Errorf("exit status %d after q", code)
	}
	if s := tm.screen(); strings.Contains(s, "f/F state") {
		t.Errorf("alternate screen left behind after q:\n%s", s)
	}
}

// TestTopTerminalSignals: SIGTERM and SIGINT end the full-screen view with
// status 0 and give the terminal back.
func TestTopTerminalSignals(t *testing.T) {
	needRoot(t)
	needTmux(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			ns := newNS(t, "topsig")
			tm := startTmux(t, 80, 24, binary, "top", "--netns", ns)
			tm.waitScreen("the view", func(s string) bool { _, all := screenCounts(s); return all })
			if err := syscall.Kill(tm.commandPid(), sig); err != nil {
				t.Fatal(err)
			}
			if code := tm.exitStatus(); code != 0 {
				t.Errorf("exit status %d after %v", code, sig)
			}
			// Back on the normal screen: the view is gone from the pane.
			if s := tm.screen(); strings.Contains(s, "f/F state") {
				t.Errorf("alternate screen left behind:\n%s", s)
			}
		})
	}
}

// TestTopPlain: with stdout a pipe, top prints plain snapshots periodically
// (counts as ss has them) and ends with status 0 on SIGINT or SIGTERM.
func TestTopPlain(t *testing.T) {
	needNetstatTools(t)
	ns := newNS(t, "topplain")
	const est, cw, tw = 3, 2, 2
	srv, port, _ := topWorkload(t, ns, est, cw, tw)
	want := map[string]int{"LISTEN": 1, "ESTABLISHED": 2 * est, "CLOSE_WAIT": cw, "FIN_WAIT2": cw, "TIME_WAIT": tw}
	settled(t, ns, want)

	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(binary, "top", "--netns", ns, "--interval", "100ms")
			var stderr lockedBuffer
			cmd.Stderr = &stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			prints := make(chan string, 100)
			go func() {
				defer close(prints)
				sc := bufio.NewScanner(out)
				var cur []string
				for sc.Scan() {
					if sc.Text() == "" { // a print ends with a blank line
						prints <- strings.Join(cur, "\n")
						cur = nil
						continue
					}
					cur = append(cur, sc.Text())
				}
			}()
			// Prints keep coming with nothing changing (periodic), and soon
			// agree with ss.
			var last string
			n := 0
			for deadline := time.After(20 * time.Second); ; {
				select {
				case p, ok := <-prints:
					if !ok {
						t.Fatalf("output ended; stderr: %s", stderr.String())
					}
					n++
					last = p
				case <-deadline:
					t.Fatalf("after %d prints, none matched ss; last:\n%s", n, last)
				}
				if c, all := screenCounts(last); all && sameCounts(c, ssCounts(t, ns)) && n >= 3 {
					break
				}
			}
			if !strings.Contains(last, fmt.Sprintf("CLOSE_WAIT local :%d", port)) ||
				!regexp.MustCompile(fmt.Sprintf(`(?m)^%d\s+top-srv\s+CLOSE_WAIT\s+%d$`, srv.pid, cw)).MatchString(last) {
				t.Errorf("plain print lacks the server's CLOSE_WAIT:\n%s", last)
			}
			if strings.Contains(last, "\x1b") {
				t.Errorf("escape sequence in plain output")
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			for range prints {
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("after %v: %v; stderr: %s", sig, err, stderr.String())
			}
		})
	}

	// -n 1 prints once and exits by itself.
	r := runCLI(t, exec.Command(binary, "top", "--netns", ns, "-n", "1"))
	if c, all := screenCounts(r.stdout); r.code != 0 || !all || !sameCounts(c, want) {
		t.Errorf("-n 1: status %d, counts %v; stdout:\n%s\nstderr: %s", r.code, c, r.stdout, r.stderr)
	}
}

func TestTopUsageErrors(t *testing.T) {
	needRoot(t)
	for _, args := range [][]string{
		{"--netns", "no-such-namespace-xyz"},
		{"--netns", "../etc"},
		{"--state", "bogus"},
		{"--state", "close"},
		{"--sort", "age"},
		{"-n", "-1"},
		{"--interval", "0s"},
		{"--rows", "0"},
		{"--ring-size", "3M"},
	} {
		r := runCLI(t, exec.Command(binary, append([]string{"top"}, args...)...))
		if r.code != exitUsage || strings.Count(strings.TrimSpace(r.stderr), "\n") > 1 || !strings.HasPrefix(r.stderr, "tcpscope: ") {
			t.Errorf("top %v: status %d, stderr %q", args, r.code, r.stderr)
		}
		noStackTrace(t, r)
	}
}

// settled waits (bounded) until ss shows want in ns: the last ACKs of a
// workload (FIN_WAIT1 -> FIN_WAIT2) may still be in flight when it returns.
func settled(t *testing.T, ns string, want map[string]int) {
	t.Helper()
	var got map[string]int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = ssCounts(t, ns); sameCounts(got, want) {
			return
		}
	}
	t.Fatalf("ss in %s: %v, want %v (the workload did not build)", ns, got, want)
}
