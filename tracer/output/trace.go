// Package output formats tcpscope's records for people (aligned text) and
// for programs (one JSON object per line). Formatting appends into a reused
// buffer: no allocation per event.
package output

import (
	"bufio"
	"io"
	"net/netip"
	"strconv"
	"time"

	"github.com/tcpscope/tcpscope/tracer/cgroup"
	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/ktime"
	"github.com/tcpscope/tcpscope/tracer/termsafe"
)

// Format selects text or JSON.
type Format int

const (
	Text Format = iota
	JSON
)

// TraceOptions tune the transition log.
type TraceOptions struct {
	Format Format
	// Wide adds the thread id, the task that was on the CPU, the network
	// namespace and the socket cookie to text output.
	Wide bool
	// NoHeader drops the text header line.
	NoHeader bool
	// Cgroup, when set, adds the owner's "cgroup" and "container" to JSON
	// events (null when not known); the agent's event stream sets it.
	Cgroup func(pid uint32) cgroup.Info
}

// TraceWriter prints the transition log (`tcpscope trace`).
type TraceWriter struct {
	w      *bufio.Writer
	clock  *ktime.Clock
	opts   TraceOptions
	buf    []byte
	header bool
	stamp  stampCache
}

// stampCache keeps the formatted parts of a timestamp that change once a
// second (date, time, zone), so each event formats only its fraction.
type stampCache struct {
	sec       int64
	text, rfc []byte // "15:04:05." and "2006-01-02T15:04:05."
	zone      []byte // "Z07:00"
	valid     bool
}

func (c *stampCache) update(t time.Time) {
	if c.valid && t.Unix() == c.sec {
		return
	}
	c.valid, c.sec = true, t.Unix()
	c.text = t.AppendFormat(c.text[:0], "15:04:05.")
	c.rfc = t.AppendFormat(c.rfc[:0], "2006-01-02T15:04:05.")
	c.zone = t.AppendFormat(c.zone[:0], "Z07:00")
}

// appendFraction appends the first digits of t's nanoseconds, zero-padded.
func appendFraction(b []byte, t time.Time, digits int) []byte {
	ns := t.Nanosecond()
	for i := digits; i < 9; i++ {
		ns /= 10
	}
	var d [9]byte
	for i := digits - 1; i >= 0; i-- {
		d[i] = byte('0' + ns%10)
		ns /= 10
	}
	return append(b, d[:digits]...)
}

// NewTraceWriter writes to w, converting timestamps with clock.
func NewTraceWriter(w io.Writer, clock *ktime.Clock, opts TraceOptions) *TraceWriter {
	return &TraceWriter{
		w:      bufio.NewWriterSize(w, 64<<10),
		clock:  clock,
		opts:   opts,
		buf:    make([]byte, 0, 512),
		header: opts.Format == Text && !opts.NoHeader,
	}
}

// Text column widths. Addresses wider than the column (IPv6) push the rest
// of the line right rather than being cut: a log must not lose digits.
const (
	wTime  = 15
	wPID   = 7
	wComm  = 16
	wAddr  = 22
	wState = 11
	wMS    = 10
	wOnCPU = 24
	wNetNS = 11
)

// headerLine returns the text header (without newline).
func (t *TraceWriter) headerLine() []byte {
	b := t.buf[:0]
	b = appendCol(b, "TIME", wTime)
	b = appendCol(b, "PID", wPID)
	b = appendCol(b, "COMM", wComm)
	b = appendCol(b, "LADDR:LPORT", wAddr)
	b = appendCol(b, "RADDR:RPORT", wAddr)
	b = appendCol(b, "OLD", wState)
	b = append(b, "-> "...)
	b = appendCol(b, "NEW", wState)
	if !t.opts.Wide {
		return append(b, "MS"...)
	}
	b = appendCol(b, "MS", wMS)
	b = appendCol(b, "TID", wPID+1)
	b = appendCol(b, "ON-CPU", wOnCPU)
	b = appendCol(b, "NETNS", wNetNS)
	return append(b, "COOKIE"...)
}

// Write formats one event. Output is buffered until Flush.
func (t *TraceWriter) Write(e *event.Event) error {
	if t.header {
		t.header = false
		t.buf = append(t.headerLine(), '\n')
		if _, err := t.w.Write(t.buf); err != nil {
			return err
		}
	}
	if t.opts.Format == JSON {
		t.buf = t.appendJSON(t.buf[:0], e)
	} else {
		t.buf = t.appendText(t.buf[:0], e)
	}
	t.buf = append(t.buf, '\n')
	_, err := t.w.Write(t.buf)
	return err
}

// Flush writes buffered lines out.
func (t *TraceWriter) Flush() error { return t.w.Flush() }

