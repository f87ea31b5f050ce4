package netstat

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcpscope/tcpscope/tracer/cgroup"
	"github.com/tcpscope/tcpscope/tracer/event"
)

// TestDecodeJSONRoundTrip: rows printed as JSON, read back and printed
// again, in JSON and as text, give the same bytes.
func TestDecodeJSONRoundTrip(t *testing.T) {
	task := func(pid uint32, comm string) event.Task {
		k := event.Task{PID: pid, TID: pid + 1}
		copy(k.Comm[:], comm)
		return k
	}
	rows := []Row{
		{Socket: event.Socket{Cookie: 7, Kind: event.FullSocket, Family: event.IPv4, State: event.Listen,
			Local: netip.MustParseAddrPort("0.0.0.0:22"), Remote: netip.MustParseAddrPort("0.0.0.0:0"),
			NetNS: 4026531840, UID: 0, Inode: 1234, Owner: task(1, "sshd"), OwnerKnown: true, Source: event.OwnerIter,
			FD: 3, Since: uint64(time.Date(2026, 11, 25, 10, 0, 0, 123, time.UTC).UnixNano()), SendQ: 128},
			Age: 3 * time.Hour},
		{Socket: event.Socket{Cookie: 8, Family: event.IPv6, State: event.Established,
			Local: netip.MustParseAddrPort("[::ffff:10.0.0.1]:443"), Remote: netip.MustParseAddrPort("[2001:db8::1]:50000"),
			NetNS: 1, UID: 1000, Inode: 99, Owner: task(42, "we\x1bird\\n\"q"), OwnerKnown: true, Source: event.OwnerAccept,
			FD: -1, RecvQ: 5, SendQ: 6, Timer: event.TimerKeepalive, TimerLeft: 7200 * time.Second, Probes: 2},
			Age: time.Second, AgeAtLeast: true},
		{Socket: event.Socket{Kind: event.TimewaitSocket, Family: event.IPv4, State: event.TimeWait,
			Local: netip.MustParseAddrPort("127.0.0.1:40000"), Remote: netip.MustParseAddrPort("127.0.0.1:80"),
			FD: -1, Timer: event.TimerTimewait, TimerLeft: 59 * time.Second}},
		{Socket: event.Socket{Kind: event.RequestSocket, Family: event.IPv4, State: event.NewSynRecv,
			Local: netip.MustParseAddrPort("127.0.0.1:80"), Remote: netip.MustParseAddrPort("127.0.0.1:40001"),
			FD: -1, Timer: event.TimerRetransmit, TimerLeft: time.Second, Retransmits: 1}},
	}
	cgroups := map[uint32]cgroup.Info{1: {Path: "/system.slice/ssh.service", Container: "ssh.service"}, 42: {Path: "/we\x1bird"}}
	cgOf := func(pid uint32) cgroup.Info { return cgroups[pid] }
	for _, opts := range []Options{
		{All: true, JSON: true, Wall: WallFromUnix},
		{All: true, JSON: true, Wall: WallFromUnix, Cgroup: cgOf},
		{All: true, NumericHosts: true, NumericPorts: true, NumericUsers: true, Extend: 2, Program: true, Timers: true, Age: true, Wide: true},
	} {
		var first, second bytes.Buffer
		if err := Write(&first, rows, Options{All: true, JSON: true, Wall: WallFromUnix, Cgroup: cgOf}); err != nil {
			t.Fatal(err)
		}
		var back []Row
		got := map[uint32]cgroup.Info{}
		for _, line := range strings.Split(strings.TrimSpace(first.String()), "\n") {
			r, cg, err := DecodeJSON([]byte(line))
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			back = append(back, r)
			got[r.Owner.PID] = cg
		}
		var want bytes.Buffer
		Write(&want, rows, opts)
		if opts.Cgroup != nil {
			opts.Cgroup = func(pid uint32) cgroup.Info { return got[pid] }
		}
		Write(&second, back, opts)
		if want.String() != second.String() {
			t.Errorf("JSON %v: printed again\n%s\nwant\n%s", opts.JSON, second.String(), want.String())
		}
	}
	for _, bad := range []string{`{`, `{"family":"ipx"}`, `{"family":"ipv4","state":"NOPE"}`, `{"family":"ipv4","state":"LISTEN","kind":"odd"}`} {
		if _, _, err := DecodeJSON([]byte(bad)); err == nil {
			t.Errorf("DecodeJSON(%s): no error", bad)
		}
	}
}
