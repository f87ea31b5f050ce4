// Package diag answers the questions operators chase with netstat at 3 a.m.,
// from the live socket table (tracer/table) and the event stream:
//
//   - CloseWait: which processes leak sockets in CLOSE_WAIT (the peer
//     closed, the program never called close()), grouped by the processes
//     that really hold them;
//   - TimeWaitTracker: who churns connections into TIME_WAIT, which side
//     closes first, how short-lived the connections are, and how close each
//     destination is to running out of ephemeral ports;
//   - Life: one record per finished connection (tcplife), with its owner,
//     duration, bytes and how it ended.
//
// It is plain Go: no BPF, no /proc. Everything the kernel must be asked at
// report time (who holds which fd, command lines, the port range) comes in
// through options, so tests drive it with synthetic events. Every report is
// a plain struct that encoding/json marshals as it is (durations as
// integer nanoseconds in fields ending in _ns).
package diag

import (
	"bytes"
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/termsafe"
)

// Holder is a process that holds a socket in its fd table.
type Holder struct {
	PID  uint32 `json:"pid"`
	Comm string `json:"comm"` // escaped (termsafe)
	FD   int32  `json:"fd"`
}

// Holders maps a socket key (event.KeyOf) to every process holding it, as a
// walk of all fd tables found them. A socket held by no process is absent.
type Holders map[uint64][]Holder

// Add records that process pid holds the socket key as fd; comm is the
// process's name as the kernel has it (NUL padding is dropped, the rest
// escaped). For a walk such as loader.Tracer.Holders.
func (h Holders) Add(key uint64, pid uint32, fd int32, comm []byte) {
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	h[key] = append(h[key], Holder{PID: pid, FD: fd, Comm: string(termsafe.Append(nil, comm))})
}

// Age is how long a socket has been in its state. AtLeast: it entered the
// state before tracing started, so Ns is a lower bound.
type Age struct {
	Ns      int64 `json:"ns"`
	AtLeast bool  `json:"at_least,omitempty"`
}

// Duration returns the age as a time.Duration.
func (a Age) Duration() time.Duration { return time.Duration(a.Ns) }

// PortCount is a local port and how many sockets use it.
type PortCount struct {
	Port     uint16 `json:"port"`
	Count    int    `json:"count"`
	Listener bool   `json:"listener,omitempty"` // a listening socket has this port (a server side)
}

// PeerCount is a remote address and how many sockets talk to it.
type PeerCount struct {
	Addr  netip.Addr `json:"addr"`
	Count int        `json:"count"`
}

// EndpointCount is a remote address and port and how many sockets talk to it.
type EndpointCount struct {
	Endpoint netip.AddrPort `json:"endpoint"`
	Count    int            `json:"count"`
}

// commString returns the comm of a task, escaped for terminals and JSON.
func commString(t *event.Task) string {
	return string(termsafe.Append(nil, t.CommBytes()))
}

// cmdlineString turns /proc/PID/cmdline contents (NUL-separated) into one
// escaped line.
func cmdlineString(b []byte) string {
	b = bytes.TrimRight(b, "\x00")
	return string(termsafe.Append(nil, bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
}

// listenKey names a listening port of a network namespace.
type listenKey struct {
	netns uint32
	port  uint16
}

// topPorts returns the n most used ports, most first, then by port.
func topPorts(m map[uint16]int, listeners func(uint16) bool, n int) []PortCount {
	out := make([]PortCount, 0, len(m))
	for p, c := range m {
		out = append(out, PortCount{Port: p, Count: c, Listener: listeners(p)})
	}
	slices.SortFunc(out, func(a, b PortCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Port, b.Port))
	})
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

func topPeers(m map[netip.Addr]int, n int) []PeerCount {
	out := make([]PeerCount, 0, len(m))
	for a, c := range m {
		out = append(out, PeerCount{Addr: a, Count: c})
	}
	slices.SortFunc(out, func(a, b PeerCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), a.Addr.Compare(b.Addr))
	})
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

func topEndpoints(m map[netip.AddrPort]int, n int) []EndpointCount {
	out := make([]EndpointCount, 0, len(m))
	for a, c := range m {
		out = append(out, EndpointCount{Endpoint: a, Count: c})
	}
	slices.SortFunc(out, func(a, b EndpointCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), a.Endpoint.Compare(b.Endpoint))
	})
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

// unmap shows IPv4-mapped IPv6 addresses as IPv4, as people write them.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
