package main

// Root tests of how tcpscope lives with the rest of the system: a SIGKILLed
// tracer leaves no BPF object behind and a new one starts at once; two
// tracers run side by side and both see everything.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bpfObjects lists the BPF programs, maps and links pid holds fds of, as
// "prog 12", "map 7", "link 3", from /proc/PID/fdinfo.
func bpfObjects(t *testing.T, pid int) []string {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	var objs []string
	for _, fd := range fds {
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		var kind, key string
		switch link {
		case "anon_inode:bpf-prog":
			kind, key = "prog", "prog_id:"
		case "anon_inode:bpf-map":
			kind, key = "map", "map_id:"
		case "anon_inode:bpf_link":
			kind, key = "link", "link_id:"
		default:
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd.Name()))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(l, key); ok {
				objs = append(objs, kind+" "+strings.TrimSpace(v))
			}
		}
	}
	return objs
}

// bpfObjectExists asks bpftool whether the kernel still has the object.
func bpfObjectExists(obj string) bool {
	kind, id, _ := strings.Cut(obj, " ")
	return exec.Command("bpftool", kind, "show", "id", id).Run() == nil
}

// freePort returns a loopback port that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// oneConnection listens on port, connects, and closes both ends: 12
// transitions (listener 2, client 5, server 5).
func oneConnection(t *testing.T, port int) {
	t.Helper()
	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	time.Sleep(10 * time.Millisecond)
	s.Close()
	ln.Close()
}

// readJSON reads n JSON lines from out within timeout.
func readJSON(t *testing.T, out *bufio.Reader, n int, timeout time.Duration) []map[string]any {
	t.Helper()
	lines := make(chan string)
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer close(lines)
		for {
			l, err := out.ReadString('\n')
			if err != nil {
				return
			}
			select {
			case lines <- l:
			case <-done:
				return
			}
		}
	}()
	var got []map[string]any
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("output ended after %d of %d lines", len(got), n)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("not JSON: %q: %v", l, err)
			}
			got = append(got, m)
		case <-deadline:
			t.Fatalf("%d of %d lines in %v: %v", len(got), n, timeout, got)
		}
	}
	return got
}

