// Package sockdiag reads the TCP sockets of the caller's network namespace
// from the kernel over NETLINK_SOCK_DIAG, the interface ss uses: one dump
// request per address family, answered with one inet_diag_msg per socket
// (full, timewait and request sockets alike), of which only the fixed
// 72-byte header is read (attributes follow it).
//
// It is the source of tcpscope's plainest one-shot views (netstat -ant,
// -lnt): those print only what every socket's inet_diag_msg holds, and a
// dump needs no BPF, so no kernel BTF to parse (the ~25 ms that made a
// BPF-iterator view slower than ss below tens of thousands of sockets) and
// no privilege at all. Views that need what only tcpscope's BPF programs
// know (owners, state ages) walk with the BPF iterator instead.
//
// Hand-written over golang.org/x/sys/unix rather than a netlink library:
// the libraries at hand ask the kernel for tcp_info per socket (which locks
// each socket) and allocate per socket; this reads only the 72-byte header.
package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/sockstat"
)

// Sizes of the kernel's structures (include/uapi/linux/inet_diag.h).
const (
	nlmsgHdrLen = 16 // struct nlmsghdr
	reqLen      = 56 // struct inet_diag_req_v2
	msgLen      = 72 // struct inet_diag_msg
	recvBufLen  = 32 << 10
)

// allStates asks for every socket /proc/net/tcp and iter/tcp show: states
// 0 to TCP_NEW_SYN_RECV (12, request sockets). Not TCP_BOUND_INACTIVE (13,
// Linux 6.5): sockets that are only bound, which neither shows (ss -B does).
const allStates = 1<<13 - 1

// timerTimewait is inet_diag_msg.idiag_timer of a timewait socket; full
// sockets report 0, 1 (retransmit), 2 (keepalive) or 4 (zero window probe).
const timerTimewait = 3

// TCP appends every TCP socket of the caller's network namespace to dst,
// IPv4 first, then IPv6, each in the kernel's order (listeners, then the
// established hash), as netstat reads /proc/net/tcp and then tcp6. netns is
// the namespace's inode, stamped on each socket.
//
// The sockets carry what netstat's plain views print: state, addresses,
// queues (as /proc/net/tcp has them: a listener's Send-Q is 0), uid and
// inode, the timer, and the cookie. They carry no owner, no state age and
// no kernel address.
func TCP(dst []event.Socket, netns uint32) ([]event.Socket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return dst, fmt.Errorf("open sock_diag netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return dst, fmt.Errorf("bind sock_diag netlink socket: %w", err)
	}
	start := len(dst)
	buf := make([]byte, recvBufLen)
	for seq, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := unix.Sendto(fd, request(family, uint32(seq+1)), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return dst, fmt.Errorf("sock_diag dump request: %w", err)
		}
		for done := false; !done; {
			n, _, flags, _, err := unix.Recvmsg(fd, buf, nil, 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return dst, fmt.Errorf("sock_diag dump: %w", err)
			}
			if flags&unix.MSG_TRUNC != 0 {
				// Sockets would be missing; the kernel keeps each
				// datagram of a dump under 32 KiB, so this is not seen.
				return dst, fmt.Errorf("sock_diag dump: a datagram longer than %d bytes", len(buf))
			}
			if dst, done, err = parse(dst, buf[:n], uint32(seq+1), netns); err != nil {
				return dst, err
			}
		}
	}
	listenerUIDs(dst[start:])
	return dst, nil
}

// request is a dump request for every TCP socket of family.
func request(family uint8, seq uint32) []byte {
	b := make([]byte, nlmsgHdrLen+reqLen)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(b[8:], seq)
	r := b[nlmsgHdrLen:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	// r[2]: no extensions (no tcp_info, no memory info).
	ne.PutUint32(r[4:], allStates)
	// The socket id is unused in a dump but for the cookie, which must say
	// "none".
	ne.PutUint32(r[48:], ^uint32(0))
	ne.PutUint32(r[52:], ^uint32(0))
	return b
}

// parse appends the sockets of one datagram of the answer to the request
// numbered seq; done is set at the end of the answer.
func parse(dst []event.Socket, b []byte, seq, netns uint32) (_ []event.Socket, done bool, _ error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		l := ne.Uint32(b[0:])
		typ := ne.Uint16(b[4:])
		if l < nlmsgHdrLen || int(l) > len(b) {
			return dst, true, fmt.Errorf("sock_diag dump: message of %d bytes in %d", l, len(b))
		}
		body := b[nlmsgHdrLen:l]
		msgSeq := ne.Uint32(b[8:])
		b = b[min(int(nlmsgAlign(l)), len(b)):]
		if msgSeq != seq {
			continue // not an answer to this request
		}
		switch typ {
		case unix.NLMSG_DONE, unix.NLMSG_ERROR:
			// A dump that failed, at once or half-way, says so here.
			if len(body) >= 4 {
				if errno := int32(ne.Uint32(body)); errno < 0 {
					return dst, true, fmt.Errorf("sock_diag dump: %w", unix.Errno(-errno))
				}
			}
			if typ == unix.NLMSG_ERROR {
				return dst, true, errors.New("sock_diag dump: error message without an error")
			}
			return dst, true, nil
		case unix.SOCK_DIAG_BY_FAMILY:
			s, err := decode(body, netns)
			if err != nil {
				return dst, true, err
			}
			dst = append(dst, s)
		}
	}
	return dst, false, nil
}

