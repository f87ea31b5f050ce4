package loader

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/cilium/ebpf/link"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// OwnerSeed says how the owners of sockets that already exist at start are
// found (sockets made later are attributed by their events).
type OwnerSeed int

const (
	// OwnersInKernel walks every fd table at start and keeps each socket's
	// owner in its BPF socket storage, so that every later event of the
	// socket carries it: for tracers that run on.
	OwnersInKernel OwnerSeed = iota
	// OwnersAtWalk walks every fd table at start, keeps the owners in user
	// space and fills them into the sockets of each walk (Sockets,
	// AllSockets). Several times cheaper at start than OwnersInKernel
	// (no socket storage is created), but events of those sockets do not
	// carry their owner: for one-shot views.
	OwnersAtWalk
	// OwnersNone does not look for them: for views that show no owners.
	OwnersNone
)

// ownerRec is one struct owner_rec: a socket fd found by list_owners.
type ownerRec struct {
	pid, tid uint32
	fd       int32
	comm     [16]byte
}

// struct owner_rec's layout (pinned against bpf2go's in a test).
const (
	ownerRecSize = 40
	ooffCookie   = 0
	ooffPID      = 8
	ooffTID      = 12
	ooffFD       = 16
	ooffComm     = 24
)

func ownerRecLayout() map[string]uintptr {
	return map[string]uintptr{"Cookie": ooffCookie, "Pid": ooffPID, "Tid": ooffTID, "Fd": ooffFD, "Comm": ooffComm}
}

// listOwners runs iter/task_file once and keeps its owners by socket
// cookie. The first fd found for a socket wins, as with seedOwners.
func (t *Tracer) listOwners() error {
	it, err := link.AttachIter(link.IterOptions{Program: t.objs.ListOwners})
	if err != nil {
		t.warnings = append(t.warnings, fmt.Sprintf("owners of existing sockets unknown: attach iter/task_file: %v", err))
		return nil
	}
	defer it.Close()
	rd, err := it.Open()
	if err != nil {
		return fmt.Errorf("open iter/task_file: %w", err)
	}
	defer rd.Close()
	// Read whole, then size the map once: growing a map of a million
	// entries step by step costs more than the walk.
	buf, err := io.ReadAll(retryAgain{rd})
	if err != nil {
		return fmt.Errorf("run iter/task_file: %w", err)
	}
	if len(buf)%ownerRecSize != 0 {
		return fmt.Errorf("iter/task_file: %d bytes is not a whole number of %d-byte records", len(buf), ownerRecSize)
	}
	t.owners = make(map[uint64]ownerRec, len(buf)/ownerRecSize)
	le := binary.LittleEndian
	for b := buf; len(b) >= ownerRecSize; b = b[ownerRecSize:] {
		cookie := le.Uint64(b[ooffCookie:])
		if _, dup := t.owners[cookie]; dup || cookie == 0 {
			continue
		}
		o := ownerRec{pid: le.Uint32(b[ooffPID:]), tid: le.Uint32(b[ooffTID:]), fd: int32(le.Uint32(b[ooffFD:]))}
		copy(o.comm[:], b[ooffComm:ooffComm+16])
		t.owners[cookie] = o
	}
	return nil
}

// joinOwner fills in the owner listOwners found for a full socket whose
// owner the kernel side does not know. An owner learned from an event wins,
// as socket storage did with seedOwners; the walk only adds its fd.
func (t *Tracer) joinOwner(s *event.Socket) {
	if t.owners == nil || s.Kind != event.FullSocket || s.Cookie == 0 {
		return
	}
	o, ok := t.owners[s.Cookie]
	switch {
	case !ok:
	case !s.OwnerKnown:
		s.OwnerKnown, s.Source = true, event.OwnerIter
		s.Owner = event.Task{PID: o.pid, TID: o.tid, Comm: o.comm}
		s.FD = o.fd
	case s.FD < 0 && s.Owner.PID == o.pid:
		s.FD = o.fd
	}
}
