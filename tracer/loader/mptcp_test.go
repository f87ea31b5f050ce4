package loader_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/loader"
)

// TestMPTCPListener: Go (1.24+) listens with MPTCP when the kernel has it.
// The fd then holds an MPTCP socket while the kernel's TCP tables hold its
// subflow, which is what walks see. A walk must still find the listener's
// owner (OwnersAtWalk), and the TIME_WAIT left when a connection it
// accepted is closed by the server first: bpf_skc_to_tcp_timewait_sock()
// refuses an MPTCP subflow's timewait socket.
func TestMPTCPListener(t *testing.T) {
	requireRoot(t)
	nsName := "tlo-mptcp-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", nsName).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", nsName).Run() })
	if out, err := exec.Command("ip", "-n", nsName, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo up: %v: %s", err, out)
	}
	nsPath := "/run/netns/" + nsName
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	var (
		l       net.Listener
		local   string
		dialled net.Conn
	)
	// Sockets belong to the namespace of the thread that makes them.
	if err := inNetNS(nsPath, func() error {
		var err error
		if l, err = lc.Listen(context.Background(), "tcp4", "127.0.0.1:0"); err != nil {
			return err
		}
		if dialled, err = net.Dial("tcp4", l.Addr().String()); err != nil {
			return err
		}
		local = dialled.LocalAddr().String()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	defer dialled.Close()
	if proto := socketProtocol(t, l.(*net.TCPListener)); proto != unix.IPPROTO_MPTCP {
		t.Skipf("the listener's protocol is %d, not MPTCP: kernel without MPTCP?", proto)
	}
	accepted, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	accepted.Close() // the server closes first: its side goes to TIME_WAIT
	dialled.SetReadDeadline(time.Now().Add(5 * time.Second))
	dialled.Read(make([]byte, 1))
	dialled.Close()

	tc := startTracer(t, loader.Config{Sockets: true, Owners: loader.OwnersAtWalk})
	socks, err := tc.tr.SocketsIn(nsPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	var listener, timewait bool
	for _, s := range socks {
		if int(s.Local.Port()) != port {
			continue
		}
		switch {
		case s.State == event.Listen:
			listener = true
			if !s.OwnerKnown || int(s.Owner.PID) != os.Getpid() {
				t.Errorf("MPTCP listener %v: owner %d known %v, want this process %d", s.Local, s.Owner.PID, s.OwnerKnown, os.Getpid())
			}
		case s.State == event.TimeWait && s.Remote.String() == local:
			timewait = true
			if s.Kind != event.TimewaitSocket {
				t.Errorf("TIME_WAIT %v: kind %v", s.Local, s.Kind)
			}
		}
	}
	if !listener {
		t.Errorf("MPTCP listener on port %d not in the walk", port)
	}
	if !timewait {
		t.Errorf("server-side TIME_WAIT %d->%s not in the walk", port, local)
	}
}

// inNetNS runs f on a thread inside the network namespace at path.
func inNetNS(path string, f func() error) error {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	target, err := os.Open(path)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := f()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		return err // the thread stays locked: the runtime discards it
	}
	runtime.UnlockOSThread()
	return ferr
}

func socketProtocol(t *testing.T, l *net.TCPListener) int {
	t.Helper()
	rc, err := l.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	proto := -1
	var soErr error
	if err := rc.Control(func(fd uintptr) {
		proto, soErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL)
	}); err != nil || soErr != nil {
		t.Fatalf("SO_PROTOCOL: %v %v", err, soErr)
	}
	return proto
}
