package sockdiag

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// diagMsg is one inet_diag_msg as the kernel writes it, with its netlink
// header, for the answer to request seq.
type diagMsg struct {
	family, state, timer, retrans uint8
	local, remote                 netip.AddrPort
	cookie                        uint64
	expiresMS, rq, wq, uid, inode uint32
}

func (m diagMsg) bytes(seq uint32) []byte {
	b := make([]byte, nlmsgHdrLen+msgLen+8) // + an attribute, as the kernel adds
	ne, be := binary.NativeEndian, binary.BigEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_MULTI)
	ne.PutUint32(b[8:], seq)
	d := b[nlmsgHdrLen:]
	d[0], d[1], d[2], d[3] = m.family, m.state, m.timer, m.retrans
	be.PutUint16(d[4:], m.local.Port())
	be.PutUint16(d[6:], m.remote.Port())
	if m.family == unix.AF_INET {
		a, r := m.local.Addr().As4(), m.remote.Addr().As4()
		copy(d[8:], a[:])
		copy(d[24:], r[:])
	} else {
		a, r := m.local.Addr().As16(), m.remote.Addr().As16()
		copy(d[8:], a[:])
		copy(d[24:], r[:])
	}
	ne.PutUint32(d[44:], uint32(m.cookie))
	ne.PutUint32(d[48:], uint32(m.cookie>>32))
	ne.PutUint32(d[52:], m.expiresMS)
	ne.PutUint32(d[56:], m.rq)
	ne.PutUint32(d[60:], m.wq)
	ne.PutUint32(d[64:], m.uid)
	ne.PutUint32(d[68:], m.inode)
	return b
}

// control is an NLMSG_DONE or NLMSG_ERROR carrying errno (negative).
func control(typ uint16, seq uint32, errno int32) []byte {
	b := make([]byte, nlmsgHdrLen+4)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint32(b[8:], seq)
	ne.PutUint32(b[16:], uint32(errno))
	return b
}

