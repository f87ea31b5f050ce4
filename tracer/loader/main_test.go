package loader_test

import (
	"os"
	"testing"

	"github.com/tcpscope/tcpscope/tracer/internal/sockproc"
)

// TestMain lets the test binary double as the scriptable socket process the
// integration tests start (see sockproc).
func TestMain(m *testing.M) {
	if sockproc.IsChild() {
		sockproc.Main() // does not return
	}
	os.Exit(m.Run())
}
