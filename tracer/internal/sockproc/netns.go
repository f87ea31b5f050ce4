package sockproc

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// VethPair is two named network namespaces joined by a veth link, with
// loopback up in both. Only the addresses given to NewVethPair are used,
// inside the namespaces.
type VethPair struct {
	A, B         string     // namespace names
	AddrA, AddrB netip.Addr // the veth ends' addresses
}

// NewVethPair creates namespaces prefix-a and prefix-b (prefix at most 10
// bytes) joined by a veth link addressed from the /24 of base: base+1 in A,
// base+2 in B. On error nothing is left behind.
func NewVethPair(prefix string, base netip.Addr) (*VethPair, error) {
	if len(prefix) > 10 || prefix == "" {
		return nil, fmt.Errorf("sockproc: netns prefix %q: want 1 to 10 bytes", prefix)
	}
	if !base.Is4() {
		return nil, fmt.Errorf("sockproc: veth base %v: want IPv4", base)
	}
	b := base.As4()
	b[3] = 1
	p := &VethPair{A: prefix + "-a", B: prefix + "-b", AddrA: netip.AddrFrom4(b)}
	b[3] = 2
	p.AddrB = netip.AddrFrom4(b)
	vethA, vethB := prefix+"a", prefix+"b"
	steps := [][]string{
		{"netns", "add", p.A},
		{"netns", "add", p.B},
		{"link", "add", vethA, "netns", p.A, "type", "veth", "peer", "name", vethB, "netns", p.B},
		{"-n", p.A, "addr", "add", p.AddrA.String() + "/24", "dev", vethA},
		{"-n", p.B, "addr", "add", p.AddrB.String() + "/24", "dev", vethB},
		{"-n", p.A, "link", "set", "lo", "up"},
		{"-n", p.B, "link", "set", "lo", "up"},
		{"-n", p.A, "link", "set", vethA, "up"},
		{"-n", p.B, "link", "set", vethB, "up"},
	}
	for _, args := range steps {
		if err := ip(args...); err != nil {
			p.Delete()
			return nil, err
		}
	}
	return p, nil
}

// Delete removes both namespaces (and with them the veth link). Processes
// still running inside keep their namespace alive: stop them first.
func (p *VethPair) Delete() error {
	var errs []error
	for _, ns := range []string{p.A, p.B} {
		if err := ip("netns", "del", ns); err != nil && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
