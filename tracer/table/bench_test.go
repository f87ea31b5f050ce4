package table

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// sockets returns n distinct established sockets spread over a few
// namespaces and owners.
func sockets(n int) []event.Socket {
	out := make([]event.Socket, n)
	for i := range out {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		out[i] = event.Socket{
			Cookie: uint64(i + 1), Kind: event.FullSocket, Family: event.IPv4, State: event.Established,
			Local:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, 1}), 443),
			Remote: netip.AddrPortFrom(ip, uint16(i)), NetNS: uint32(i%4 + 1), UID: 1000,
			Inode: uint64(i + 1000), Owner: task(uint32(i%1000+1), "server"), OwnerKnown: true,
			Source: event.OwnerIter, FD: int32(i % 60000),
		}
	}
	return out
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// memoryPerSocket inserts n sockets by events (the way the table grows in
// steady state) and returns the heap growth per socket.
func memoryPerSocket(n int) float64 {
	evs := make([]event.Event, 0, 4096)
	before := heapInUse()
	tb := New()
	for i := 0; i < n; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		evs = append(evs, tr(uint64(i+1), uint64(i), CL, SS, tup(cliAP, netip.AddrPortFrom(ip, 80)),
			ns(uint32(i%4+1)), owner(uint32(i%1000+1), "client"), inode(uint64(i))))
		if len(evs) == cap(evs) {
			tb.ApplyBatch(evs)
			evs = evs[:0]
		}
	}
	tb.ApplyBatch(evs)
	evs = nil
	after := heapInUse()
	runtime.KeepAlive(tb)
	return float64(after-before) / float64(n)
}

func TestMemoryPerSocket(t *testing.T) {
	if testing.Short() {
		t.Skip("1M sockets")
	}
	const n = 1 << 20
	b := memoryPerSocket(n)
	t.Logf("%.1f bytes/socket for %d sockets", b, n)
	if b > 150 {
		t.Errorf("%.1f bytes/socket, want <= 150", b)
	}
}

func BenchmarkMemoryPerSocket(b *testing.B) {
	var per float64
	for i := 0; i < b.N; i++ {
		per = memoryPerSocket(1_000_000)
	}
	b.ReportMetric(per, "B/socket")
}

// BenchmarkApply: transitions of existing sockets (no insert, no removal).
func BenchmarkApply(b *testing.B) {
	const n = 100_000
	tb := New()
	tb.EndSync(sockets(n), 1, nil)
	evs := make([]event.Event, 2*n)
	for i := 0; i < n; i++ {
		evs[2*i] = tr(uint64(i+1), 10, E, CW, ns(uint32(i%4+1)), owner(uint32(i%1000+1), "server"))
		evs[2*i+1] = tr(uint64(i+1), 11, CW, E, ns(uint32(i%4+1)), owner(uint32(i%1000+1), "server"))
	}
	b.Run("Apply", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			tb.Apply(&evs[i%len(evs)])
		}
	})
	b.Run("ApplyBatch64", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i += 64 {
			j := i % len(evs)
			tb.ApplyBatch(evs[j : j+64])
		}
	})
	if st := tb.Stats(); st.Mismatches != 0 {
		b.Fatalf("mismatches %d", st.Mismatches)
	}
}

// BenchmarkApplyLifecycle: whole connections (insert ... TIME_WAIT ...
// removal), 9 events each, reported per event.
func BenchmarkApplyLifecycle(b *testing.B) {
	tb := New()
	conn := func(c, m uint64) []event.Event {
		return []event.Event{
			tr(c, m, CL, SS, owner(1, "c")), tr(c, m+1, SS, E), tr(c, m+2, E, FW1), tr(c, m+3, FW1, FW2),
			twStart(c, m+4, TW), tr(c, m+4, FW2, CL), twStop(c, m+5), twStart(c, m+5, TW), twStop(c, m+6),
		}
	}
	var evs []event.Event
	for c := uint64(1); c <= 1000; c++ {
		evs = append(evs, conn(c, c*10)...)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(evs) {
		tb.ApplyBatch(evs)
	}
}

func BenchmarkCounts(b *testing.B) {
	tb := New()
	tb.EndSync(sockets(100_000), 1, nil)
	b.ReportAllocs()
	var c Counts
	for i := 0; i < b.N; i++ {
		c = tb.Counts()
	}
	if c[E] != 100_000 {
		b.Fatal(c)
	}
}

func BenchmarkCountsByNetNS(b *testing.B) {
	tb := New()
	tb.EndSync(sockets(100_000), 1, nil)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = tb.CountsByNetNS()
	}
}

