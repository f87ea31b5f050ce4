package api

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/diag"
	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/ktime"
	"github.com/tcpscope/tcpscope/tracer/table"
)

func transition(cookie uint64, old, new event.State, lport uint16, netns uint32) *event.Event {
	return &event.Event{Kind: event.Transition, Cookie: cookie, Mono: ktime.Now(), Old: old, New: new, NetNS: netns,
		Family: event.IPv4, Local: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), lport),
		Remote: netip.MustParseAddrPort("127.0.0.1:80")}
}

func TestParamsErrors(t *testing.T) {
	a := New(Options{Table: table.New()})
	a.SetReady(1)
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	for _, q := range []string{
		"/api/v1/summary?netns=x", "/api/v1/summary?netns=", "/api/v1/summary?netns=0", "/api/v1/summary?netns=4294967296",
		"/api/v1/summary?port=80", "/api/v1/sockets?state=nope", "/api/v1/sockets?port=65536",
		"/api/v1/sockets?pid=1&pid=2", "/api/v1/events?raddr=1.2.3.4/99", "/api/v1/events?x=1",
	} {
		resp, err := http.Get(srv.URL + q)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]string
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || err != nil || body["error"] == "" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: %d %v %v, want 400 with a JSON error", q, resp.StatusCode, body, err)
		}
	}
}

func TestSummaryAndReadiness(t *testing.T) {
	tab := table.New()
	a := New(Options{Table: tab})
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	for _, p := range []string{"/readyz", "/api/v1/summary"} {
		if resp, err := http.Get(srv.URL + p); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s before seeding: %v %v, want 503", p, resp.StatusCode, err)
		}
	}
	tab.BeginSync()
	tab.EndSync(nil, 1, nil)
	tab.Apply(transition(1, event.Close, event.Listen, 80, 5))
	tab.Apply(transition(2, event.Close, event.SynSent, 1000, 5))
	tab.Apply(transition(2, event.SynSent, event.Established, 1000, 5))
	tab.Apply(transition(3, event.Close, event.Listen, 81, 6))
	a.SetReady(1)
	var sum Summary
	resp, err := http.Get(srv.URL + "/api/v1/summary?netns=5")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&sum)
	resp.Body.Close()
	want := map[string]int{"LISTEN": 1, "ESTABLISHED": 1}
	if sum.Total != 2 || len(sum.States) != 2 || sum.States["LISTEN"] != 1 || sum.States["ESTABLISHED"] != 1 || len(sum.NetNS) != 1 || sum.NetNS[5].Total != 2 {
		t.Errorf("summary?netns=5 = %+v, want %v in netns 5 only", sum, want)
	}
}

// TestStreamSlowClientDoesNotBlock: Publish returns at once whatever the
// clients do; a client whose queue overflowed, or that lost events because
// the fan-out's queue did, is told how many it lost.
func TestStreamSlowClientDoesNotBlock(t *testing.T) {
	for _, tc := range []struct {
		name        string
		fanOutQueue int
		// otherNS adds an event of another namespace after each, which
		// the client must not get. Events the fan-out drops are counted
		// for every client before its query is known: only with all of
		// them matching is the count exact.
		otherNS bool
	}{
		{name: "client queue overflows", fanOutQueue: 1 << 18, otherNS: true},
		{name: "fan-out queue overflows", fanOutQueue: 8},
	} {
		t.Run(tc.name, func(t *testing.T) { testSlowClient(t, tc.fanOutQueue, tc.otherNS) })
	}
}