func nlmsgAlign(l uint32) uint32 { return (l + 3) &^ 3 }

// decode turns one inet_diag_msg into a Socket.
func decode(m []byte, netns uint32) (event.Socket, error) {
	var s event.Socket
	if len(m) < msgLen {
		return s, fmt.Errorf("sock_diag dump: socket message of %d bytes, want %d", len(m), msgLen)
	}
	ne, be := binary.NativeEndian, binary.BigEndian
	family, state, timer, retrans := m[0], m[1], m[2], m[3]
	id := m[4:52]
	sport, dport := be.Uint16(id[0:]), be.Uint16(id[2:])
	var local, remote netip.Addr
	switch family {
	case unix.AF_INET:
		s.Family = event.IPv4
		local = netip.AddrFrom4([4]byte(id[4:8]))
		remote = netip.AddrFrom4([4]byte(id[20:24]))
	case unix.AF_INET6:
		s.Family = event.IPv6
		local = netip.AddrFrom16([16]byte(id[4:20]))
		remote = netip.AddrFrom16([16]byte(id[20:36]))
	default:
		return s, fmt.Errorf("sock_diag dump: socket of family %d", family)
	}
	s.Local, s.Remote = netip.AddrPortFrom(local, sport), netip.AddrPortFrom(remote, dport)
	s.Cookie = uint64(ne.Uint32(id[40:])) | uint64(ne.Uint32(id[44:]))<<32
	s.State = event.State(state)
	if !s.State.Valid() {
		return s, fmt.Errorf("sock_diag dump: socket in state %d", state)
	}
	expires := time.Duration(ne.Uint32(m[52:])) * time.Millisecond
	s.RecvQ, s.SendQ = ne.Uint32(m[56:]), ne.Uint32(m[60:])
	s.UID, s.Inode = ne.Uint32(m[64:]), uint64(ne.Uint32(m[68:]))
	s.NetNS, s.FD = netns, -1
	s.Retransmits = retrans
	switch {
	case timer == timerTimewait:
		s.Kind = event.TimewaitSocket
	case s.State == event.SynRecv && s.Inode == 0 && s.UID == 0:
		// inet_req_diag_fill's uid and inode; the UID is the listener's
		// in /proc/net/tcp (listenerUIDs).
		s.Kind = event.RequestSocket
	}
	if s.State == event.Listen {
		// sock_diag reports the backlog limit; /proc/net/tcp (and netstat)
		// the unsent bytes, which a listener never has.
		s.SendQ = 0
	}
	if timer <= uint8(event.TimerProbe) {
		s.Timer = event.TimerKind(timer)
	}
	if s.Timer != event.TimerOff {
		s.TimerLeft = expires
	}
	return s, nil
}

// listenerUIDs gives request sockets their listener's uid, as
// /proc/net/tcp (and netstat -e) shows it; sock_diag reports 0.
func listenerUIDs(socks []event.Socket) {
	type key struct {
		addr netip.Addr
		port uint16
	}
	var uids map[key]uint32
	for i := range socks {
		s := &socks[i]
		if s.Kind != event.RequestSocket {
			continue
		}
		if uids == nil {
			uids = map[key]uint32{}
			for j := range socks {
				if l := &socks[j]; l.State == event.Listen {
					uids[key{l.Local.Addr(), l.Local.Port()}] = l.UID
				}
			}
		}
		// The listener bound to the request's address, else the one bound
		// to any address of its family (an IPv6 request with a mapped
		// IPv4 address comes from an IPv6 listener).
		port, any := s.Local.Port(), netip.IPv4Unspecified()
		if s.Family == event.IPv6 {
			any = netip.IPv6Unspecified()
		}
		if uid, ok := uids[key{s.Local.Addr(), port}]; ok {
			s.UID = uid
		} else if uid, ok := uids[key{any, port}]; ok {
			s.UID = uid
		}
	}
}

// Count is how many TCP sockets the caller's network namespace holds, as
// /proc/net/sockstat and sockstat6 count them (full sockets of both
// families, and timewait sockets; request sockets are left out): enough to
// pick the cheaper way to walk them.
func Count() (int, error) {
	n := 0
	for _, f := range []struct{ path, prefix string }{
		{"/proc/self/net/sockstat", "TCP:"},
		{"/proc/self/net/sockstat6", "TCP6:"},
	} {
		b, err := os.ReadFile(f.path)
		if errors.Is(err, os.ErrNotExist) && f.prefix == "TCP6:" {
			continue // IPv6 disabled (ipv6.disable=1)
		}
		if err != nil {
			return 0, fmt.Errorf("count TCP sockets: %w", err)
		}
		c, err := countLine(string(b), f.prefix)
		if err != nil {
			return 0, fmt.Errorf("count TCP sockets: %s: %w", f.path, err)
		}
		n += c
	}
	return n, nil
}

// countLine adds up the "inuse" and "tw" counts of the line of a sockstat
// file that starts with prefix ("TCP: inuse 5 orphan 0 tw 2 alloc 9 mem 1").
func countLine(text, prefix string) (int, error) {
	n, found := 0, false
	for _, name := range []string{"inuse", "tw"} {
		v, ok, err := sockstat.Count(text, prefix, name)
		if err != nil {
			return 0, err
		}
		if ok {
			n, found = n+v, true
		}
	}
	if !found {
		return 0, fmt.Errorf("%s line: no inuse count", prefix)
	}
	return n, nil
}
