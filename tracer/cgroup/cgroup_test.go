package cgroup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const id = "3f1c9a0e5b7d4c2a8e6f0b1d3c5a7e9f2b4d6c8a0e1f3b5d7c9a2e4f6b8d0c1a"

func TestParse(t *testing.T) {
	for _, tc := range []struct{ name, file, want string }{
		{"v2 only", "0::/system.slice/nginx.service\n", "/system.slice/nginx.service"},
		{"v2 root", "0::/\n", "/"},
		{"hybrid, systemd", "12:memory:/system.slice/docker-" + id + ".scope\n1:name=systemd:/system.slice/docker-" + id + ".scope\n0::/\n",
			"/system.slice/docker-" + id + ".scope"},
		{"hybrid, unified set", "1:name=systemd:/user.slice\n0::/user.slice/user-1000.slice/session-2.scope\n", "/user.slice/user-1000.slice/session-2.scope"},
		{"v1 only, cgroupfs", "11:cpu,cpuacct:/docker/" + id + "\n10:pids:/docker/" + id + "\n", "/docker/" + id},
		{"v1, only memory", "9:name=systemd:/\n4:memory:/process_api/9dc1\n0::/\n", "/process_api/9dc1"},
		{"empty", "", ""},
		{"garbage", "not a cgroup file", ""},
	} {
		if got := Parse([]byte(tc.file)); got != tc.want {
			t.Errorf("%s: Parse = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// Real-world path shapes (ids replaced by one test id).
func TestContainerOf(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/cri-containerd-" + id + ".scope", id},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0d9e.slice/crio-" + id + ".scope", id},
		{"/kubepods.slice/kubepods-pod0d9e.slice/crio-" + id + ".scope/container", id},
		{"/system.slice/docker-" + id + ".scope", id},
		{"/docker/" + id, id},
		{"/kubepods/burstable/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/" + id, id},
		{"/machine.slice/libpod-" + id + ".scope/container", id},
		{"/system.slice/containerd.service", "containerd.service"},
		{"/system.slice/nginx.service", "nginx.service"},
		{"/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-1234.scope", "app-gnome-firefox-1234.scope"},
		{"/user.slice/user-1000.slice/session-3.scope", "session-3.scope"},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d9e.slice/crio-conmon-" + id + ".scope", "crio-conmon-" + id + ".scope"},
		{"/system.slice/docker-" + id[:12] + ".scope", "docker-" + id[:12] + ".scope"}, // not an id: the unit
		{"/docker/" + strings.ToUpper(id), ""},
		{"/", ""},
		{"", ""},
		{"/init.scope", "init.scope"},
	} {
		if got := ContainerOf(tc.path); got != tc.want {
			t.Errorf("ContainerOf(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
}

func TestResolverAndMatch(t *testing.T) {
	proc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(proc, "42"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(proc, "42", "cgroup"), []byte("0::/system.slice/docker-"+id+".scope\n"), 0o644)
	r := &Resolver{Proc: proc}
	got := r.Of(42)
	if got.Path != "/system.slice/docker-"+id+".scope" || got.Container != id {
		t.Errorf("Of(42) = %+v", got)
	}
	// Cached: a change within the TTL is not seen.
	os.WriteFile(filepath.Join(proc, "42", "cgroup"), []byte("0::/other\n"), 0o644)
	if r.Of(42) != got {
		t.Errorf("not cached")
	}
	if (r.Of(43) != Info{}) || (r.Of(0) != Info{}) {
		t.Errorf("a missing process has a cgroup")
	}
	for _, tc := range []struct {
		want string
		ok   bool
	}{{id, true}, {id[:12], true}, {id[:11], false}, {"", false}, {"nginx.service", false}} {
		if Match(got, tc.want) != tc.ok {
			t.Errorf("Match(%q) = %v", tc.want, !tc.ok)
		}
	}
	if !Match(Info{Container: "nginx.service"}, "nginx.service") || Match(Info{}, "x") {
		t.Errorf("unit match")
	}
}
