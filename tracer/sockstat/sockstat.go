// Package sockstat reads the kernel's socket counts from the sockstat files
// of a network namespace's /proc net directory ("TCP: inuse 5 orphan 0 tw 2
// alloc 9 mem 1"): a read that costs the kernel nothing per socket.
package sockstat

import (
	"fmt"
	"strconv"
	"strings"
)

// Count returns the count called name on the line of a sockstat file's
// text that starts with prefix ("TCP:", "TCP6:"). found is false when the
// line has no such count; a missing line or a count that is not a number
// is an error.
func Count(text, prefix, name string) (n int, found bool, err error) {
	for line := range strings.Lines(text) {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			if f[i] != name {
				continue
			}
			v, err := strconv.Atoi(f[i+1])
			if err != nil {
				return 0, false, fmt.Errorf("%q: %w", strings.TrimSpace(line), err)
			}
			return v, true, nil
		}
		return 0, false, nil
	}
	return 0, false, fmt.Errorf("no %s line", prefix)
}
