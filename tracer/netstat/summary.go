package netstat

import (
	"bufio"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// WriteTransitions prints the transitions counted since start as a matrix
// (rows: from, columns: to; only states that occur as a source or target),
// then the sockets per state. Zero cells print as ".".
//
//	Transitions since start (from -> to):
//	from \ to    ESTABLISHED  FIN_WAIT1  CLOSE
//	SYN_SENT               3          .      1
//	ESTABLISHED            .          2      .
//
//	Sockets by state:
//	  ESTABLISHED  3
//	  LISTEN       1
//	  total        4
func WriteTransitions(w io.Writer, matrix [event.MaxState + 1][event.MaxState + 1]uint64, counts [event.MaxState + 1]int) error {
	bw := bufio.NewWriter(w)
	var from, to []event.State
	for s := event.State(0); s <= event.MaxState; s++ {
		var rowSum, colSum uint64
		for t := event.State(0); t <= event.MaxState; t++ {
			rowSum += matrix[s][t]
			colSum += matrix[t][s]
		}
		if rowSum != 0 {
			from = append(from, s)
		}
		if colSum != 0 {
			to = append(to, s)
		}
	}
	bw.WriteString("Transitions since start (from -> to):\n")
	if len(from) == 0 {
		bw.WriteString("  none\n")
	} else {
		const corner = "from \\ to"
		first := len(corner)
		for _, s := range from {
			first = max(first, len(s.String()))
		}
		widths := make([]int, len(to))
		for j, t := range to {
			widths[j] = len(t.String())
			for _, s := range from {
				widths[j] = max(widths[j], len(strconv.FormatUint(matrix[s][t], 10)))
			}
		}
		var b []byte
		b = padRight(b, corner, first)
		for j, t := range to {
			b = append(b, "  "...)
			b = padLeft(b, t.String(), widths[j])
		}
		bw.Write(append(b, '\n'))
		for _, s := range from {
			b = padRight(b[:0], s.String(), first)
			for j, t := range to {
				cell := "."
				if matrix[s][t] != 0 {
					cell = strconv.FormatUint(matrix[s][t], 10)
				}
				b = append(b, "  "...)
				b = padLeft(b, cell, widths[j])
			}
			bw.Write(append(b, '\n'))
		}
	}
	bw.WriteString("\nSockets by state:\n")
	writeCounts(bw, counts[:], "  ")
	return bw.Flush()
}

// writeCounts prints one "STATE  count" line per state with sockets, then
// the total, names padded to the widest and counts right-aligned.
func writeCounts(w *bufio.Writer, counts []int, indent string) {
	total := 0
	nameW, numW := len("total"), 1
	for s, n := range counts {
		if n == 0 {
			continue
		}
		total += n
		nameW = max(nameW, len(event.State(s).String()))
	}
	numW = max(numW, len(strconv.Itoa(total)))
	var b []byte
	line := func(name string, n int) {
		b = append(b[:0], indent...)
		b = padRight(b, name, nameW)
		b = append(b, "  "...)
		b = padLeft(b, strconv.Itoa(n), numW)
		w.Write(append(b, '\n'))
	}
	for s, n := range counts {
		if n != 0 {
			line(event.State(s).String(), n)
		}
	}
	line("total", total)
}

// StateCounts is the number of sockets per state, indexed by event.State.
type StateCounts [event.MaxState + 1]int

// CountStates counts rows per network namespace and state. A request socket
// counts as SYN_RECV, as netstat shows it.
func CountStates(rows []Row) map[uint32]*StateCounts {
	m := make(map[uint32]*StateCounts)
	for i := range rows {
		r := &rows[i]
		c := m[r.NetNS]
		if c == nil {
			c = new(StateCounts)
			m[r.NetNS] = c
		}
		st := r.State
		if st == event.NewSynRecv {
			st = event.SynRecv
		}
		if st <= event.MaxState {
			c[st]++
		}
	}
	return m
}

// WriteSummary prints socket counts per state (ss -s style, simpler): one
// line per state that has sockets, in the kernel's state order, then the
// total, for all namespaces together. With perNetNS and more than one
// namespace, it then prints the same block for each namespace, in
// ascending inode order, headed "netns INODE:" and indented.
//
//	Sockets by state:
//	  ESTABLISHED  12
//	  LISTEN        4
//	  total        16
func WriteSummary(w io.Writer, byNetNS map[uint32]*StateCounts, perNetNS bool) error {
	bw := bufio.NewWriter(w)
	var all StateCounts
	ns := make([]uint32, 0, len(byNetNS))
	for id, c := range byNetNS {
		ns = append(ns, id)
		for s, n := range c {
			all[s] += n
		}
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	bw.WriteString("Sockets by state:\n")
	writeCounts(bw, all[:], "  ")
	if perNetNS && len(ns) > 1 {
		for _, id := range ns {
			bw.WriteString("\nnetns " + strconv.FormatUint(uint64(id), 10) + ":\n")
			writeCounts(bw, byNetNS[id][:], strings.Repeat(" ", 4))
		}
	}
	return bw.Flush()
}