func (t *TraceWriter) appendText(b []byte, e *event.Event) []byte {
	start := len(b)
	wall := t.clock.Wall(e.Mono)
	t.stamp.update(wall)
	b = appendFraction(append(b, t.stamp.text...), wall, 6)
	b = pad(b, start+wTime+1)

	start = len(b)
	b = appendIDOrDash(b, e.Owner.PID, e.Flags&event.OwnerKnown != 0)
	b = pad(b, start+wPID+1)

	start = len(b)
	b = appendComm(b, &e.Owner, e.Flags&event.OwnerKnown != 0)
	b = pad(b, start+wComm+1)

	start = len(b)
	b = appendAddrPort(b, e.Local)
	b = pad(b, start+wAddr+1)
	start = len(b)
	b = appendAddrPort(b, e.Remote)
	b = pad(b, start+wAddr+1)

	start = len(b)
	b = append(b, e.Old.String()...)
	b = pad(b, start+wState+1)
	b = append(b, "-> "...)
	start = len(b)
	b = append(b, e.New.String()...)
	b = pad(b, start+wState+1)

	start = len(b)
	if e.Flags&event.PrevKnown != 0 {
		b = appendMillis3(b, e.InPrev)
	} else {
		b = append(b, '-')
	}

	if t.opts.Wide {
		b = pad(b, start+wMS+1)
		start = len(b)
		b = appendIDOrDash(b, e.Owner.TID, e.Flags&event.OwnerKnown != 0)
		b = pad(b, start+wPID+2)
		start = len(b)
		b = strconv.AppendUint(b, uint64(e.OnCPU.PID), 10)
		b = append(b, '/')
		b = appendComm(b, &e.OnCPU, true)
		b = pad(b, start+wOnCPU+1)
		start = len(b)
		b = strconv.AppendUint(b, uint64(e.NetNS), 10)
		b = pad(b, start+wNetNS+1)
		b = strconv.AppendUint(b, e.Cookie, 10)
	}
	return b
}

