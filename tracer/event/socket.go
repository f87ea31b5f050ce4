package event

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// SocketKind says which of the kernel's three TCP socket structures a
// socket is: a full socket, a timewait socket (TIME_WAIT, or FIN_WAIT2 of an
// orphan) or a request socket (SYN_RECV before the handshake completes).
type SocketKind uint8

const (
	FullSocket     SocketKind = 0
	TimewaitSocket SocketKind = 1
	RequestSocket  SocketKind = 2
)

func (k SocketKind) String() string {
	switch k {
	case TimewaitSocket:
		return "timewait"
	case RequestSocket:
		return "request"
	}
	return "full"
}

// TimerKind is the socket timer /proc/net/tcp reports (its "tr" column) and
// netstat -o prints.
type TimerKind uint8

const (
	TimerOff        TimerKind = 0 // netstat: off
	TimerRetransmit TimerKind = 1 // netstat: on
	TimerKeepalive  TimerKind = 2 // netstat: keepalive
	TimerTimewait   TimerKind = 3 // netstat: timewait
	TimerProbe      TimerKind = 4 // zero window probe; netstat: probe
)

// Socket is one socket as a BPF iterator (iter/tcp) found it in the kernel's
// tables. It carries what the kernel has at that moment, including the
// values only the kernel knows at print time (queues, timers).
type Socket struct {
	// Cookie is the socket cookie (0 for request sockets, and for timewait
	// sockets whose full socket never had one).
	Cookie   uint64
	SockAddr uint64 // kernel address of the socket structure
	Kind     SocketKind
	Family   Family
	State    State // for timewait sockets: TimeWait or FinWait2 (the kernel's substate)
	Local    netip.AddrPort
	Remote   netip.AddrPort
	NetNS    uint32
	UID      uint32 // 0 for timewait sockets, as the kernel reports them
	Inode    uint64 // 0 when no file refers to the socket (orphans, timewait, request, not yet accepted)
	// Owner is the process tcpscope attributed the socket to (see Event).
	// A socket with Inode 0 has no process holding it now; netstat shows
	// "-" for those whatever OwnerKnown says.
	Owner      Task
	OwnerKnown bool
	Source     OwnerSource
	FD         int32 // the owner's file descriptor, -1 when not known
	// Since is the kernel CLOCK_MONOTONIC time the socket entered State,
	// 0 when it did so before tracing started.
	Since uint64
	// RecvQ and SendQ are netstat's Recv-Q and Send-Q: unread and unacked
	// bytes, or for a listener the accept queue length and its limit.
	RecvQ, SendQ uint32
	Timer        TimerKind
	// TimerLeft is the time until the timer fires (as /proc/net/tcp reports
	// it: never negative).
	TimerLeft   time.Duration
	Retransmits uint8 // unanswered retransmits (or SYN-ACK retransmits of a request socket)
	Probes      uint8 // unanswered keepalive or zero window probes
}

// Key returns the socket's key: its cookie, or its address when it has no
// cookie. Kernel addresses have their top bits set and cookies count up
// from 1, so the two ranges cannot collide.
func (s *Socket) Key() uint64 { return KeyOf(s.Cookie, s.SockAddr) }

// Key returns the key of the socket e is about (see Socket.Key).
func (e *Event) Key() uint64 { return KeyOf(e.Cookie, e.SockAddr) }

// KeyOf combines a cookie and a socket address into a table key.
func KeyOf(cookie, addr uint64) uint64 {
	if cookie != 0 {
		return cookie
	}
	return addr
}

// SocketSize is the length of one iterator record (struct sock_rec).
const SocketSize = 136

// Offsets in struct sock_rec.
const (
	soffCookie  = 0
	soffSkaddr  = 8
	soffSince   = 16
	soffInode   = 24
	soffTimer   = 32
	soffNetNS   = 40
	soffUID     = 44
	soffPID     = 48
	soffTID     = 52
	soffFD      = 56
	soffRxQ     = 60
	soffTxQ     = 64
	soffSport   = 68
	soffDport   = 70
	soffSaddr   = 72
	soffDaddr   = 88
	soffFamily  = 104
	soffState   = 106
	soffKind    = 107
	soffTimerK  = 108
	soffRetrans = 109
	soffProbes  = 110
	soffSrc     = 111
	soffFlags   = 112
	soffComm    = 120
)