func TestSIGKILLLeavesNoBPFObjects(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("bpftool"); err != nil {
		t.Fatal("bpftool not installed (make deps installs it)")
	}
	port := freePort(t)
	cmd, _, _ := startTrace(t, "--json", "--port", strconv.Itoa(port))
	objs := bpfObjects(t, cmd.Process.Pid)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[strings.Fields(o)[0]]++
	}
	if kinds["prog"] == 0 || kinds["map"] == 0 || kinds["link"] == 0 {
		t.Fatalf("the running tracer holds %v: want programs, maps and links", objs)
	}
	for _, o := range objs {
		if !bpfObjectExists(o) {
			t.Fatalf("bpftool does not see %s while the tracer holds it", o)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	// The kernel frees them once the last fd is gone (after an RCU grace
	// period): nothing is pinned, so nothing may stay.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		for _, o := range objs {
			if bpfObjectExists(o) {
				left = append(left, o)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after SIGKILL the kernel still has %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d BPF objects of the killed tracer are gone: %v", len(objs), kinds)

	// A new tracer starts at once and sees a connection whole.
	_, out, stderr := startTrace(t, "--json", "--port", strconv.Itoa(port))
	oneConnection(t, port)
	if got := readJSON(t, out, 12, 5*time.Second); len(got) != 12 {
		t.Fatalf("restarted tracer: %d events; stderr %s", len(got), stderr)
	}
}

func TestTwoTracersSideBySide(t *testing.T) {
	needRoot(t)
	port := freePort(t)
	_, out1, _ := startTrace(t, "--json", "--port", strconv.Itoa(port))
	_, out2, _ := startTrace(t, "--json", "--port", strconv.Itoa(port))
	oneConnection(t, port)
	key := func(m map[string]any) string {
		return fmt.Sprint(m["cookie"], m["old"], m["new"], m["pid"])
	}
	// Each tracer has its own ring: events of different CPUs may interleave
	// differently, so compare them as sets.
	keys := func(ms []map[string]any) []string {
		var k []string
		for _, m := range ms {
			if m["pid"] != float64(os.Getpid()) {
				t.Errorf("pid %v, want this test's %d: %v", m["pid"], os.Getpid(), m)
			}
			k = append(k, key(m))
		}
		slices.Sort(k)
		return k
	}
	a, b := keys(readJSON(t, out1, 12, 5*time.Second)), keys(readJSON(t, out2, 12, 5*time.Second))
	if !slices.Equal(a, b) {
		t.Errorf("the two tracers saw different events:\n%s\n%s", strings.Join(a, "\n"), strings.Join(b, "\n"))
	}
}

// With CAP_BPF and CAP_PERFMON but not CAP_SYS_ADMIN (enough to trace, as
// README says) setns into other network namespaces fails with EPERM. A
// report on its own namespace enters none; the seed of one on every
// namespace (--all-netns) used to fail whole on the first it could not
// enter; it must walk what it can and say once what it could not.
func TestReducedCapabilitiesSkipNamespaces(t *testing.T) {
	needRoot(t) // to drop the rest
	ns := newNS(t, "robust-cap")
	caps := "-all,+bpf,+perfmon"
	// A report on its own namespace (the default) enters no other.
	own := runCLI(t, exec.Command("setpriv", "--inh-caps="+caps, "--ambient-caps="+caps, "--bounding-set="+caps, binary, "closewait"))
	noStackTrace(t, own)
	if own.code != exitOK || strings.Contains(own.stderr, "not walked") {
		t.Errorf("closewait of its own namespace with CAP_BPF+CAP_PERFMON: exit %d, want 0 and no namespace skipped:\n%s", own.code, own.stderr)
	}
	// Other test packages create and delete namespaces meanwhile, and the
	// line names three at most ("and N more"): run again while ours is
	// among those left unnamed.
	for attempt := 1; ; attempt++ {
		cmd := exec.Command("setpriv", "--inh-caps="+caps, "--ambient-caps="+caps, "--bounding-set="+caps, binary, "closewait", "--all-netns")
		r := runCLI(t, cmd)
		noStackTrace(t, r)
		if r.code != exitOK {
			t.Fatalf("closewait with CAP_BPF+CAP_PERFMON and a namespace it cannot enter: exit %d\n%s", r.code, r.stderr)
		}
		if !strings.HasPrefix(r.stdout, "CLOSE_WAIT sockets:") {
			t.Errorf("no report:\n%s", r.stdout)
		}
		var notes []string
		for _, l := range strings.Split(r.stderr, "\n") {
			if strings.Contains(l, "not walked") {
				notes = append(notes, l)
			}
		}
		if len(notes) == 1 && !strings.Contains(notes[0], "/run/netns/"+ns) && strings.Contains(notes[0], " more") {
			if attempt < 5 {
				t.Logf("attempt %d: our namespace is among those not named: %s", attempt, notes[0])
				continue
			}
			// Others' namespaces (another package's tests, or one a killed
			// test left behind) sort before ours every time: the line is
			// still one, and still says why.
			if !strings.Contains(notes[0], "operation not permitted") {
				t.Errorf("the not-walked line names no EPERM:\n%s", notes[0])
			}
			t.Logf("our namespace stayed among those not named in %d runs; the line: %s", attempt, notes[0])
			return
		}
		if len(notes) != 1 || !strings.Contains(notes[0], "/run/netns/"+ns) || !strings.Contains(notes[0], "operation not permitted") {
			t.Errorf("want one line naming %s as not walked (EPERM), got:\n%s", ns, r.stderr)
		}
		return
	}
}

// TestReaderThreadRaised: the ring reader of a streaming command and of the
// agent runs in a thread of its own at nice -10, so that the churn it
// traces (at nice 0) cannot starve it into losing events.
func TestReaderThreadRaised(t *testing.T) {
	needRoot(t)
	niceOf := func(pid int) map[int]int {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		nice := map[int]int{}
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			if err != nil {
				continue
			}
			// Field 19 is nice; count from the last ')' (field 2 may hold
			// spaces).
			f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
			if len(f) > 16 {
				if n, err := strconv.Atoi(f[16]); err == nil {
					nice[n]++
				}
			}
		}
		return nice
	}
	check := func(name string, pid int) {
		t.Helper()
		var nice map[int]int
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if nice = niceOf(pid); nice[-10] > 0 {
				break
			}
		}
		if nice[-10] == 0 {
			t.Errorf("%s: no thread at nice -10; threads by nice: %v", name, nice)
		} else if nice[0] == 0 {
			t.Errorf("%s: every thread raised (%v): only the reader's should be", name, nice)
		}
	}
	cmd, _, _ := startTrace(t)
	check("trace", cmd.Process.Pid)
	s := startServe(t, "", "http", true, "--listen", "127.0.0.1:0")
	check("serve", s.cmd.Process.Pid)
}