func (t *TraceWriter) appendJSON(b []byte, e *event.Event) []byte {
	known := e.Flags&event.OwnerKnown != 0
	b = append(b, `{"time":"`...)
	wall := t.clock.Wall(e.Mono)
	t.stamp.update(wall)
	b = appendFraction(append(b, t.stamp.rfc...), wall, 9)
	b = append(b, t.stamp.zone...)
	b = append(b, `","pid":`...)
	b = appendUintOrNull(b, uint64(e.Owner.PID), known)
	b = append(b, `,"tid":`...)
	b = appendUintOrNull(b, uint64(e.Owner.TID), known)
	b = append(b, `,"comm":`...)
	if known {
		b = append(b, '"')
		b = appendJSONSafe(b, e.Owner.CommBytes())
		b = append(b, '"')
	} else {
		b = append(b, "null"...)
	}
	if t.opts.Cgroup != nil {
		var cg cgroup.Info
		if known {
			cg = t.opts.Cgroup(e.Owner.PID)
		}
		b = append(b, `,"cgroup":`...)
		b = appendStringOrNull(b, cg.Path)
		b = append(b, `,"container":`...)
		b = appendStringOrNull(b, cg.Container)
	}
	b = append(b, `,"family":"`...)
	b = append(b, e.Family.String()...)
	b = append(b, `","laddr":"`...)
	b = e.Local.Addr().AppendTo(b)
	b = append(b, `","lport":`...)
	b = strconv.AppendUint(b, uint64(e.Local.Port()), 10)
	b = append(b, `,"raddr":"`...)
	b = e.Remote.Addr().AppendTo(b)
	b = append(b, `","rport":`...)
	b = strconv.AppendUint(b, uint64(e.Remote.Port()), 10)
	b = append(b, `,"old":"`...)
	b = append(b, e.Old.String()...)
	b = append(b, `","new":"`...)
	b = append(b, e.New.String()...)
	b = append(b, `","ms":`...)
	if e.Flags&event.PrevKnown != 0 {
		b = appendMillisShortest(b, e.InPrev)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"netns":`...)
	b = strconv.AppendUint(b, uint64(e.NetNS), 10)
	b = append(b, `,"cookie":`...)
	b = strconv.AppendUint(b, e.Cookie, 10)
	return append(b, '}')
}

// appendStringOrNull writes s as a JSON string, made terminal-safe, or
// null when it is empty.
func appendStringOrNull(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = appendJSONSafe(b, []byte(s))
	return append(b, '"')
}

// appendIDOrDash writes a pid or tid, or "-" when unknown, as netstat does.
func appendIDOrDash(b []byte, id uint32, known bool) []byte {
	if !known {
		return append(b, '-')
	}
	return strconv.AppendUint(b, uint64(id), 10)
}

func appendUintOrNull(b []byte, v uint64, ok bool) []byte {
	if !ok {
		return append(b, "null"...)
	}
	return strconv.AppendUint(b, v, 10)
}

// appendComm writes a comm made safe for a terminal, or "-" when unknown.
func appendComm(b []byte, task *event.Task, known bool) []byte {
	c := task.CommBytes()
	if !known || len(c) == 0 {
		return append(b, '-')
	}
	return termsafe.Append(b, c)
}

// appendJSONSafe writes untrusted bytes for a JSON string: first made
// terminal-safe (so text and JSON show the same name), then the only two
// characters termsafe leaves that JSON needs escaped.
func appendJSONSafe(b, s []byte) []byte {
	start := len(b)
	b = termsafe.Append(b, s)
	// termsafe output has no control bytes; escape '"' and '\' in place.
	n := 0
	for _, c := range b[start:] {
		if c == '"' || c == '\\' {
			n++
		}
	}
	if n == 0 {
		return b
	}
	end := len(b)
	for i := 0; i < n; i++ {
		b = append(b, 0)
	}
	j := len(b) - 1
	for i := end - 1; i >= start; i-- {
		c := b[i]
		b[j] = c
		j--
		if c == '"' || c == '\\' {
			b[j] = '\\'
			j--
		}
	}
	return b
}

func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr()
	switch {
	case a.Is4():
		v4 := a.As4()
		for i, o := range v4 {
			if i > 0 {
				b = append(b, '.')
			}
			b = appendSmall(b, uint(o))
		}
	case a.Is6():
		b = append(b, '[')
		b = a.AppendTo(b)
		b = append(b, ']')
	default:
		b = a.AppendTo(b)
	}
	b = append(b, ':')
	return appendSmall(b, uint(ap.Port()))
}

// appendSmall appends a number below 100000 (an IPv4 octet or a port)
// digit by digit into b: strconv's general path, or a scratch array copied
// in, costs a memmove per number, which was a fifth of `trace`'s CPU under
// churn (ten numbers per line).
func appendSmall(b []byte, v uint) []byte {
	const z = '0'
	switch {
	case v < 10:
		return append(b, byte(z+v))
	case v < 100:
		return append(b, byte(z+v/10), byte(z+v%10))
	case v < 1000:
		return append(b, byte(z+v/100), byte(z+v/10%10), byte(z+v%10))
	case v < 10000:
		return append(b, byte(z+v/1000), byte(z+v/100%10), byte(z+v/10%10), byte(z+v%10))
	case v < 100000:
		return append(b, byte(z+v/10000), byte(z+v/1000%10), byte(z+v/100%10), byte(z+v/10%10), byte(z+v%10))
	}
	return strconv.AppendUint(b, uint64(v), 10)
}

// appendMillis3 appends d in milliseconds with three decimals, exactly as
// strconv.AppendFloat(b, float64(d)/1e6, 'f', 3, 64) does, in integer
// arithmetic. The float is within 2^-53 of the exact quotient, which is at
// least 1e-6 ms away from a rounding boundary unless the nanoseconds end in
// exactly 500; below 2^52 ns that error is smaller, so both round the same
// way. The rest (ties, huge or negative values) goes to AppendFloat.
func appendMillis3(b []byte, d time.Duration) []byte {
	ns := int64(d)
	if ns < 0 || ns >= 1<<52 || ns%1000 == 500 {
		return strconv.AppendFloat(b, float64(d)/float64(time.Millisecond), 'f', 3, 64)
	}
	us := uint64(ns / 1000)
	if ns%1000 > 500 {
		us++
	}
	b = strconv.AppendUint(b, us/1000, 10)
	frac := us % 1000
	return append(b, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
}

// appendMillisShortest appends d in milliseconds exactly as
// strconv.AppendFloat(b, float64(d)/1e6, 'f', -1, 64) does (the JSON "ms"),
// in integer arithmetic: the float's shortest decimal was a tenth of the
// agent's event stream's CPU. Below 10^15 ns the exact quotient has at most
// 15 significant digits, and no two decimals of 15 digits or fewer round to
// the same float64 (DBL_DIG), so the exact quotient, its trailing zeros cut,
// is the shortest decimal that reads back as the float. The rest goes to
// AppendFloat.
func appendMillisShortest(b []byte, d time.Duration) []byte {
	ns := int64(d)
	if ns < 0 || ns >= 1e15 {
		return strconv.AppendFloat(b, float64(d)/float64(time.Millisecond), 'f', -1, 64)
	}
	b = strconv.AppendUint(b, uint64(ns/1e6), 10)
	frac := uint64(ns % 1e6)
	if frac == 0 {
		return b
	}
	digits := 6
	for frac%10 == 0 {
		frac /= 10
		digits--
	}
	b = append(b, '.')
	n := len(b)
	b = append(b, "000000"[:digits]...)
	for i := n + digits - 1; frac > 0; i-- {
		b[i] = byte('0' + frac%10)
		frac /= 10
	}
	return b
}

// spaces pads columns; wider gaps than this are padded in steps.
const spaces = "                                "

// pad appends spaces up to column width w (counted from the start of b);
// a value at or past the column gets one separating space.
func pad(b []byte, w int) []byte {
	if len(b) >= w {
		return append(b, ' ')
	}
	for len(b) < w {
		n := min(w-len(b), len(spaces))
		b = append(b, spaces[:n]...)
	}
	return b
}

func appendCol(b []byte, s string, w int) []byte {
	start := len(b)
	b = append(b, s...)
	return pad(b, start+w+1)
}
