// Package netstat prints tcpscope's socket table the way net-tools netstat
// prints its TCP section (`netstat -t` with -a/-l, -n, -W, -e, -p, -o, -4/-6),
// line for line, so that people and scripts used to netstat read the same
// text. It also prints the table as JSON, netstat -st's statistics, and two
// tcpscope summaries (state counts and the transition matrix).
//
// Known, deliberate differences from netstat:
//   - -p prints pid/comm of the owner tcpscope attributed (netstat prints the
//     basename of argv[0] from /proc/PID/cmdline); comm is made terminal-safe.
//   - the optional Age column is tcpscope's own.
//   - an IPv4 address ending in .0 is printed numerically (netstat looks it up
//     in /etc/networks instead of the host tables).
package netstat

import (
	"bufio"
	"io"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tcpscope/tcpscope/tracer/cgroup"
	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/termsafe"
)

// Row is one socket to print.
type Row struct {
	event.Socket
	Age        time.Duration // time in current state
	AgeAtLeast bool          // socket predates tracing: Age is a lower bound (printed ">=1m2s")
}

// Options mirror netstat's flags.
type Options struct {
	All, Listening bool // -a, -l (neither: only non-listening sockets, as netstat)
	// -n sets all three; --numeric-hosts, --numeric-ports, --numeric-users one each.
	NumericHosts, NumericPorts, NumericUsers bool
	Wide                                     bool // -W: no address truncation
	Extend                                   int  // -e: User and Inode columns (netstat's -ee adds nothing more for TCP)
	Program                                  bool // -p: PID/Program name
	Timers                                   bool // -o: Timer column
	Age                                      bool // tcpscope extra: Age column appended at the end
	Family                                   event.Family
	JSON                                     bool // one JSON object per socket instead of text
	// NoHeader omits the two header lines. netstat itself never does: its -c
	// mode reprints both header lines on every round.
	NoHeader bool
	Resolver Resolver                        // nil: DefaultResolver
	Services Services                        // nil: /etc/services
	Users    func(uid uint32) (string, bool) // nil: os/user, cached
	// Wall converts a kernel CLOCK_MONOTONIC time to wall time for JSON's
	// "since"; nil omits "since".
	Wall func(mono uint64) time.Time
	// ProgramName returns the name netstat -p would show for a process (the
	// base name of its argv[0]); nil, or false, shows the kernel's comm.
	ProgramName func(pid uint32) ([]byte, bool)
	// Cgroup, when set, adds the owner's "cgroup" and "container" to JSON
	// rows (null when the owner or its cgroup is not known).
	Cgroup func(pid uint32) cgroup.Info
	// LookupBudget bounds the time spent on host name lookups for one
	// Write (0: one second). Names not found in time print numerically.
	LookupBudget time.Duration
}

// Header lines, as net-tools 2.10 prints them (trailing blanks included).
const (
	titleAll    = "Active Internet connections (servers and established)"
	titleListen = "Active Internet connections (only servers)"
	titleConn   = "Active Internet connections (w/o servers)"
	colBase     = "Proto Recv-Q Send-Q Local Address           Foreign Address         State      "
	colExtend   = " User       Inode     "
	colProgram  = " PID/Program name    "
	colTimer    = " Timer"
	colAge      = " Age"
)

// addrShort is netstat's budget for host+port before it truncates (the
// column is 23 wide: host, ':' and port).
const addrShort = 22

// progWidth is netstat's PID/Program name column; it keeps at most
// progWidth-1 bytes of "pid/name".
const progWidth = 20

