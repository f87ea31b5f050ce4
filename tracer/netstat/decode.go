package netstat

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/tcpscope/tcpscope/tracer/cgroup"
	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/termsafe"
)

// jsonRow is the form appendJSON writes.
type jsonRow struct {
	Family     string     `json:"family"`
	LAddr      netip.Addr `json:"laddr"`
	LPort      uint16     `json:"lport"`
	RAddr      netip.Addr `json:"raddr"`
	RPort      uint16     `json:"rport"`
	State      string     `json:"state"`
	Kind       string     `json:"kind"`
	Since      *time.Time `json:"since"`
	AgeNs      int64      `json:"age_ns"`
	AgeAtLeast bool       `json:"age_at_least"`
	RecvQ      uint32     `json:"recvq"`
	SendQ      uint32     `json:"sendq"`
	UID        uint32     `json:"uid"`
	Inode      uint64     `json:"inode"`
	FD         *int32     `json:"fd"`
	PID        *uint32    `json:"pid"`
	TID        *uint32    `json:"tid"`
	Comm       *string    `json:"comm"`
	Cgroup     *string    `json:"cgroup"`
	Container  *string    `json:"container"`
	Source     string     `json:"source"`
	Timer      struct {
		Kind        string `json:"kind"`
		LeftNs      int64  `json:"left_ns"`
		Retransmits uint8  `json:"retransmits"`
		Probes      uint8  `json:"probes"`
	} `json:"timer"`
	NetNS  uint32 `json:"netns"`
	Cookie uint64 `json:"cookie"`
}

// DecodeJSON reads one socket as Write prints it with Options.JSON (an
// agent's /api/v1/sockets), so that it can be printed again in any of
// Write's forms. The entry time comes back as Since = its wall time in Unix
// nanoseconds: print with Options.Wall = WallFromUnix. cg is the owner's
// cgroup when the row has one (print with Options.Cgroup).
func DecodeJSON(line []byte) (r Row, cg cgroup.Info, err error) {
	var j jsonRow
	if err := json.Unmarshal(line, &j); err != nil {
		return Row{}, cg, fmt.Errorf("socket JSON: %w", err)
	}
	if j.Cgroup != nil {
		cg.Path = string(termsafe.Unescape(nil, []byte(*j.Cgroup)))
	}
	if j.Container != nil {
		cg.Container = string(termsafe.Unescape(nil, []byte(*j.Container)))
	}
	switch j.Family {
	case "ipv4":
		r.Family = event.IPv4
	case "ipv6":
		r.Family = event.IPv6
	default:
		return r, cg, fmt.Errorf("socket JSON: family %q", j.Family)
	}
	st, err := event.ParseState(j.State)
	if err != nil {
		return r, cg, fmt.Errorf("socket JSON: %w", err)
	}
	r.State = st
	switch j.Kind {
	case "full":
		r.Kind = event.FullSocket
	case "timewait":
		r.Kind = event.TimewaitSocket
	case "request":
		r.Kind = event.RequestSocket
		if r.State == event.SynRecv {
			r.State = event.NewSynRecv // the kernel's state of a request socket
		}
	default:
		return r, cg, fmt.Errorf("socket JSON: kind %q", j.Kind)
	}
	r.Local = netip.AddrPortFrom(j.LAddr, j.LPort)
	r.Remote = netip.AddrPortFrom(j.RAddr, j.RPort)
	if j.Since != nil {
		r.Since = uint64(j.Since.UnixNano())
	}
	r.Age, r.AgeAtLeast = time.Duration(j.AgeNs), j.AgeAtLeast
	r.RecvQ, r.SendQ, r.UID, r.Inode = j.RecvQ, j.SendQ, j.UID, j.Inode
	r.FD = -1
	if j.FD != nil {
		r.FD = *j.FD
	}
	if j.PID != nil && j.Comm != nil {
		r.OwnerKnown = true
		r.Owner.PID = *j.PID
		if j.TID != nil {
			r.Owner.TID = *j.TID
		}
		copy(r.Owner.Comm[:len(r.Owner.Comm)-1], termsafe.Unescape(nil, []byte(*j.Comm)))
	}
	for s := event.OwnerNone; s <= event.OwnerIter; s++ {
		if s.String() == j.Source {
			r.Source = s
		}
	}
	for k := event.TimerOff; k <= event.TimerProbe; k++ {
		if timerName(k) == j.Timer.Kind {
			r.Timer = k
		}
	}
	r.TimerLeft = time.Duration(j.Timer.LeftNs)
	r.Retransmits, r.Probes = j.Timer.Retransmits, j.Timer.Probes
	r.NetNS, r.Cookie = j.NetNS, j.Cookie
	return r, cg, nil
}

// WallFromUnix is Options.Wall for rows from DecodeJSON.
func WallFromUnix(since uint64) time.Time { return time.Unix(0, int64(since)) }
