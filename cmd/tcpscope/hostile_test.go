package main

// A process may name itself anything: terminal escape sequences, a newline,
// C1 controls, invalid UTF-8 - in its comm (exec name, prctl(PR_SET_NAME))
// and in argv[0]. No output may carry those bytes to a terminal or break a
// JSON line.

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/sys/unix"
)

// renameThreads sets the comm of the calling thread with PR_SET_NAME and of
// every other thread of the process through /proc (the same kernel call),
// so that whichever thread touches a socket carries the name.
func renameThreads(hexName string) error {
	name, err := hex.DecodeString(hexName)
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	z := append(name, 0)
	if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&z[0])), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl: %w", err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, task := range tasks {
		// A thread that exited meanwhile is no matter.
		os.WriteFile("/proc/self/task/"+task.Name()+"/comm", name, 0)
	}
	return nil
}

const (
	// The exec name (comm at exec, and argv[0]'s last element): ESC [2J
	// clears the screen, BEL, CR, LF, a C1 CSI, an invalid byte.
	evilExec = "e\x1b[2J\a\r\n\xc2\x9b\xff"
	// The name it gives itself later: an OSC title change.
	evilRename = "r\x1b]0;pwn\a\n"
)

// evilMarkers are the names as termsafe shows them: one must appear, or the
// output did not show the owner at all and proves nothing.
var evilMarkers = []string{`e\x1b[2J\x07`, `r\x1b]0;pwn\x07`}

// checkSafe fails if out carries a control character (other than the line
// ends it is made of) or invalid UTF-8; with isJSON every line must be a JSON
// value whose strings are free of control characters too. needMarker: the
// owner's name must show.
func checkSafe(t *testing.T, what string, out []byte, isJSON, needMarker bool) {
	t.Helper()
	checkSafeMarkers(t, what, out, isJSON, needMarker, evilMarkers)
}

func checkSafeMarkers(t *testing.T, what string, out []byte, isJSON, needMarker bool, markers []string) {
	t.Helper()
	if !utf8.Valid(out) {
		t.Errorf("%s: invalid UTF-8 in output:\n%q", what, out)
	}
	for i, r := range string(out) {
		if r != '\n' && unicode.IsControl(r) {
			lo := max(0, i-40)
			t.Errorf("%s: control character %U at byte %d: %q", what, r, i, out[lo:min(len(out), i+40)])
			return
		}
	}
	var found bool
	text := string(out)
	if isJSON {
		var strs []string
		for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
			if line == "" {
				continue
			}
			var v any
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				t.Errorf("%s: not JSON: %v\n%q", what, err, line)
				continue
			}
			strs = collectStrings(v, strs)
		}
		for _, s := range strs {
			for _, r := range s {
				if unicode.IsControl(r) {
					t.Errorf("%s: JSON string carries control character %U: %q", what, r, s)
					break
				}
			}
		}
		text = strings.Join(strs, "\n")
	}
	for _, m := range markers {
		found = found || strings.Contains(text, m)
	}
	if needMarker && !found {
		t.Errorf("%s: the hostile process's name is not shown (want one of %q):\n%s", what, markers, out)
	}
}

func collectStrings(v any, dst []string) []string {
	switch x := v.(type) {
	case string:
		dst = append(dst, x)
	case []any:
		for _, e := range x {
			dst = collectStrings(e, dst)
		}
	case map[string]any:
		for k, e := range x {
			dst = append(dst, k)
			dst = collectStrings(e, dst)
		}
	}
	return dst
}

// runningCmd is a long-running tcpscope command whose stdout is collected.
type runningCmd struct {
	cmd  *exec.Cmd
	out  lockedBuffer
	errb lockedBuffer
	done chan struct{}
}

func startCmd(t *testing.T, ns string, args ...string) *runningCmd {
	t.Helper()
	r := &runningCmd{done: make(chan struct{})}
	r.cmd = inNS(ns, append([]string{binary}, args...)...)
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.errb
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() { r.cmd.Process.Kill(); <-r.done })
	return r
}

// waitAttached waits until the tcpscope process (the child of ip netns exec
// when ns is set) holds its BPF links.
func (r *runningCmd) waitAttached(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		// ip netns exec execs in place: the pid is tcpscope's.
		if attached(r.cmd.Process.Pid) {
			time.Sleep(100 * time.Millisecond) // seeded after attach; a moment more
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%v not attached; stderr: %s", r.cmd.Args, r.errb.String())
}

// waitOutput waits (bounded) until the output shows a marker, then stops
// the command with SIGTERM and returns everything it wrote.
func (r *runningCmd) waitOutput(t *testing.T, bound time.Duration) []byte {
	t.Helper()
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) && !hasMarker(r.out.String()) {
		time.Sleep(50 * time.Millisecond)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Errorf("%v: no exit 10s after SIGTERM", r.cmd.Args)
	}
	return []byte(r.out.String())
}

