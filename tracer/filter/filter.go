// Package filter selects events by owner, ports, addresses, states, family
// and network namespace. The loader applies the cheap numeric parts in the
// kernel; Match applies all of them in user space.
package filter

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// Spec is a conjunction of criteria; zero fields match everything.
type Spec struct {
	PID    uint32
	Comm   string // exact comm of the owner
	Port   uint16 // local or remote
	Local  netip.Prefix
	Remote netip.Prefix
	States event.StateMask // old or new state in the set
	Family event.Family
	NetNS  uint32
}

// Match reports whether e passes every criterion.
func (s *Spec) Match(e *event.Event) bool {
	if s.PID != 0 && (e.Flags&event.OwnerKnown == 0 || e.Owner.PID != s.PID) {
		return false
	}
	if s.Comm != "" && string(e.Owner.CommBytes()) != s.Comm {
		return false
	}
	if s.Port != 0 && e.Local.Port() != s.Port && e.Remote.Port() != s.Port {
		return false
	}
	if s.Local.IsValid() && !s.Local.Contains(e.Local.Addr().Unmap()) {
		return false
	}
	if s.Remote.IsValid() && !s.Remote.Contains(e.Remote.Addr().Unmap()) {
		return false
	}
	if s.States != 0 && !s.States.Has(e.Old) && !s.States.Has(e.New) {
		return false
	}
	if s.Family != event.FamilyUnknown && e.Family != s.Family {
		return false
	}
	if s.NetNS != 0 && e.NetNS != s.NetNS {
		return false
	}
	return true
}

// ParsePrefix accepts an address (127.0.0.1, ::1) or a CIDR prefix
// (10.0.0.0/8). IPv4-mapped IPv6 addresses match their IPv4 form.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad address prefix %q: want e.g. 10.0.0.0/8", s)
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("bad address prefix %q: IPv4-mapped prefix shorter than /96", s)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad address %q: want an IPv4 or IPv6 address or a prefix", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseStates parses state names (netstat or ss spellings), each of which
// may be a comma-separated list.
func ParseStates(names []string) (event.StateMask, error) {
	var m event.StateMask
	for _, n := range names {
		for _, part := range strings.Split(n, ",") {
			if strings.TrimSpace(part) == "" {
				continue
			}
			st, err := event.ParseState(part)
			if err != nil {
				return 0, err
			}
			m = m.With(st)
		}
	}
	return m, nil
}
