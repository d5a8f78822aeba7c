package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
)

// deployDir holds the image's and the cluster's files.
var deployDir = filepath.Join("..", "..", "deploy")

// manifests are the Kubernetes objects under deploy/kubernetes, decoded.
type manifests struct {
	deployments []*appsv1.Deployment
	jobs        []*batchv1.Job
	services    []*corev1.Service
	pdbs        []*policyv1.PodDisruptionBudget
	rules       []*monitoringv1.PrometheusRule
	monitors    []*monitoringv1.ServiceMonitor
}

// loadManifests decodes every document of every YAML file under
// deploy/kubernetes strictly into its Kubernetes type: an unknown field, a
// misspelt one or a kind we do not ship fails t.
func loadManifests(t *testing.T) *manifests {
	t.Helper()
	var m manifests
	files, err := filepath.Glob(filepath.Join(deployDir, "kubernetes", "*", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests under deploy/kubernetes: %v", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split(string(raw), "\n---\n") {
			if err := m.add([]byte(doc)); err != nil {
				t.Errorf("%s, document %d: %v", f, i+1, err)
			}
		}
	}
	return &m
}

// add decodes one document strictly by its kind.
func (m *manifests) add(doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	into := map[string]func() any{
		"apps/v1 Deployment":                      func() any { return appendNew(&m.deployments) },
		"batch/v1 Job":                            func() any { return appendNew(&m.jobs) },
		"v1 Service":                              func() any { return appendNew(&m.services) },
		"policy/v1 PodDisruptionBudget":           func() any { return appendNew(&m.pdbs) },
		"monitoring.coreos.com/v1 PrometheusRule": func() any { return appendNew(&m.rules) },
		"monitoring.coreos.com/v1 ServiceMonitor": func() any { return appendNew(&m.monitors) },
	}[tm.APIVersion+" "+tm.Kind]
	if into == nil {
		return fmt.Errorf("unexpected kind %q %q", tm.APIVersion, tm.Kind)
	}
	return yaml.UnmarshalStrict(doc, into())
}

// appendNew appends a new zero T to list and returns it, to decode into.
func appendNew[T any](list *[]*T) *T {
	v := new(T)
	*list = append(*list, v)
	return v
}

// pods returns every pod template by the name of what owns it.
func (m *manifests) pods() map[string]*corev1.PodTemplateSpec {
	out := map[string]*corev1.PodTemplateSpec{}
	for _, d := range m.deployments {
		out[d.Name] = &d.Spec.Template
	}
	for _, j := range m.jobs {
		out[j.Name] = &j.Spec.Template
	}
	return out
}

// secretPlaceholder stands in for a value a container reads from a Secret.
const secretPlaceholder = "from-a-secret-0123456789abcdef0123456789abcdef"

// commandLine parses a container's command line as the binary does: its
// TAGCOUNT_ variables as the flags they fall back on, then its args through
// the command's own parser. It returns the command and its settings.
func commandLine(c corev1.Container) (string, settings, error) {
	var s settings
	if len(c.Command) > 0 {
		return "", s, fmt.Errorf("command %q replaces the image's entrypoint", c.Command)
	}
	if len(c.Args) == 0 {
		return "", s, fmt.Errorf("no args: the image's default command is only `version`")
	}
	name := c.Args[0]
	if _, ok := commands[name]; !ok {
		return name, s, fmt.Errorf("no command %q", name)
	}
	var fromEnv []string
	for _, e := range c.Env {
		flagName, ok := strings.CutPrefix(e.Name, "TAGCOUNT_")
		if !ok {
			return name, s, fmt.Errorf("variable %s is not a TAGCOUNT_ setting", e.Name)
		}
		v := e.Value
		if e.ValueFrom != nil {
			v = secretPlaceholder
		}
		fromEnv = append(fromEnv, "--"+strings.ToLower(strings.ReplaceAll(flagName, "_", "-"))+"="+v)
	}
	args := append(fromEnv, c.Args[1:]...)
	var extra func(*flag.FlagSet)
	if name == "migrate" {
		var m migrateOptions
		extra = m.register
	}
	rest, err := parse(name, args, io.Discard, &s, extra)
	if err != nil {
		return name, s, err
	}
	if name == "migrate" && !slices.Equal(rest, []string{"up"}) {
		return name, s, fmt.Errorf("migrate runs %q, want up", rest)
	}
	return name, s, nil
}

// portOf returns the port of a listen address such as ":9090".
func portOf(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	var n int32
	fmt.Sscan(p, &n)
	return n
}

