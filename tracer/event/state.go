package event

import (
	"fmt"
	"strings"
)

// State is a TCP state with the kernel's numbering (include/net/tcp_states.h).
type State uint8

const (
	Established State = 1
	SynSent     State = 2
	SynRecv     State = 3
	FinWait1    State = 4
	FinWait2    State = 5
	TimeWait    State = 6
	Close       State = 7
	CloseWait   State = 8
	LastAck     State = 9
	Listen      State = 10
	Closing     State = 11
	NewSynRecv  State = 12
)

// MaxState is the highest state number the kernel uses.
const MaxState = NewSynRecv

// names are netstat's spellings; ssNames are ss's.
var names = [...]string{
	Established: "ESTABLISHED",
	SynSent:     "SYN_SENT",
	SynRecv:     "SYN_RECV",
	FinWait1:    "FIN_WAIT1",
	FinWait2:    "FIN_WAIT2",
	TimeWait:    "TIME_WAIT",
	Close:       "CLOSE",
	CloseWait:   "CLOSE_WAIT",
	LastAck:     "LAST_ACK",
	Listen:      "LISTEN",
	Closing:     "CLOSING",
	NewSynRecv:  "NEW_SYN_RECV",
}

var ssNames = [...]string{
	Established: "established",
	SynSent:     "syn-sent",
	SynRecv:     "syn-recv",
	FinWait1:    "fin-wait-1",
	FinWait2:    "fin-wait-2",
	TimeWait:    "time-wait",
	Close:       "unconnected",
	CloseWait:   "close-wait",
	LastAck:     "last-ack",
	Listen:      "listening",
	Closing:     "closing",
	NewSynRecv:  "new-syn-recv",
}

// Valid reports whether s is a state the kernel defines.
func (s State) Valid() bool { return s >= Established && s <= MaxState }

// String returns netstat's name for the state.
func (s State) String() string {
	if s.Valid() {
		return names[s]
	}
	return fmt.Sprintf("STATE(%d)", uint8(s))
}

// ParseState accepts netstat's names (TIME_WAIT), ss's (time-wait,
// fin-wait-1, listening, unconnected) and close variants of both, in any
// case.
func ParseState(s string) (State, error) {
	norm := strings.ToUpper(strings.NewReplacer("-", "_", " ", "_").Replace(strings.TrimSpace(s)))
	for st := Established; st <= MaxState; st++ {
		if norm == names[st] || norm == strings.ToUpper(strings.ReplaceAll(ssNames[st], "-", "_")) {
			return st, nil
		}
	}
	switch norm {
	case "FIN_WAIT_1":
		return FinWait1, nil
	case "FIN_WAIT_2":
		return FinWait2, nil
	case "CLOSED":
		return Close, nil
	}
	return 0, fmt.Errorf("unknown TCP state %q (want e.g. ESTABLISHED, TIME_WAIT, close-wait, listen)", s)
}

// StateMask is a set of states, bit (1 << state).
type StateMask uint32

// Has reports whether st is in the set.
func (m StateMask) Has(st State) bool { return m&(1<<st) != 0 }

// With returns the set plus st.
func (m StateMask) With(st State) StateMask { return m | 1<<st }