func BenchmarkEndSync(b *testing.B) {
	const n = 1_000_000
	snap := sockets(n)
	b.Run("seed-empty-1M", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			tb := New()
			runtime.GC()
			b.StartTimer()
			tb.BeginSync()
			if r := tb.EndSync(snap, 1, nil); r.Added != n {
				b.Fatal(r)
			}
		}
	})
	b.Run("resync-full-1M", func(b *testing.B) {
		tb := New()
		tb.EndSync(snap, 1, nil)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			tb.BeginSync()
			if r := tb.EndSync(snap, 2, nil); r.Unchanged != n {
				b.Fatal(r)
			}
		}
	})
}

func BenchmarkEach(b *testing.B) {
	tb := New()
	tb.EndSync(sockets(100_000), 1, nil)
	e := tr(1, 5, E, CW)
	tb.Apply(&e)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		n := 0
		tb.Each(event.StateMask(0).With(CW), func(*Entry) bool { n++; return true })
		if n != 1 {
			b.Fatal(n)
		}
	}
}

// BenchmarkDropOverdue: the once-a-second safety net with a full timewait
// table (net.ipv4.tcp_max_tw_buckets, 131072 by default) and nothing
// overdue: the common case, paid under the table's write lock.
func BenchmarkDropOverdue(b *testing.B) {
	const n = 131072
	tb := New()
	evs := make([]event.Event, 0, n)
	for i := 0; i < n; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		evs = append(evs, twStart(uint64(i+1), uint64(i), event.TimeWait, tup(cliAP, netip.AddrPortFrom(ip, 80))))
	}
	tb.ApplyBatch(evs)
	if c := tb.Counts(); c[event.TimeWait] != n {
		b.Fatalf("%d TIME_WAIT entries, want %d", c[event.TimeWait], n)
	}
	b.ResetTimer()
	for b.Loop() {
		if d := tb.DropOverdue(uint64(n), uint64(overdueGraceTest)); d != 0 {
			b.Fatalf("dropped %d", d)
		}
	}
}

const overdueGraceTest = 5e9

// BenchmarkDropOverdueWave: a second's worth of timewait sockets (40k, the
// churn rate here) whose stops came, as the kernel's expiries make them:
// their deadlines come due together. One op is the DropOverdue call that
// takes them all, in a table of 131k; max-lock-µs is the longest it held
// the table's write lock at a time.
func BenchmarkDropOverdueWave(b *testing.B) {
	const n, wave = 131072, 40000
	const sec = uint64(1e9)
	key := uint64(0)
	mono := uint64(0)
	start := func(tb *Table) {
		key++
		mono += sec / wave
		ip := netip.AddrFrom4([4]byte{10, byte(key >> 16), byte(key >> 8), byte(key)})
		e := twStart(key, mono, event.TimeWait, tup(cliAP, netip.AddrPortFrom(ip, 80)))
		tb.Apply(&e)
	}
	tb := New()
	for i := 0; i < n; i++ {
		start(tb)
	}
	oldest := uint64(1)
	var maxHold time.Duration
	for b.Loop() {
		b.StopTimer()
		// The oldest wave expires in the kernel (stops) and a new one
		// starts: the table stays at n.
		for i := 0; i < wave; i++ {
			e := twStop(oldest, mono)
			tb.Apply(&e)
			oldest++
			start(tb)
		}
		// Their deadlines (start + 60 s) are past the grace.
		now := (oldest-1)*sec/wave + 60*sec + overdueGraceTest + 1
		b.StartTimer()
		for more := true; more; {
			t0 := time.Now()
			var d int
			d, more = tb.dropOverdueChunk(now, uint64(overdueGraceTest))
			if d != 0 {
				b.Fatalf("dropped %d live entries", d)
			}
			maxHold = max(maxHold, time.Since(t0))
		}
	}
	b.ReportMetric(float64(maxHold.Microseconds()), "max-lock-µs")
}
