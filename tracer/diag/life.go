package diag

import (
	"net/netip"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// End says how a connection ended.
type End string

const (
	EndNormal        End = "normal"         // FIN exchange (or the handover to TIME_WAIT)
	EndResetSent     End = "reset-sent"     // this side aborted: SO_LINGER 0, close() with unread data, ...
	EndResetReceived End = "reset-received" // the peer aborted
	EndTimeout       End = "timeout"        // retransmits or keepalives gave up (ETIMEDOUT)
	EndRefused       End = "refused"        // connect() got a reset (ECONNREFUSED)
	EndFailed        End = "failed"         // another error, or a handshake that never completed
)

// Linux errno values the kernel leaves in sk_err.
const (
	errEPIPE        = 32
	errECONNRESET   = 104
	errETIMEDOUT    = 110
	errECONNREFUSED = 111
)

// Conn is one finished connection.
type Conn struct {
	// EndMono is the kernel CLOCK_MONOTONIC time of its transition to CLOSE.
	EndMono uint64
	Key     uint64
	Owner   event.Task
	// OwnerKnown: Owner is the process that owned the socket at its end
	// (the acceptor for accepted connections).
	OwnerKnown bool
	Family     event.Family
	Local      netip.AddrPort
	Remote     netip.AddrPort
	NetNS      uint32
	// Duration from the connection's first state (SYN_SENT, SYN_RECV) to
	// CLOSE; with DurationKnown false the connection predates tracing and
	// Duration is the time since tcpscope first saw it (a lower bound), or 0.
	Duration      time.Duration
	DurationKnown bool
	// BytesSent and BytesReceived are the data bytes the connection sent
	// (each once; after an abort some may not have been acknowledged) and
	// received, read from the socket at its transition to CLOSE.
	BytesSent, BytesReceived uint64
	End                      End
	// LastState is the state the connection left for CLOSE.
	LastState event.State
}

// LifeOptions tune a Life tracker.
type LifeOptions struct {
	// Grace is how long a connection closed without a known reason waits
	// for a ResetSent record, which the kernel emits just after the
	// transition to CLOSE (default 20ms).
	Grace time.Duration
	// Match selects which finished connections are reported (nil: all); it
	// sees the transition to CLOSE, which carries the owner and tuple.
	Match func(e *event.Event) bool
}

// Life turns the event stream into one Conn per finished connection. Feed
// it every event (Observe) and call Flush when the ring buffer is drained.
// It is not safe for concurrent use.
type Life struct {
	opts    LifeOptions
	starts  map[uint64]uint64 // key -> CLOCK_MONOTONIC of the first state
	resets  map[uint64]event.Kind
	pending []Conn
}

// NewLife returns a tracker.
func NewLife(opts LifeOptions) *Life {
	if opts.Grace == 0 {
		opts.Grace = 20 * time.Millisecond
	}
	return &Life{opts: opts, starts: map[uint64]uint64{}, resets: map[uint64]event.Kind{}}
}

// Observe feeds one event; emit is called for connections whose end is
// settled, in the order they ended.
func (l *Life) Observe(e *event.Event, emit func(*Conn)) {
	key := e.Key()
	switch e.Kind {
	case event.ResetSent, event.ResetReceived:
		// A reset sent right after CLOSE (abortive close) settles a pending
		// connection; one before CLOSE is remembered for it.
		for i := range l.pending {
			if c := &l.pending[i]; c.Key == key && c.End == EndNormal {
				c.End = resetEnd(e.Kind)
				return
			}
		}
		if _, ok := l.resets[key]; !ok {
			l.resets[key] = e.Kind
		}
		return
	case event.Transition:
	default:
		return
	}
	switch {
	case e.Old == event.Close && e.New == event.SynSent, e.Old == event.Listen && e.New == event.SynRecv:
		l.starts[key] = e.Mono
		delete(l.resets, key)
		return
	case e.New != event.Close || e.Old == event.Listen || e.Old == event.Close:
		return
	}
	start, known := l.starts[key]
	delete(l.starts, key)
	rst, hadReset := l.resets[key]
	delete(l.resets, key)
	if l.opts.Match != nil && !l.opts.Match(e) {
		return
	}
	c := Conn{EndMono: e.Mono, Key: key, Owner: e.Owner, OwnerKnown: e.Flags&event.OwnerKnown != 0,
		Family: e.Family, Local: e.Local, Remote: e.Remote, NetNS: e.NetNS,
		BytesSent: e.BytesSent, BytesReceived: e.BytesReceived, LastState: e.Old}
	if known && start <= e.Mono {
		c.Duration, c.DurationKnown = time.Duration(e.Mono-start), true
	}
	switch {
	case e.Err == errECONNREFUSED:
		c.End = EndRefused
	case e.Err == errETIMEDOUT:
		c.End = EndTimeout
	case hadReset:
		c.End = resetEnd(rst)
	case e.Err == errECONNRESET || e.Err == errEPIPE:
		c.End = EndResetReceived
	case e.Err != 0, e.Old == event.SynSent, e.Old == event.SynRecv:
		c.End = EndFailed
	default:
		c.End = EndNormal
	}
	if c.End != EndNormal && len(l.pending) == 0 {
		emit(&c)
		return
	}
	l.pending = append(l.pending, c)
	l.flush(e.Mono, emit, false)
}

// Flush emits the connections whose grace has passed at now (the kernel's
// CLOCK_MONOTONIC); with all, every pending one (at exit).
func (l *Life) Flush(now uint64, all bool, emit func(*Conn)) { l.flush(now, emit, all) }

func (l *Life) flush(now uint64, emit func(*Conn), all bool) {
	n := 0
	for n < len(l.pending) {
		c := &l.pending[n]
		if !all && c.End == EndNormal && now < c.EndMono+uint64(l.opts.Grace) {
			break
		}
		emit(c)
		n++
	}
	if n > 0 {
		l.pending = append(l.pending[:0], l.pending[n:]...)
	}
}

// Pending is the number of finished connections waiting for their grace
// to end: call Flush again (after Grace) even if no event comes.
func (l *Life) Pending() int { return len(l.pending) }

// Open is the number of connections whose start the tracker holds.
func (l *Life) Open() int { return len(l.starts) }

func resetEnd(k event.Kind) End {
	if k == event.ResetSent {
		return EndResetSent
	}
	return EndResetReceived
}
