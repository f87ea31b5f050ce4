// Package ktime turns the kernel's CLOCK_MONOTONIC timestamps, which BPF
// programs read with bpf_ktime_get_ns, into wall-clock time.
package ktime

import (
	"time"

	"golang.org/x/sys/unix"
)

// Clock maps monotonic nanoseconds to wall time. The offset between the two
// clocks moves when the wall clock is stepped or slewed, so it is re-measured
// at most every Refresh.
type Clock struct {
	offset   int64 // realtime - monotonic, ns
	measured int64 // monotonic ns at the last measurement
	fixed    bool
}

// Refresh is how often the offset is measured again.
const Refresh = time.Second

// NewClock measures the offset once.
func NewClock() *Clock {
	c := &Clock{}
	c.measure()
	return c
}

func (c *Clock) measure() {
	var mono, real unix.Timespec
	// Sample realtime between two monotonic reads and use their midpoint,
	// which bounds the error by half the time the reads took.
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono)
	m1 := mono.Nano()
	_ = unix.ClockGettime(unix.CLOCK_REALTIME, &real)
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono)
	m2 := mono.Nano()
	mid := m1 + (m2-m1)/2
	c.offset = real.Nano() - mid
	c.measured = mid
}

// Fixed returns a clock whose wall time is always monotonic time plus
// offset: for tests and for replaying recorded events.
func Fixed(offset time.Duration) *Clock {
	return &Clock{offset: int64(offset), fixed: true}
}

// Wall returns the wall-clock time of a monotonic timestamp. It does not
// allocate.
func (c *Clock) Wall(mono uint64) time.Time {
	if !c.fixed && int64(mono)-c.measured > int64(Refresh) {
		c.measure()
	}
	return time.Unix(0, int64(mono)+c.offset)
}

// Now returns the current monotonic time in nanoseconds, on the same clock
// as the kernel's event timestamps.
func Now() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}
