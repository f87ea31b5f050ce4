// Package event defines tcpscope's public record of one TCP state change and
// decodes it from the fixed layout the BPF program writes into the ring
// buffer. It is plain Go: tests and every consumer (table, views, exporter)
// use it without BPF.
package event

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// Family is the socket's address family.
type Family uint8

const (
	FamilyUnknown Family = 0
	IPv4          Family = 4
	IPv6          Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "ipv4"
	case IPv6:
		return "ipv6"
	}
	return "unknown"
}

// Flags qualify an event.
type Flags uint8

const (
	// OwnerKnown: PID/TID/Comm name the socket's owner.
	OwnerKnown Flags = 0x1
	// PrevKnown: InPrev is the time spent in Old. Unset for the first event
	// of a socket that existed before the tracer started.
	PrevKnown Flags = 0x2
	// Recovered: the main BPF program was busy on this CPU when the
	// tracepoint fired again; the recovery program emitted the event.
	Recovered Flags = 0x4
	// Untracked: the BPF socket map was full (or out of memory), so
	// neither owner nor state age are kept for this socket.
	Untracked Flags = 0x8
)

// OwnerSource says how the owner of a socket was learned.
type OwnerSource uint8

const (
	OwnerNone     OwnerSource = 0 // not known
	OwnerSyscall  OwnerSource = 1 // the owner's own connect/listen/close/shutdown
	OwnerAccept   OwnerSource = 2 // returned to it by accept()/accept4()
	OwnerListener OwnerSource = 3 // not accepted yet: the listener's owner
	OwnerIter     OwnerSource = 4 // held before start, found by walking fd tables
)

func (s OwnerSource) String() string {
	switch s {
	case OwnerSyscall:
		return "syscall"
	case OwnerAccept:
		return "accept"
	case OwnerListener:
		return "listener"
	case OwnerIter:
		return "seed"
	}
	return "none"
}

// Task is a thread and the process it belongs to.
type Task struct {
	PID  uint32   // process (thread group) id
	TID  uint32   // thread id
	Comm [16]byte // NUL-padded, as the kernel keeps it; may hold any bytes
}

// CommBytes returns the comm without its NUL padding. It does not allocate.
func (t *Task) CommBytes() []byte {
	for i, c := range t.Comm {
		if c == 0 {
			return t.Comm[:i]
		}
	}
	return t.Comm[:]
}

// Kind says what an Event records. Transitions come from the
// sock:inet_sock_set_state tracepoint; the others from the kernel arming and
// stopping the timers of timewait and request sockets, which change state
// without that tracepoint firing.
type Kind uint8

const (
	// Transition: Old -> New of a full socket.
	Transition Kind = 0
	// TimewaitStart: the kernel (re)armed a timewait socket's timer. The
	// socket is in New (TimeWait, or FinWait2 for an orphan) until the timer
	// fires, Expires after Mono. A timewait socket takes over the cookie of
	// the full socket it replaces; this record comes just before that full
	// socket's transition to CLOSE.
	TimewaitStart Kind = 1
	// TimewaitStop: the timewait socket's timer stopped: it expired, the
	// socket was killed (RST, 4-tuple reuse, namespace exit), or it is being
	// re-armed (a TimewaitStart for the same socket follows at once).
	TimewaitStop Kind = 2
	// RequestStart: a request socket (SYN_RECV, handshake not complete)
	// was queued, or its SYN-ACK retransmit timer re-armed.
	RequestStart Kind = 3
	// RequestStop: the request socket's timer stopped: the handshake
	// completed (a full socket takes over), it was dropped, or it is being
	// re-armed.
	RequestStop Kind = 4
	// ResetSent: the full socket sent a reset (an abortive close: SO_LINGER
	// 0, close() with unread data, or a reply to a bad segment). Only with
	// loader.Config.Resets. It may come just after the socket's transition
	// to CLOSE (the kernel closes, then sends the reset). New is the state
	// the socket was in.
	ResetSent Kind = 5
	// ResetReceived: the full socket received a reset; its transition to
	// CLOSE follows. Only with loader.Config.Resets.
	ResetReceived Kind = 6
)

