package sockproc

import (
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	if IsChild() {
		Main()
	}
	os.Exit(m.Run())
}

func start(t *testing.T, comm string) *Proc {
	t.Helper()
	p, err := Start(Options{Comm: comm})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close %v: %v", p, err)
		}
	})
	return p
}

func readComm(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// The driver and the child agree on the protocol; sockets behave as their
// commands say. Loopback only, no privileges needed.
func TestConversation(t *testing.T) {
	srv := start(t, "sp-server")
	cli := start(t, "sp-client")
	if got := readComm(t, srv.Pid()); got != "sp-server" {
		t.Errorf("server comm %q", got)
	}
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(srv.Pid()) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(srv.Pid()) + "/task/" + task.Name() + "/comm")
		if err == nil && strings.TrimSpace(string(b)) != "sp-server" {
			t.Errorf("thread %s is named %q", task.Name(), strings.TrimSpace(string(b)))
		}
	}

	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		l, err := srv.Listen(netip.MustParseAddrPort(addr))
		if err != nil {
			t.Fatal(err)
		}
		if l.Local.Port() == 0 || l.Inode == 0 {
			t.Fatalf("listener %+v", l)
		}
		c, err := cli.Connect(l.Local)
		if err != nil {
			t.Fatal(err)
		}
		if c.Remote != l.Local {
			t.Errorf("client remote %v, listener %v", c.Remote, l.Local)
		}
		a, err := srv.Accept(l)
		if err != nil {
			t.Fatal(err)
		}
		if a.Remote != c.Local || a.Local != c.Remote {
			t.Errorf("accepted %v<-%v, client %v->%v", a.Local, a.Remote, c.Local, c.Remote)
		}
		if _, err := cli.Do("close", c.ID); err != nil {
			t.Fatal(err)
		}
		if f, err := srv.Do("waiteof", a.ID); err != nil || len(f) != 1 || f[0] != "eof" {
			t.Fatalf("waiteof: %q %v", f, err)
		}
		if _, err := srv.Do("close", a.ID); err != nil {
			t.Fatal(err)
		}

		// RST: the peer sees a reset.
		c, err = cli.Connect(l.Local)
		if err != nil {
			t.Fatal(err)
		}
		if a, err = srv.Accept(l); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Do("linger0", c.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Do("close", c.ID); err != nil {
			t.Fatal(err)
		}
		if f, err := srv.Do("waiteof", a.ID); err != nil || len(f) != 1 || f[0] != "reset" {
			t.Fatalf("waiteof after RST: %q %v", f, err)
		}

		// fork-accept: the child holds the connection.
		c, err = cli.Connect(l.Local)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := srv.ForkAccept(l, "sp-worker")
		if err != nil {
			t.Fatal(err)
		}
		if got := readComm(t, ch.Pid); got != "sp-worker" {
			t.Errorf("child comm %q", got)
		}
		if ch.Sock.Remote != c.Local {
			t.Errorf("child holds %v, client is %v", ch.Sock.Remote, c.Local)
		}
		if _, err := srv.InChild(ch, "close", ch.Sock.ID); err != nil {
			t.Fatal(err)
		}
		if f, err := cli.Do("waiteof", c.ID); err != nil || f[0] != "eof" {
			t.Fatalf("client waiteof after the child's close: %q %v", f, err)
		}
		if _, err := srv.InChild(ch, "exit"); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Do("close", l.ID); err != nil {
			t.Fatal(err)
		}
		// Refused.
		if _, err := cli.Connect(l.Local); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("connect to a closed listener: %v", err)
		}
	}

	if _, err := srv.Do("bogus"); err == nil {
		t.Error("unknown command accepted")
	}
	f, err := srv.Do("churn", "127.0.0.1:0", 20)
	if err != nil || len(f) != 2 || f[1] != "20" {
		t.Fatalf("churn: %q %v", f, err)
	}
}
