package live_test

import (
	"os"
	"testing"

	"github.com/tcpscope/tcpscope/tracer/internal/sockproc"
)

// TestMain lets the test binary double as the scriptable socket process
// (sockproc) and as a churn load process (see runChurnChild), both of which
// the integration tests start inside their own network namespaces.
func TestMain(m *testing.M) {
	if sockproc.IsChild() {
		sockproc.Main() // does not return
	}
	if os.Getenv(envChurn) != "" {
		runChurnChild() // does not return
	}
	os.Exit(m.Run())
}
