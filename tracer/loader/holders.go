package loader

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// Holder is one file descriptor of one process that refers to a TCP
// socket.
type Holder struct {
	Key      uint64 // the socket's table key (event.KeyOf)
	SockAddr uint64
	PID      uint32 // process (thread group) id
	FD       int32
	State    event.State // the socket's state at the walk
	Comm     [16]byte    // the process's (thread group leader's) comm
}

// holderRecSize is sizeof(struct holder_rec).
const holderRecSize = 48

// Holders walks the fd table of every process on the host (iter/task_file)
// and returns every fd that refers to a TCP socket in one of states: all
// holders of each socket, including sockets shared after fork() or passed
// over a unix socket. A socket sent over a unix socket and not yet received
// is held by no process and not returned.
func (t *Tracer) Holders(states event.StateMask) ([]Holder, error) {
	if t.objs.FindHolders == nil {
		return nil, errors.New("holders walk not loaded (Config.Holders)")
	}
	t.holdersMu.Lock()
	defer t.holdersMu.Unlock()
	if err := t.objs.HolderStates.Update(uint32(0), uint32(states), ebpf.UpdateAny); err != nil {
		return nil, fmt.Errorf("set holder states: %w", err)
	}
	it, err := link.AttachIter(link.IterOptions{Program: t.objs.FindHolders})
	if err != nil {
		return nil, fmt.Errorf("%w: attach iter/task_file: %v", ErrUnsupported, err)
	}
	defer it.Close()
	rd, err := it.Open()
	if err != nil {
		return nil, fmt.Errorf("open iter/task_file: %w", err)
	}
	defer rd.Close()
	br := bufio.NewReaderSize(retryAgain{rd}, 64<<10)
	var (
		out []Holder
		rec tcpscopeHolderRec
		buf [holderRecSize]byte
	)
	for {
		if _, err := io.ReadFull(br, buf[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, fmt.Errorf("read iter/task_file: %w", err)
		}
		if _, err := binary.Decode(buf[:], binary.LittleEndian, &rec); err != nil {
			return out, fmt.Errorf("decode holder record: %w", err)
		}
		h := Holder{Key: event.KeyOf(rec.Cookie, rec.Skaddr), SockAddr: rec.Skaddr, PID: rec.Pid, FD: rec.Fd, State: event.State(rec.State)}
		for i, c := range rec.Comm {
			h.Comm[i] = byte(c)
		}
		out = append(out, h)
	}
}