// Write prints rows as netstat prints its TCP sockets: IPv4 rows (tcp) before
// IPv6 rows (tcp6), each group in input order, filtered by opts.
func Write(w io.Writer, rows []Row, opts Options) error {
	sel := selectRows(rows, opts)
	bw := bufio.NewWriterSize(w, 64<<10)
	if opts.JSON {
		var b []byte
		for _, r := range sel {
			b = appendJSON(b[:0], r, opts)
			b = append(b, '\n')
			if _, err := bw.Write(b); err != nil {
				return err
			}
		}
		return bw.Flush()
	}
	n := newNamer(opts)
	n.resolveAll(sel)
	if !opts.NoHeader {
		bw.WriteString(headerLines(opts))
	}
	var b []byte
	for _, r := range sel {
		b = n.appendRow(b[:0], r)
		if _, err := bw.Write(b); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func headerLines(opts Options) string {
	s := titleConn
	switch {
	case opts.All:
		s = titleAll
	case opts.Listening:
		s = titleListen
	}
	s += "\n" + colBase
	if opts.Extend > 0 {
		s += colExtend
	}
	if opts.Program {
		s += colProgram
	}
	if opts.Timers {
		s += colTimer
	}
	if opts.Age {
		s += colAge
	}
	return s + "\n"
}

// selectRows applies netstat's filters and order. Like netstat, "listening"
// means "no remote port": netstat decides on the remote port, not the state.
func selectRows(rows []Row, opts Options) []*Row {
	var v4, v6 []*Row
	for i := range rows {
		r := &rows[i]
		if opts.Family != event.FamilyUnknown && r.Family != opts.Family {
			continue
		}
		if !opts.All {
			listening := r.Remote.Port() == 0
			if listening != opts.Listening {
				continue
			}
		}
		if r.Family == event.IPv6 {
			v6 = append(v6, r)
		} else {
			v4 = append(v4, r)
		}
	}
	return append(v4, v6...)
}

// netstatStates are netstat's tcp_state names; a request socket
// (NEW_SYN_RECV) is SYN_RECV in /proc/net/tcp and so in netstat.
func stateName(s event.State) string {
	if s == event.NewSynRecv {
		return event.SynRecv.String()
	}
	return s.String()
}

func (n *namer) appendRow(b []byte, r *Row) []byte {
	if r.Family == event.IPv6 {
		b = append(b, "tcp6  "...)
	} else {
		b = append(b, "tcp   "...)
	}
	b = appendUintLeft(b, uint64(r.RecvQ), 6)
	b = append(b, ' ')
	b = appendUintLeft(b, uint64(r.SendQ), 6)
	b = append(b, ' ')
	start := len(b)
	b = n.appendAddr(b, r.Local)
	b = padTo(b, start+23)
	b = append(b, ' ')
	start = len(b)
	b = n.appendAddr(b, r.Remote)
	b = padTo(b, start+23)
	b = append(b, ' ')
	b = padRight(b, stateName(r.State), 11)
	if n.opts.Extend > 0 {
		b = append(b, ' ')
		b = padRight(b, n.user(r.UID), 10)
		b = append(b, ' ')
		start := len(b)
		b = strconv.AppendUint(b, r.Inode, 10)
		b = padTo(b, start+10)
	}
	if n.opts.Program {
		b = append(b, ' ')
		start := len(b)
		b = appendProgram(b, r, n.opts.ProgramName)
		b = padTo(b, start+progWidth)
	}
	if n.opts.Timers {
		b = append(b, ' ')
		b = appendTimer(b, r)
	}
	if n.opts.Age {
		b = append(b, ' ')
		b = append(b, formatAge(r.Age, r.AgeAtLeast)...)
	}
	return append(b, '\n')
}

// appendProgram writes netstat's "pid/name", or "-" for a socket no process
// holds (inode 0: orphan, timewait, request, not yet accepted) or whose owner
// is unknown. netstat keeps progWidth-1 bytes of it; the name is cut at a
// character boundary and then made terminal-safe.
func appendProgram(b []byte, r *Row, programName func(uint32) ([]byte, bool)) []byte {
	if r.Inode == 0 || !r.OwnerKnown {
		return append(b, '-')
	}
	pidStart := len(b)
	b = strconv.AppendUint(b, uint64(r.Owner.PID), 10)
	pidLen := len(b) - pidStart
	b = append(b, '/')
	comm := r.Owner.CommBytes()
	if programName != nil {
		if name, ok := programName(r.Owner.PID); ok {
			comm = name
		}
	}
	room := progWidth - 1 - pidLen - 1
	if room < 0 {
		room = 0
	}
	if len(comm) > room {
		cut := room
		for cut > 0 && cut < len(comm) && !utf8.RuneStart(comm[cut]) {
			cut--
		}
		comm = comm[:cut]
	}
	return termsafe.Append(b, comm)
}

// timerTicks converts the time left to USER_HZ (100 Hz) clock ticks, rounding
// down as the kernel's jiffies_delta_to_clock_t does.
func timerTicks(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(d / (10 * time.Millisecond))
}

// appendTimer writes netstat -o's Timer column, e.g. "on (0.20/3/0)".
func appendTimer(b []byte, r *Row) []byte {
	switch r.Timer {
	case event.TimerOff:
		b = append(b, "off (0.00/"...)
		b = strconv.AppendUint(b, uint64(r.Retransmits), 10)
		b = append(b, '/')
		b = strconv.AppendUint(b, uint64(r.Probes), 10)
		return append(b, ')')
	case event.TimerRetransmit:
		b = append(b, "on"...)
	case event.TimerKeepalive:
		b = append(b, "keepalive"...)
	case event.TimerTimewait:
		b = append(b, "timewait"...)
	case event.TimerProbe:
		b = append(b, "probe"...)
	default:
		b = append(b, "unkn-"...)
		b = strconv.AppendUint(b, uint64(r.Timer), 10)
	}
	t := timerTicks(r.TimerLeft)
	b = append(b, " ("...)
	b = strconv.AppendInt(b, t/100, 10)
	b = append(b, '.', byte('0'+t%100/10), byte('0'+t%10), '/')
	b = strconv.AppendUint(b, uint64(r.Retransmits), 10)
	b = append(b, '/')
	b = strconv.AppendUint(b, uint64(r.Probes), 10)
	return append(b, ')')
}

// formatAge prints the Age column: milliseconds below a second, whole
// seconds above, ">=" before a lower bound.
func formatAge(d time.Duration, atLeast bool) string {
	if d < 0 {
		d = 0
	}
	if d < time.Second {
		d = d.Round(time.Millisecond)
	} else {
		d = d.Round(time.Second)
	}
	s := d.String()
	if atLeast {
		s = ">=" + s
	}
	return s
}

// appendJoined writes host:port as netstat's addr_do_one does: unless wide,
// a pair longer than addrShort keeps at most addrShort-4 bytes of the port
// name and cuts the host so that the whole is addrShort+1 bytes.
func appendJoined(b, host, port []byte, wide bool) []byte {
	if !wide && len(host)+len(port) > addrShort {
		pl := min(len(port), addrShort-4)
		hl := min(addrShort-pl, len(host))
		host, port = host[:hl], port[:pl]
	}
	b = append(b, host...)
	b = append(b, ':')
	return append(b, port...)
}

// numericHost is netstat's numeric spelling of an address (see
// appendNumericHost).
func numericHost(a netip.Addr, numeric bool) string {
	return string(appendNumericHost(nil, a, numeric))
}

// appendNumericHost writes netstat's numeric spelling of an address. IPv6's
// unspecified address is "::" with -n and "[::]" without; IPv4-mapped
// addresses print as plain IPv4.
func appendNumericHost(b []byte, a netip.Addr, numeric bool) []byte {
	if a.Is4In6() {
		return a.Unmap().AppendTo(b)
	}
	if a.Is6() && a.IsUnspecified() && !numeric {
		return append(b, "[::]"...)
	}
	if a.Is6() {
		return appendNtop6(b, a.As16())
	}
	return a.AppendTo(b)
}

// ntop6 formats an IPv6 address as glibc's inet_ntop does: the first longest
// run of two or more zero groups becomes "::", and an IPv4-compatible
// (::a.b.c.d) or -mapped address ends in dotted IPv4.
func ntop6(a [16]byte) string { return string(appendNtop6(nil, a)) }

func appendNtop6(b []byte, a [16]byte) []byte {
	var words [8]uint16
	for i := range words {
		words[i] = uint16(a[2*i])<<8 | uint16(a[2*i+1])
	}
	bestBase, bestLen := -1, 0
	for i := 0; i < 8; {
		if words[i] != 0 {
			i++
			continue
		}
		j := i
		for j < 8 && words[j] == 0 {
			j++
		}
		if j-i > bestLen {
			bestBase, bestLen = i, j-i
		}
		i = j
	}
	if bestLen < 2 {
		bestBase = -1
	}
	for i := 0; i < 8; i++ {
		if bestBase >= 0 && i >= bestBase && i < bestBase+bestLen {
			if i == bestBase {
				b = append(b, ':')
			}
			continue
		}
		if i != 0 {
			b = append(b, ':')
		}
		if i == 6 && bestBase == 0 && (bestLen == 6 || (bestLen == 5 && words[5] == 0xffff)) {
			return netip.AddrFrom4([4]byte(a[12:16])).AppendTo(b)
		}
		b = strconv.AppendUint(b, uint64(words[i]), 16)
	}
	if bestBase >= 0 && bestBase+bestLen == 8 {
		b = append(b, ':')
	}
	return b
}

// appendUintLeft writes v right-aligned in w columns.
func appendUintLeft(b []byte, v uint64, w int) []byte {
	var d [20]byte
	digits := strconv.AppendUint(d[:0], v, 10)
	for i := len(digits); i < w; i++ {
		b = append(b, ' ')
	}
	return append(b, digits...)
}

func padLeft(b []byte, s string, w int) []byte {
	for i := len(s); i < w; i++ {
		b = append(b, ' ')
	}
	return append(b, s...)
}

func padRight(b []byte, s string, w int) []byte {
	b = append(b, s...)
	for i := len(s); i < w; i++ {
		b = append(b, ' ')
	}
	return b
}

func padTo(b []byte, end int) []byte {
	for len(b) < end {
		b = append(b, ' ')
	}
	return b
}
