package diag_test

import (
	"os"
	"testing"

	"github.com/tcpscope/tcpscope/tracer/internal/sockproc"
)

// TestMain lets the test binary double as the scriptable socket process
// (sockproc) the integration tests start inside their own namespaces.
func TestMain(m *testing.M) {
	if sockproc.IsChild() {
		sockproc.Main() // does not return
	}
	os.Exit(m.Run())
}
