//go:build pressure

// Built only with -tags pressure (make soak): a soak runs for minutes.

package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// soakEnv sets the soak's length (e.g. 10m); without it TestSoak skips.
// `make soak` sets it (SOAK=10m, overridable).
const soakEnv = "TCPSCOPE_SOAK"

// Growth allowed between the baseline and the end. The heap is the live
// heap the last GC marked (go_gc_heap_live_bytes: no garbage, which
// heap_alloc counts and a large API answer leaves plenty of), read right
// after a GC the soak forces (/debug/pprof/heap?gc=1: an agent that
// allocates little may not collect for minutes, and the last GC's figure
// then includes whatever was in flight then), compared by its lowest sample
// in a 20 s window. The baseline is minute 3: what the
// agent holds grows for the first two minutes by design (TIME_WAIT sockets
// live 60 s, the TIME_WAIT tracker keeps 60 s of entries, the table's slabs
// reach the peak population): in the 10-minute soak of 2026-12-06 the live
// heap was 13.6 MiB at minute 1, 30.8 at minute 3 and 30.8-31.0 from there
// to minute 10. Minute 1 is logged too.
const (
	soakHeapFactor   = 1.25
	soakHeapSlack    = 4 << 20 // bytes
	soakGoroutineMax = 5       // more goroutines than at the baseline
	soakFDMax        = 5       // more open fds than at the baseline
	soakWarmup       = 3 * time.Minute
)

type soakSample struct {
	at                    time.Duration
	heap, rss             float64
	goroutines, fds, lost float64
}