// SocketLayout is Layout for struct sock_rec.
func SocketLayout() map[string]uintptr {
	return map[string]uintptr{
		"Cookie": soffCookie, "Skaddr": soffSkaddr, "SinceNs": soffSince, "Inode": soffInode,
		"TimerNs": soffTimer, "Netns": soffNetNS, "Uid": soffUID, "Pid": soffPID, "Tid": soffTID,
		"Fd": soffFD, "RxQueue": soffRxQ, "TxQueue": soffTxQ, "Sport": soffSport, "Dport": soffDport,
		"Saddr": soffSaddr, "Daddr": soffDaddr, "Family": soffFamily, "State": soffState,
		"Kind": soffKind, "Timer": soffTimerK, "Retransmits": soffRetrans, "Probes": soffProbes,
		"OwnerSrc": soffSrc, "Flags": soffFlags, "Comm": soffComm,
	}
}

// DecodeSocket fills s from one iterator record, checking bounds and values.
// It does not allocate.
func DecodeSocket(b []byte, s *Socket) error {
	if len(b) < SocketSize {
		return fmt.Errorf("socket record too short: %d bytes, need %d", len(b), SocketSize)
	}
	b = b[:SocketSize]
	le := binary.LittleEndian
	*s = Socket{}
	s.Cookie = le.Uint64(b[soffCookie:])
	s.SockAddr = le.Uint64(b[soffSkaddr:])
	s.Since = le.Uint64(b[soffSince:])
	s.Inode = le.Uint64(b[soffInode:])
	s.TimerLeft = time.Duration(le.Uint64(b[soffTimer:]))
	s.NetNS = le.Uint32(b[soffNetNS:])
	s.UID = le.Uint32(b[soffUID:])
	s.FD = int32(le.Uint32(b[soffFD:]))
	s.RecvQ = le.Uint32(b[soffRxQ:])
	s.SendQ = le.Uint32(b[soffTxQ:])
	var err error
	if s.Family, s.Local, s.Remote, err = decodeTuple(b, soffSaddr, soffDaddr, soffSport, soffDport, soffFamily); err != nil {
		return fmt.Errorf("socket record: %w", err)
	}
	s.State = State(b[soffState])
	if !s.State.Valid() {
		return fmt.Errorf("socket record: invalid state %d", b[soffState])
	}
	s.Kind = SocketKind(b[soffKind])
	if s.Kind > RequestSocket {
		return fmt.Errorf("socket record: unknown kind %d", b[soffKind])
	}
	s.Timer = TimerKind(b[soffTimerK])
	s.Retransmits = b[soffRetrans]
	s.Probes = b[soffProbes]
	if Flags(b[soffFlags])&OwnerKnown != 0 {
		s.OwnerKnown = true
		s.Source = OwnerSource(b[soffSrc])
		s.Owner.PID = le.Uint32(b[soffPID:])
		s.Owner.TID = le.Uint32(b[soffTID:])
		copy(s.Owner.Comm[:], b[soffComm:soffComm+16])
	} else {
		s.FD = -1
	}
	return nil
}

// EncodeSocket writes s in the iterator's record layout (for tests).
func EncodeSocket(s *Socket, b []byte) []byte {
	b = append(b[:0], make([]byte, SocketSize)...)
	le := binary.LittleEndian
	le.PutUint64(b[soffCookie:], s.Cookie)
	le.PutUint64(b[soffSkaddr:], s.SockAddr)
	le.PutUint64(b[soffSince:], s.Since)
	le.PutUint64(b[soffInode:], s.Inode)
	le.PutUint64(b[soffTimer:], uint64(s.TimerLeft))
	le.PutUint32(b[soffNetNS:], s.NetNS)
	le.PutUint32(b[soffUID:], s.UID)
	le.PutUint32(b[soffPID:], s.Owner.PID)
	le.PutUint32(b[soffTID:], s.Owner.TID)
	le.PutUint32(b[soffFD:], uint32(s.FD))
	le.PutUint32(b[soffRxQ:], s.RecvQ)
	le.PutUint32(b[soffTxQ:], s.SendQ)
	putTuple(b, s.Family, s.Local, s.Remote, soffSaddr, soffDaddr, soffSport, soffDport, soffFamily)
	b[soffState] = byte(s.State)
	b[soffKind] = byte(s.Kind)
	b[soffTimerK] = byte(s.Timer)
	b[soffRetrans] = s.Retransmits
	b[soffProbes] = s.Probes
	b[soffSrc] = byte(s.Source)
	if s.OwnerKnown {
		b[soffFlags] = byte(OwnerKnown)
	}
	copy(b[soffComm:], s.Owner.Comm[:])
	return b
}
