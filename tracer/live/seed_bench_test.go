package live_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/live"
	"github.com/tcpscope/tcpscope/tracer/loader"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// BenchmarkSeedHeld times what the views do with the sockets that exist when
// it runs, loading the programs left out: `serve` seeds a table (live.Start:
// every namespace walked, owners joined, merged into an empty table), a
// one-shot `netstat -ant` / `-antp` walks its own namespace once and prints
// that. It makes no sockets of its own: run it (as root) in a namespace that
// holds many, e.g.
//
//	ip netns exec NAME ./live.test -test.run '^$' -test.bench SeedHeld -test.benchtime 3x
//
// ns/socket is the time over the sockets found (best-ns/socket: of the
// fastest run); cpus is the process's CPU time over the wall time.
func BenchmarkSeedHeld(b *testing.B) {
	// As netstat configures a one-shot view (cmd/tcpscope/netstat.go).
	oneShot := func(owners loader.OwnerSeed) loader.Config {
		return loader.Config{Sockets: true, Owners: owners, BareWalks: true, WalksOnly: true}
	}
	for _, c := range []struct {
		name string
		cfg  loader.Config
		run  func(tr *loader.Tracer) (int, func(), error)
	}{
		{"ant", oneShot(loader.OwnersNone), walkOwn},
		{"antp", oneShot(loader.OwnersAtWalk), walkOwn},
		{"serve", loader.Config{Sockets: true}, seedTable},
	} {
		b.Run(c.name, func(b *testing.B) {
			requireRoot(b)
			var total, best, cpu time.Duration
			n := 0
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				tr, err := loader.New(c.cfg)
				if err != nil {
					b.Fatalf("loader.New: %v", err)
				}
				b.StartTimer()
				t0, c0 := time.Now(), cpuTime()
				got, done, err := c.run(tr)
				d := time.Since(t0)
				cpu += cpuTime() - c0
				total += d
				if best == 0 || d < best {
					best = d
				}
				b.StopTimer()
				if done != nil {
					done()
				}
				tr.Close()
				if err != nil {
					b.Fatal(err)
				}
				n = got
			}
			b.ReportMetric(float64(n), "sockets")
			if n > 0 {
				b.ReportMetric(float64(total.Nanoseconds())/float64(b.N)/float64(n), "ns/socket")
				// The machine may be shared: the best run is the least disturbed.
				b.ReportMetric(float64(best.Nanoseconds())/float64(n), "best-ns/socket")
			}
			b.ReportMetric(cpu.Seconds()/total.Seconds(), "cpus")
		})
	}
}

// walkOwn is a one-shot socket list's work: one walk of the caller's
// namespace, owners joined.
func walkOwn(tr *loader.Tracer) (int, func(), error) {
	socks, err := tr.Sockets(nil)
	return len(socks), nil, err
}

// seedTable is serve's start: live.Start seeds an empty table.
func seedTable(tr *loader.Tracer) (int, func(), error) {
	tab := table.New()
	ctx, cancel := context.WithCancel(context.Background())
	lv, err := live.Start(ctx, tr, tab, live.Options{})
	if err != nil {
		cancel()
		return 0, nil, err
	}
	return tab.Len(), func() { cancel(); lv.Wait() }, nil
}

// cpuTime is the CPU time the process has used (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