func hasMarker(s string) bool {
	for _, m := range evilMarkers {
		// JSON doubles the backslash of the escape.
		if strings.Contains(s, m) || strings.Contains(s, strings.ReplaceAll(m, `\`, `\\`)) {
			return true
		}
	}
	return false
}

func TestHostileNamesInEveryOutput(t *testing.T) {
	needRoot(t)
	ns := newNS(t, "robust-evil")
	ino := netnsInode(t, ns)
	// The exec name is the symlink's; argv[0] is its whole path.
	evil := startProc(t, ns, evilExec)
	lport := evil.do("listen", "tcp4", "127.0.0.1:0")
	lid, port := lport[0], lport[1]
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	// A held ESTABLISHED pair and a CLOSE_WAIT socket, both the evil one's.
	evil.do("dial", "tcp4", addr)
	evil.do("accept", lid)
	cw := evil.do("dial", "tcp4", addr)[0]
	evil.do("accept", lid)
	evil.do("close", cw)
	// churn: one connection that lives and ends (trace, life, events).
	churn := func() {
		c := evil.do("dial", "tcp4", addr)[0]
		a := evil.do("accept", lid)[0]
		evil.do("close", c)
		evil.do("close", a)
	}
	renamed := false
	rename := func() {
		if !renamed {
			evil.do("rename", hex.EncodeToString([]byte(evilRename)))
			renamed = true
		}
	}
	netnsArg := fmt.Sprint(ino)

	for _, tc := range []struct {
		name   string
		args   []string
		json   bool
		live   bool // runs until stopped: churn while it runs
		rename bool // rename the process first (names from events then)
	}{
		{"trace text", []string{"trace", "--netns", netnsArg, "-w"}, false, true, false},
		{"trace json", []string{"trace", "--netns", netnsArg, "--json"}, true, true, false},
		{"life text", []string{"life", "--netns", netnsArg}, false, true, false},
		{"life json", []string{"life", "--netns", netnsArg, "--json"}, true, true, false},
		{"netstat -antp", []string{"netstat", "-antp"}, false, false, false},
		{"netstat -antpe --json", []string{"netstat", "-antpe", "--json"}, true, false, false},
		{"closewait", []string{"closewait"}, false, false, false},
		{"closewait --json", []string{"closewait", "--json"}, true, false, false},
		{"top --batch", []string{"top", "--batch", "-n", "1", "--netns", ns}, false, false, false},
		// After the rename: the new comm (netstat -p keeps showing argv[0],
		// as net-tools does, so it is covered above).
		{"trace text renamed", []string{"trace", "--netns", netnsArg}, false, true, true},
		{"trace json renamed", []string{"trace", "--netns", netnsArg, "--json"}, true, true, true},
		{"closewait --json renamed", []string{"closewait", "--json"}, true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			markers := evilMarkers
			if tc.rename {
				rename()
				markers = evilMarkers[1:] // the new name, nothing older
			}
			if !tc.live {
				cmd := inNS(ns, append([]string{binary}, tc.args...)...)
				r := runCLI(t, cmd)
				if r.code != 0 {
					t.Fatalf("exit %d: %s", r.code, r.stderr)
				}
				checkSafeMarkers(t, tc.name, []byte(r.stdout), tc.json, true, markers)
				checkSafe(t, tc.name+" stderr", []byte(r.stderr), false, false)
				if tc.json && strings.HasPrefix(tc.args[0], "closewait") && !strings.Contains(r.stdout, `"cmdline"`) {
					t.Errorf("closewait --json without the cmdline:\n%s", r.stdout)
				}
				return
			}
			rc := startCmd(t, "", tc.args...)
			rc.waitAttached(t)
			churn()
			out := rc.waitOutput(t, 5*time.Second)
			checkSafeMarkers(t, tc.name, out, tc.json, true, markers)
			checkSafe(t, tc.name+" stderr", []byte(rc.errb.String()), false, false)
		})
	}

	// The agent: sockets and the event stream of the namespace.
	t.Run("serve", func(t *testing.T) {
		s := startServe(t, "", "http", true, "--listen", "127.0.0.1:0")
		resp, err := http.Get(s.base + "/api/v1/events?netns=" + netnsArg)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		lines := make(chan []byte, 64)
		go func() {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				lines <- append([]byte(nil), sc.Bytes()...)
			}
			close(lines)
		}()
		churn()
		var events bytes.Buffer
		for deadline := time.After(5 * time.Second); !hasMarker(events.String()); {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("event stream ended")
				}
				events.Write(l)
				events.WriteByte('\n')
				continue
			case <-deadline:
			}
			break
		}
		checkSafe(t, "/api/v1/events", events.Bytes(), true, true)

		resp2, err := http.Get(s.base + "/api/v1/sockets?netns=" + netnsArg)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp2.Body)
		resp2.Body.Close()
		if resp2.StatusCode != 200 {
			t.Fatalf("/api/v1/sockets: HTTP %d %s", resp2.StatusCode, body)
		}
		checkSafe(t, "/api/v1/sockets", body, true, true)
		s.stop()
		checkSafe(t, "serve log", []byte(s.stderr.String()), false, false)
	})
}
