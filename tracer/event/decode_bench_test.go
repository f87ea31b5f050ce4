package event

import (
	"testing"
)

// BenchmarkDecode decodes a ring's worth of distinct records, IPv4 and
// IPv6 alternating, as the loader's reader does, and reports events/s. It
// must not allocate.
func BenchmarkDecode(b *testing.B) {
	const n = 1024
	recs := make([][]byte, n)
	for i := range recs {
		fam := IPv4
		if i%2 == 1 {
			fam = IPv6
		}
		e := sample(fam)
		e.Mono += uint64(i)
		e.Cookie += uint64(i)
		e.Old, e.New = State(1+i%int(MaxState)), State(1+(i+1)%int(MaxState))
		recs[i] = Encode(&e, nil)
	}
	var e Event
	b.ReportAllocs()
	b.SetBytes(Size)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := Decode(recs[i%n], &e); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "events/s")
	}
}
