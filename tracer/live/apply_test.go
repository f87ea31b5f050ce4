package live

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/loader"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// scriptSource is a Source whose reader passes the batches the test sends,
// one Drained each, and reports when each Drained has returned.
type scriptSource struct {
	batches chan []event.Event
	drained chan struct{}
}

func (s *scriptSource) Run(ctx context.Context, sink loader.Sink) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case b := <-s.batches:
			for i := range b {
				sink.Event(&b[i])
			}
			sink.Drained()
			s.drained <- struct{}{}
		}
	}
}

func (s *scriptSource) AllSockets(dst []event.Socket) ([]event.Socket, map[uint32]bool, error) {
	return dst, map[uint32]bool{1: true}, nil
}

func (s *scriptSource) Barrier(context.Context) error { return nil }

func transition(cookie, mono uint64, old, new event.State) event.Event {
	return event.Event{Kind: event.Transition, Cookie: cookie, Mono: mono, Old: old, New: new, NetNS: 1,
		Family: event.IPv4, Local: netip.MustParseAddrPort("127.0.0.1:40000"), Remote: netip.MustParseAddrPort("127.0.0.1:80")}
}

// The reader applies a batch itself when nothing is ahead of it and the
// table is free; while the table is held (an API answer) it hands batches
// over without waiting, and they are applied in order once it is free,
// before any later batch.
func TestReaderAppliesOrHandsOver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src := &scriptSource{batches: make(chan []event.Event), drained: make(chan struct{})}
	tab := table.New()
	var mu sync.Mutex
	var seen []event.State
	l, err := Start(ctx, src, tab, Options{Events: func(evs []event.Event) {
		mu.Lock()
		for _, e := range evs {
			seen = append(seen, e.New)
		}
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	send := func(evs ...event.Event) {
		t.Helper()
		select {
		case src.batches <- evs:
		case <-ctx.Done():
			t.Fatal("reader did not take the batch")
		}
		select {
		case <-src.drained:
		case <-time.After(5 * time.Second):
			t.Fatal("Drained blocked")
		}
	}
	state := func() event.State {
		e, ok := tab.Lookup(7)
		if !ok {
			return 0
		}
		return e.State
	}

	send(transition(7, 100, event.Close, event.SynSent))
	l.waitApplied()
	if got := state(); got != event.SynSent {
		t.Fatalf("after batch 1: %v, want SYN_SENT", got)
	}

	// Hold the table's read lock, as a long API answer does.
	held, release := make(chan struct{}), make(chan struct{})
	go tab.Each(0, func(*table.Entry) bool {
		close(held)
		<-release
		return false
	})
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the table's read lock was not taken (no entry to walk?)")
	}
	send(transition(7, 200, event.SynSent, event.Established))
	send(transition(7, 300, event.Established, event.FinWait1))
	close(release)
	send(transition(7, 400, event.FinWait1, event.FinWait2))
	l.waitApplied()
	if got := state(); got != event.FinWait2 {
		t.Errorf("after batch 4: %v, want FIN_WAIT2", got)
	}
	if st := tab.Stats(); st.Mismatches != 0 || st.Applied != 4 {
		t.Errorf("table stats %+v: want 4 applied, no mismatch (batches out of order?)", st)
	}
	mu.Lock()
	want := []event.State{event.SynSent, event.Established, event.FinWait1, event.FinWait2}
	if len(seen) != len(want) {
		t.Errorf("Options.Events saw %v, want %v", seen, want)
	} else {
		for i := range want {
			if seen[i] != want[i] {
				t.Errorf("Options.Events saw %v, want %v", seen, want)
				break
			}
		}
	}
	mu.Unlock()
	cancel()
	if err := l.Wait(); err != nil {
		t.Fatal(err)
	}
}

// A loss after a transient one (a skipped run seen before its recovery)
// still asks for a resync: the reference is the previous call.
func TestLostAfterTransient(t *testing.T) {
	l := &Live{resync: make(chan string, 1)}
	s := sink{l}
	for i, step := range []struct {
		st     loader.Stats
		resync bool
	}{
		{loader.Stats{MainMisses: 2}, true},
		{loader.Stats{MainMisses: 2, Recovered: 2}, false},
		{loader.Stats{MainMisses: 4, Recovered: 2}, true},
	} {
		s.Lost(step.st)
		var got bool
		select {
		case <-l.resync:
			got = true
		default:
		}
		if got != step.resync {
			t.Errorf("step %d: resync requested %v, want %v", i, got, step.resync)
		}
	}
}
