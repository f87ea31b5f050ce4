package live

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRaiseThreadPriority: the reader's thread is raised to the given nice
// value only from normal priority; a thread already higher, or one the user
// lowered on purpose, keeps its own.
func TestRaiseThreadPriority(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_NICE) to raise a thread's priority")
	}
	for _, tt := range []struct{ start, want int }{
		{0, -10},
		{-15, -15},
		{5, 5},
	} {
		done := make(chan int)
		go func() {
			runtime.LockOSThread() // the thread dies with the goroutine
			tid := unix.Gettid()
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, tt.start); err != nil {
				t.Errorf("set nice %d: %v", tt.start, err)
			}
			raiseThreadPriority(-10)
			cur, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
			if err != nil {
				t.Error(err)
			}
			done <- 20 - cur
		}()
		if got := <-done; got != tt.want {
			t.Errorf("thread at nice %d: raised to %d, want %d", tt.start, got, tt.want)
		}
	}
}
