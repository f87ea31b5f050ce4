package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/loader"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// gateWalker is a Walker whose walks wait for release and count themselves.
type gateWalker struct {
	walks   atomic.Int32
	started chan struct{} // one send per walk
	release chan struct{} // closed: walks return
}

func (g *gateWalker) AllSockets(dst []event.Socket) ([]event.Socket, map[uint32]bool, error) {
	g.walks.Add(1)
	g.started <- struct{}{}
	<-g.release
	return append(dst, event.Socket{Family: event.IPv4, State: event.Listen, NetNS: 7,
		Local: netip.MustParseAddrPort("127.0.0.1:80")}), map[uint32]bool{7: true}, nil
}
func (g *gateWalker) Sockets(dst []event.Socket) ([]event.Socket, error) {
	s, _, err := g.AllSockets(dst)
	return s, err
}
func (g *gateWalker) SocketsIn(string, []event.Socket) ([]event.Socket, error) { return nil, nil }
func (g *gateWalker) Holders(event.StateMask) ([]loader.Holder, error)         { return nil, nil }
func (g *gateWalker) Barrier(context.Context) error                            { return nil }

// waitWaiting waits (bounded) until n heavy requests wait.
func waitWaiting(t *testing.T, a *API, n int64) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); a.waiting.Load() != n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests waiting, want %d", a.waiting.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHeavyShared: requests for the same sockets answer that arrive while
// one is being built wait for the next, which all of them share; the walks
// run one at a time.
func TestHeavyShared(t *testing.T) {
	g := &gateWalker{started: make(chan struct{}, 16), release: make(chan struct{})}
	a := New(Options{Table: table.New(), Walker: g})
	a.SetReady(1)
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	hc := &http.Client{Timeout: 30 * time.Second}
	get := func(path string) int {
		resp, err := hc.Get(srv.URL + path)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var wg sync.WaitGroup
	codes := make(chan int, 16)
	wg.Go(func() { codes <- get("/api/v1/sockets") })
	<-g.started // the first answer is being built: later requests cannot share it
	const later = 8
	for range later {
		wg.Go(func() { codes <- get("/api/v1/sockets") })
	}
	waitWaiting(t, a, 1+later)
	close(g.release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Errorf("HTTP %d, want 200", c)
		}
	}
	if n := g.walks.Load(); n != 2 {
		t.Errorf("%d walks for 1 request and %d that arrived during its walk, want 2", n, later)
	}
}

// TestHeavyTooManyWaiting: beyond MaxWaiting, 503 with Retry-After.
func TestHeavyTooManyWaiting(t *testing.T) {
	g := &gateWalker{started: make(chan struct{}, 16), release: make(chan struct{})}
	a := New(Options{Table: table.New(), Walker: g, MaxWaiting: 1})
	a.SetReady(1)
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	hc := &http.Client{Timeout: 30 * time.Second}
	done := make(chan int, 1)
	go func() {
		resp, err := hc.Get(srv.URL + "/api/v1/sockets")
		if err != nil {
			t.Error(err)
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	<-g.started
	resp, err := hc.Get(srv.URL + "/api/v1/sockets?state=listen")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || a.Rejected() != 1 {
		t.Errorf("second request while one waits (MaxWaiting 1): HTTP %d, Retry-After %q, rejected %d; want 503, set, 1",
			resp.StatusCode, resp.Header.Get("Retry-After"), a.Rejected())
	}
	close(g.release)
	if c := <-done; c != http.StatusOK {
		t.Errorf("first request: HTTP %d, want 200", c)
	}
}
