package loader

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/tcpscope/tcpscope/tracer/event"
	"github.com/tcpscope/tcpscope/tracer/sockstat"
)

// iter/tcp walks the network namespace of the task that opens it, so other
// namespaces are walked from a thread that has entered them.

// Sockets walks the TCP sockets of the caller's network namespace (full,
// timewait and request sockets) and appends them to dst.
func (t *Tracer) Sockets(dst []event.Socket) ([]event.Socket, error) {
	return t.socketsFunc(dst, nil)
}

// WalkFunc sees a walk's sockets while it runs: dst[from:] were just read
// (owners joined) and stay in the walk's result. It runs on the walking
// goroutine while the kernel goes on walking on another thread, so work it
// does overlaps the kernel's; it must not keep dst past the walk.
type WalkFunc func(dst []event.Socket, from int)

func (t *Tracer) socketsFunc(dst []event.Socket, fn WalkFunc) ([]event.Socket, error) {
	dst = slices.Grow(dst, socketCountHint("/proc/thread-self/net"))
	it, err := t.tcpIter()
	if err != nil {
		return dst, err
	}
	rd, err := it.Open()
	if err != nil {
		return dst, fmt.Errorf("open iter/tcp: %w", err)
	}
	defer rd.Close()
	return t.readSockets(rd, dst, fn)
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

	rd, hint, err := openIn(it, int(target.Fd()))
	if err != nil {
		return dst, fmt.Errorf("walk sockets of %s: %w", nsPath, err)
	}
	defer rd.Close()
	return t.readSockets(rd, slices.Grow(dst, hint), nil)
}

// openIn opens the iterator from a thread inside the namespace nsFD, and
// estimates how many sockets it will find (socketCountHint). The namespace
// is fixed when the iterator is opened; reading can happen anywhere.
func openIn(it *link.Iter, nsFD int) (rd io.ReadCloser, hint int, err error) {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, 0, fmt.Errorf("%w: %v", errThread, err)
	}
	defer self.Close()
	if err := unix.Setns(nsFD, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		// EINVAL: the file is no namespace (yet, or any more: `ip netns`
		// leaves an empty file while it adds or deletes one). AllSockets
		// skips such a namespace and reports it, like any other it cannot
		// enter.
		return nil, 0, fmt.Errorf("setns: %w", err)
	}
	rd, openErr := it.Open()
	if openErr == nil {
		hint = socketCountHint("/proc/thread-self/net")
	}
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// This thread stays in the wrong namespace: keep it locked so the
		// runtime discards it when the goroutine ends.
		if rd != nil {
			rd.Close()
		}
		return nil, 0, fmt.Errorf("%w: return to own network namespace: %v", errThread, err)
	}
	runtime.UnlockOSThread()
	return rd, hint, openErr
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
	return t.AllSocketsFunc(dst, nil)
}

