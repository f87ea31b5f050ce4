package netstat

import (
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// BenchmarkJoinJSON50k is the user-space part of GET /api/v1/sockets for a
// namespace of 50k sockets: join a walk with the table, print JSON.
func BenchmarkJoinJSON50k(b *testing.B) {
	const n = 50000
	socks := make([]event.Socket, n)
	for i := range socks {
		s := &socks[i]
		s.Cookie = uint64(i + 1)
		s.Kind, s.Family, s.State, s.NetNS, s.FD = event.FullSocket, event.IPv4, event.Established, 7, int32(i)
		s.Local = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(10000+i%50000))
		s.Remote = netip.MustParseAddrPort("127.0.0.1:80")
		s.Owner.PID, s.OwnerKnown, s.Since = 100, true, 1
		copy(s.Owner.Comm[:], "holder")
	}
	tab := table.New()
	tab.BeginSync()
	tab.EndSync(socks, 1, nil)
	opts := Options{All: true, JSON: true, Wall: func(uint64) time.Time { return time.Unix(0, 0) }}
	for b.Loop() {
		rows := JoinRows(socks, tab, 1, 2, 0, true)
		if err := Write(io.Discard, rows, opts); err != nil {
			b.Fatal(err)
		}
	}
}
