package loader_test

import (
	"testing"

	"github.com/tcpscope/tcpscope/tracer/loader"
)

func TestLostSince(t *testing.T) {
	for _, c := range []struct {
		prev, cur loader.Stats
		n         uint64
		want      string
	}{
		{loader.Stats{}, loader.Stats{RingDrops: 5}, 5, "ring buffer full: 5"},
		{loader.Stats{RingDrops: 5, MainMisses: 3, Recovered: 3}, loader.Stats{RingDrops: 5, MainMisses: 7, Recovered: 4, TimerMisses: 2}, 5,
			"state-change runs skipped by the kernel: 3; timer runs skipped by the kernel: 2"},
		{loader.Stats{BadRecords: 1}, loader.Stats{RingDrops: 1, BadRecords: 2}, 2, "ring buffer full: 1; undecodable records: 1"},
		// A skipped run counted before its recovery, then recovered: no loss.
		{loader.Stats{MainMisses: 2}, loader.Stats{MainMisses: 2, Recovered: 2}, 0, ""},
		// A fall in one counter does not hide a rise in another.
		{loader.Stats{MainMisses: 2}, loader.Stats{MainMisses: 2, Recovered: 2, RingDrops: 1}, 1, "ring buffer full: 1"},
	} {
		if n, got := c.cur.LostSince(c.prev); n != c.n || got != c.want {
			t.Errorf("%+v.LostSince(%+v) = %d %q, want %d %q", c.cur, c.prev, n, got, c.n, c.want)
		}
	}
}
