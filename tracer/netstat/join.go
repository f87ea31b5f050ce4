package netstat

import (
	"time"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// timewaitLen is the kernel's TCP_TIMEWAIT_LEN.
const timewaitLen = 60 * time.Second

// JoinRows turns the kernel's current view of sockets (a walk: Recv-Q,
// Send-Q, timers) into rows, taking from the table how long each socket has
// been in its state. Sockets not in states (0: all) are left out. seedMono is
// the time of the table's first walk: a socket the table never saw change is
// in its state at least since then. now is the current CLOCK_MONOTONIC time.
// The walk and the table are read at different moments; a socket whose state
// differs between them gets its age from the walk alone. Without ages, Age
// stays zero and the table is not read (a lookup is a cache miss a row).
func JoinRows(socks []event.Socket, tab *table.Table, seedMono, now uint64, states event.StateMask, ages bool) []Row {
	rows := make([]Row, 0, len(socks))
	for i := range socks {
		s := &socks[i]
		if states != 0 && !states.Has(s.State) {
			continue
		}
		row := Row{Socket: *s}
		if !ages {
			rows = append(rows, row)
			continue
		}
		since, bound := s.Since, seedMono
		if e, ok := tab.Lookup(s.Key()); ok && e.State == s.State {
			if e.Since != 0 {
				since = e.Since
			} else if e.SinceBound != 0 {
				bound = e.SinceBound
			}
		}
		if since != 0 && since <= now {
			row.Age = time.Duration(now - since)
		} else {
			row.Age, row.AgeAtLeast = time.Duration(now-min(bound, now)), true
			// A TIME_WAIT timer starts at TCP_TIMEWAIT_LEN (60 s) and is only
			// ever re-armed to that again, so the time it has run is a lower
			// bound of the socket's age in TIME_WAIT.
			if s.Kind == event.TimewaitSocket && s.State == event.TimeWait && s.TimerLeft < timewaitLen {
				row.Age = max(row.Age, timewaitLen-s.TimerLeft)
			}
		}
		rows = append(rows, row)
	}
	return rows
}
