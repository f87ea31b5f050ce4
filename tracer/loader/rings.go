package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/tcpscope/tcpscope/tracer/event"
)

// cpuRings reads the BPF side's ring buffers, one per CPU (map `rings` in
// bpf/tcpscope.bpf.c), and hands their records out merged back into one
// stream in which every socket's records keep the order the kernel made
// them in.
//
// Why the merge is right: a socket's transitions run one at a time (under
// the socket's lock), so a record is committed before the next record of
// its socket is even begun, and that one's kernel time is later than the
// commit. Records within one ring are in the order they were reserved, and
// every record is timed before it is reserved (the BPF side's rule).
//
//   - A pass reads every ring after noting the time M. A record with a kernel
//     time at most M has every earlier record of its socket committed
//     before M, so in the rings when the pass began: read by this pass or
//     an earlier one. Records later than M wait for the next pass.
//   - Merging by the time of each ring's first waiting record never hands a
//     record out before an earlier one of its socket: every record in that
//     one's ring up to it was reserved, so timed, before it committed.
//
// A pass that stops reading a ring early (passBytes) lowers M to the time of
// the last record it read there: a record not read yet was reserved after
// that one, and its socket's later records are later still.
type cpuRings struct {
	// mu is held shared by every use of the rings' memory and descriptors,
	// and exclusively by Close: a caller may close the tracer while Run
	// still reads (unmapped rings would fault).
	mu      sync.RWMutex
	closed  bool
	closing atomic.Bool // Close has begun: wait must not block

	maps     []*ebpf.Map
	readers  []*ringbuf.Reader
	queues   []ringQueue
	ringSize int
	// heads is a min-heap of the queues with records waiting, by the kernel
	// time of their first one: next costs O(log CPUs), not a scan of every
	// possible CPU's queue.
	heads []int

	// An idle reader sleeps in epoll_wait on every ring at once, and on an
	// eventfd that wake() writes.
	epfd, wakefd int
	epEvents     []unix.EpollEvent

	rec ringbuf.Record
	// cut is the lowest kernel time of a last record read from a ring that
	// the pass left before its end; math.MaxUint64 when none was.
	cut uint64
	// bad counts records too long to be ours, dropped unread (the
	// tracer's count of undecodable records).
	bad *atomic.Uint64
}

// ringQueue holds the records read from one ring and not handed out yet, in
// ring order.
type ringQueue struct {
	buf  []byte   // the records, back to back
	recs []recRef // one per record in buf
	head int      // first record not handed out
}

type recRef struct {
	mono   uint64 // kernel time (the first 8 bytes of every record)
	off, n uint32 // where in buf
}

const (
	// maxRecord is the longest record the BPF side writes, with room to spare:
	// the reader copies each record straight into its queue.
	maxRecord = 2 * event.Size
	// passBytes is how much a pass takes from one ring at most, so that the
	// queues stay small even after the reader was kept from its CPU for a
	// while; it then passes again at once.
	passBytes = 512 << 10
	// minCPURing is the smallest ring a CPU gets when the configured total
	// is split among many CPUs: one busy CPU makes records as fast on a
	// 64-CPU host as on a 2-CPU one, and 1 MiB holds ~6.5k of them, ~10 ms
	// of a saturating churn on one CPU. The rings together may then exceed
	// the total (64 MiB on 64 CPUs).
	minCPURing = 1 << 20
)

// CPURingBytes is one CPU's ring for a total ring size (Config.RingBytes):
// its share, a power of two, at least a page, at least minCPURing unless the
// total is smaller. Exported for the bench's floor, whose rings are sized as
// tcpscope's.
func CPURingBytes(total, cpus int) int {
	page := os.Getpagesize()
	share := total / cpus
	if share < minCPURing {
		share = min(minCPURing, total)
	}
	size := page
	for size*2 <= share {
		size *= 2
	}
	return size
}

