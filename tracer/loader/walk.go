package loader

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// iter/tcp walks the network namespace of the task that opens it, so other
// namespaces are walked from a thread that has entered them.

// Sockets walks the TCP sockets of the caller's network namespace (full,
// timewait and request sockets) and appends them to dst.
func (t *Tracer) Sockets(dst []event.Socket) ([]event.Socket, error) {
	dst = slices.Grow(dst, socketCountHint())
	it, err := t.tcpIter()
	if err != nil {
		return dst, err
	}
	rd, err := it.Open()
	if err != nil {
		return dst, fmt.Errorf("open iter/tcp: %w", err)
	}
	defer rd.Close()
	return t.readSockets(rd, dst)
}

// SocketsIn walks the TCP sockets of the network namespace at nsPath (e.g.
// /run/netns/NAME or /proc/PID/ns/net).
func (t *Tracer) SocketsIn(nsPath string, dst []event.Socket) ([]event.Socket, error) {
	it, err := t.tcpIter()
	if err != nil {
		return dst, err
	}
	target, err := os.Open(nsPath)
	if err != nil {
		return dst, fmt.Errorf("open network namespace: %w", err)
	}
	defer target.Close()

	rd, err := openIn(it, int(target.Fd()))
	if err != nil {
		return dst, fmt.Errorf("walk sockets of %s: %w", nsPath, err)
	}
	defer rd.Close()
	return t.readSockets(rd, dst)
}

// openIn opens the iterator from a thread inside the namespace nsFD. The
// namespace is fixed when the iterator is opened; reading can happen anywhere.
func openIn(it *link.Iter, nsFD int) (io.ReadCloser, error) {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("%w: %v", errThread, err)
	}
	defer self.Close()
	if err := unix.Setns(nsFD, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		// EINVAL: the file is no namespace (yet, or any more: `ip netns`
		// leaves an empty file while it adds or deletes one). AllSockets
		// skips such a namespace and reports it, like any other it cannot
		// enter.
		return nil, fmt.Errorf("setns: %w", err)
	}
	rd, openErr := it.Open()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// This thread stays in the wrong namespace: keep it locked so the
		// runtime discards it when the goroutine ends.
		if rd != nil {
			rd.Close()
		}
		return nil, fmt.Errorf("%w: return to own network namespace: %v", errThread, err)
	}
	runtime.UnlockOSThread()
	return rd, openErr
}

// Namespace is a network namespace found on the host.
type Namespace struct {
	Inode uint32
	Path  string // a path that refers to it ("" for the caller's own)
}

// Namespaces lists the network namespaces a walk can reach: the caller's,
// those of every process (/proc/PID/ns/net), and those bound under
// /run/netns. A namespace kept alive only by its sockets cannot be entered.
func Namespaces() ([]Namespace, error) {
	own, err := OwnNetNS()
	if err != nil {
		return nil, err
	}
	seen := map[uint32]bool{own: true}
	out := []Namespace{{Inode: own}}
	add := func(path string) {
		var st unix.Stat_t
		if unix.Stat(path, &st) != nil || seen[uint32(st.Ino)] {
			return
		}
		seen[uint32(st.Ino)] = true
		out = append(out, Namespace{Inode: uint32(st.Ino), Path: path})
	}
	if bound, err := filepath.Glob("/run/netns/*"); err == nil {
		for _, p := range bound {
			add(p)
		}
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return out, fmt.Errorf("list processes: %w", err)
	}
	for _, p := range procs {
		if c := p.Name()[0]; c < '0' || c > '9' {
			continue
		}
		add("/proc/" + p.Name() + "/ns/net")
	}
	return out, nil
}

// SkippedNamespace is a network namespace a walk could not enter or read.
type SkippedNamespace struct {
	Namespace
	Err error
}

// PartialWalkError is returned by AllSockets, with its sockets and walked
// set still valid, when some namespaces could not be walked: without
// CAP_SYS_ADMIN setns fails with EPERM, `ip netns add` creates its
// /run/netns file a moment before it mounts the namespace there, and a
// namespace can die between listing and entering it. One such namespace must
// not cost the others their walk; the caller keeps what it knew of the
// skipped ones (they are not in the walked set).
type PartialWalkError struct {
	Skipped []SkippedNamespace
}

func (e *PartialWalkError) Error() string {
	parts := make([]string, len(e.Skipped))
	for i, s := range e.Skipped {
		parts[i] = fmt.Sprintf("%s (netns %d): %v", s.Path, s.Inode, s.Err)
	}
	return fmt.Sprintf("%d network namespaces not walked: %s", len(e.Skipped), strings.Join(parts, "; "))
}

// errThread marks a failure that is not the target namespace's fault.
var errThread = errors.New("walking thread")