func testSlowClient(t *testing.T, fanOutQueue int, otherNS bool) {
	a := New(Options{Table: table.New(), StreamQueue: 4, FanOutQueue: fanOutQueue})
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	hc := &http.Client{Timeout: 30 * time.Second} // bounds the test if the stream stalls
	resp, err := hc.Get(srv.URL + "/api/v1/events?netns=9")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	for a.Clients() != 1 {
		time.Sleep(time.Millisecond)
	}
	// The client reads nothing yet: far more events than its queue holds,
	// and some of another namespace, which it must not get.
	const n = 100000
	var batch []event.Event
	for i := range n {
		batch = append(batch, *transition(uint64(i), event.SynSent, event.Established, uint16(10000+i%1000), 9))
		if otherNS {
			batch = append(batch, *transition(uint64(i), event.SynSent, event.Established, 1, 8))
		}
		if len(batch) >= 1+i%700 { // batches of many sizes
			a.Publish(batch)
			batch = batch[:0]
		}
	}
	a.Publish(batch)
	if a.Dropped() == 0 {
		t.Fatalf("%d events into a queue of 4 with nobody reading: nothing dropped", n)
	}
	// A final, recognisable event after the flood, once the handler has
	// taken what it queued (else this one could be dropped too). The
	// handler takes it only as fast as the client below reads: wait
	// alongside, without holding the API's lock (the handler needs it to
	// end), and bounded.
	a.mu.RLock()
	var clients []*client
	for c := range a.clients {
		clients = append(clients, c)
	}
	a.mu.RUnlock()
	go func() {
		deadline := time.Now().Add(20 * time.Second)
		for a.fan.queued() > 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		for _, c := range clients {
			for c.queued() > 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
		a.Publish([]event.Event{*transition(1, event.Established, event.FinWait1, 4242, 9)})
	}()
	sc := bufio.NewScanner(resp.Body)
	var dropped, events int
	for sc.Scan() {
		line := sc.Text()
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		if d, ok := m["dropped"]; ok {
			dropped += int(d.(float64))
			continue
		}
		events++
		if m["netns"] != float64(9) {
			t.Fatalf("event of another namespace: %s", line)
		}
		if m["lport"] == float64(4242) {
			break
		}
	}
	if events+dropped != n+1 {
		t.Errorf("received %d events and %d reported dropped, want %d in all", events, dropped, n+1)
	}
	if !strings.Contains(resp.Header.Get("Content-Type"), "ndjson") {
		t.Errorf("content type %q", resp.Header.Get("Content-Type"))
	}
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for a.Clients() != 0 && time.Now().Before(deadline) {
		a.Publish([]event.Event{*transition(1, event.SynSent, event.Established, 1, 9)}) // a write notices the hang-up
		time.Sleep(10 * time.Millisecond)
	}
	if a.Clients() != 0 {
		t.Errorf("client still registered after hanging up")
	}
}

// TestDiagRoutes: /api/v1/closewait and /api/v1/timewait answer with diag's
// reports of the table (no walker: the table's owners), and refuse what the
// CLI refuses.
func TestDiagRoutes(t *testing.T) {
	tab := table.New()
	tw := diag.NewTimeWaitTracker(time.Minute)
	tab.AddOnChange(tw.OnChange)
	a := New(Options{Table: tab, TimeWait: tw, TimeWaitKeep: time.Minute, PortRange: func() ([2]uint16, error) { return [2]uint16{32768, 60999}, nil }})
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	tab.BeginSync()
	tab.EndSync(nil, 1, nil)
	a.SetReady(1)
	owned := func(e *event.Event, pid uint32, comm string) *event.Event {
		e.Owner.PID, e.Flags, e.Inode = pid, e.Flags|event.OwnerKnown, e.Cookie+100
		copy(e.Owner.Comm[:], comm)
		return e
	}
	tab.Apply(owned(transition(1, event.Close, event.Listen, 80, 5), 10, "srv"))
	for c := uint64(2); c < 5; c++ {
		tab.Apply(owned(transition(c, event.SynRecv, event.Established, 80, 5), 10, "srv"))
		tab.Apply(owned(transition(c, event.Established, event.CloseWait, 80, 5), 10, "srv"))
	}
	for c := uint64(10); c < 14; c++ { // client-first closes to :80 from ephemeral ports
		e := transition(c, event.SynSent, event.Established, uint16(40000+c), 5)
		tab.Apply(owned(e, 20, "cli"))
		e = transition(c, event.FinWait2, event.TimeWait, uint16(40000+c), 5)
		tab.Apply(owned(e, 20, "cli"))
	}

	var cw diag.CloseWaitReport
	resp, err := http.Get(srv.URL + "/api/v1/closewait?netns=5&threshold=2")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&cw)
	resp.Body.Close()
	if cw.Total != 3 || len(cw.Processes) != 1 || cw.Processes[0].PID != 10 || cw.Processes[0].Count != 3 || cw.HoldersWalked ||
		resp.Header.Get(OverThresholdHeader) != "1" {
		t.Errorf("closewait: %+v, over %q", cw, resp.Header.Get(OverThresholdHeader))
	}
	var tws diag.TimeWaitReport
	resp, err = http.Get(srv.URL + "/api/v1/timewait?netns=5&interval=10s")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&tws)
	resp.Body.Close()
	if tws.Current != 4 || tws.Entered != 4 || tws.ClientFirst != 4 || len(tws.Closers) != 1 || tws.Closers[0].PID != 20 || tws.WindowNs != int64(10*time.Second) {
		t.Errorf("timewait: %+v", tws)
	}
	for _, q := range []string{"/api/v1/timewait?interval=61s", "/api/v1/closewait?min_age=1", "/api/v1/sockets?container=abc"} {
		resp, err := http.Get(srv.URL + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400", q, resp.StatusCode)
		}
	}
}

