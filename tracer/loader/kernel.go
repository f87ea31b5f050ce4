package loader

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// kernelSymbols finds the addresses of the named kernel functions in
// /proc/kallsyms. Missing names are an error; found ones are returned
// anyway.
func kernelSymbols(names ...string) (map[string]uint64, error) {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return nil, fmt.Errorf("read kernel symbols: %w", err)
	}
	defer f.Close()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	found := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() && len(found) < len(want) {
		// "ffffffff820089f0 t tw_timer_handler" (modules add " [name]").
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || !want[fields[2]] {
			continue
		}
		if _, dup := found[fields[2]]; dup {
			continue
		}
		addr, err := strconv.ParseUint(fields[0], 16, 64)
		if err != nil || addr == 0 {
			return found, fmt.Errorf("kernel symbol %s has no address in /proc/kallsyms (kernel.kptr_restrict?)", fields[2])
		}
		found[fields[2]] = addr
	}
	if err := sc.Err(); err != nil {
		return found, fmt.Errorf("read kernel symbols: %w", err)
	}
	for _, n := range names {
		if _, ok := found[n]; !ok {
			return found, fmt.Errorf("kernel symbol %s not found in /proc/kallsyms", n)
		}
	}
	return found, nil
}

// kernelHZ reads CONFIG_HZ from the kernel's configuration
// (/proc/config.gz, else /boot/config-RELEASE): timer values in the kernel
// are in jiffies of 1/HZ s.
func kernelHZ() (uint64, error) {
	var rd io.Reader
	if f, err := os.Open("/proc/config.gz"); err == nil {
		defer f.Close()
		gz, err := gzip.NewReader(f)
		if err != nil {
			return 0, fmt.Errorf("read /proc/config.gz: %w", err)
		}
		rd = gz
	} else {
		var uts unix.Utsname
		if err := unix.Uname(&uts); err != nil {
			return 0, fmt.Errorf("uname: %w", err)
		}
		path := "/boot/config-" + unix.ByteSliceToString(uts.Release[:])
		f, err := os.Open(path)
		if err != nil {
			return 0, fmt.Errorf("kernel config not found (/proc/config.gz, %s)", path)
		}
		defer f.Close()
		rd = f
	}
	sc := bufio.NewScanner(rd)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CONFIG_HZ="); ok {
			hz, err := strconv.ParseUint(v, 10, 64)
			if err != nil || hz == 0 {
				return 0, fmt.Errorf("bad CONFIG_HZ=%q", v)
			}
			return hz, nil
		}
	}
	return 0, fmt.Errorf("CONFIG_HZ not in kernel config")
}
