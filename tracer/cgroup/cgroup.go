// Package cgroup tells which cgroup a process is in, and which container or
// systemd unit that cgroup stands for, from /proc/PID/cgroup. Container
// runtimes name a container's cgroup after its id (containerd and CRI-O
// under Kubernetes, Docker, Podman); systemd names its units.
package cgroup

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Info is a process's cgroup and what it stands for.
type Info struct {
	Path string // the cgroup path, "" when not known
	// Container is the container id (64 hex digits) the path shows, or
	// the systemd unit (e.g. "nginx.service") when it shows none; "" for
	// neither.
	Container string
}

// Parse picks a process's cgroup from /proc/PID/cgroup: the unified (v2)
// hierarchy's path, or on a v1-only or hybrid host where that is the root,
// the systemd hierarchy's, then the first controller's that is not the root.
func Parse(procCgroup []byte) string {
	var unified, systemd, other string
	for line := range bytes.Lines(procCgroup) {
		f := strings.SplitN(strings.TrimRight(string(line), "\n"), ":", 3)
		if len(f) != 3 || f[2] == "" {
			continue
		}
		switch {
		case f[0] == "0" && f[1] == "":
			unified = f[2]
		case f[1] == "name=systemd":
			systemd = f[2]
		case other == "" && f[2] != "/":
			other = f[2]
		}
	}
	for _, p := range []string{unified, systemd, other} {
		if p != "" && p != "/" {
			return p
		}
	}
	if unified != "" {
		return unified
	}
	return systemd
}

// ContainerOf returns the container id a cgroup path names, or else the
// systemd unit it is in (its last .service or .scope element), or "".
//
//	.../cri-containerd-<id>.scope    containerd (Kubernetes, systemd driver)
//	.../crio-<id>.scope              CRI-O
//	.../docker-<id>.scope            Docker (systemd driver)
//	.../libpod-<id>.scope            Podman
//	/docker/<id>, /kubepods/.../<id> Docker and Kubernetes (cgroupfs driver)
//	/system.slice/nginx.service      a systemd unit: "nginx.service"
func ContainerOf(path string) string {
	elems := strings.Split(strings.Trim(path, "/"), "/")
	// The innermost element that names a container wins (a container's own
	// sub-cgroups, e.g. .../<id>.scope/init, still belong to it).
	for i := len(elems) - 1; i >= 0; i-- {
		e := elems[i]
		if isID(e) {
			return e
		}
		name := strings.TrimSuffix(e, ".scope")
		if name == e {
			continue
		}
		for _, prefix := range []string{"cri-containerd-", "crio-", "docker-", "libpod-"} {
			if id, ok := strings.CutPrefix(name, prefix); ok && isID(id) {
				return id
			}
		}
	}
	for i := len(elems) - 1; i >= 0; i-- {
		if e := elems[i]; strings.HasSuffix(e, ".service") || strings.HasSuffix(e, ".scope") {
			return e
		}
	}
	return ""
}

// isID: a container id is 64 lowercase hex digits.
func isID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Resolver reads processes' cgroups, remembering each pid's for TTL (a
// process rarely changes cgroup, and a pid is rarely reused that soon).
// Safe for concurrent use.
type Resolver struct {
	// Proc is the proc file system's mount point (default /proc).
	Proc string
	// TTL is how long an answer is kept (default 30s); Max bounds the
	// pids remembered (default 65536).
	TTL time.Duration
	Max int

	mu    sync.Mutex
	cache map[uint32]cached
}

type cached struct {
	info Info
	at   time.Time
}

// Of returns the cgroup of process pid; a zero Info when it cannot be read
// (the process is gone).
func (r *Resolver) Of(pid uint32) Info {
	if pid == 0 {
		return Info{}
	}
	ttl, max := r.TTL, r.Max
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	if max <= 0 {
		max = 65536
	}
	now := time.Now()
	r.mu.Lock()
	if c, ok := r.cache[pid]; ok && now.Sub(c.at) < ttl {
		r.mu.Unlock()
		return c.info
	}
	r.mu.Unlock()

	proc := r.Proc
	if proc == "" {
		proc = "/proc"
	}
	var info Info
	if b, err := os.ReadFile(proc + "/" + strconv.FormatUint(uint64(pid), 10) + "/cgroup"); err == nil {
		info.Path = Parse(b)
		info.Container = ContainerOf(info.Path)
	}
	r.mu.Lock()
	if r.cache == nil || len(r.cache) >= max {
		r.cache = make(map[uint32]cached)
	}
	r.cache[pid] = cached{info, now}
	r.mu.Unlock()
	return info
}

// Match tells whether a container filter value names info's container: the
// full id or unit, or an id prefix of at least 12 digits (docker ps's).
func Match(info Info, want string) bool {
	if info.Container == "" || want == "" {
		return false
	}
	return info.Container == want || (len(want) >= 12 && isID(info.Container) && strings.HasPrefix(info.Container, want))
}
