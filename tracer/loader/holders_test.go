package loader_test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/internal/sockproc"
	"github.com/tcpscope/tcpscope/tracer/loader"
)

// newNS makes a network namespace for one test (loopback up), deleted at
// the end, after the processes registered later.
func newNS(t *testing.T, tag string) string {
	t.Helper()
	name := fmt.Sprintf("ldr%s%d", tag, os.Getpid()%100000)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	return name
}

// Holders finds every process holding a socket, and only in the states
// asked for; its keys are the events' keys.
func TestHoldersOfSharedSocket(t *testing.T) {
	tc := startTracer(t, loader.Config{})
	ns := newNS(t, "h")
	srv := startProc(t, sockproc.Options{Comm: "hsrv", NetNS: ns})
	cli := startProc(t, sockproc.Options{Comm: "hcli", NetNS: ns})
	l := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
	c := must[sockproc.Sock](t)(cli.Connect(l.Local))
	a := must[sockproc.Sock](t)(srv.Accept(l))
	kid := must[sockproc.Child](t)(srv.Share(a, "hkid"))
	do(t, cli, "close", c.ID)
	var key uint64
	tc.waitEvent(t, l.Local.Port(), "server socket to CLOSE_WAIT", func(e *event.Event) bool {
		if e.Local == a.Local && e.New == event.CloseWait {
			key = e.Key()
			return true
		}
		return false
	})

	mine := func(states event.StateMask) map[string]loader.Holder {
		hs, err := tc.tr.Holders(states)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]loader.Holder{}
		for _, h := range hs {
			if h.PID == uint32(srv.Pid()) || h.PID == uint32(kid.Pid) || h.PID == uint32(cli.Pid()) {
				m[fmt.Sprintf("%d/%d", h.PID, h.FD)] = h
			}
		}
		return m
	}
	got := mine(event.StateMask(0).With(event.CloseWait))
	if len(got) != 2 {
		t.Fatalf("holders %v, want the server and its child", got)
	}
	for _, h := range got {
		comm := string(h.Comm[:len("hsrv")])
		if h.PID == uint32(kid.Pid) {
			comm = string(h.Comm[:len("hkid")])
		}
		if h.Key != key || h.State != event.CloseWait || (h.PID == uint32(srv.Pid()) && comm != "hsrv") || (h.PID == uint32(kid.Pid) && (comm != "hkid" || h.FD != 3)) {
			t.Errorf("holder %+v (comm %q), want key %d in CLOSE_WAIT", h, comm, key)
		}
	}
	// The listener and the client's FIN_WAIT2 socket are in other states.
	if got := mine(event.StateMask(0).With(event.CloseWait).With(event.Listen)); len(got) != 3 {
		t.Errorf("with LISTEN: %v, want 3 holders", got)
	}
	if got := mine(event.StateMask(0).With(event.Established)); len(got) != 0 {
		t.Errorf("ESTABLISHED holders %v, want none", got)
	}
}

// With Resets, an abortive close shows as ResetSent on one side and
// ResetReceived plus ECONNRESET on the other; transitions carry data bytes.
func TestResetsAndBytes(t *testing.T) {
	tc := startTracer(t, loader.Config{Resets: true})
	ns := newNS(t, "r")
	srv := startProc(t, sockproc.Options{Comm: "rsrv", NetNS: ns})
	cli := startProc(t, sockproc.Options{Comm: "rcli", NetNS: ns})
	l := must[sockproc.Sock](t)(srv.Listen(netip.MustParseAddrPort("127.0.0.1:0")))
	c := must[sockproc.Sock](t)(cli.Connect(l.Local))
	a := must[sockproc.Sock](t)(srv.Accept(l))
	if err := cli.Send(c, 1000); err != nil {
		t.Fatal(err)
	}
	if err := srv.Recv(a, 1000); err != nil {
		t.Fatal(err)
	}
	do(t, cli, "linger0", c.ID)
	do(t, cli, "close", c.ID)
	port := l.Local.Port()
	var cliKey, srvKey uint64
	tc.waitEvent(t, port, "client CLOSE", func(e *event.Event) bool {
		if e.Kind == event.Transition && e.Local == c.Local && e.New == event.Close {
			cliKey = e.Key()
			if e.BytesSent != 1000 || e.BytesReceived != 0 || e.Err != 0 {
				t.Errorf("client CLOSE: sent %d received %d err %d, want 1000 0 0", e.BytesSent, e.BytesReceived, e.Err)
			}
			return true
		}
		return false
	})
	tc.waitEvent(t, port, "server CLOSE", func(e *event.Event) bool {
		if e.Kind == event.Transition && e.Local == a.Local && e.New == event.Close {
			srvKey = e.Key()
			if e.BytesSent != 0 || e.BytesReceived != 1000 || e.Err != 104 {
				t.Errorf("server CLOSE: sent %d received %d err %d, want 0 1000 ECONNRESET", e.BytesSent, e.BytesReceived, e.Err)
			}
			return true
		}
		return false
	})
	tc.waitEvent(t, port, "reset sent by the client", func(e *event.Event) bool {
		return e.Kind == event.ResetSent && e.Key() == cliKey && e.Local == c.Local
	})
	tc.waitEvent(t, port, "reset received by the server", func(e *event.Event) bool {
		return e.Kind == event.ResetReceived && e.Key() == srvKey && e.Local == a.Local
	})
}