// newCPURings creates a ring of ringSize bytes for each possible CPU from
// template, puts it in outer at the CPU's index, and opens readers. On error
// nothing is left open.
func newCPURings(outer *ebpf.Map, template *ebpf.MapSpec, cpus, ringSize int, bad *atomic.Uint64) (_ *cpuRings, err error) {
	r := &cpuRings{ringSize: ringSize, epfd: -1, wakefd: -1, cut: math.MaxUint64, bad: bad}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	r.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	r.wakefd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := r.watch(r.wakefd); err != nil {
		return nil, err
	}
	if r.maps, r.readers, err = NewCPURingMaps(outer, template, cpus, ringSize); err != nil {
		return nil, err
	}
	for i, rd := range r.readers {
		// A deadline in the past: reads never block; only wait() does.
		rd.SetDeadline(time.Unix(1, 0))
		if err := r.watch(r.maps[i].FD()); err != nil {
			return nil, err
		}
	}
	r.queues = make([]ringQueue, cpus)
	r.epEvents = make([]unix.EpollEvent, cpus+1)
	return r, nil
}

// NewCPURingMaps creates a ring buffer of ringSize bytes from template for
// each of cpus CPUs, puts each in outer (an ARRAY_OF_MAPS of ring buffers)
// at its CPU's index, and opens a reader on each. On error it closes what
// it made. Exported for the bench's floor, whose rings are made as
// tcpscope's.
func NewCPURingMaps(outer *ebpf.Map, template *ebpf.MapSpec, cpus, ringSize int) (maps []*ebpf.Map, readers []*ringbuf.Reader, err error) {
	defer func() {
		if err != nil {
			for _, rd := range readers {
				rd.Close()
			}
			for _, m := range maps {
				m.Close()
			}
			maps, readers = nil, nil
		}
	}()
	for cpu := range cpus {
		spec := template.Copy()
		spec.Name = fmt.Sprintf("ring%d", cpu)
		spec.MaxEntries = uint32(ringSize)
		m, err := ebpf.NewMap(spec)
		if err != nil {
			return maps, readers, fmt.Errorf("create ring buffer of CPU %d: %w", cpu, err)
		}
		maps = append(maps, m)
		if err := outer.Put(uint32(cpu), m); err != nil {
			return maps, readers, fmt.Errorf("install ring buffer of CPU %d: %w", cpu, err)
		}
		rd, err := ringbuf.NewReader(m)
		if err != nil {
			return maps, readers, fmt.Errorf("open ring buffer reader: %w", err)
		}
		readers = append(readers, rd)
	}
	return maps, readers, nil
}

func (r *cpuRings) watch(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// fill moves what the rings hold into the queues, at most passBytes from
// each. It returns the most bytes it read from one ring, and whether a ring
// was left with records in it.
func (r *cpuRings) fill() (read int, more bool, err error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return 0, false, os.ErrClosed
	}
	r.cut = math.MaxUint64
	for i, rd := range r.readers {
		if rd.AvailableBytes() == 0 {
			continue // no epoll_wait for an empty ring
		}
		q := &r.queues[i]
		taken := 0
		var last uint64
		for taken < passBytes {
			q.buf = slices.Grow(q.buf, maxRecord)
			at := len(q.buf)
			// ReadInto copies into RawSample's spare capacity when the
			// record fits: straight into the queue.
			r.rec.RawSample = q.buf[at:at]
			err := rd.ReadInto(&r.rec)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return read, more, err
			}
			n := len(r.rec.RawSample)
			taken += n
			if n > maxRecord {
				r.bad.Add(1)
				continue
			}
			q.buf = q.buf[:at+n]
			var mono uint64
			if n >= 8 {
				mono = binary.LittleEndian.Uint64(q.buf[at:])
			}
			q.recs = append(q.recs, recRef{mono: mono, off: uint32(at), n: uint32(n)})
			last = mono
		}
		read = max(read, taken)
		if taken >= passBytes && rd.AvailableBytes() > 0 {
			more = true
			r.cut = min(r.cut, last)
		}
	}
	r.heapify()
	return read, more, nil
}

// heapify rebuilds heads from the queues.
func (r *cpuRings) heapify() {
	r.heads = r.heads[:0]
	for i := range r.queues {
		if q := &r.queues[i]; q.head < len(q.recs) {
			r.heads = append(r.heads, i)
		}
	}
	for i := len(r.heads)/2 - 1; i >= 0; i-- {
		r.siftDown(i)
	}
}

