package loader

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Errors a caller can map to an exit status. Each is wrapped with the detail
// of what exactly is missing.
var (
	// ErrPrivileges: the process may not load or attach BPF programs.
	ErrPrivileges = errors.New("insufficient privileges")
	// ErrUnsupported: the kernel lacks something tcpscope needs (BTF, the
	// tracepoint, ring buffers).
	ErrUnsupported = errors.New("kernel not supported")
)

// Linux capability numbers (include/uapi/linux/capability.h).
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// CheckCapabilities reports, as ErrPrivileges, which capabilities are missing
// to load tracing programs: CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN alone.
func CheckCapabilities() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(capSysAdmin) || (has(capBPF) && has(capPerfmon)) {
		return nil
	}
	var missing string
	switch {
	case !has(capBPF) && !has(capPerfmon):
		missing = "CAP_BPF and CAP_PERFMON"
	case !has(capBPF):
		missing = "CAP_BPF"
	default:
		missing = "CAP_PERFMON"
	}
	return fmt.Errorf("%w: missing %s (or CAP_SYS_ADMIN) to load BPF tracing programs; run as root", ErrPrivileges, missing)
}

// checkBTF makes sure kernel type information is available, from the kernel
// or from the file the user named.
func checkBTF(path string) error {
	if path == "" {
		path = "/sys/kernel/btf/vmlinux"
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("%w: no BTF at %s (needs a kernel built with CONFIG_DEBUG_INFO_BTF=y, Linux 5.8 or later)", ErrUnsupported, path)
		}
		return nil
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%w: BTF file %s: %w", ErrUnsupported, path, errors.Unwrap(err))
	}
	return nil
}