func (k Kind) String() string {
	switch k {
	case Transition:
		return "transition"
	case TimewaitStart:
		return "timewait-start"
	case TimewaitStop:
		return "timewait-stop"
	case RequestStart:
		return "request-start"
	case RequestStop:
		return "request-stop"
	case ResetSent:
		return "reset-sent"
	case ResetReceived:
		return "reset-received"
	}
	return "unknown"
}

// Event is one TCP state transition, or (Kind != Transition) a change of a
// timewait or request socket.
type Event struct {
	Kind Kind
	// Expires is, for TimewaitStart and RequestStart, how long after Mono the
	// kernel's timer fires.
	Expires time.Duration
	// Mono is the kernel's CLOCK_MONOTONIC time of the transition in
	// nanoseconds; see ktime.Clock for wall time.
	Mono uint64
	// Cookie identifies the socket for the whole boot, even after the kernel
	// reuses its address for another socket.
	Cookie uint64
	// SockAddr is the kernel address of the struct sock.
	SockAddr uint64
	// InPrev is how long the socket was in Old (valid with PrevKnown).
	InPrev time.Duration
	// Inode of the socket's file, 0 when it has none (not accepted, orphaned).
	Inode  uint64
	NetNS  uint32 // network namespace inode
	UID    uint32 // socket owner uid
	Owner  Task   // valid with OwnerKnown
	OnCPU  Task   // the task the transition ran on: not the owner in softirq
	Family Family
	Local  netip.AddrPort
	Remote netip.AddrPort
	Old    State
	New    State
	Flags  Flags
	Source OwnerSource
	// Err is the socket's pending error at the transition (a Linux errno:
	// ECONNREFUSED, ECONNRESET, ETIMEDOUT, ...), 0 for none. At a
	// transition to CLOSE it says how the connection ended.
	Err uint8
	// BytesSent and BytesReceived are the data bytes the socket had sent
	// (each once: retransmissions, SYN and FIN not counted) and received
	// in order, at the transition.
	BytesSent, BytesReceived uint64
}

// Size is the length in bytes of one record as the BPF program writes it.
const Size = 160

// Offsets of the record's fields (struct event in bpf/tcpscope.bpf.c).
const (
	offTS      = 0
	offCookie  = 8
	offSkaddr  = 16
	offPrev    = 24
	offInode   = 32
	offNetNS   = 40
	offUID     = 44
	offPID     = 48
	offTID     = 52
	offCPUPID  = 56
	offCPUTID  = 60
	offSaddr   = 64
	offDaddr   = 80
	offSport   = 96
	offDport   = 98
	offFamily  = 100
	offOld     = 102
	offNew     = 103
	offFlags   = 104
	offSrc     = 105
	offErr     = 106
	offComm    = 112
	offCPUComm = 128
	offSent    = 144
	offRecvd   = 152
)

// Layout returns the byte offset of each field of the kernel record, named
// as bpf2go names the fields of struct event. Tests pin it against the
// compiled BPF object so the two cannot drift apart.
func Layout() map[string]uintptr {
	return map[string]uintptr{
		"TsNs": offTS, "Cookie": offCookie, "Skaddr": offSkaddr, "PrevNs": offPrev,
		"Inode": offInode, "Netns": offNetNS, "Uid": offUID, "Pid": offPID, "Tid": offTID,
		"CpuPid": offCPUPID, "CpuTid": offCPUTID, "Saddr": offSaddr, "Daddr": offDaddr,
		"Sport": offSport, "Dport": offDport, "Family": offFamily, "Oldstate": offOld,
		"Newstate": offNew, "Flags": offFlags, "OwnerSrc": offSrc, "Comm": offComm, "CpuComm": offCPUComm,
		"SkErr": offErr, "BytesSent": offSent, "BytesReceived": offRecvd,
	}
}

// Linux address family numbers as the kernel reports them.
const (
	afInet  = 2
	afInet6 = 10
)

// ErrShort is returned for a record shorter than Size.
type ErrShort int

func (n ErrShort) Error() string {
	return fmt.Sprintf("event record too short: %d bytes, need %d", int(n), Size)
}

