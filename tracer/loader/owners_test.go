package loader

import (
	"testing"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// TestJoinEvent: the fd walk's owner fills in only transitions whose owner
// the kernel side does not know, matched by socket inode.
func TestJoinEvent(t *testing.T) {
	seeded := ownerRec{pid: 42, tid: 43, fd: 7}
	copy(seeded.comm[:], "seeded")
	tr := &Tracer{owners: map[uint64]uint32{1000: 0}, ownerList: []ownerRec{seeded}}
	kernel := event.Task{PID: 9, TID: 9}
	copy(kernel.Comm[:], "kernel")

	for _, c := range []struct {
		name      string
		in        event.Event
		wantPID   uint32
		wantSrc   event.OwnerSource
		wantKnown bool
	}{
		{"unknown owner, walked inode", event.Event{Inode: 1000}, 42, event.OwnerIter, true},
		{"unknown owner, other inode", event.Event{Inode: 1001}, 0, event.OwnerNone, false},
		{"unknown owner, no inode", event.Event{}, 0, event.OwnerNone, false},
		{"kernel owner wins", event.Event{Inode: 1000, Flags: event.OwnerKnown, Owner: kernel, Source: event.OwnerSyscall}, 9, event.OwnerSyscall, true},
		{"timer record", event.Event{Inode: 1000, Kind: event.TimewaitStart}, 0, event.OwnerNone, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := c.in
			tr.joinEvent(&e)
			known := e.Flags&event.OwnerKnown != 0
			if known != c.wantKnown || e.Owner.PID != c.wantPID || e.Source != c.wantSrc {
				t.Errorf("owner %d source %v known %v, want %d %v %v", e.Owner.PID, e.Source, known, c.wantPID, c.wantSrc, c.wantKnown)
			}
			if c.wantSrc == event.OwnerIter && (string(e.Owner.CommBytes()) != "seeded" || e.Owner.TID != 43) {
				t.Errorf("owner task %+v, want the walk's", e.Owner)
			}
		})
	}
}
