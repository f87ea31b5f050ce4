package loader_test

import (
	"context"
	"errors"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/loader"
)

// TestOrderAcrossCPUs: the client runs on CPU 0 and the server on CPU 1, so
// that one connection's transitions land in both CPUs' ring buffers (a
// client socket's SYN_SENT in CPU 0's, its CLOSE_WAIT, run by the server's
// FIN, in CPU 1's). Every socket's events must still arrive as one unbroken
// chain of states, each event's old state the previous one's new state.
func TestOrderAcrossCPUs(t *testing.T) {
	const conns = 3000
	requireRoot(t)
	if runtime.NumCPU() < 2 {
		t.Skipf("needs 2 CPUs to put the two ends on different ones; this machine has %d", runtime.NumCPU())
	}
	lfd, port := listenRaw(t)
	defer unix.Close(lfd)
	// Only this test's sockets reach the rings: other packages' tests churn
	// on the same host meanwhile, and a loss would break a chain.
	tc := startTracer(t, loader.Config{Filter: loader.KernelFilter{Port: port}})

	errc := make(chan error, 2)
	deadline := time.Now().Add(20 * time.Second)
	// Connection i is closed by the server first when i is even, by the
	// client first when odd; the other end reads to EOF, then closes.
	go onCPU(1, errc, func() error {
		for i := range conns {
			fd, _, err := unix.Accept(lfd)
			if err != nil {
				return err
			}
			if err := closeInTurn(fd, i%2 == 0, deadline); err != nil {
				return err
			}
		}
		return nil
	})
	go onCPU(0, errc, func() error {
		for i := range conns {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(port), Addr: [4]byte{127, 0, 0, 1}}); err != nil {
				unix.Close(fd)
				return err
			}
			if err := closeInTurn(fd, i%2 == 1, deadline); err != nil {
				return err
			}
		}
		return nil
	})
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatalf("churn: %v", err)
		}
	}

	ns := map[uint32]bool{netnsOf(t, os.Getpid()): true}
	var groups []*group
	complete := waitUntil(eventTimeout, func() bool {
		groups = groupEvents(tc.col.withPort(port, tc.from), ns)
		if len(groups) != 2*conns {
			return false
		}
		for _, g := range groups {
			if g.evs[len(g.evs)-1].New != event.Close {
				return false
			}
		}
		return true
	})
	if !complete {
		t.Errorf("after %v: %d sockets on port %d, want %d, all closed", eventTimeout, len(groups), port, 2*conns)
	}
	broken := 0
	for _, g := range groups {
		for i := 1; i < len(g.evs); i++ {
			if g.evs[i].Old != g.evs[i-1].New || g.evs[i].Mono < g.evs[i-1].Mono {
				if broken++; broken <= 5 {
					t.Errorf("socket %#x: events out of order:\n%s", g.cookie, dump(g.evs))
				}
				break
			}
		}
	}
	if broken > 0 {
		t.Errorf("%d of %d sockets had their events out of order", broken, len(groups))
	}
	if s := must[loader.Stats](t)(tc.tr.Stats()); s.Lost() != 0 {
		t.Errorf("lost %d events", s.Lost())
	}
}

// listenRaw listens on 127.0.0.1 with a port the kernel picks; the listener
// itself is made before tracing (its events are not this test's).
func listenRaw(t *testing.T) (fd int, port uint16) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fd, uint16(sa.(*unix.SockaddrInet4).Port)
}

// onCPU runs f in a thread of its own bound to one CPU and sends its result.
func onCPU(cpu int, errc chan<- error, f func() error) {
	runtime.LockOSThread() // the thread ends with the goroutine, affinity and all
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		errc <- err
		return
	}
	errc <- f()
}

// closeInTurn closes fd at once when first, else after reading to EOF.
func closeInTurn(fd int, first bool, deadline time.Time) error {
	defer unix.Close(fd)
	if first {
		return nil
	}
	tv := unix.NsecToTimeval(time.Until(deadline).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	var b [16]byte
	for {
		n, err := unix.Read(fd, b[:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
	}
}

// TestCloseWhileRunning: Close called while Run reads (an agent that fails
// after starting its reader does this) ends Run with nil, promptly, both
// while Run sleeps on an idle machine's rings and while it reads under
// churn; Close and Barrier called afterwards return at once.
func TestCloseWhileRunning(t *testing.T) {
	requireRoot(t)
	for _, busy := range []bool{false, true} {
		tr, err := loader.New(loader.Config{})
		if err != nil {
			t.Fatalf("loader.New: %v", err)
		}
		done := make(chan error, 1)
		go func() { done <- tr.Run(context.Background(), &collector{}) }()
		if err := tr.Barrier(context.Background()); err != nil { // Run is reading
			t.Fatal(err)
		}
		stopChurn := make(chan struct{})
		churned := make(chan struct{})
		go func() {
			defer close(churned)
			if !busy {
				return
			}
			lfd, port := listenRaw(t)
			defer unix.Close(lfd)
			for i := 0; i < 20000; i++ {
				select {
				case <-stopChurn:
					return
				default:
				}
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return
				}
				_ = unix.Connect(fd, &unix.SockaddrInet4{Port: int(port), Addr: [4]byte{127, 0, 0, 1}})
				if afd, _, err := unix.Accept(lfd); err == nil {
					unix.Close(afd)
				}
				unix.Close(fd)
			}
		}()
		time.Sleep(50 * time.Millisecond)
		start := time.Now()
		if err := tr.Close(); err != nil {
			t.Errorf("busy=%v: Close: %v", busy, err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("busy=%v: Run: %v", busy, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("busy=%v: Run did not return within 5s of Close", busy)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("busy=%v: Close and Run's end took %v", busy, d)
		}
		close(stopChurn)
		<-churned
		if err := tr.Close(); err != nil {
			t.Errorf("busy=%v: second Close: %v", busy, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := tr.Barrier(ctx); err != nil {
			t.Errorf("busy=%v: Barrier after Close: %v", busy, err)
		}
		cancel()
	}
}
