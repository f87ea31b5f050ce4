package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cgroup2Mount finds the unified cgroup hierarchy, or mounts it at a
// temporary directory (unmounted at cleanup); "" with a reason if neither.
func cgroup2Mount(t *testing.T) (string, string) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err.Error()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mount-point ... - fstype source options
		fs := strings.Fields(sc.Text())
		for i, x := range fs {
			if x == "-" && i+1 < len(fs) && fs[i+1] == "cgroup2" {
				return fs[4], ""
			}
		}
	}
	dir := t.TempDir()
	if err := syscall.Mount("none", dir, "cgroup2", 0, ""); err != nil {
		return "", fmt.Sprintf("no cgroup2 mounted, and mounting one failed: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir, ""
}

// TestServeContainers: a process put in a cgroup named as containerd names
// a container's is found by ?container= in /api/v1/sockets (its sockets,
// as ss has them, and only those) and /api/v1/events, with its cgroup path.
func TestServeContainers(t *testing.T) {
	needNetstatTools(t)
	mnt, why := cgroup2Mount(t)
	if mnt == "" {
		t.Skip(why)
	}
	ns := newNS(t, "srvcg")
	ino := netnsInode(t, ns)
	s := startServe(t, "", "http", true, "--listen", "127.0.0.1:0")
	srv := startProc(t, ns, "tcg-server")
	cli := startProc(t, ns, "tcg-client")

	var raw [32]byte
	rand.Read(raw[:])
	id := hex.EncodeToString(raw[:])
	parent := filepath.Join(mnt, fmt.Sprintf("tsn-cg-%d", os.Getpid()))
	leaf := filepath.Join(parent, "cri-containerd-"+id+".scope")
	if err := os.MkdirAll(leaf, 0o755); err != nil {
		t.Skipf("cannot create a cgroup under %s: %v", mnt, err)
	}
	t.Cleanup(func() {
		// Back to the root, then the cgroups can go (before the processes
		// are killed: cleanups run last-in first-out).
		os.WriteFile(filepath.Join(mnt, "cgroup.procs"), []byte(strconv.Itoa(srv.pid)), 0)
		os.Remove(leaf)
		os.Remove(parent)
	})
	if err := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(srv.pid)), 0); err != nil {
		t.Skipf("cannot move a process into a cgroup: %v", err)
	}
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", srv.pid))
	wantPath := "/" + strings.TrimPrefix(leaf, mnt+"/")
	if !strings.Contains(string(b), "0::"+wantPath) {
		t.Skipf("/proc/PID/cgroup does not show the cgroup (cgroup namespace?): %q", b)
	}

	st := openStream(t, fmt.Sprintf("%s/api/v1/events?netns=%d&container=%s", s.base, ino, id[:12]))
	l := srv.do("listen", "tcp4", "127.0.0.1:0")
	addr := fmt.Sprintf("127.0.0.1:%d", l[1])
	for range 3 {
		cli.do("dial", "tcp4", addr)
		srv.do("accept", l[0])
	}

	// ss: the sockets the process holds.
	ssOwned := 0
	for _, line := range strings.Split(runIn(t, ns, "ss", "-Htanp"), "\n") {
		if strings.Contains(line, fmt.Sprintf("pid=%d,", srv.pid)) {
			ssOwned++
		}
	}
	type sock struct {
		LPort     int     `json:"lport"`
		State     string  `json:"state"`
		PID       *int    `json:"pid"`
		Cgroup    *string `json:"cgroup"`
		Container *string `json:"container"`
	}
	get := func(q string) []sock {
		var out []sock
		for _, line := range strings.Split(strings.TrimSpace(httpBody(t, s.base+"/api/v1/sockets"+q)), "\n") {
			if line == "" {
				continue
			}
			var x sock
			if err := json.Unmarshal([]byte(line), &x); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			out = append(out, x)
		}
		return out
	}
	for _, q := range []string{"container=" + id, "container=" + id[:12]} {
		got := get(fmt.Sprintf("?netns=%d&%s", ino, q))
		if len(got) != ssOwned || ssOwned != 4 {
			t.Errorf("?%s: %d sockets, ss shows %d held by pid %d (want 4: a listener, 3 accepted)", q, len(got), ssOwned, srv.pid)
		}
		for _, x := range got {
			if x.PID == nil || *x.PID != srv.pid || x.Container == nil || *x.Container != id || x.Cgroup == nil || *x.Cgroup != wantPath {
				t.Errorf("?%s: socket %+v, want pid %d in %s", q, x, srv.pid, wantPath)
			}
		}
	}
	// Everyone else's sockets carry their own cgroup, not the container.
	all := get(fmt.Sprintf("?netns=%d", ino))
	if len(all) != 7 {
		t.Errorf("namespace: %d sockets, want 7", len(all))
	}
	for _, x := range all {
		if x.PID != nil && *x.PID == cli.pid && (x.Container != nil && *x.Container == id || x.Cgroup == nil) {
			t.Errorf("client socket %+v: want its own cgroup", x)
		}
	}
	if got := get(fmt.Sprintf("?netns=%d&container=%s", ino, strings.Repeat("0", 64))); len(got) != 0 {
		t.Errorf("another container: %d sockets", len(got))
	}
	var e map[string]string
	if code := getJSON(t, s.base+"/api/v1/sockets?container=", &e); code != http.StatusBadRequest {
		t.Errorf("empty container: HTTP %d", code)
	}

	// The stream: the server's transitions, none of the client's.
	if !st.waitFor(5*time.Second, func(m map[string]any) bool {
		return m["new"] == "ESTABLISHED" && m["lport"] == float64(l[1])
	}) {
		t.Errorf("no accepted connection in the container's event stream")
	}
	st.mu.Lock()
	lines := append([]string(nil), st.lines...)
	st.mu.Unlock()
	for _, line := range lines {
		var m map[string]any
		json.Unmarshal([]byte(line), &m)
		if m["container"] != id || m["cgroup"] != wantPath || m["pid"] != float64(srv.pid) {
			t.Errorf("stream line outside the container: %s", line)
		}
	}
}