// TestSoak runs `tcpscope serve` against a bounded churn plus held
// connections in a test namespace for TCPSCOPE_SOAK, with API and stream
// clients coming and going; at the end per-state counts equal ss, and heap,
// goroutines and fds have not grown since minute 3 beyond the tolerances.
func TestSoak(t *testing.T) {
	v := os.Getenv(soakEnv)
	if v == "" {
		v = "10m"
	}
	length, err := time.ParseDuration(v)
	if err != nil || length < soakWarmup+2*time.Minute {
		t.Fatalf("%s=%q: want a duration of at least 5m (minute 3 is the baseline)", soakEnv, v)
	}
	needNetstatTools(t)
	ns := newNS(t, "robust-soak")
	ino := netnsInode(t, ns)
	s := startServe(t, "", "http", true, "--listen", "127.0.0.1:0", "--debug.pprof")

	// Held: a listener, 50 established pairs, 5 CLOSE_WAIT sockets.
	hold := startProc(t, ns, "tsk-hold")
	l := hold.do("listen", "tcp4", "127.0.0.1:0")
	addr := fmt.Sprintf("127.0.0.1:%d", l[1])
	for range 50 {
		hold.do("dial", "tcp4", addr)
		hold.do("accept", l[0])
	}
	for range 5 {
		// The server end closes: the client end, held without keepalive
		// (a probe would meet no peer once the orphan expires, and the
		// RST would end it), stays in CLOSE_WAIT.
		hold.do("dial", "tcp4", addr, "nokeep")
		a := hold.do("accept", l[0])[0]
		hold.do("close", a)
	}

	const (
		cycleConns = 500 // connections per churn cycle
		cycleMS    = 1000
		pause      = time.Second
	)
	start := time.Now()
	var samples []soakSample
	sample := func() {
		forceGC(t, s.base)
		m := scrape(t, s.base, "")
		samples = append(samples, soakSample{
			at: time.Since(start), heap: m["go_gc_heap_live_bytes"], rss: m["process_resident_memory_bytes"],
			goroutines: m["go_goroutines"], fds: m["process_open_fds"], lost: m["tcpscope_lost_events_total"],
		})
	}
	cycles, totalConns := 0, 0
	for time.Since(start) < length {
		// Clients come and go: a stream for the cycle, a walk, a summary.
		st := openStream(t, fmt.Sprintf("%s/api/v1/events?netns=%d", s.base, ino))
		out := runServeChurn(t, ns, cycleConns, cycleMS)
		st.body.Close()
		<-st.done
		if cycles%5 == 0 {
			if err := getValid(http.DefaultClient, fmt.Sprintf("%s/api/v1/sockets?netns=%d", s.base, ino)); err != nil {
				t.Errorf("sockets: %v", err)
			}
		}
		s.summary(t, ino)
		cycles++
		if n, ok := churnConns(out); ok {
			totalConns += n
		}
		time.Sleep(pause)
		sample()
		if cycles%30 == 0 {
			last := samples[len(samples)-1]
			t.Logf("%v: %d cycles, %d connections; heap %.1f MiB, rss %.1f MiB, goroutines %v, fds %v, lost %v",
				last.at.Round(time.Second), cycles, totalConns, last.heap/(1<<20), last.rss/(1<<20), last.goroutines, last.fds, last.lost)
		}
	}
	window := func(from, to time.Duration) soakSample {
		w := soakSample{heap: -1, goroutines: -1, fds: -1}
		for _, x := range samples {
			if x.at < from || x.at > to {
				continue
			}
			if w.heap < 0 || x.heap < w.heap {
				w.heap = x.heap
			}
			w.rss = max(w.rss, x.rss)
			w.goroutines = max(w.goroutines, x.goroutines)
			w.fds = max(w.fds, x.fds)
			w.lost = x.lost
		}
		return w
	}
	end := samples[len(samples)-1].at
	min1 := window(50*time.Second, 70*time.Second)
	base := window(soakWarmup-10*time.Second, soakWarmup+10*time.Second)
	fin := window(end-20*time.Second, end)
	if base.heap < 0 || fin.heap < 0 {
		t.Fatalf("no samples around minute 3 or the end (%d samples)", len(samples))
	}
	t.Logf("minute 1: heap %.2f MiB (lowest in 50-70 s), rss %.1f MiB, goroutines %v, fds %v", min1.heap/(1<<20), min1.rss/(1<<20), min1.goroutines, min1.fds)
	t.Logf("minute 3: heap %.2f MiB (lowest in 170-190 s), rss %.1f MiB, goroutines %v, fds %v", base.heap/(1<<20), base.rss/(1<<20), base.goroutines, base.fds)
	t.Logf("end %v: heap %.2f MiB (lowest in the last 20 s), rss %.1f MiB, goroutines %v, fds %v; lost events %v (host-wide)",
		end.Round(time.Second), fin.heap/(1<<20), fin.rss/(1<<20), fin.goroutines, fin.fds, fin.lost)
	if limit := base.heap*soakHeapFactor + soakHeapSlack; fin.heap > limit {
		t.Errorf("heap grew: %.2f MiB at the end, %.2f MiB at minute 3 (limit %.2f MiB)", fin.heap/(1<<20), base.heap/(1<<20), limit/(1<<20))
	}
	if fin.goroutines > base.goroutines+soakGoroutineMax {
		t.Errorf("goroutines grew: %v at the end, %v at minute 3", fin.goroutines, base.goroutines)
	}
	if fin.fds > base.fds+soakFDMax {
		t.Errorf("fds grew: %v at the end, %v at minute 3", fin.fds, base.fds)
	}
	got := agreeWithSS(t, ns, "/api/v1/summary", 30*time.Second, func() map[string]int { return s.summary(t, ino) })
	t.Logf("end: %d cycles, %d connections; agent and ss agree: %v", cycles, totalConns, got)
	if got["ESTABLISHED"] != 100 || got["LISTEN"] != 1 || got["CLOSE_WAIT"] != 5 {
		t.Errorf("held sockets: want 100 ESTABLISHED, 1 LISTEN, 5 CLOSE_WAIT, got %v", got)
	}

}

// churnConns reads conns=N from a churn summary line.
func churnConns(line string) (int, bool) {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "conns="); ok {
			n, err := strconv.Atoi(v)
			return n, err == nil
		}
	}
	return 0, false
}

// forceGC has the agent collect garbage (it answers with a heap profile,
// which is not needed).
func forceGC(t testing.TB, base string) {
	t.Helper()
	resp, err := http.Get(base + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Errorf("force a GC: %v", err)
		return
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("force a GC: HTTP %d", resp.StatusCode)
	}
}
