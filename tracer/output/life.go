package output

import (
	"bufio"
	"io"
	"strconv"
	"time"

	"github.com/tcpscope/tcpscope/tracer/diag"
	"github.com/tcpscope/tcpscope/tracer/ktime"
)

// LifeWriter prints one line per finished connection (`tcpscope life`),
// with the trace log's columns and JSON keys where they mean the same.
type LifeWriter struct {
	w      *bufio.Writer
	clock  *ktime.Clock
	opts   TraceOptions
	buf    []byte
	header bool
	stamp  stampCache
}

// NewLifeWriter writes to w, converting timestamps with clock. Wide is not
// used.
func NewLifeWriter(w io.Writer, clock *ktime.Clock, opts TraceOptions) *LifeWriter {
	return &LifeWriter{w: bufio.NewWriterSize(w, 64<<10), clock: clock, opts: opts, buf: make([]byte, 0, 512),
		header: opts.Format == Text && !opts.NoHeader}
}

const (
	wDur   = 10
	wBytes = 10
	wEnd   = 14
)

// Write formats one connection. Output is buffered until Flush.
func (l *LifeWriter) Write(c *diag.Conn) error {
	b := l.buf[:0]
	if l.header {
		l.header = false
		b = appendCol(b, "TIME", wTime)
		b = appendCol(b, "PID", wPID)
		b = appendCol(b, "COMM", wComm)
		b = appendCol(b, "LADDR:LPORT", wAddr)
		b = appendCol(b, "RADDR:RPORT", wAddr)
		b = appendCol(b, "MS", wDur)
		b = appendCol(b, "TX", wBytes)
		b = appendCol(b, "RX", wBytes)
		b = append(b, "END\n"...)
	}
	if l.opts.Format == JSON {
		b = l.appendJSON(b, c)
	} else {
		b = l.appendText(b, c)
	}
	b = append(b, '\n')
	l.buf = b
	_, err := l.w.Write(b)
	return err
}

// Flush writes buffered lines out.
func (l *LifeWriter) Flush() error { return l.w.Flush() }

func (l *LifeWriter) appendText(b []byte, c *diag.Conn) []byte {
	start := len(b)
	wall := l.clock.Wall(c.EndMono)
	l.stamp.update(wall)
	b = appendFraction(append(b, l.stamp.text...), wall, 6)
	b = pad(b, start+wTime+1)
	start = len(b)
	b = appendIDOrDash(b, c.Owner.PID, c.OwnerKnown)
	b = pad(b, start+wPID+1)
	start = len(b)
	b = appendComm(b, &c.Owner, c.OwnerKnown)
	b = pad(b, start+wComm+1)
	start = len(b)
	b = appendAddrPort(b, c.Local)
	b = pad(b, start+wAddr+1)
	start = len(b)
	b = appendAddrPort(b, c.Remote)
	b = pad(b, start+wAddr+1)
	start = len(b)
	if c.DurationKnown {
		b = strconv.AppendFloat(b, float64(c.Duration)/float64(time.Millisecond), 'f', 3, 64)
	} else {
		b = append(b, '-')
	}
	b = pad(b, start+wDur+1)
	start = len(b)
	b = strconv.AppendUint(b, c.BytesSent, 10)
	b = pad(b, start+wBytes+1)
	start = len(b)
	b = strconv.AppendUint(b, c.BytesReceived, 10)
	b = pad(b, start+wBytes+1)
	return append(b, c.End...)
}

func (l *LifeWriter) appendJSON(b []byte, c *diag.Conn) []byte {
	b = append(b, `{"time":"`...)
	wall := l.clock.Wall(c.EndMono)
	l.stamp.update(wall)
	b = appendFraction(append(b, l.stamp.rfc...), wall, 9)
	b = append(b, l.stamp.zone...)
	b = append(b, `","pid":`...)
	b = appendUintOrNull(b, uint64(c.Owner.PID), c.OwnerKnown)
	b = append(b, `,"comm":`...)
	if c.OwnerKnown {
		b = append(b, '"')
		b = appendJSONSafe(b, c.Owner.CommBytes())
		b = append(b, '"')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"family":"`...)
	b = append(b, c.Family.String()...)
	b = append(b, `","laddr":"`...)
	b = c.Local.Addr().AppendTo(b)
	b = append(b, `","lport":`...)
	b = strconv.AppendUint(b, uint64(c.Local.Port()), 10)
	b = append(b, `,"raddr":"`...)
	b = c.Remote.Addr().AppendTo(b)
	b = append(b, `","rport":`...)
	b = strconv.AppendUint(b, uint64(c.Remote.Port()), 10)
	b = append(b, `,"ms":`...)
	if c.DurationKnown {
		b = appendMillisShortest(b, c.Duration)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"tx_bytes":`...)
	b = strconv.AppendUint(b, c.BytesSent, 10)
	b = append(b, `,"rx_bytes":`...)
	b = strconv.AppendUint(b, c.BytesReceived, 10)
	b = append(b, `,"end":"`...)
	b = append(b, c.End...)
	b = append(b, `","last_state":"`...)
	b = append(b, c.LastState.String()...)
	b = append(b, `","netns":`...)
	b = strconv.AppendUint(b, uint64(c.NetNS), 10)
	b = append(b, `,"cookie":`...)
	b = strconv.AppendUint(b, c.Key, 10)
	return append(b, '}')
}