func TestManifestsDecodeStrictlyAndRunEveryRole(t *testing.T) {
	t.Parallel()
	m := loadManifests(t)
	roles := map[string]bool{}
	for owner, pod := range m.pods() {
		if pod.Spec.SecurityContext == nil || pod.Spec.SecurityContext.RunAsNonRoot == nil || !*pod.Spec.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: the pod does not require a non-root user", owner)
		}
		for _, c := range pod.Spec.Containers {
			name, s, err := commandLine(c)
			if err != nil {
				t.Errorf("%s/%s: %v", owner, c.Name, err)
				continue
			}
			roles[name] = true
			checkContainer(t, owner, pod, c, name, s)
		}
	}
	for _, want := range []string{"api", "worker", "counter", "migrate"} {
		if !roles[want] {
			t.Errorf("no manifest runs tagcount %s", want)
		}
	}
	if len(m.rules) != 1 || len(m.monitors) != 1 {
		t.Errorf("want one PrometheusRule and one ServiceMonitor, found %d and %d", len(m.rules), len(m.monitors))
	}
}

// checkContainer checks what a container needs: resources, a locked-down
// security context, the ports its flags listen on, probes on routes those
// ports serve, and a grace period longer than its way out.
func checkContainer(t *testing.T, owner string, pod *corev1.PodTemplateSpec, c corev1.Container, role string, s settings) {
	t.Helper()
	where := owner + "/" + c.Name
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: wants CPU and memory requests and a memory limit, has %v", where, c.Resources)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: wants a read-only root file system and no privilege escalation", where)
	}
	if role == "migrate" {
		return
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if s.AdminAddr == "" {
		t.Fatalf("%s: no --admin-addr; the probes and /metrics belong on the admin port", where)
	}
	if ports["admin"] != portOf(t, s.AdminAddr) {
		t.Errorf("%s: port admin is %d, --admin-addr is %s", where, ports["admin"], s.AdminAddr)
	}
	if role == "api" && ports["http"] != portOf(t, s.HTTPAddr) {
		t.Errorf("%s: port http is %d, --http-addr is %s", where, ports["http"], s.HTTPAddr)
	}
	for kind, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: no HTTP %s probe", where, kind)
			continue
		}
		port := p.HTTPGet.Port.IntVal
		if p.HTTPGet.Port.StrVal != "" {
			port = ports[p.HTTPGet.Port.StrVal]
		}
		if port != portOf(t, s.AdminAddr) {
			t.Errorf("%s: the %s probe asks port %v, not --admin-addr %s", where, kind, p.HTTPGet.Port.String(), s.AdminAddr)
		}
		if code := adminRouteStatus(p.HTTPGet.Path); code != http.StatusOK {
			t.Errorf("%s: the %s probe's path %s answers %d on the admin listener", where, kind, p.HTTPGet.Path, code)
		}
	}
	if kind := "readiness"; c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("%s: the %s probe asks %s, not /readyz", where, kind, c.ReadinessProbe.HTTPGet.Path)
	}
	grace := time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	if budget := shutdownBudget(role, s); grace < budget {
		t.Errorf("%s: terminationGracePeriodSeconds %v is shorter than the way out (%v)", where, grace, budget)
	}
}

// adminRouteStatus is what the admin listener answers to GET path, with
// every readiness check passing.
func adminRouteStatus(path string) int {
	h := httpapi.NewAdminServer(httpapi.Deps{Ready: []httpapi.Check{{Name: "mysql", Err: func(context.Context) error { return nil }}}})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code
}

func TestServicesAndDisruptionBudgetsSelectPodsAndTheirPorts(t *testing.T) {
	t.Parallel()
	m := loadManifests(t)
	selects := func(sel map[string]string) []*appsv1.Deployment {
		var out []*appsv1.Deployment
		for _, d := range m.deployments {
			if len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(d.Spec.Template.Labels)) {
				out = append(out, d)
			}
		}
		return out
	}
	for _, d := range m.deployments {
		if !labels.SelectorFromSet(d.Spec.Selector.MatchLabels).Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("deployment %s: its selector does not match its pods", d.Name)
		}
	}
	for _, svc := range m.services {
		ds := selects(svc.Spec.Selector)
		if len(ds) != 1 {
			t.Errorf("service %s selects %d deployments, want 1", svc.Name, len(ds))
			continue
		}
		for _, p := range svc.Spec.Ports {
			if !slices.ContainsFunc(ds[0].Spec.Template.Spec.Containers[0].Ports, func(cp corev1.ContainerPort) bool {
				return cp.Name == p.TargetPort.StrVal
			}) {
				t.Errorf("service %s: target port %q is no port of %s", svc.Name, p.TargetPort.String(), ds[0].Name)
			}
		}
	}
	covered := map[string]bool{}
	for _, pdb := range m.pdbs {
		for _, d := range selects(pdb.Spec.Selector.MatchLabels) {
			covered[d.Name] = true
		}
	}
	for _, d := range m.deployments {
		if !covered[d.Name] {
			t.Errorf("deployment %s has no PodDisruptionBudget", d.Name)
		}
	}
}

