// Package deploy holds the Kubernetes manifest, the container recipe and the
// Grafana dashboard of the tcpscope agent. Its tests validate them offline;
// the Kubernetes API types they decode into are a test-only dependency, so
// they never reach the tcpscope binary.
package deploy

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/tcpscope/tcpscope/tracer/metrics"
	"github.com/tcpscope/tcpscope/tracer/table"
)

// documentedCaps are the capabilities README.md explains, no more.
var documentedCaps = []corev1.Capability{"BPF", "PERFMON", "SYS_ADMIN", "SYSLOG", "SYS_PTRACE"}

// loadManifest strict-decodes every document of the manifest: an unknown or
// misspelt field is an error, as `kubectl apply --validate=strict` makes it.
func loadManifest(t *testing.T) (*appsv1.DaemonSet, []string) {
	t.Helper()
	raw, err := os.ReadFile("kubernetes/tcpscope.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds *appsv1.DaemonSet
	var kinds []string
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
		var meta struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		kinds = append(kinds, meta.APIVersion+"/"+meta.Kind)
		var obj any
		switch meta.Kind {
		case "DaemonSet":
			ds = new(appsv1.DaemonSet)
			obj = ds
		case "Namespace":
			obj = new(corev1.Namespace)
		default:
			t.Fatalf("document %d: unexpected kind %q", i, meta.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("document %d (%s): %v", i, meta.Kind, err)
		}
	}
	if ds == nil {
		t.Fatal("no DaemonSet in the manifest")
	}
	return ds, kinds
}

func TestDaemonSet(t *testing.T) {
	ds, kinds := loadManifest(t)
	if !slices.Equal(kinds, []string{"v1/Namespace", "apps/v1/DaemonSet"}) {
		t.Errorf("documents %v", kinds)
	}
	spec := ds.Spec.Template.Spec
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template's labels", k, v)
		}
	}
	if !spec.HostPID {
		t.Error("hostPID is off: owners and other pods' namespaces are not reachable")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil || sc.Capabilities == nil:
		t.Fatal("no securityContext capabilities")
	case sc.Privileged != nil && *sc.Privileged:
		t.Error("privileged")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("root filesystem not read-only")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("privilege escalation allowed")
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("drop %v, want ALL", sc.Capabilities.Drop)
	}
	if add := slices.Clone(sc.Capabilities.Add); !slices.Equal(sortCaps(add), sortCaps(slices.Clone(documentedCaps))) {
		t.Errorf("capabilities %v, documented %v", sc.Capabilities.Add, documentedCaps)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Limits[r]; !ok {
			t.Errorf("no %s limit", r)
		}
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request", r)
		}
	}

	// The port: one container port, used by the probes, the scrape
	// annotation and --listen.
	if len(c.Ports) != 1 {
		t.Fatalf("ports %v", c.Ports)
	}
	port := c.Ports[0]
	ann := ds.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != fmt.Sprint(port.ContainerPort) || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v do not point at port %d /metrics", ann, port.ContainerPort)
	}
	if !slices.Contains(c.Args, fmt.Sprintf("--listen=:%d", port.ContainerPort)) || c.Args[0] != "serve" {
		t.Errorf("args %v: want serve --listen=:%d", c.Args, port.ContainerPort)
	}
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		want := map[string]string{"liveness": "/healthz", "readiness": "/readyz", "startup": "/readyz"}[name]
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want || p.HTTPGet.Port.String() != port.Name {
			t.Errorf("%s probe %+v: want GET %s on port %s", name, p, want, port.Name)
		}
	}
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = true
	}
	for _, m := range c.VolumeMounts {
		if !volumes[m.Name] {
			t.Errorf("mount %s has no volume", m.Name)
		}
		if !m.ReadOnly {
			t.Errorf("mount %s is writable", m.Name)
		}
	}
}

func sortCaps(c []corev1.Capability) []corev1.Capability { slices.Sort(c); return c }

// TestDashboardMetrics: the dashboard is JSON and asks only for metrics the
// agent exports.
func TestDashboardMetrics(t *testing.T) {
	raw, err := os.ReadFile("grafana/tcpscope-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{
		// registered by `tcpscope serve` itself, next to the collector
		"tcpscope_event_stream_clients": true, "tcpscope_event_stream_dropped_events_total": true,
		"process_cpu_seconds_total": true, "process_resident_memory_bytes": true,
	}
	ch := make(chan *prometheus.Desc, 64)
	metrics.New(metrics.Options{Table: table.New()}).Describe(ch)
	close(ch)
	nameRE := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range ch {
		if m := nameRE.FindStringSubmatch(d.String()); m != nil {
			known[m[1]] = true
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				known[m[1]+suffix] = true
			}
		}
	}
	metricRE := regexp.MustCompile(`\b(tcpscope_[a-z_]+|process_[a-z_]+)`)
	exprs := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs++
			for _, name := range metricRE.FindAllString(tg.Expr, -1) {
				if !known[name] {
					t.Errorf("panel %q: %s is not exported by the agent", p.Title, name)
				}
			}
		}
	}
	if exprs == 0 {
		t.Error("no queries in the dashboard")
	}
}

// TestStaticBinary builds the binary as the Containerfile does and checks
// it needs no dynamic loader (the image's base is empty).
func TestStaticBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips the build")
	}
	cf, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cf, []byte("CGO_ENABLED=0 go build")) || !bytes.Contains(cf, []byte("FROM scratch")) {
		t.Fatal("Containerfile no longer builds with CGO_ENABLED=0 onto scratch: update this test")
	}
	out := filepath.Join(t.TempDir(), "tcpscope")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "../cmd/tcpscope")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has an ELF interpreter: not static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs %s", strings.Join(libs, ", "))
	}
	st, _ := os.Stat(out)
	t.Logf("static binary: %.1f MiB", float64(st.Size())/(1<<20))
}