// AllSocketsFunc is AllSockets that shows fn the sockets as they are read
// (see WalkFunc): the caller's namespace's while they are read, each other
// namespace's once its walk has succeeded.
//
// Each namespace's walk scans the whole host-wide established hash, and one
// walk keeps about one and a half CPUs busy (the kernel walking in read(),
// this side decoding): the other namespaces are walked on other goroutines
// while the caller's own is, into their own buffers, and shown to fn after it.
func (t *Tracer) AllSocketsFunc(dst []event.Socket, fn WalkFunc) ([]event.Socket, map[uint32]bool, error) {
	nss, err := Namespaces()
	if err != nil {
		return dst, nil, err
	}
	if _, err := t.tcpIter(); err != nil {
		return dst, nil, err
	}
	type result struct {
		socks []event.Socket
		err   error
	}
	others := nss[1:] // Namespaces lists the caller's own first
	results := make([]result, len(others))
	next := make(chan int, len(others))
	for i := range others {
		next <- i
	}
	close(next)
	walkOthers := func() {
		for i := range next {
			results[i].socks, results[i].err = t.SocketsIn(others[i].Path, nil)
		}
	}
	// Two walkers, so that the others go on on both CPUs once the own walk
	// is done. They run on goroutines of their own, not this one: a thread
	// that fails to leave a namespace stays locked and dies with its
	// goroutine (openIn), and this goroutine's next own-namespace walk must
	// not run on it.
	var wg sync.WaitGroup
	for range min(2, len(others)) {
		wg.Go(walkOthers)
	}
	dst, err = t.socketsFunc(dst, fn)
	if err != nil {
		for range next { // nothing more to start; wait for those running
		}
		wg.Wait()
		return dst, nil, err
	}
	wg.Wait()

	walked := map[uint32]bool{nss[0].Inode: true}
	var partial *PartialWalkError
	for i, r := range results {
		ns := others[i]
		switch {
		case r.err == nil:
			walked[ns.Inode] = true
			if len(r.socks) == 0 {
				continue
			}
			from := len(dst)
			dst = append(dst, r.socks...)
			if fn != nil {
				fn(dst, from)
			}
		case errors.Is(r.err, errThread):
			return dst, walked, r.err
		case errors.Is(r.err, os.ErrNotExist) || errors.Is(r.err, unix.ENOENT) || errors.Is(r.err, unix.ESRCH):
			// Gone: nothing left to show or keep.
		default:
			if partial == nil {
				partial = &PartialWalkError{}
			}
			partial.Skipped = append(partial.Skipped, SkippedNamespace{ns, r.err})
		}
	}
	if partial != nil {
		return dst, walked, partial
	}
	return dst, walked, nil
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

// walkChunk is how much of an iterator's output readSockets hands from the
// reading thread to the decoding one at a time (a read() of an iterator
// returns at most its seq_file buffer, 8 pages).
const (
	walkChunk   = 256 << 10
	walkBuffers = 4
)

// readSockets reads an iter/tcp walk and decodes it into dst. The kernel
// walks inside read(), so one goroutine only reads (a thread in the kernel
// most of the time) while this one decodes what it read, joins owners and
// hands the sockets to fn: on two CPUs the kernel's walk and the Go side
// overlap instead of taking turns.
func (t *Tracer) readSockets(rd io.Reader, dst []event.Socket, fn WalkFunc) ([]event.Socket, error) {
	type chunk struct {
		buf []byte // the whole buffer, to hand back
		n   int    // bytes of whole records in it
	}
	var (
		full    = make(chan chunk, walkBuffers) // never blocks: at most walkBuffers in flight
		free    = make(chan []byte, walkBuffers)
		quit    = make(chan struct{})
		readErr error
	)
	for range walkBuffers {
		free <- nil // allocated on first use: a small walk needs one
	}
	go func() {
		defer close(full)
		ra := retryAgain{rd}
		var tail [event.SocketSize]byte // a record split between two buffers
		nt := 0
		for {
			var buf []byte
			select {
			case buf = <-free:
			case <-quit:
				return
			}
			if buf == nil {
				buf = make([]byte, walkChunk)
			}
			n := copy(buf, tail[:nt])
			var err error
			for n < len(buf) && err == nil {
				var m int
				m, err = ra.Read(buf[n:])
				n += m
			}
			whole := n - n%event.SocketSize
			nt = copy(tail[:], buf[whole:n])
			if whole > 0 {
				full <- chunk{buf, whole}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					readErr = fmt.Errorf("read iter/tcp: %w", err)
				} else if nt != 0 {
					readErr = fmt.Errorf("read iter/tcp: %w", io.ErrUnexpectedEOF)
				}
				return
			}
		}
	}()

	prefault(dst)
	start := len(dst)
	joined, shown := start, start
	// pass joins owners into what was decoded since the last pass and shows
	// it to fn; until listOwners's background read is done, only at the end.
	pass := func(last bool) error {
		if fn == nil && !last {
			return nil
		}
		if !last && !t.ownersReady() {
			return nil
		}
		if err := t.joinOwners(dst[joined:]); err != nil {
			return err
		}
		joined = len(dst)
		if fn != nil && shown < len(dst) {
			fn(dst, shown)
			shown = len(dst)
		}
		return nil
	}
	var err error
	for c := range full {
		if err == nil {
			b := c.buf[:c.n]
			dst = slices.Grow(dst, len(b)/event.SocketSize)
			for ; len(b) >= event.SocketSize && err == nil; b = b[event.SocketSize:] {
				dst = append(dst, event.Socket{})
				if err = event.DecodeSocket(b, &dst[len(dst)-1]); err != nil {
					dst = dst[:len(dst)-1]
				}
			}
			if err == nil {
				err = pass(false)
			}
			if err != nil {
				close(quit) // the reader stops; drain what it sent
			}
		}
		free <- c.buf
	}
	// full is closed: the reader is done and readErr is safe to read.
	if err != nil {
		return dst, err
	}
	if readErr != nil {
		return dst, readErr
	}
	return dst, pass(true)
}

// prefault has the kernel map the pages of dst's unused capacity, writable,
// before the walk decodes into them. Fresh memory is otherwise mapped page by
// page at first touch, and while the GC runs, its write barrier reads each
// record before it is written: the read maps the shared zero page, the write
// then replaces it, and that flushes the TLB of every CPU running this
// process, an interrupt per 4 KiB (a tenth of a walk's time at 1M sockets).
// Pages already mapped cost nothing. Best effort: MADV_POPULATE_WRITE is
// Linux 5.14.
func prefault(dst []event.Socket) {
	spare := cap(dst) - len(dst)
	if spare*event.SocketSize < 1<<20 {
		return
	}
	full := dst[:cap(dst)]
	base := unsafe.Pointer(&full[len(dst)])
	size := uintptr(spare) * unsafe.Sizeof(full[0])
	page := uintptr(os.Getpagesize())
	skip := (page - uintptr(base)%page) % page
	if size <= skip+page {
		return
	}
	n := (size - skip) &^ (page - 1)
	unix.Madvise(unsafe.Slice((*byte)(unsafe.Add(base, skip)), n), unix.MADV_POPULATE_WRITE)
}

// socketCountHint estimates how many TCP sockets a namespace has, from
// sockstat{,6} in its /proc net directory (hashed full sockets and timewait
// sockets; /proc/thread-self/net is the calling thread's namespace), so that
// a walk of a million sockets does not grow its slice twenty times. 0 if
// unknown: it is only a hint.
func socketCountHint(dir string) int {
	n := 0
	for _, f := range [...]struct{ path, prefix string }{
		{dir + "/sockstat", "TCP:"},
		{dir + "/sockstat6", "TCP6:"},
	} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			continue
		}
		for _, name := range []string{"inuse", "tw"} {
			v, _, _ := sockstat.Count(string(b), f.prefix, name)
			n += max(v, 0)
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