// Decode fills e from one ring-buffer record: a transition (Size bytes) or
// a timer record (TimerSize bytes). It checks bounds and values and does not
// allocate. Fields of e are all overwritten.
func Decode(b []byte, e *Event) error {
	if len(b) == TimerSize {
		return decodeTimer(b, e)
	}
	if len(b) < Size {
		return ErrShort(len(b))
	}
	e.Kind = Transition
	e.Expires = 0
	b = b[:Size]
	le := binary.LittleEndian
	e.Mono = le.Uint64(b[offTS:])
	e.Cookie = le.Uint64(b[offCookie:])
	e.SockAddr = le.Uint64(b[offSkaddr:])
	e.InPrev = time.Duration(le.Uint64(b[offPrev:]))
	e.Inode = le.Uint64(b[offInode:])
	e.NetNS = le.Uint32(b[offNetNS:])
	e.UID = le.Uint32(b[offUID:])
	e.Owner.PID = le.Uint32(b[offPID:])
	e.Owner.TID = le.Uint32(b[offTID:])
	e.OnCPU.PID = le.Uint32(b[offCPUPID:])
	e.OnCPU.TID = le.Uint32(b[offCPUTID:])
	copy(e.Owner.Comm[:], b[offComm:offComm+16])
	copy(e.OnCPU.Comm[:], b[offCPUComm:offCPUComm+16])
	var err error
	if e.Family, e.Local, e.Remote, err = decodeTuple(b, offSaddr, offDaddr, offSport, offDport, offFamily); err != nil {
		return fmt.Errorf("event record: %w", err)
	}
	e.Old = State(b[offOld])
	e.New = State(b[offNew])
	if !e.Old.Valid() || !e.New.Valid() {
		return fmt.Errorf("event record: invalid state %d -> %d", b[offOld], b[offNew])
	}
	e.Flags = Flags(b[offFlags])
	e.Source = OwnerSource(b[offSrc])
	e.Err = b[offErr]
	e.BytesSent = le.Uint64(b[offSent:])
	e.BytesReceived = le.Uint64(b[offRecvd:])
	if e.Flags&OwnerKnown == 0 {
		e.Owner = Task{}
	}
	if e.Flags&PrevKnown == 0 {
		e.InPrev = 0
	}
	return nil
}

// Encode writes e in the kernel's record layout; the inverse of Decode, used
// by tests and tools that synthesise events.
func Encode(e *Event, b []byte) []byte {
	b = append(b[:0], make([]byte, Size)...)
	le := binary.LittleEndian
	le.PutUint64(b[offTS:], e.Mono)
	le.PutUint64(b[offCookie:], e.Cookie)
	le.PutUint64(b[offSkaddr:], e.SockAddr)
	le.PutUint64(b[offPrev:], uint64(e.InPrev))
	le.PutUint64(b[offInode:], e.Inode)
	le.PutUint32(b[offNetNS:], e.NetNS)
	le.PutUint32(b[offUID:], e.UID)
	le.PutUint32(b[offPID:], e.Owner.PID)
	le.PutUint32(b[offTID:], e.Owner.TID)
	le.PutUint32(b[offCPUPID:], e.OnCPU.PID)
	le.PutUint32(b[offCPUTID:], e.OnCPU.TID)
	copy(b[offComm:], e.Owner.Comm[:])
	copy(b[offCPUComm:], e.OnCPU.Comm[:])
	putTuple(b, e.Family, e.Local, e.Remote, offSaddr, offDaddr, offSport, offDport, offFamily)
	b[offOld] = byte(e.Old)
	b[offNew] = byte(e.New)
	b[offFlags] = byte(e.Flags)
	b[offSrc] = byte(e.Source)
	b[offErr] = e.Err
	le.PutUint64(b[offSent:], e.BytesSent)
	le.PutUint64(b[offRecvd:], e.BytesReceived)
	return b
}

// TimerSize is the length of a timer record (struct timer_event).
const TimerSize = 80

// Offsets in struct timer_event.
const (
	toffTS      = 0
	toffCookie  = 8
	toffSkaddr  = 16
	toffExpires = 24
	toffNetNS   = 32
	toffUID     = 36
	toffSaddr   = 40
	toffDaddr   = 56
	toffSport   = 72
	toffDport   = 74
	toffFamily  = 76
	toffKind    = 78
	toffState   = 79
)

