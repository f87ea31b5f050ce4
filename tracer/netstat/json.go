package netstat

import (
	"strconv"
	"time"

	"github.com/tcpscope/tcpscope/tracer/cgroup"
	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/termsafe"
)

// appendJSON writes one socket as a JSON object. Keys shared with the trace
// log (family, laddr, lport, raddr, rport, netns, cookie, pid, tid, comm)
// mean the same there and here. Addresses are always numeric.
//
//	state, kind ("full", "timewait", "request"), since (RFC 3339, only with
//	Options.Wall and a known entry time), age_ns, age_at_least, recvq, sendq,
//	uid, inode, fd (omitted when unknown), source (how the owner was learned),
//	timer {kind ("off", "on", "keepalive", "timewait", "probe"), left_ns,
//	retransmits, probes}; with Options.Cgroup, cgroup and container (the
//	owner's, see package cgroup) after comm.
//
// pid, tid and comm are null when the owner is not known.
func appendJSON(b []byte, r *Row, opts Options) []byte {
	b = append(b, `{"family":"`...)
	b = append(b, r.Family.String()...)
	b = append(b, `","laddr":"`...)
	b = r.Local.Addr().AppendTo(b)
	b = append(b, `","lport":`...)
	b = strconv.AppendUint(b, uint64(r.Local.Port()), 10)
	b = append(b, `,"raddr":"`...)
	b = r.Remote.Addr().AppendTo(b)
	b = append(b, `","rport":`...)
	b = strconv.AppendUint(b, uint64(r.Remote.Port()), 10)
	b = append(b, `,"state":"`...)
	b = append(b, stateName(r.State)...)
	b = append(b, `","kind":"`...)
	b = append(b, r.Kind.String()...)
	b = append(b, '"')
	if opts.Wall != nil && r.Since != 0 {
		b = append(b, `,"since":"`...)
		b = opts.Wall(r.Since).AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	b = append(b, `,"age_ns":`...)
	b = strconv.AppendInt(b, int64(r.Age), 10)
	b = append(b, `,"age_at_least":`...)
	b = strconv.AppendBool(b, r.AgeAtLeast)
	b = append(b, `,"recvq":`...)
	b = strconv.AppendUint(b, uint64(r.RecvQ), 10)
	b = append(b, `,"sendq":`...)
	b = strconv.AppendUint(b, uint64(r.SendQ), 10)
	b = append(b, `,"uid":`...)
	b = strconv.AppendUint(b, uint64(r.UID), 10)
	b = append(b, `,"inode":`...)
	b = strconv.AppendUint(b, r.Inode, 10)
	if r.FD >= 0 {
		b = append(b, `,"fd":`...)
		b = strconv.AppendInt(b, int64(r.FD), 10)
	}
	b = append(b, `,"pid":`...)
	if r.OwnerKnown {
		b = strconv.AppendUint(b, uint64(r.Owner.PID), 10)
		b = append(b, `,"tid":`...)
		b = strconv.AppendUint(b, uint64(r.Owner.TID), 10)
		b = append(b, `,"comm":"`...)
		b = appendJSONString(b, r.Owner.CommBytes())
		b = append(b, '"')
	} else {
		b = append(b, `null,"tid":null,"comm":null`...)
	}
	if opts.Cgroup != nil {
		var cg cgroup.Info
		if r.OwnerKnown {
			cg = opts.Cgroup(r.Owner.PID)
		}
		b = append(b, `,"cgroup":`...)
		b = appendStringOrNull(b, cg.Path)
		b = append(b, `,"container":`...)
		b = appendStringOrNull(b, cg.Container)
	}
	b = append(b, `,"source":"`...)
	b = append(b, r.Source.String()...)
	b = append(b, `","timer":{"kind":"`...)
	b = append(b, timerName(r.Timer)...)
	b = append(b, `","left_ns":`...)
	b = strconv.AppendInt(b, int64(r.TimerLeft), 10)
	b = append(b, `,"retransmits":`...)
	b = strconv.AppendUint(b, uint64(r.Retransmits), 10)
	b = append(b, `,"probes":`...)
	b = strconv.AppendUint(b, uint64(r.Probes), 10)
	b = append(b, `},"netns":`...)
	b = strconv.AppendUint(b, uint64(r.NetNS), 10)
	b = append(b, `,"cookie":`...)
	b = strconv.AppendUint(b, r.Cookie, 10)
	return append(b, '}')
}

// appendStringOrNull writes s as a JSON string (made terminal-safe: cgroup
// paths are named by whoever creates them), or null when it is empty.
func appendStringOrNull(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = appendJSONString(b, []byte(s))
	return append(b, '"')
}

func timerName(k event.TimerKind) string {
	switch k {
	case event.TimerOff:
		return "off"
	case event.TimerRetransmit:
		return "on"
	case event.TimerKeepalive:
		return "keepalive"
	case event.TimerTimewait:
		return "timewait"
	case event.TimerProbe:
		return "probe"
	}
	return "unkn-" + strconv.Itoa(int(k))
}

// appendJSONString writes untrusted bytes for a JSON string: made
// terminal-safe first (the same text as the -p column), then '"' and '\'
// escaped; termsafe leaves no control bytes or invalid UTF-8.
func appendJSONString(b, s []byte) []byte {
	for _, c := range termsafe.Append(nil, s) {
		if c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, c)
	}
	return b
}
