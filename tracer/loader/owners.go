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
	// OwnersOnEvents walks every fd table at start, keeps the owners in
	// user space and fills them into the sockets of each walk and into
	// every event of those sockets whose owner the kernel side does not
	// know: for tracers that run on.
	OwnersOnEvents OwnerSeed = iota
	// OwnersAtWalk is OwnersOnEvents without the events: for one-shot
	// views.
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
	ooffInode    = 0
	ooffPID      = 8
	ooffTID      = 12
	ooffFD       = 16
	ooffComm     = 24
)

func ownerRecLayout() map[string]uintptr {
	return map[string]uintptr{"Inode": ooffInode, "Pid": ooffPID, "Tid": ooffTID, "Fd": ooffFD, "Comm": ooffComm}
}

// listOwners starts iter/task_file and reads it in the background: the fd
// walk and the first socket walk then run on two CPUs at once. The first
// walk, and Run before its first event, wait for it (awaitOwners).
func (t *Tracer) listOwners() error {
	it, err := link.AttachIter(link.IterOptions{Program: t.objs.ListOwners})
	if err != nil {
		t.warnings = append(t.warnings, fmt.Sprintf("owners of existing sockets unknown: attach iter/task_file: %v", err))
		return nil
	}
	rd, err := it.Open()
	if err != nil {
		it.Close()
		return fmt.Errorf("open iter/task_file: %w", err)
	}
	t.ownersDone = make(chan struct{})
	go func() {
		defer close(t.ownersDone)
		defer it.Close()
		defer rd.Close()
		t.ownersErr = t.readOwners(rd)
	}()
	return nil
}

// awaitOwners waits for listOwners's background read; nil without one.
func (t *Tracer) awaitOwners() error {
	if t.ownersDone == nil {
		return nil
	}
	<-t.ownersDone
	return t.ownersErr
}

// readOwners reads list_owners's records and keeps them by socket inode,
// the key netstat -p and ss -p use: every event and walk record of a
// socket that has a file carries it, whether or not the socket has a
// cookie yet. The first fd found for a socket wins.
func (t *Tracer) readOwners(rd io.Reader) error {
	// Read whole, then size the map once: growing a map of a million
	// entries step by step costs more than the walk.
	buf, err := io.ReadAll(retryAgain{rd})
	if err != nil {
		return fmt.Errorf("run iter/task_file: %w", err)
	}
	if len(buf)%ownerRecSize != 0 {
		return fmt.Errorf("iter/task_file: %d bytes is not a whole number of %d-byte records", len(buf), ownerRecSize)
	}
	// By inode, an index into ownerList: a map of small values is several
	// times faster to fill and to probe than one holding the records. Filled
	// from the last record to the first, so that plain stores leave the
	// first fd found for each socket (one probe per record, not two).
	n := len(buf) / ownerRecSize
	owners := make(map[uint64]uint32, n)
	list := make([]ownerRec, n)
	le := binary.LittleEndian
	for i := n - 1; i >= 0; i-- {
		b := buf[i*ownerRecSize : (i+1)*ownerRecSize]
		inode := le.Uint64(b[ooffInode:])
		if inode == 0 {
			continue
		}
		o := &list[i]
		o.pid, o.tid, o.fd = le.Uint32(b[ooffPID:]), le.Uint32(b[ooffTID:]), int32(le.Uint32(b[ooffFD:]))
		copy(o.comm[:], b[ooffComm:ooffComm+16])
		owners[inode] = uint32(i)
	}
	t.owners, t.ownerList = owners, list
	return nil
}

// ownersReady reports whether awaitOwners would return at once.
func (t *Tracer) ownersReady() bool {
	if t.ownersDone == nil {
		return true
	}
	select {
	case <-t.ownersDone:
		return true
	default:
		return false
	}
}

// joinOwners fills in the owners listOwners found (see joinOwner).
func (t *Tracer) joinOwners(socks []event.Socket) error {
	if err := t.awaitOwners(); err != nil {
		return err
	}
	if t.owners == nil {
		return nil
	}
	for i := range socks {
		t.joinOwner(&socks[i])
	}
	return nil
}

// joinOwner fills in the owner listOwners found for a full socket whose
// owner the kernel side does not know. An owner learned from an event wins;
// the walk only adds its fd.
func (t *Tracer) joinOwner(s *event.Socket) {
	if s.Kind != event.FullSocket || s.Inode == 0 {
		return
	}
	i, ok := t.owners[s.Inode]
	if !ok {
		return
	}
	o := &t.ownerList[i]
	switch {
	case !s.OwnerKnown:
		s.OwnerKnown, s.Source = true, event.OwnerIter
		s.Owner = event.Task{PID: o.pid, TID: o.tid, Comm: o.comm}
		s.FD = o.fd
	case s.FD < 0 && s.Owner.PID == o.pid:
		s.FD = o.fd
	}
}

// joinEvent fills in the owner listOwners found for a transition whose
// owner the kernel side does not know: a socket from before start, until
// its owner makes a syscall on it. Only Run calls it, after awaitOwners;
// t.owners is not written after that.
func (t *Tracer) joinEvent(e *event.Event) {
	if e.Flags&event.OwnerKnown != 0 || e.Kind != event.Transition || e.Inode == 0 {
		return
	}
	i, ok := t.owners[e.Inode]
	if !ok {
		return
	}
	o := &t.ownerList[i]
	e.Flags |= event.OwnerKnown
	e.Source = event.OwnerIter
	e.Owner = event.Task{PID: o.pid, TID: o.tid, Comm: o.comm}
}