func TestParse(t *testing.T) {
	ap := netip.MustParseAddrPort
	listener := diagMsg{family: unix.AF_INET, state: 10, local: ap("0.0.0.0:8080"), remote: ap("0.0.0.0:0"),
		cookie: 7, rq: 3, wq: 4096, uid: 1000, inode: 99}
	est6 := diagMsg{family: unix.AF_INET6, state: 1, timer: 2, local: ap("[::1]:8080"), remote: ap("[::1]:50000"),
		cookie: 1<<40 | 5, expiresMS: 7200000, rq: 1, wq: 2, uid: 1000, inode: 100}
	tw := diagMsg{family: unix.AF_INET, state: 6, timer: 3, local: ap("127.0.0.1:50001"), remote: ap("127.0.0.1:8080"),
		cookie: 8, expiresMS: 59000}
	fw2 := diagMsg{family: unix.AF_INET, state: 5, timer: 3, local: ap("127.0.0.1:50002"), remote: ap("127.0.0.1:8080"),
		expiresMS: 1000}
	req := diagMsg{family: unix.AF_INET, state: 3, timer: 1, retrans: 2, local: ap("127.0.0.1:8080"), remote: ap("127.0.0.1:50003"),
		expiresMS: 3000}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	tests := []struct {
		name     string
		in       []byte
		want     []event.Socket
		done     bool
		errMatch string
	}{
		{
			name: "listener: Send-Q as /proc/net/tcp has it",
			in:   listener.bytes(1),
			want: []event.Socket{{Cookie: 7, Family: event.IPv4, State: event.Listen, Local: ap("0.0.0.0:8080"), Remote: ap("0.0.0.0:0"),
				NetNS: 42, UID: 1000, Inode: 99, FD: -1, RecvQ: 3}},
		},
		{
			name: "IPv6 established with keepalive, then done",
			in:   cat(est6.bytes(1), control(unix.NLMSG_DONE, 1, 0)),
			want: []event.Socket{{Cookie: 1<<40 | 5, Family: event.IPv6, State: event.Established, Local: ap("[::1]:8080"), Remote: ap("[::1]:50000"),
				NetNS: 42, UID: 1000, Inode: 100, FD: -1, RecvQ: 1, SendQ: 2, Timer: event.TimerKeepalive, TimerLeft: 2 * time.Hour}},
			done: true,
		},
		{
			name: "timewait sockets in TIME_WAIT and FIN_WAIT2",
			in:   cat(tw.bytes(1), fw2.bytes(1)),
			want: []event.Socket{
				{Cookie: 8, Kind: event.TimewaitSocket, Family: event.IPv4, State: event.TimeWait, Local: ap("127.0.0.1:50001"), Remote: ap("127.0.0.1:8080"),
					NetNS: 42, FD: -1, Timer: event.TimerTimewait, TimerLeft: 59 * time.Second},
				{Kind: event.TimewaitSocket, Family: event.IPv4, State: event.FinWait2, Local: ap("127.0.0.1:50002"), Remote: ap("127.0.0.1:8080"),
					NetNS: 42, FD: -1, Timer: event.TimerTimewait, TimerLeft: time.Second},
			},
		},
		{
			name: "request socket",
			in:   req.bytes(1),
			want: []event.Socket{{Kind: event.RequestSocket, Family: event.IPv4, State: event.SynRecv, Local: ap("127.0.0.1:8080"), Remote: ap("127.0.0.1:50003"),
				NetNS: 42, FD: -1, Timer: event.TimerRetransmit, TimerLeft: 3 * time.Second, Retransmits: 2}},
		},
		{
			name: "another request's answer is skipped",
			in:   cat(listener.bytes(9), control(unix.NLMSG_DONE, 9, 0)),
		},
		{
			name:     "dump refused",
			in:       control(unix.NLMSG_ERROR, 1, -int32(syscall.EPERM)),
			done:     true,
			errMatch: "operation not permitted",
		},
		{
			name:     "dump failed half-way",
			in:       cat(listener.bytes(1), control(unix.NLMSG_DONE, 1, -int32(syscall.ENOBUFS))),
			want:     []event.Socket{{Cookie: 7, Family: event.IPv4, State: event.Listen, Local: ap("0.0.0.0:8080"), Remote: ap("0.0.0.0:0"), NetNS: 42, UID: 1000, Inode: 99, FD: -1, RecvQ: 3}},
			done:     true,
			errMatch: "no buffer space",
		},
		{
			name:     "message longer than the datagram",
			in:       listener.bytes(1)[:40],
			done:     true,
			errMatch: "message of 96 bytes in 40",
		},
		{
			name:     "socket message too short",
			in:       func() []byte { b := control(unix.SOCK_DIAG_BY_FAMILY, 1, 0); return b }(),
			done:     true,
			errMatch: "socket message of 4 bytes",
		},
		{
			name:     "unknown family",
			in:       diagMsg{family: 99, state: 1, local: ap("[::1]:1"), remote: ap("[::1]:2")}.bytes(1),
			done:     true,
			errMatch: "family 99",
		},
		{
			name:     "unknown state",
			in:       diagMsg{family: unix.AF_INET, state: 13, local: ap("127.0.0.1:1"), remote: ap("127.0.0.1:2")}.bytes(1),
			done:     true,
			errMatch: "state 13",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, done, err := parse(nil, tt.in, 1, 42)
			if tt.errMatch == "" && err != nil || tt.errMatch != "" && (err == nil || !strings.Contains(err.Error(), tt.errMatch)) {
				t.Fatalf("error %v, want one containing %q", err, tt.errMatch)
			}
			if done != tt.done {
				t.Errorf("done %v, want %v", done, tt.done)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d sockets, want %d: %+v", len(got), len(tt.want), got)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("socket %d:\n got %+v\nwant %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestListenerUIDs(t *testing.T) {
	ap := netip.MustParseAddrPort
	socks := []event.Socket{
		{Family: event.IPv4, State: event.Listen, Local: ap("0.0.0.0:80"), UID: 33},
		{Family: event.IPv4, State: event.Listen, Local: ap("127.0.0.1:80"), UID: 44},
		{Family: event.IPv6, State: event.Listen, Local: ap("[::]:443"), UID: 55},
		{Family: event.IPv4, State: event.Listen, Local: ap("0.0.0.0:443"), UID: 66},
		{Family: event.IPv4, Kind: event.RequestSocket, State: event.SynRecv, Local: ap("127.0.0.1:80")},
		{Family: event.IPv4, Kind: event.RequestSocket, State: event.SynRecv, Local: ap("10.0.0.1:80")},
		{Family: event.IPv6, Kind: event.RequestSocket, State: event.SynRecv, Local: ap("[::1]:443")},
		{Family: event.IPv6, Kind: event.RequestSocket, State: event.SynRecv, Local: ap("[::ffff:127.0.0.1]:443")},
		{Family: event.IPv4, Kind: event.RequestSocket, State: event.SynRecv, Local: ap("127.0.0.1:443")},
		{Family: event.IPv4, Kind: event.RequestSocket, State: event.SynRecv, Local: ap("127.0.0.1:9")},
		{Family: event.IPv6, Kind: event.RequestSocket, State: event.SynRecv, Local: ap("[::1]:80")},
	}
	listenerUIDs(socks)
	for i, want := range []uint32{44, 33, 55, 55, 66, 0, 0} {
		if got := socks[4+i].UID; got != want {
			t.Errorf("request socket on %v: uid %d, want %d", socks[4+i].Local, got, want)
		}
	}
}

// TestTCPAgreesWithSS dumps real sockets of every kind this test can make
// on loopback and checks each against ss and against the socket's own
// inode and owner uid.
func TestTCPAgreesWithSS(t *testing.T) {
	if _, err := exec.LookPath("ss"); err != nil {
		t.Skip("ss (iproute2) is not installed: nothing to compare with")
	}
	type sock struct {
		local, remote string // remote "": any (a listener)
		state         event.State
		inode         uint64 // 0: no file (an orphan)
	}
	var want []sock
	inodeOf := func(c syscall.Conn) uint64 {
		raw, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		raw.Control(func(fd uintptr) { err = unix.Fstat(int(fd), &st) })
		if err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := "127.0.0.1:0"
		if network == "tcp6" {
			addr = "[::1]:0"
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			if network == "tcp6" {
				t.Logf("no IPv6 loopback (%v): IPv4 only", err)
				continue
			}
			t.Fatal(err)
		}
		defer ln.Close()
		want = append(want, sock{ln.Addr().String(), "", event.Listen, inodeOf(ln.(*net.TCPListener))})
		// An established pair, and a pair the client closed first: its
		// end goes to TIME_WAIT, the server's to CLOSE_WAIT.
		for _, closeClient := range []bool{false, true} {
			c, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if closeClient {
				c.Close()
				want = append(want, sock{s.LocalAddr().String(), s.RemoteAddr().String(), event.CloseWait, inodeOf(s.(*net.TCPConn))})
				// The client's end reaches FIN_WAIT2 once the server's
				// kernel acknowledges the FIN (closed, it is then a
				// timewait socket in FIN_WAIT2, with no inode).
				want = append(want, sock{c.LocalAddr().String(), c.RemoteAddr().String(), event.FinWait2, 0})
				continue
			}
			defer c.Close()
			want = append(want,
				sock{s.LocalAddr().String(), s.RemoteAddr().String(), event.Established, inodeOf(s.(*net.TCPConn))},
				sock{c.LocalAddr().String(), c.RemoteAddr().String(), event.Established, inodeOf(c.(*net.TCPConn))})
		}
	}

	// A socket that is only bound is in neither /proc/net/tcp nor ss's
	// default output (Linux 6.5 can dump it: TCP_BOUND_INACTIVE).
	boundFD, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(boundFD)
	if err := unix.Bind(boundFD, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	boundSA, err := unix.Getsockname(boundFD)
	if err != nil {
		t.Fatal(err)
	}
	bound := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(boundSA.(*unix.SockaddrInet4).Port))

	find := func(got []event.Socket, w sock) *event.Socket {
		for i := range got {
			s := &got[i]
			if s.Local.String() == w.local && (w.remote == "" || s.Remote.String() == w.remote) {
				return s
			}
		}
		return nil
	}
	// The acknowledgment of a client's FIN may still be on its way: wait
	// (at most 2 s) until every socket is in the state expected.
	var got []event.Socket
	var ssLines string
	for deadline := time.Now().Add(2 * time.Second); ; {
		var err error
		if got, err = TCP(got[:0], 42); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("ss", "-tanH").Output()
		if err != nil {
			t.Fatalf("ss -tanH: %v", err)
		}
		ssLines = string(out)
		settled := true
		for _, w := range want {
			if s := find(got, w); s == nil || s.State != w.state {
				settled = false
			}
		}
		if settled || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	for _, s := range got {
		if s.Local == bound {
			t.Errorf("the dump has a socket that is only bound: %+v", s)
		}
	}
	for _, w := range want {
		found := find(got, w)
		if found == nil {
			t.Errorf("%s %s %s: not in the dump", w.state, w.local, w.remote)
			continue
		}
		if found.State != w.state {
			t.Errorf("%s %s: state %s, want %s", w.local, w.remote, found.State, w.state)
		}
		if w.inode != 0 && found.Inode != w.inode {
			t.Errorf("%s %s: inode %d, want %d", w.local, w.remote, found.Inode, w.inode)
		}
		if w.inode != 0 && found.UID != uint32(unix.Getuid()) {
			t.Errorf("%s %s: uid %d, want %d", w.local, w.remote, found.UID, unix.Getuid())
		}
		if found.NetNS != 42 || found.FD != -1 {
			t.Errorf("%s %s: netns %d fd %d, want 42 and -1", w.local, w.remote, found.NetNS, found.FD)
		}
		// ss prints the same socket with its state's name and both
		// addresses (an IPv6 one in brackets, as netip does).
		ssState := map[event.State]string{event.Listen: "LISTEN", event.Established: "ESTAB", event.CloseWait: "CLOSE-WAIT", event.FinWait2: "FIN-WAIT-2"}[w.state]
		if !ssHas(ssLines, ssState, found.Local.String(), w.remote) {
			t.Errorf("ss -tanH has no %s %s %s:\n%s", ssState, found.Local, w.remote, ssLines)
		}
	}
}

// ssHas says whether ss -tanH printed a line with this state and addresses.
func ssHas(out, state, local, remote string) bool {
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] != state || f[3] != local {
			continue
		}
		if remote == "" || f[4] == remote {
			return true
		}
	}
	return false
}

func TestCountLine(t *testing.T) {
	tests := []struct {
		name, in, prefix string
		want             int
		err              string
	}{
		{"IPv4", "sockets: used 170\nTCP: inuse 36003 orphan 0 tw 523 alloc 36003 mem 116\nUDP: inuse 3 mem 2\n", "TCP:", 36526, ""},
		{"IPv6", "TCP6: inuse 7\nUDP6: inuse 1\n", "TCP6:", 7, ""},
		{"no line", "UDP: inuse 3 mem 2\n", "TCP:", 0, "no TCP: line"},
		{"not a number", "TCP: inuse x tw 1\n", "TCP:", 0, "invalid syntax"},
		{"no counts", "TCP: orphan 0\n", "TCP:", 0, "no inuse count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := countLine(tt.in, tt.prefix)
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("error %v, want one containing %q", err, tt.err)
			}
			if got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

// TestCountAgreesWithDump: the count that picks the walk is within the
// sockets a dump finds (request sockets and churn elsewhere aside).
func TestCountAgreesWithDump(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	for range 50 {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	n, err := Count()
	if err != nil {
		t.Fatal(err)
	}
	socks, err := TCP(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Other tests' sockets come and go meanwhile: a loose bound, but one
	// a count of the wrong lines (UDP, or one family only) would miss.
	if n < 51 || n > 2*len(socks)+100 {
		t.Errorf("Count() = %d, the dump found %d sockets (at least 51 are this test's)", n, len(socks))
	}
}
