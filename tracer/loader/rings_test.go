package loader

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
)

// queueOf builds a ring's queue as fill leaves it: records of 16 bytes, a
// kernel time and a name.
func queueOf(recs ...testRec) ringQueue {
	var q ringQueue
	for _, r := range recs {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint64(b, r.mono)
		copy(b[8:], r.name)
		q.recs = append(q.recs, recRef{mono: r.mono, off: uint32(len(q.buf)), n: 16})
		q.buf = append(q.buf, b...)
	}
	return q
}

type testRec struct {
	mono uint64
	name string
}

// take hands out every record next gives up to upTo, by name.
func take(r *cpuRings, upTo uint64) []string {
	var out []string
	for b := r.next(upTo); b != nil; b = r.next(upTo) {
		if binary.LittleEndian.Uint64(b) > upTo {
			out = append(out, "late!")
		}
		name := b[8:]
		out = append(out, string(name[:slices.Index(name, 0)]))
	}
	return out
}

func TestMergeOrder(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rings [][]testRec
		cut   uint64 // 0: none
		upTo  uint64
		want  []string
		// Then everything left, with no limit.
		wantRest []string
	}{
		{
			name:  "interleaved by time",
			rings: [][]testRec{{{1, "a"}, {4, "c"}}, {{2, "b"}, {5, "d"}}},
			upTo:  10,
			want:  []string{"a", "b", "c", "d"},
		},
		{
			// A softirq record (10) reserved between the time and the
			// reservation of an interrupted one (5): ring order is kept,
			// and the other ring's later record (12) waits for both.
			name:  "ring order kept over time order",
			rings: [][]testRec{{{10, "irq"}, {5, "task"}}, {{12, "next"}}},
			upTo:  20,
			want:  []string{"irq", "task", "next"},
		},
		{
			name:     "records after the mark wait",
			rings:    [][]testRec{{{5, "a"}, {20, "late"}}, {{7, "b"}}},
			upTo:     10,
			want:     []string{"a", "b"},
			wantRest: []string{"late"},
		},
		{
			// A later head blocks its ring, even with an earlier record
			// behind it.
			name:     "a head after the mark blocks its ring",
			rings:    [][]testRec{{{20, "head"}, {3, "behind"}}, {{4, "other"}}},
			upTo:     10,
			want:     []string{"other"},
			wantRest: []string{"head", "behind"},
		},
		{
			name:     "a ring left early lowers the mark",
			rings:    [][]testRec{{{2, "a"}, {6, "b"}}, {{5, "c"}, {8, "d"}}},
			cut:      6,
			upTo:     10,
			want:     []string{"a", "c", "b"},
			wantRest: []string{"d"},
		},
		{
			name:  "empty rings",
			rings: [][]testRec{{}, {{1, "only"}}, {}},
			upTo:  1,
			want:  []string{"only"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &cpuRings{cut: math.MaxUint64}
			if tc.cut != 0 {
				r.cut = tc.cut
			}
			for _, recs := range tc.rings {
				r.queues = append(r.queues, queueOf(recs...))
			}
			r.heapify()
			if got := take(r, tc.upTo); !slices.Equal(got, tc.want) {
				t.Errorf("up to %d: %q, want %q", tc.upTo, got, tc.want)
			}
			if waiting := r.compact(); waiting != len(tc.wantRest) {
				t.Errorf("compact: %d waiting, want %d", waiting, len(tc.wantRest))
			}
			// What waits was moved to the front of its queue.
			for i, q := range r.queues {
				if q.head != 0 || (len(q.recs) > 0 && q.recs[0].off != 0) || len(q.buf) != 16*len(q.recs) {
					t.Errorf("queue %d not compacted: head %d, %d records, %d bytes", i, q.head, len(q.recs), len(q.buf))
				}
			}
			r.cut = math.MaxUint64
			r.heapify() // as the next pass's fill does
			if got := take(r, math.MaxUint64); !slices.Equal(got, tc.wantRest) {
				t.Errorf("the rest: %q, want %q", got, tc.wantRest)
			}
		})
	}
}

// TestMergeManyRings: with many rings (the heap of their first records),
// records come out in time order, each ring's in its own order.
func TestMergeManyRings(t *testing.T) {
	const rings, perRing = 64, 50
	r := &cpuRings{cut: math.MaxUint64}
	rng := rand.New(rand.NewPCG(1, 2))
	want := 0
	for i := range rings {
		var recs []testRec
		mono := uint64(0)
		for j := range rng.IntN(perRing) {
			mono += 1 + rng.Uint64N(1000)
			recs = append(recs, testRec{mono*rings + uint64(i), fmt.Sprintf("%d.%d", i, j)})
		}
		want += len(recs)
		r.queues = append(r.queues, queueOf(recs...))
	}
	r.heapify()
	var prev uint64
	nextIn := make([]int, rings)
	got := 0
	for b := r.next(math.MaxUint64); b != nil; b = r.next(math.MaxUint64) {
		mono := binary.LittleEndian.Uint64(b)
		if mono < prev {
			t.Fatalf("record at %d after one at %d", mono, prev)
		}
		prev = mono
		var ring, idx int
		fmt.Sscanf(string(b[8:16]), "%d.%d", &ring, &idx)
		if idx != nextIn[ring] {
			t.Fatalf("ring %d: record %d, want %d", ring, idx, nextIn[ring])
		}
		nextIn[ring]++
		got++
	}
	if got != want {
		t.Errorf("%d records out, want %d", got, want)
	}
}

func TestCPURingBytes(t *testing.T) {
	page := os.Getpagesize()
	for _, tc := range []struct {
		total, cpus, want int
	}{
		{8 << 20, 1, 8 << 20},
		{8 << 20, 2, 4 << 20},
		{8 << 20, 3, 2 << 20}, // 2.67 MiB, down to a power of two
		{8 << 20, 8, 1 << 20},
		{8 << 20, 256, 1 << 20}, // at least 1 MiB each: 256 MiB in all
		{1 << 30, 2, 512 << 20},
		{16 << 10, 2, 16 << 10}, // under 1 MiB each: the total each
		{1 << 20, 2, 1 << 20},
		{page, 2, page},
		{page, 64, page},
	} {
		if got := CPURingBytes(tc.total, tc.cpus); got != tc.want {
			t.Errorf("CPURingBytes(%d, %d) = %d, want %d", tc.total, tc.cpus, got, tc.want)
		}
	}
}
