package filter

import (
	"net/netip"
	"testing"

	"github.com/tcpscope/tcpscope/tracer/event"
)

func ev(l, r string, old, new event.State, pid uint32, comm string) *event.Event {
	e := &event.Event{
		Local:  netip.MustParseAddrPort(l),
		Remote: netip.MustParseAddrPort(r),
		Old:    old, New: new,
		Family: event.IPv4,
		NetNS:  4026531833,
	}
	if e.Local.Addr().Is6() {
		e.Family = event.IPv6
	}
	if pid != 0 {
		e.Flags |= event.OwnerKnown
		e.Owner.PID = pid
		copy(e.Owner.Comm[:], comm)
	}
	return e
}

func TestMatch(t *testing.T) {
	est := ev("127.0.0.1:5000", "127.0.0.2:80", event.SynSent, event.Established, 42, "curl")
	mapped := ev("[::ffff:10.1.2.3]:443", "[::ffff:10.9.9.9]:5555", event.Established, event.FinWait1, 7, "nginx")
	anon := ev("127.0.0.1:5000", "127.0.0.2:80", event.FinWait1, event.FinWait2, 0, "")
	prefix := func(s string) netip.Prefix {
		p, err := ParsePrefix(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		spec Spec
		e    *event.Event
		want bool
	}{
		{"empty matches", Spec{}, est, true},
		{"pid", Spec{PID: 42}, est, true},
		{"other pid", Spec{PID: 43}, est, false},
		{"pid needs a known owner", Spec{PID: 42}, anon, false},
		{"comm exact", Spec{Comm: "curl"}, est, true},
		{"comm is not a substring match", Spec{Comm: "cur"}, est, false},
		{"local port", Spec{Port: 5000}, est, true},
		{"remote port", Spec{Port: 80}, est, true},
		{"neither port", Spec{Port: 81}, est, false},
		{"laddr", Spec{Local: prefix("127.0.0.1")}, est, true},
		{"raddr prefix", Spec{Remote: prefix("127.0.0.0/8")}, est, true},
		{"raddr miss", Spec{Remote: prefix("10.0.0.0/8")}, est, false},
		{"v4 filter matches v4-mapped", Spec{Local: prefix("10.1.2.3")}, mapped, true},
		{"v4 prefix matches v4-mapped", Spec{Remote: prefix("10.0.0.0/8")}, mapped, true},
		{"state new", Spec{States: event.StateMask(0).With(event.Established)}, est, true},
		{"state old", Spec{States: event.StateMask(0).With(event.SynSent)}, est, true},
		{"state miss", Spec{States: event.StateMask(0).With(event.TimeWait)}, est, false},
		{"family", Spec{Family: event.IPv6}, est, false},
		{"family v6", Spec{Family: event.IPv6}, mapped, true},
		{"netns", Spec{NetNS: 1}, est, false},
		{"all together", Spec{PID: 42, Comm: "curl", Port: 80, States: event.StateMask(0).With(event.Established), Family: event.IPv4, NetNS: 4026531833}, est, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.spec.Match(tc.e); got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	for _, bad := range []string{"", "1.2.3", "10.0.0.0/33", "host.example"} {
		if _, err := ParsePrefix(bad); err == nil {
			t.Errorf("ParsePrefix(%q) accepted", bad)
		}
	}
	if p, err := ParsePrefix("[::1]"); err != nil || p.String() != "::1/128" {
		t.Errorf("ParsePrefix([::1]) = %v, %v", p, err)
	}
	m, err := ParseStates([]string{"time-wait,CLOSE_WAIT", "listen", "fin-wait-1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []event.State{event.TimeWait, event.CloseWait, event.Listen, event.FinWait1} {
		if !m.Has(st) {
			t.Errorf("mask lacks %v", st)
		}
	}
	if m.Has(event.Established) {
		t.Error("mask has ESTABLISHED")
	}
	if _, err := ParseStates([]string{"BOGUS"}); err == nil {
		t.Error("ParseStates accepted BOGUS")
	}
}
