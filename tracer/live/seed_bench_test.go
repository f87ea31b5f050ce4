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

// BenchmarkSeedHeld times live.Start (the seed: walk, owners joined, merge into
// an empty table) with the sockets that exist when it runs, as each command
// configures it; loading the programs is left out. It makes no sockets of
// its own: run it (as root) in a namespace that holds many, e.g.
//
//	ip netns exec NAME ./live.test -test.run '^$' -test.bench SeedHeld -test.benchtime 3x
//
// ns/socket is the seed's time over the table's size (best-ns/socket: of
// the fastest run).
func BenchmarkSeedHeld(b *testing.B) {
	for _, c := range []struct {
		name string
		cfg  loader.Config
		opts live.Options
	}{
		// netstat -ant: its own namespace, no owners, no timers.
		{"ant", loader.Config{Sockets: true, Owners: loader.OwnersNone, BareWalks: true}, live.Options{OwnNetNSOnly: true}},
		// netstat -antp: owners joined at the walk.
		{"antp", loader.Config{Sockets: true, Owners: loader.OwnersAtWalk, BareWalks: true}, live.Options{OwnNetNSOnly: true}},
		// serve: every namespace, owners kept for events, full walks.
		{"serve", loader.Config{Sockets: true}, live.Options{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			requireRoot(b)
			var seed, best, cpu time.Duration
			n := 0
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				tr, err := loader.New(c.cfg)
				if err != nil {
					b.Fatalf("loader.New: %v", err)
				}
				tab := table.New()
				ctx, cancel := context.WithCancel(context.Background())
				b.StartTimer()
				t0, c0 := time.Now(), cpuTime()
				lv, err := live.Start(ctx, tr, tab, c.opts)
				d := time.Since(t0)
				cpu += cpuTime() - c0
				seed += d
				if best == 0 || d < best {
					best = d
				}
				b.StopTimer()
				if err != nil {
					cancel()
					tr.Close()
					b.Fatalf("live.Start: %v", err)
				}
				n = tab.Len()
				cancel()
				lv.Wait()
				tr.Close()
			}
			b.ReportMetric(float64(n), "sockets")
			if n > 0 {
				b.ReportMetric(float64(seed.Nanoseconds())/float64(b.N)/float64(n), "ns/socket")
				// The machine may be shared: the best run is the least disturbed.
				b.ReportMetric(float64(best.Nanoseconds())/float64(n), "best-ns/socket")
			}
			// How many CPUs the seed kept busy (the process's CPU time over
			// the wall time, background work of the load included).
			b.ReportMetric(cpu.Seconds()/seed.Seconds(), "cpus")
		})
	}
}

// cpuTime is the CPU time the process has used (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
