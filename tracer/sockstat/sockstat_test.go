package sockstat

import (
	"os"
	"strings"
	"testing"
)

func TestCount(t *testing.T) {
	const v4 = "sockets: used 170\nTCP: inuse 36003 orphan 0 tw 523 alloc 36003 mem 116\nUDP: inuse 3 mem 2\n"
	tests := []struct {
		name, in, prefix, count string
		want                    int
		found                   bool
		err                     string
	}{
		{"inuse", v4, "TCP:", "inuse", 36003, true, ""},
		{"tw", v4, "TCP:", "tw", 523, true, ""},
		{"not TCP6", v4 + "TCP6: inuse 7\n", "TCP6:", "inuse", 7, true, ""},
		{"no such count", "TCP6: inuse 7\n", "TCP6:", "tw", 0, false, ""},
		{"no line", "UDP: inuse 3 mem 2\n", "TCP:", "inuse", 0, false, "no TCP: line"},
		{"not a number", "TCP: inuse x tw 1\n", "TCP:", "inuse", 0, false, "invalid syntax"},
		{"another count not a number", "TCP: inuse x tw 1\n", "TCP:", "tw", 1, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, found, err := Count(tt.in, tt.prefix, tt.count)
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("error %v, want one containing %q", err, tt.err)
			}
			if n != tt.want || found != tt.found {
				t.Errorf("got %d, %v; want %d, %v", n, found, tt.want, tt.found)
			}
		})
	}
}

// The kernel's own file parses: every TCP line has inuse and tw.
func TestCountReadsTheKernelsFile(t *testing.T) {
	b, err := os.ReadFile("/proc/self/net/sockstat")
	if err != nil {
		t.Fatalf("read sockstat: %v", err)
	}
	for _, name := range []string{"inuse", "tw"} {
		if n, found, err := Count(string(b), "TCP:", name); err != nil || !found || n < 0 {
			t.Errorf("%s: %d, %v, %v in %q", name, n, found, err, b)
		}
	}
}