// headMono is the kernel time of the first waiting record of heads[i].
func (r *cpuRings) headMono(i int) uint64 {
	q := &r.queues[r.heads[i]]
	return q.recs[q.head].mono
}

func (r *cpuRings) siftDown(i int) {
	n := len(r.heads)
	for {
		least := i
		for _, c := range [2]int{2*i + 1, 2*i + 2} {
			if c < n && r.headMono(c) < r.headMono(least) {
				least = c
			}
		}
		if least == i {
			return
		}
		r.heads[i], r.heads[least] = r.heads[least], r.heads[i]
		i = least
	}
}

// next returns the record that comes first among the queues' first records
// with a kernel time at most upTo (lowered by fill's cut), or nil. The bytes
// are valid until compact.
func (r *cpuRings) next(upTo uint64) []byte {
	if len(r.heads) == 0 || r.headMono(0) > min(upTo, r.cut) {
		return nil
	}
	q := &r.queues[r.heads[0]]
	ref := q.recs[q.head]
	q.head++
	if q.head == len(q.recs) {
		last := len(r.heads) - 1
		r.heads[0] = r.heads[last]
		r.heads = r.heads[:last]
	}
	r.siftDown(0)
	return q.buf[ref.off : ref.off+ref.n]
}

// compact drops what next handed out. It returns how many records wait.
func (r *cpuRings) compact() int {
	waiting := 0
	for i := range r.queues {
		q := &r.queues[i]
		rest := q.recs[q.head:]
		waiting += len(rest)
		if len(rest) == 0 {
			q.buf, q.recs, q.head = q.buf[:0], q.recs[:0], 0
			continue
		}
		from := rest[0].off
		q.buf = q.buf[:copy(q.buf, q.buf[from:])]
		for j := range rest {
			rest[j].off -= from
		}
		q.recs = q.recs[:copy(q.recs, rest)]
		q.head = 0
	}
	return waiting
}

// available is how many bytes the rings hold unread.
func (r *cpuRings) available() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, rd := range r.readers {
		n += rd.AvailableBytes()
	}
	return n
}

// bufferSize is the bytes of all rings together.
func (r *cpuRings) bufferSize() int { return r.ringSize * len(r.queues) }

// wait blocks until a ring has a record the BPF side woke it for, wake is
// called, or timeout passes.
func (r *cpuRings) wait(timeout time.Duration) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed || r.closing.Load() {
		return os.ErrClosed
	}
	n, err := unix.EpollWait(r.epfd, r.epEvents, int(timeout.Milliseconds()))
	if err != nil && !errors.Is(err, unix.EINTR) {
		return fmt.Errorf("epoll_wait: %w", err)
	}
	for _, ev := range r.epEvents[:max(n, 0)] {
		if int(ev.Fd) == r.wakefd {
			var b [8]byte
			_, _ = unix.Read(r.wakefd, b[:]) // EAGAIN: another wait took it
		}
	}
	return nil
}

// wake ends a wait, or the next one at once.
func (r *cpuRings) wake() {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if !r.closed {
		r.signal()
	}
}

func (r *cpuRings) signal() {
	one := [8]byte{1}
	_, _ = unix.Write(r.wakefd, one[:]) // EAGAIN: the counter is full, a wake is pending anyway
}

// Close closes the readers, the rings and the epoll instance, once a read or
// wait in progress has ended (a wait is woken).
func (r *cpuRings) Close() error {
	if r.closing.Swap(true) {
		return nil
	}
	if r.wakefd >= 0 {
		r.signal() // only Close closes it, and only once
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	var errs []error
	for _, rd := range r.readers {
		errs = append(errs, rd.Close())
	}
	for _, m := range r.maps {
		errs = append(errs, m.Close())
	}
	for _, fd := range []int{r.epfd, r.wakefd} {
		if fd >= 0 {
			errs = append(errs, unix.Close(fd))
		}
	}
	r.readers, r.maps, r.epfd, r.wakefd = nil, nil, -1, -1
	return errors.Join(errs...)
}
