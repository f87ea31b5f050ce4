package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The tests run the real binary, as a user would.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tcpscope-cli")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "tcpscope")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs")
	}
}

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	return result{code, out.String(), errb.String()}
}

func noStackTrace(t *testing.T, r result) {
	t.Helper()
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic:") {
		t.Errorf("stack trace on stderr:\n%s", r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--bogus"},
		{"trace", "--bogus"},
		{"trace", "-z"},
		{"nope"},
		{"trace", "extra"},
		{"trace", "--state", "HALF_OPEN"},
		{"trace", "--laddr", "not-an-ip"},
		{"trace", "--raddr", "10.0.0.0/99"},
		{"trace", "--port", "70000"},
		{"trace", "--pid", "-1"},
		{"trace", "-4", "-6"},
		{"trace", "--ring-size", "3M"},
		{"trace", "--ring-size", "lots"},
		{"closewait", "--min-age", "-1s"},
		{"closewait", "--min-age", "soon"},
		{"closewait", "--threshold", "-3"},
		{"closewait", "--watch", "--interval", "0s"},
		{"closewait", "extra"},
		{"closewait", "--ring-size", "3M"},
		{"timewait", "--interval", "0s"},
		{"timewait", "--warn", "2"},
		{"timewait", "--state", "x"},
		{"life", "--state", "close-wait"},
		{"life", "-4", "-6"},
		{"life", "--laddr", "not-an-ip"},
		{"life", "--ring-size", "3M"},
		// Bad durations, addresses and ports, every command that takes one.
		{"trace", "--port", "80x"},
		{"trace", "--netns", "abc"},
		{"life", "--port", "99999"},
		{"life", "--raddr", "1.2.3"},
		{"life", "--netns", "-5"},
		{"netstat", "--sort", "bogus"},
		{"netstat", "-ant", "--state", "nope"},
		{"netstat", "--ring-size", "0"},
		{"closewait", "--interval", "5"},
		{"closewait", "--min-age", "1x"},
		{"timewait", "--interval", "-1s"},
		{"timewait", "--interval", "5"},
		{"timewait", "--warn", "x"},
		{"top", "--interval", "0"},
		{"top", "-d", "soon"},
		{"top", "--netns", "no-such-namespace"},
		{"top", "--rows", "-1"},
		{"top", "--state", "bogus"},
		{"serve", "--listen", "nohost"},
		{"serve", "--listen", ""},
		{"serve", "--listen", "127.0.0.1:99999"},
		{"serve", "--listen", "127.0.0.1:http-ish"},
		{"serve", "--listen", "999.1.1.1:80"},
		{"serve", "--shutdown-timeout", "-1s"},
		{"serve", "--shutdown-timeout", "soon"},
		{"serve", "--ring-size", "3M"},
		{},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runCLI(t, exec.Command(binary, args...))
			if r.code != exitUsage {
				t.Errorf("exit %d, want %d; stderr:\n%s", r.code, exitUsage, r.stderr)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "tcpscope: ") || !strings.Contains(lines[1], "--help") {
				t.Errorf("want one error line and a pointer to --help, got:\n%s", r.stderr)
			}
			noStackTrace(t, r)
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	r := runCLI(t, exec.Command(binary, "trace", "--help"))
	if r.code != 0 || !strings.Contains(r.stdout, "--json") || !strings.Contains(r.stdout, "--state") {
		t.Errorf("trace --help: exit %d\n%s", r.code, r.stdout)
	}
	if r := runCLI(t, exec.Command(binary, "--version")); r.code != 0 || !strings.Contains(r.stdout, "tcpscope version") {
		t.Errorf("--version: exit %d %q", r.code, r.stdout)
	}
}

// Each command that loads BPF, as a user would run it once.
var loadingCommands = [][]string{
	{"trace"}, {"netstat", "-antp"}, {"netstat", "-ant", "--bpf-walk"}, {"closewait"}, {"timewait"}, {"life"},
	{"top", "--batch", "-n", "1"}, {"serve", "--listen", "127.0.0.1:0"},
}

// oneErrorLine checks that stderr holds exactly one "tcpscope: " line
// containing want; serve's structured log lines (level=...) may precede it.
func oneErrorLine(t *testing.T, r result, want string) {
	t.Helper()
	var errs []string
	for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		if strings.HasPrefix(l, "time=") && strings.Contains(l, " level=") {
			continue
		}
		errs = append(errs, l)
	}
	if len(errs) != 1 || !strings.HasPrefix(errs[0], "tcpscope: ") || !strings.Contains(errs[0], want) {
		t.Errorf("want one line naming %s, got:\n%s", want, r.stderr)
	}
	noStackTrace(t, r)
}