func TestThePrometheusRuleIsTheMonitoringRules(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "prometheusrule.yaml")
	if b, err := exec.Command("bash", filepath.Join(deployDir, "gen-prometheusrule.sh"), out).CombinedOutput(); err != nil {
		t.Fatalf("gen-prometheusrule.sh: %v\n%s", err, b)
	}
	want, _ := os.ReadFile(out)
	got, err := os.ReadFile(filepath.Join(deployDir, "kubernetes", "monitoring", "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("deploy/kubernetes/monitoring/prometheusrule.yaml is not docs/monitoring/rules.yml: run deploy/gen-prometheusrule.sh")
	}
	var rule monitoringv1.PrometheusRule
	if err := yaml.UnmarshalStrict(got, &rule); err != nil {
		t.Fatalf("the PrometheusRule does not decode strictly: %v", err)
	}
	// Decoded on their own, the rules are the spec's, rule for rule.
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var spec monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(raw, &spec); err != nil {
		t.Fatalf("rules.yml does not decode as a PrometheusRule's spec: %v", err)
	}
	if len(spec.Groups) == 0 || !reflect.DeepEqual(spec, rule.Spec) {
		t.Fatalf("the PrometheusRule's groups differ from rules.yml's (%d groups there)", len(spec.Groups))
	}
}

func TestAStampedBuildSaysItsVersionCommitAndBuildTime(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "tagcount")
	stampFlags := "-X main.version=v1.2.3-test -X main.commit=0123456789abcdef -X main.built=2026-12-07T18:00:00Z"
	build := exec.Command("go", "build", "-ldflags", stampFlags, "-o", bin, "./cmd/tagcount")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("tagcount version: %v\n%s", err, out)
	}
	for _, want := range []string{"version       v1.2.3-test", "commit        0123456789abcdef", "built         2026-12-07T18:00:00Z"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("tagcount version does not say %q:\n%s", want, out)
		}
	}
}

func TestTheBuildInfoGaugeNamesTheBuild(t *testing.T) {
	t.Parallel()
	// go test does not stamp: the toolchain's values stand in.
	st := stamp(&debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}}})
	if st != (buildStamp{Version: "(devel)", Commit: "abc", Built: "unknown"}) {
		t.Fatalf("stamp of an unstamped build: %+v", st)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(buildInfo())
	n, err := testutil.GatherAndCount(reg, "tagcount_build_info")
	if err != nil || n != 1 {
		t.Fatalf("tagcount_build_info: %d series, %v", n, err)
	}
}

// TestTheImageBuildsFromTheBinary builds the image with deploy/build-image.sh
// into a private image store and checks what it holds: the binary, the CA
// bundle, a non-root user, nothing else (no shell).
func TestTheImageBuildsFromTheBinary(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed (apt-get install podman; .ci/run installs it): the image build is not tested")
	}
	// podman wants a run root path of at most 50 characters.
	runRoot, err := os.MkdirTemp("/tmp", "tcpod")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runRoot) })
	podman := "podman --root " + filepath.Join(t.TempDir(), "root") + " --runroot " + runRoot + " --storage-driver vfs"
	image := "localhost/tagcount-test:" + randomHex(4)
	build := exec.Command("bash", filepath.Join("deploy", "build-image.sh"))
	build.Dir = filepath.Join("..", "..")
	build.Env = append(os.Environ(), "PODMAN="+podman, "IMAGE="+image, "VERSION=v0.0.0-imagetest", "COMMIT=feedface", "BUILT=2026-12-07T00:00:00Z")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build-image.sh: %v\n%s", err, out)
	}
	pm := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command("podman", append(strings.Fields(podman)[1:], args...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("podman %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	var inspect []struct {
		Config struct {
			User       string
			Entrypoint []string
			Labels     map[string]string
		}
	}
	if err := json.Unmarshal(pm("image", "inspect", image), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("podman image inspect: %v", err)
	}
	cfg := inspect[0].Config
	if cfg.User != "65532:65532" || !slices.Equal(cfg.Entrypoint, []string{"/tagcount"}) || cfg.Labels["org.opencontainers.image.version"] != "v0.0.0-imagetest" {
		t.Fatalf("image config: user %q, entrypoint %q, labels %v", cfg.User, cfg.Entrypoint, cfg.Labels)
	}
	// The file system, read without running anything.
	container := strings.TrimSpace(string(pm("create", image)))
	defer pm("rm", container)
	files := imageFiles(t, pm("export", container))
	if want := []string{"etc/ssl/certs/ca-certificates.crt", "tagcount"}; !slices.Equal(files, want) {
		t.Fatalf("the image holds %q, want only %q", files, want)
	}
}

// imageFiles lists the regular files of an exported container's tar.
func imageFiles(t *testing.T, tarball []byte) []string {
	t.Helper()
	r := tar.NewReader(bytes.NewReader(tarball))
	var files []string
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeSymlink {
			files = append(files, strings.TrimPrefix(h.Name, "/"))
		}
	}
	slices.Sort(files)
	return files
}