// AllSockets walks every reachable network namespace. It returns the
// sockets and the inodes of the namespaces it walked. A namespace that
// vanished during the walk is skipped silently; one that could not be
// entered or read is skipped and reported in a *PartialWalkError (the
// results are still valid). Other errors (the caller's own namespace, the
// iterator itself) abort the walk.
func (t *Tracer) AllSockets(dst []event.Socket) ([]event.Socket, map[uint32]bool, error) {
	nss, err := Namespaces()
	if err != nil {
		return dst, nil, err
	}
	if _, err := t.tcpIter(); err != nil {
		return dst, nil, err
	}
	walked := map[uint32]bool{}
	var partial *PartialWalkError
	for _, ns := range nss {
		if ns.Path == "" {
			if dst, err = t.Sockets(dst); err != nil {
				return dst, walked, err
			}
			walked[ns.Inode] = true
			continue
		}
		before := len(dst)
		if dst, err = t.SocketsIn(ns.Path, dst); err != nil {
			dst = dst[:before] // nothing half-read of a skipped namespace
			switch {
			case errors.Is(err, errThread):
				return dst, walked, err
			case errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH):
				// Gone: nothing left to show or keep.
			default:
				if partial == nil {
					partial = &PartialWalkError{}
				}
				partial.Skipped = append(partial.Skipped, SkippedNamespace{ns, err})
			}
			continue
		}
		walked[ns.Inode] = true
	}
	if partial != nil {
		return dst, walked, partial
	}
	return dst, walked, nil
}

// OwnSockets walks only the caller's network namespace, in AllSockets's
// form. A one-shot view of its own namespace needs no other: each extra
// namespace costs a scan of the whole (host-wide) established hash.
func (t *Tracer) OwnSockets(dst []event.Socket) ([]event.Socket, map[uint32]bool, error) {
	own, err := OwnNetNS()
	if err != nil {
		return dst, nil, err
	}
	if dst, err = t.Sockets(dst); err != nil {
		return dst, nil, err
	}
	return dst, map[uint32]bool{own: true}, nil
}

// OwnNetNS returns the inode of the caller's network namespace.
func OwnNetNS() (uint32, error) {
	var own unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &own); err != nil {
		return 0, fmt.Errorf("stat own network namespace: %w", err)
	}
	return uint32(own.Ino), nil
}

func (t *Tracer) tcpIter() (*link.Iter, error) {
	t.iterMu.Lock()
	defer t.iterMu.Unlock()
	if t.dumpIter != nil {
		return t.dumpIter, nil
	}
	it, err := link.AttachIter(link.IterOptions{Program: t.objs.DumpTcp})
	if err != nil {
		return nil, fmt.Errorf("%w: attach iter/tcp: %v", ErrUnsupported, err)
	}
	t.dumpIter = it
	return it, nil
}

func (t *Tracer) readSockets(rd io.Reader, dst []event.Socket) ([]event.Socket, error) {
	br := bufio.NewReaderSize(retryAgain{rd}, 1<<20)
	var buf [event.SocketSize]byte
	start := len(dst)
	for {
		if _, err := io.ReadFull(br, buf[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return dst, t.joinOwners(dst[start:])
			}
			return dst, fmt.Errorf("read iter/tcp: %w", err)
		}
		dst = append(dst, event.Socket{})
		if err := event.DecodeSocket(buf[:], &dst[len(dst)-1]); err != nil {
			return dst[:len(dst)-1], err
		}
	}
}

// socketCountHint estimates how many TCP sockets the caller's namespace
// has, from /proc/net/sockstat{,6} (hashed full sockets and timewait
// sockets), so that a walk of a million sockets does not grow its slice
// twenty times. 0 if unknown: it is only a hint.
func socketCountHint() int {
	n := 0
	for _, f := range [...]struct{ path, prefix string }{
		{"/proc/net/sockstat", "TCP:"},
		{"/proc/net/sockstat6", "TCP6:"},
	} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			fields := strings.Fields(line)
			if len(fields) == 0 || fields[0] != f.prefix {
				continue
			}
			for i := 1; i+1 < len(fields); i += 2 {
				if fields[i] == "inuse" || fields[i] == "tw" {
					v, _ := strconv.Atoi(fields[i+1])
					n += max(v, 0)
				}
			}
		}
	}
	return min(n+n/16+64, 1<<24)
}

// HZ is the kernel's timer frequency (CONFIG_HZ).
func (t *Tracer) HZ() uint64 { return t.hz }

// retryAgain reads a BPF iterator to the end. A read() of an iterator that
// visits a million objects without producing output returns EAGAIN (the
// kernel's bound on one read: it keeps its place); reading again goes on.
type retryAgain struct{ r io.Reader }

func (ra retryAgain) Read(p []byte) (int, error) {
	for {
		n, err := ra.r.Read(p)
		if n == 0 && errors.Is(err, unix.EAGAIN) {
			continue
		}
		return n, err
	}
}