func TestNoPrivileges(t *testing.T) {
	needRoot(t) // to drop them
	for _, args := range loadingCommands {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", binary}, args...)...)
			r := runCLI(t, cmd)
			if r.code != exitPrivileges {
				t.Errorf("exit %d, want %d; stderr:\n%s", r.code, exitPrivileges, r.stderr)
			}
			oneErrorLine(t, r, "CAP_BPF")
		})
	}
}

func TestMissingBTF(t *testing.T) {
	needRoot(t)
	for _, args := range loadingCommands {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runCLI(t, exec.Command(binary, append(args, "--btf", "/nonexistent/vmlinux")...))
			if r.code != exitUnsupported {
				t.Errorf("exit %d, want %d; stderr:\n%s", r.code, exitUnsupported, r.stderr)
			}
			oneErrorLine(t, r, "BTF")
		})
	}
}

// startTrace runs `tcpscope trace ARGS` and waits until it is attached.
func startTrace(t *testing.T, args ...string) (*exec.Cmd, *bufio.Reader, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"trace"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Attached once it has loaded: loading takes well under a second; wait
	// for the programs to show up rather than guessing.
	deadline := time.Now().Add(10 * time.Second)
	for !attached(cmd.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatalf("tracer did not attach; stderr: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cmd, bufio.NewReader(stdout), &stderr
}

// attached reports whether pid holds a BPF link fd (anon_inode:bpf_link).
func attached(pid int) bool {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	n := 0
	for _, fd := range fds {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); l == "anon_inode:bpf_link" {
			n++
		}
	}
	return n >= 2
}

func TestTraceJSONLive(t *testing.T) {
	needRoot(t)
	// Filter on a port picked first so only this test's sockets show.
	port := freePort(t)
	cmd, out, stderr := startTrace(t, "--json", "--port", fmt.Sprint(port))
	oneConnection(t, port)

	// Listener 2 + client 5 + server 5 transitions, each read as soon as it
	// is printed: the output must be flushed live, not at exit.
	want := 12
	lines := make(chan string, want)
	go func() {
		for {
			l, err := out.ReadString('\n')
			if err != nil {
				close(lines)
				return
			}
			lines <- l
		}
	}()
	var got []map[string]any
	timeout := time.After(5 * time.Second)
	for len(got) < want {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("output ended after %d lines; stderr: %s", len(got), stderr)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("not JSON: %q: %v", l, err)
			}
			got = append(got, m)
		case <-timeout:
			t.Fatalf("got %d of %d lines live: %v", len(got), want, got)
		}
	}
	me := float64(os.Getpid())
	for _, m := range got {
		if m["pid"] != me {
			t.Errorf("pid %v, want this test's pid %v: %v", m["pid"], me, m)
		}
		if m["lport"] != float64(port) && m["rport"] != float64(port) {
			t.Errorf("--port filter let through %v", m)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGINT: %v; stderr: %s", err, stderr)
	}
	if !regexp.MustCompile(`(?m)^tcpscope: summary: events=\d+ lost=0 `).MatchString(stderr.String()) {
		t.Errorf("no summary with lost=0 on stderr: %q", stderr)
	}
}

// A trace piped into `head` must end when head does, even if no further
// event comes to make a write fail.
func TestClosedStdoutEndsTrace(t *testing.T) {
	needRoot(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "trace", "--port", "1")
	cmd.Stdout = w
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !attached(cmd.Process.Pid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit: %v; stderr: %s", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("trace kept running after its reader went away")
	}
}

// A process may call itself anything, escape sequences included; the log
// must show it harmlessly.
func TestHostileCommIsEscaped(t *testing.T) {
	needRoot(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	cmd, out, stderr := startTrace(t, "--port", fmt.Sprint(port), "--state", "SYN_SENT", "--no-header")

	evil := "\x1b[2J\x1b]0;x\x07"
	connectAs(t, evil, port)
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	line := make(chan string, 1)
	go func() { l, _ := out.ReadString('\n'); line <- l }()
	select {
	case l := <-line:
		for _, c := range []byte(strings.TrimSuffix(l, "\n")) {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("control byte %#x reached the terminal: %q", c, l)
			}
		}
		if !strings.Contains(l, `\x1b[2J\x1b]0;x\x07`) {
			t.Errorf("escaped comm not shown: %q", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no event; stderr: %s", stderr)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

// connectAs connects to 127.0.0.1:port from a thread named comm.
func connectAs(t *testing.T, comm string, port int) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the thread dies with its odd name
		name := append([]byte(comm), 0)
		if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0); err != nil {
			errc <- err
			return
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		errc <- unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
