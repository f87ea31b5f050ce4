package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary act as a holder, as the bench binary does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == scaleHolderArg {
		os.Exit(scaleHolder(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// ssCount counts the TCP sockets ss sees with port as either end.
func ssCount(t *testing.T, port string) int {
	t.Helper()
	out, err := exec.Command("ss", "-tanH", "( sport = :"+port+" or dport = :"+port+" )").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	return strings.Count(string(out), "\n")
}

func TestHolders(t *testing.T) {
	if _, err := exec.LookPath("ss"); err != nil {
		t.Skip("ss not installed")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const sockets = 200
	// 60 connections a holder at most: two holders, on 127.0.0.1 and .2.
	hs, err := startHolders(context.Background(), self, sockets, 60, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			hs.stop()
		}
	}()
	if len(hs.procs) != 2 || hs.perHolder != 50 {
		t.Errorf("%d holders of up to %d connections, want 2 of 50", len(hs.procs), hs.perHolder)
	}
	var ports []string
	total := 0
	for i, p := range hs.procs {
		host, port, ok := strings.Cut(p.addr, ":")
		if !ok || host != []string{"127.0.0.1", "127.0.0.2"}[i] {
			t.Fatalf("holder %d listens on %q", i, p.addr)
		}
		ports = append(ports, port)
		// Its listener and both ends of its connections.
		n := ssCount(t, port)
		if n != 1+2*50 {
			t.Errorf("ss sees %d sockets on port %s, want %d", n, port, 1+2*50)
		}
		total += n - 1
	}
	if total != sockets {
		t.Errorf("ss sees %d connected sockets, want %d", total, sockets)
	}
	hs.stop()
	stopped = true
	for _, p := range hs.procs {
		if p.cmd.ProcessState == nil {
			t.Errorf("holder %d still running", p.cmd.Process.Pid)
		}
	}
	// Lingering 0, they leave nothing behind, not even TIME_WAIT.
	for _, port := range ports {
		if n := ssCount(t, port); n != 0 {
			t.Errorf("%d sockets left on port %s after stop", n, port)
		}
	}
}

// A holder that cannot start is an error, and leaves nothing running.
func TestHoldersFail(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// More connections than a holder's fds allow.
	hs, err := startHolders(context.Background(), self, 2*30000, 30000, 10*time.Second)
	if err == nil {
		t.Fatal("no error")
	}
	for _, p := range hs.procs {
		if p.cmd.ProcessState == nil {
			t.Errorf("holder %d still running", p.cmd.Process.Pid)
		}
	}
}

func TestParseScaleSizes(t *testing.T) {
	if got, err := parseScaleSizes("10000, 100000,"); err != nil || len(got) != 2 || got[0] != 10000 || got[1] != 100000 {
		t.Errorf("got %v, %v", got, err)
	}
	if got, err := parseScaleSizes(""); err != nil || len(got) != 0 {
		t.Errorf("empty: got %v, %v", got, err)
	}
	if _, err := parseScaleSizes("1e6"); err == nil {
		t.Error("accepted 1e6")
	}
}

// Holders started in inFreshNetNS are alone in their namespace: ss run
// from there sees exactly their sockets, ss in the test's namespace none
// of them, and nothing is left once they stop.
func TestHoldersInFreshNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: unshare(CLONE_NEWNET)")
	}
	for _, tool := range []string{"ss", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const sockets = 120
	var inside, port string
	var hsErr, ssErr error
	err = inFreshNetNS(func() {
		hs, err := startHolders(context.Background(), self, sockets, 100, 30*time.Second)
		if err != nil {
			hsErr = err
			return
		}
		defer hs.stop()
		_, port, _ = strings.Cut(hs.procs[0].addr, ":")
		var out []byte
		out, ssErr = exec.Command("ss", "-tanH").Output()
		inside = string(out)
		// While they run, the test's own namespace does not have them: ss
		// started from another goroutine, so from another thread.
		outside := make(chan int)
		go func() {
			out, err := exec.Command("ss", "-tanH").Output()
			if err != nil {
				outside <- -1
				return
			}
			outside <- countLinesWith(string(out), ":"+port)
		}()
		if n := <-outside; n != 0 {
			t.Errorf("the test's namespace sees %d of the holder's sockets", n)
		}
	})
	if err != nil || hsErr != nil || ssErr != nil {
		t.Fatalf("netns: %v; holders: %v; ss: %v", err, hsErr, ssErr)
	}
	// The listener and both ends of 60 connections, nothing else.
	if n := strings.Count(inside, "\n"); n != sockets+1 {
		t.Errorf("ss in the namespace sees %d sockets, want %d:\n%s", n, sockets+1, inside)
	}
	if n := countLinesWith(inside, ":"+port); n != sockets+1 {
		t.Errorf("%d lines name port %s, want %d", n, port, sockets+1)
	}
}

func countLinesWith(text, sub string) int {
	n := 0
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, sub) {
			n++
		}
	}
	return n
}
