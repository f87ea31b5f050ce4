package diag

import (
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
)

func TestLifeEnds(t *testing.T) {
	cli := sockSpec{cookie: 7, local: "10.0.0.1:40000", remote: "10.0.0.2:80"}
	curl := task(200, "curl")
	tr := func(mono uint64, old, new event.State, err uint8) event.Event {
		e := owned(cli.ev(event.Transition, mono, old, new), curl, event.OwnerSyscall, 9)
		e.Err, e.BytesSent, e.BytesReceived = err, 100, 2000
		return e
	}
	rst := func(mono uint64, k event.Kind) event.Event { return cli.ev(k, mono, 0, event.Established) }
	open := []event.Event{tr(1*ms, event.Close, event.SynSent, 0), tr(2*ms, event.SynSent, event.Established, 0)}
	for _, tc := range []struct {
		name     string
		evs      []event.Event
		end      End
		duration time.Duration // 0: unknown
	}{
		{"normal, TIME_WAIT handover", append(open[:2:2], tr(5*ms, event.Established, event.FinWait1, 0), tr(6*ms, event.FinWait1, event.FinWait2, 0), tr(7*ms, event.FinWait2, event.Close, 0)), EndNormal, 6 * time.Millisecond},
		{"passive close", append(open[:2:2], tr(5*ms, event.Established, event.CloseWait, 0), tr(6*ms, event.CloseWait, event.LastAck, 0), tr(8*ms, event.LastAck, event.Close, 0)), EndNormal, 7 * time.Millisecond},
		{"abortive close: reset after CLOSE", append(open[:2:2], tr(5*ms, event.Established, event.Close, 0), rst(5*ms+1, event.ResetSent)), EndResetSent, 4 * time.Millisecond},
		{"reset received", append(open[:2:2], rst(5*ms, event.ResetReceived), tr(5*ms+1, event.Established, event.Close, errECONNRESET)), EndResetReceived, 4*time.Millisecond + 1},
		{"reset received in CLOSE_WAIT", append(open[:2:2], tr(3*ms, event.Established, event.CloseWait, 0), tr(5*ms, event.CloseWait, event.Close, errEPIPE)), EndResetReceived, 4 * time.Millisecond},
		{"refused", []event.Event{open[0], tr(3*ms, event.SynSent, event.Close, errECONNREFUSED)}, EndRefused, 2 * time.Millisecond},
		{"timeout", append(open[:2:2], tr(9*ms, event.Established, event.Close, errETIMEDOUT)), EndTimeout, 8 * time.Millisecond},
		{"predates tracing", []event.Event{tr(9*ms, event.LastAck, event.Close, 0)}, EndNormal, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLife(LifeOptions{})
			var got []Conn
			emit := func(c *Conn) { got = append(got, *c) }
			for i := range tc.evs {
				l.Observe(&tc.evs[i], emit)
			}
			l.Flush(1000*ms, false, emit)
			if len(got) != 1 {
				t.Fatalf("%d connections, want 1", len(got))
			}
			c := got[0]
			if c.End != tc.end || c.DurationKnown != (tc.duration != 0) || c.Duration != tc.duration {
				t.Errorf("end %s duration %v (known %v), want %s %v", c.End, c.Duration, c.DurationKnown, tc.end, tc.duration)
			}
			if c.Owner.PID != 200 || c.BytesSent != 100 || c.BytesReceived != 2000 || c.Local != cli.ev(0, 0, 0, 0).Local {
				t.Errorf("conn %+v", c)
			}
			if l.Open() != 0 {
				t.Errorf("%d starts left", l.Open())
			}
		})
	}
}

func TestLifeGraceKeepsOrder(t *testing.T) {
	l := NewLife(LifeOptions{Grace: 10 * time.Millisecond})
	var got []uint64
	emit := func(c *Conn) { got = append(got, c.Key) }
	a := sockSpec{cookie: 1, local: "10.0.0.1:40000", remote: "10.0.0.2:80"}
	b := sockSpec{cookie: 2, local: "10.0.0.1:40001", remote: "10.0.0.2:80"}
	for _, e := range []event.Event{
		a.ev(event.Transition, 1*ms, event.Close, event.SynSent),
		b.ev(event.Transition, 1*ms, event.Close, event.SynSent),
		a.ev(event.Transition, 2*ms, event.Established, event.Close),
		// b ends by a reset received: settled at once, but after a.
		func() event.Event {
			e := b.ev(event.Transition, 3*ms, event.Established, event.Close)
			e.Err = errECONNRESET
			return e
		}(),
	} {
		l.Observe(&e, emit)
	}
	if len(got) != 0 {
		t.Fatalf("emitted %v before a's grace ended", got)
	}
	// Once a's grace ends, a goes out, then b, already settled.
	l.Flush(12*ms, false, emit)
	if len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("after a's grace: %v, want [1 2]", got)
	}
}
