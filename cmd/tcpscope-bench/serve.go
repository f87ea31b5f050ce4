package main

// `tcpscope serve` as a peer of the other tracers: started on a free
// loopback port, ready once its table is seeded, its counters read from
// /metrics, its memory from /proc.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// listeningRE finds the address serve bound, from its first log line.
var listeningRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

// httpClient bounds every request of the bench to the agent.
var httpClient = &http.Client{Timeout: 10 * time.Second}

// startServe runs `tcpscope serve --listen 127.0.0.1:0 ARGS` and waits until
// it says it is ready (/readyz: its table is seeded). The address it bound
// is in p.addr.
func startServe(ctx context.Context, path string, limit time.Duration, args ...string) (*tracerProc, error) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer null.Close()
	p, err := startProc("tcpscope serve", null, path, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	if err != nil {
		return nil, err
	}
	err = p.waitReady(ctx, limit, func() bool {
		if p.addr == "" {
			m := listeningRE.FindStringSubmatch(p.stderr.String())
			if m == nil {
				return false
			}
			p.addr = m[1]
		}
		resp, err := httpClient.Get("http://" + p.addr + "/readyz")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// scrape reads the agent's /metrics.
func scrape(addr string) (map[string]float64, error) {
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the Prometheus text format into name -> value, the
// samples of one name summed over their labels (what the bench needs:
// tcpscope_transitions_total over all from/to pairs).
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// name{labels} value [timestamp]; label values may hold spaces, so
		// the value is what follows the closing brace.
		name, rest := line, ""
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return nil, fmt.Errorf("metrics: bad line %q", line)
			}
			name, rest = line[:i], line[j+1:]
		} else if i := strings.IndexByte(line, ' '); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %q: %v", line, err)
		}
		out[name] += v
	}
	return out, sc.Err()
}

// procStatusBytes reads a memory field of /proc/PID/status (VmRSS,
// VmHWM), in bytes; 0 if unknown.
func procStatusBytes(pid int, field string) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseUint(f[0], 10, 64)
				return v << 10
			}
		}
	}
	return 0
}

// scraper GETs /metrics once a second, as a Prometheus server would, until
// stopped.
type scraper struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	n    int
	errs int
	took time.Duration
}

func startScraper(addr string) *scraper {
	s := &scraper{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
			t0 := time.Now()
			_, err := scrape(addr)
			s.mu.Lock()
			if err != nil {
				s.errs++
			} else {
				s.n++
				s.took += time.Since(t0)
			}
			s.mu.Unlock()
		}
	}()
	return s
}

// end stops the scraper and returns the scrapes made, failed, and their
// mean time.
func (s *scraper) end() (n, errs int, mean time.Duration) {
	close(s.stop)
	<-s.done
	if s.n > 0 {
		mean = s.took / time.Duration(s.n)
	}
	return s.n, s.errs, mean
}
