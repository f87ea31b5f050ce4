package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/filter"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// FuzzQuery sends any query string to each route through the real handler
// and checks the answer against the query, read independently of params:
// a 400 carries a one-line JSON error; anything else means every key was
// one the route takes and every number was in range, and the summary it
// returns is valid JSON limited to the namespace asked for.
func FuzzQuery(f *testing.F) {
	for _, seed := range []string{
		"", "netns=5", "netns=0", "netns=4294967296", "state=close-wait&state=TIME_WAIT,listen",
		"port=80&pid=1", "port=65536", "pid=1&pid=2", "laddr=10.0.0.0/8&raddr=::1", "raddr=1.2.3.4/99",
		"comm=%1b[2J", "x=1", "%zz", "state=", ";", "port=+1", "port=0x50", "netns=%00",
	} {
		for route := range uint8(3) {
			f.Add(route, seed)
		}
	}
	tab := table.New()
	tab.BeginSync()
	tab.EndSync(nil, 1, nil)
	tab.Apply(transition(1, event.Close, event.Listen, 80, 5))
	tab.Apply(transition(2, event.Close, event.Listen, 81, 6))
	routes := []struct {
		path    string
		allowed []string
	}{
		{"/api/v1/summary", []string{"netns"}},
		{"/api/v1/sockets", []string{"state", "port", "pid", "netns"}},
		{"/api/v1/events", []string{"state", "port", "pid", "netns", "comm", "laddr", "raddr"}},
	}
	f.Fuzz(func(t *testing.T, route uint8, raw string) {
		rt := routes[int(route)%len(routes)]
		a := New(Options{Table: tab})
		if rt.path != "/api/v1/sockets" { // sockets would walk the kernel: keep it not ready (503)
			a.SetReady(1)
		}
		req := httptest.NewRequest(http.MethodGet, rt.path, nil)
		req.URL.RawQuery = raw
		// A stream that passed validation ends at once: its client is gone.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req = req.WithContext(ctx)
		rec := httptest.NewRecorder()
		a.Handler().ServeHTTP(rec, req)

		q, _ := url.ParseQuery(raw) // what net/http's Query() sees
		body := rec.Body.String()
		switch rec.Code {
		case http.StatusBadRequest:
			var e map[string]string
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e["error"] == "" || len(e) != 1 {
				t.Fatalf("400 body %q: want {\"error\": ...} (%v)", body, err)
			}
			if strings.Count(body, "\n") != 1 || !strings.HasSuffix(body, "\n") {
				t.Fatalf("400 body is not one line: %q", body)
			}
			return
		case http.StatusOK, http.StatusServiceUnavailable:
		default:
			t.Fatalf("%s?%s: status %d", rt.path, raw, rec.Code)
		}
		// Accepted: check the query against the route's rules.
		for k, vs := range q {
			if !slices.Contains(rt.allowed, k) {
				t.Fatalf("%s?%s: accepted unknown parameter %q", rt.path, raw, k)
			}
			if k != "state" && len(vs) != 1 {
				t.Fatalf("%s?%s: accepted %q %d times", rt.path, raw, k, len(vs))
			}
		}
		bits := map[string]int{"port": 16, "pid": 32, "netns": 32}
		for k, b := range bits {
			if vs, ok := q[k]; ok {
				if n, err := strconv.ParseUint(vs[0], 10, b); err != nil || n == 0 {
					t.Fatalf("%s?%s: accepted %s=%q", rt.path, raw, k, vs[0])
				}
			}
		}
		if _, err := filter.ParseStates(q["state"]); err != nil {
			t.Fatalf("%s?%s: accepted bad states: %v", rt.path, raw, err)
		}
		if rt.path == "/api/v1/summary" {
			var sum Summary
			if err := json.Unmarshal(rec.Body.Bytes(), &sum); err != nil {
				t.Fatalf("summary body %q: %v", body, err)
			}
			if vs, ok := q["netns"]; ok {
				ns, _ := strconv.ParseUint(vs[0], 10, 32)
				for got := range sum.NetNS {
					if uint64(got) != ns {
						t.Fatalf("summary?%s lists netns %d", raw, got)
					}
				}
			} else if len(sum.NetNS) != 2 || sum.Total != 2 {
				t.Fatalf("summary without a filter: %+v, want both namespaces", sum)
			}
		}
	})
}