// TimerLayout is Layout for struct timer_event.
func TimerLayout() map[string]uintptr {
	return map[string]uintptr{
		"TsNs": toffTS, "Cookie": toffCookie, "Skaddr": toffSkaddr, "ExpiresNs": toffExpires,
		"Netns": toffNetNS, "Uid": toffUID, "Saddr": toffSaddr, "Daddr": toffDaddr, "Sport": toffSport,
		"Dport": toffDport, "Family": toffFamily, "Kind": toffKind, "State": toffState,
	}
}

func decodeTuple(b []byte, saddr, daddr, sportOff, dportOff, famOff int) (Family, netip.AddrPort, netip.AddrPort, error) {
	le := binary.LittleEndian
	sport, dport := le.Uint16(b[sportOff:]), le.Uint16(b[dportOff:])
	switch le.Uint16(b[famOff:]) {
	case afInet:
		return IPv4, netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[saddr:saddr+4])), sport),
			netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[daddr:daddr+4])), dport), nil
	case afInet6:
		return IPv6, netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[saddr:saddr+16])), sport),
			netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[daddr:daddr+16])), dport), nil
	}
	return FamilyUnknown, netip.AddrPort{}, netip.AddrPort{}, fmt.Errorf("unknown address family %d", le.Uint16(b[famOff:]))
}

func decodeTimer(b []byte, e *Event) error {
	le := binary.LittleEndian
	*e = Event{}
	e.Mono = le.Uint64(b[toffTS:])
	e.Cookie = le.Uint64(b[toffCookie:])
	e.SockAddr = le.Uint64(b[toffSkaddr:])
	e.Expires = time.Duration(le.Uint64(b[toffExpires:]))
	e.NetNS = le.Uint32(b[toffNetNS:])
	e.UID = le.Uint32(b[toffUID:])
	var err error
	if e.Family, e.Local, e.Remote, err = decodeTuple(b, toffSaddr, toffDaddr, toffSport, toffDport, toffFamily); err != nil {
		return fmt.Errorf("timer record: %w", err)
	}
	e.Kind = Kind(b[toffKind])
	if e.Kind < TimewaitStart || e.Kind > ResetReceived {
		return fmt.Errorf("timer record: unknown kind %d", b[toffKind])
	}
	e.New = State(b[toffState])
	if !e.New.Valid() {
		return fmt.Errorf("timer record: invalid state %d", b[toffState])
	}
	return nil
}

// EncodeTimer writes a timer-kind e in the kernel's timer record layout.
func EncodeTimer(e *Event, b []byte) []byte {
	b = append(b[:0], make([]byte, TimerSize)...)
	le := binary.LittleEndian
	le.PutUint64(b[toffTS:], e.Mono)
	le.PutUint64(b[toffCookie:], e.Cookie)
	le.PutUint64(b[toffSkaddr:], e.SockAddr)
	le.PutUint64(b[toffExpires:], uint64(e.Expires))
	le.PutUint32(b[toffNetNS:], e.NetNS)
	le.PutUint32(b[toffUID:], e.UID)
	putTuple(b, e.Family, e.Local, e.Remote, toffSaddr, toffDaddr, toffSport, toffDport, toffFamily)
	b[toffKind] = byte(e.Kind)
	b[toffState] = byte(e.New)
	return b
}

func putTuple(b []byte, f Family, l, r netip.AddrPort, saddr, daddr, sportOff, dportOff, famOff int) {
	le := binary.LittleEndian
	le.PutUint16(b[sportOff:], l.Port())
	le.PutUint16(b[dportOff:], r.Port())
	if f == IPv4 {
		le.PutUint16(b[famOff:], afInet)
		la, ra := l.Addr().As4(), r.Addr().As4()
		copy(b[saddr:], la[:])
		copy(b[daddr:], ra[:])
	} else {
		le.PutUint16(b[famOff:], afInet6)
		la, ra := l.Addr().As16(), r.Addr().As16()
		copy(b[saddr:], la[:])
		copy(b[daddr:], ra[:])
	}
}