// TestClientQueueGaps: a client's queue keeps what fits of each batch, in
// order, and marks each loss at the first event queued after it.
func TestClientQueueGaps(t *testing.T) {
	ev := func(port uint16, netns uint32) event.Event {
		return *transition(uint64(port), event.SynSent, event.Established, port, netns)
	}
	a := New(Options{Table: table.New()})
	spec, err := params(map[string][]string{"netns": {"9"}}, "netns")
	if err != nil {
		t.Fatal(err)
	}
	c := &client{spec: spec, limit: 3, wake: make(chan struct{}, 1)}
	type want struct {
		ports []uint16
		gaps  []gap
	}
	for i, step := range []struct {
		batch []event.Event
		lost  uint64
		take  bool
		want  want
	}{
		{[]event.Event{ev(1, 9), ev(2, 8), ev(3, 9)}, 0, true, want{[]uint16{1, 3}, nil}},
		{[]event.Event{ev(4, 9), ev(5, 9), ev(6, 9), ev(7, 9), ev(8, 8)}, 1, false, want{}}, // 7 lost
		{[]event.Event{ev(9, 9)}, 1, true, want{[]uint16{4, 5, 6}, nil}},                    // 9 lost
		{[]event.Event{ev(10, 8)}, 0, true, want{}},
		{[]event.Event{ev(11, 9), ev(12, 9)}, 0, true, want{[]uint16{11, 12}, []gap{{0, 2}}}},
	} {
		if lost := c.offer(step.batch, a.matches); lost != step.lost {
			t.Errorf("step %d: lost %d, want %d", i, lost, step.lost)
		}
		if !step.take {
			continue
		}
		q, gaps := c.take()
		var ports []uint16
		for _, e := range q {
			ports = append(ports, e.Local.Port())
		}
		if !slices.Equal(ports, step.want.ports) || !slices.Equal(gaps, step.want.gaps) {
			t.Errorf("step %d: queue %v gaps %v, want %v %v", i, ports, gaps, step.want.ports, step.want.gaps)
		}
		c.done(q)
	}
}

// queued returns how many events wait to be written to the client.
func (c *client) queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// queued is how many events wait for the fan-out goroutine or are being
// offered by it.
func (f *fanOut) queued() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queue) + f.offering
}
