package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// The monitoring files live in docs/monitoring; tests run in cmd/tagcount.
var (
	rulesFile     = filepath.Join("..", "..", "docs", "monitoring", "rules.yml")
	rulesTestFile = filepath.Join("..", "..", "docs", "monitoring", "rules_test.yml")
	dashboardFile = filepath.Join("..", "..", "docs", "monitoring", "dashboard.json")
)

// requireTool returns the path of program name, installing its Debian
// package first when it is missing (the README's test command needs nothing
// done by hand). A machine where it cannot be installed fails the test, with
// apt-get's output, rather than skipping it.
func requireTool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	toolInstall.Lock()
	defer toolInstall.Unlock()
	if p, err := exec.LookPath(name); err == nil {
		return p // installed by a test that held the lock first
	}
	t.Logf("%s is not installed: installing Debian's %s", name, debianPackage)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", "--no-install-recommends", debianPackage}} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s is not installed and apt-get %s failed (%v); install %s by hand:\n%s",
				name, args[0], err, debianPackage, out)
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s installed but %s is not on PATH", debianPackage, name)
	}
	return p
}

// toolInstall lets one test at a time install a package.
var toolInstall sync.Mutex

func TestMonitoringRulesPassPromtoolCheckAndUnitTests(t *testing.T) {
	t.Parallel()
	promtool := requireTool(t, "promtool", "prometheus")
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTestFile}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(raw, &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rf
}

// recordedNames lists the recording rules' names.
func recordedNames(rf ruleFile) []string {
	var names []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				names = append(names, r.Record)
			}
		}
	}
	return names
}

func TestMonitoringAlertsLinkARunbookSectionOfOperations(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ (.+)$`).FindAllStringSubmatch(string(raw), -1) {
		anchors[markdownAnchor(m[1])] = true
	}
	alerts := 0
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			link := r.Annotations["runbook_url"]
			section, ok := strings.CutPrefix(link, "docs/operations.md#")
			if !ok || !anchors[section] {
				t.Errorf("alert %s: runbook_url %q is not a section of docs/operations.md", r.Alert, link)
			}
		}
	}
	if alerts == 0 {
		t.Error("no alerts found in the rules")
	}
}

// markdownAnchor is the fragment a Markdown renderer gives a heading:
// lower case, punctuation dropped, spaces as dashes.
func markdownAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestMonitoringRecordingRulesHaveValuesOnALiveStack(t *testing.T) {
	t.Parallel()
	prometheusBin := requireTool(t, "prometheus", "prometheus")
	st := testStack(t, stackOptions{Path: "new"})
	prom := startPrometheus(t, prometheusBin, strings.TrimPrefix(st.URL, "http://"))
	c := st.client(t, 7, httpapi.RoleAuthor)

	// Two rounds of posts with a scrape between them, so every lazily
	// created series has a sample before the second round moves it and
	// the rates and quantiles have something to show.
	postWorks(t, c, "first round", 10)
	testdb.WaitFor(t, time.Minute, "Prometheus to scrape the first round", func() bool {
		return len(prom.query(t, `tagcount_posts_total{path="new"}`)) > 0
	})
	postWorks(t, c, "second round", 10)

	want := recordedNames(readRules(t))
	var missing []string
	var got map[string][]promSample
	defer func() {
		if t.Failed() {
			t.Logf("recording rules without a value: %v; values: %v", missing, got)
		}
	}()
	testdb.WaitFor(t, time.Minute, "every recording rule to have a value", func() bool {
		got = map[string][]promSample{}
		for _, s := range prom.query(t, `{__name__=~"tagcount:.+"}`) {
			got[s.Metric["__name__"]] = append(got[s.Metric["__name__"]], s)
		}
		missing = missing[:0]
		for _, name := range want {
			if len(got[name]) == 0 {
				missing = append(missing, name)
			}
		}
		return len(missing) == 0 && liveValuesMoved(got)
	})
	if v := value(got, "tagcount:post_errors:ratio_rate5m", "new"); v != 0 {
		t.Errorf(`tagcount:post_errors:ratio_rate5m{path="new"} = %v, want 0 (no Post failed)`, v)
	}
}

// liveValuesMoved says whether the rules over the posts just made show them:
// a positive rate and a finite p99 from each histogram the posts fed.
func liveValuesMoved(got map[string][]promSample) bool {
	positive := func(v float64) bool { return v > 0 && !math.IsInf(v, 0) }
	return positive(value(got, "tagcount:posts:rate5m", "new")) &&
		positive(value(got, "tagcount:post_duration_seconds:p99_5m", "new")) &&
		positive(value(got, "tagcount:post_to_posted_seconds:p99_5m", "")) &&
		positive(value(got, "tagcount:event_age_seconds:p99_5m", "")) &&
		positive(value(got, "tagcount:http_requests:rate5m", "POST /v1/drafts")) &&
		positive(value(got, "tagcount:http_request_duration_seconds:p99_5m", "POST /v1/drafts"))
}

// value returns the sample of name whose path or route label is label (any
// sample for label ""), or NaN.
func value(got map[string][]promSample, name, label string) float64 {
	for _, s := range got[name] {
		if label == "" || s.Metric["path"] == label || s.Metric["route"] == label {
			return s.Value
		}
	}
	return math.NaN()
}

// postWorks creates and posts n drafts through the API and waits until
// each is posted.
func postWorks(t *testing.T, c *client, title string, n int) {
	t.Helper()
	ids := make([]string, 0, n)
	for i := range n {
		status, d, _ := c.do("POST", "/v1/drafts", draftBody(fmt.Sprintf("%s %d", title, i), "Fluff", "Monitoring"))
		if status != 201 {
			t.Fatalf("create draft: %d %v", status, d)
		}
		if status, res, _ := c.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil); status != 202 {
			t.Fatalf("post: %d %v; want 202", status, res)
		}
		ids = append(ids, id(d, "id"))
	}
	testdb.WaitFor(t, 30*time.Second, title+" to be posted", func() bool {
		for len(ids) > 0 {
			if _, d, _ := c.do("GET", "/v1/drafts/"+ids[0], nil); d["state"] != "posted" {
				return false
			}
			ids = ids[1:]
		}
		return true
	})
}

// prometheusServer is a Prometheus process scraping one target every
// second and evaluating rules.yml every second.
type prometheusServer struct {
	url string
	out *testdb.Buffer
}

func startPrometheus(t *testing.T, bin, target string) *prometheusServer {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: tagcount-dev
    static_configs:
      - targets: [%q]
`, rules, target)
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testdb.FreePort(t))
	p := &prometheusServer{url: "http://" + addr, out: &testdb.Buffer{}}
	cmd := exec.Command(bin, "--config.file="+configFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("prometheus output:\n%s", p.out.String())
		}
	})
	testdb.WaitFor(t, time.Minute, "Prometheus to be ready", func() bool {
		select {
		case <-exited:
			t.Fatalf("prometheus exited:\n%s", p.out.String())
		default:
		}
		res, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	return p
}

type promSample struct {
	Metric map[string]string
	Value  float64
}

// query runs an instant query through Prometheus's HTTP API.
func (p *prometheusServer) query(t *testing.T, q string) []promSample {
	t.Helper()
	res, err := http.Get(p.url + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	defer res.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil || body.Status != "success" {
		t.Fatalf("query %s: %d %v %s", q, res.StatusCode, err, body.Error)
	}
	out := make([]promSample, 0, len(body.Data.Result))
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("query %s: value %v: %v", q, r.Value, err)
		}
		out = append(out, promSample{Metric: r.Metric, Value: v})
	}
	return out
}

// notExposedByDev lists the names the rules or the dashboard may use although
// a dev stack with a few posts does not expose them. Keep it minimal, each
// with its reason.
var notExposedByDev = map[string]string{
	// Made by Prometheus itself for every target, not by tagcount.
	"up": "Prometheus's scrape health",
}

func TestMonitoringRulesAndDashboardNameOnlyMetricsTheServiceExposes(t *testing.T) {
	t.Parallel()
	rf := readRules(t)
	recorded := recordedNames(rf)
	var exprs []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	exprs = append(exprs, dashboardExprs(t)...)
	used := map[string]bool{}
	for _, e := range exprs {
		for _, name := range selectorNames(t, e) {
			used[name] = true
		}
	}

	st := testStack(t, stackOptions{Path: "new"})
	c := st.client(t, 8, httpapi.RoleAuthor)
	postWorks(t, c, "metrics", 3)
	// The counter's series (lag, event age) appear once it has applied a batch.
	testdb.WaitFor(t, 30*time.Second, "the counter to count the posts", func() bool {
		s, tag, _ := c.do("GET", "/v1/tags?type=freeform&name=Monitoring", nil)
		return s == 200 && tag["count"] == float64(3)
	})
	exposed := exposedNames(t, st.URL+"/metrics")

	var unknown []string
	for name := range used {
		switch {
		case strings.Contains(name, ":"):
			if !slices.Contains(recorded, name) {
				unknown = append(unknown, name+" (no recording rule of that name)")
			}
		case exposed[name]:
		case notExposedByDev[name] != "":
		default:
			unknown = append(unknown, name)
		}
	}
	sort.Strings(unknown)
	if len(unknown) > 0 {
		t.Errorf("the rules or the dashboard use series the service does not expose:\n  %s", strings.Join(unknown, "\n  "))
	}
	if !used["tagcount_posts_total"] || !used["tagcount:posts:rate5m"] {
		t.Errorf("found no use of tagcount_posts_total or tagcount:posts:rate5m: is the parsing broken? %v", used)
	}
}

// selectorNames returns the metric names the PromQL expression e selects.
func selectorNames(t *testing.T, e string) []string {
	t.Helper()
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(e)
	if err != nil {
		t.Fatalf("parse %q: %v", e, err)
	}
	var names []string
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			if vs.Name == "" {
				t.Errorf("%q selects series by matchers alone; name the metric", e)
			}
			names = append(names, vs.Name)
		}
		return nil
	})
	return names
}

// grafanaVariables are the interval variables dashboards may use in
// expressions; they stand for a duration.
var grafanaVariables = regexp.MustCompile(`\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}`)

// dashboardExprs returns the PromQL of every panel target of the dashboard,
// after checking that it is an importable dashboard on a Prometheus data
// source variable.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title         string `json:"title"`
		SchemaVersion int    `json:"schemaVersion"`
		Templating    struct {
			List []struct{ Name, Type, Query string } `json:"list"`
		} `json:"templating"`
		Panels []dashboardPanel `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("dashboard: title %q, schemaVersion %d; want a title and a current schema", d.Title, d.SchemaVersion)
	}
	hasDS := slices.ContainsFunc(d.Templating.List, func(v struct{ Name, Type, Query string }) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	})
	if !hasDS {
		t.Errorf("dashboard: no data source variable of type prometheus named datasource")
	}
	var exprs []string
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			if p.Type != "row" && (p.Datasource.UID != "${datasource}" || len(p.Targets) == 0) {
				t.Errorf("dashboard panel %q: data source %q, %d targets; want ${datasource} and a query", p.Title, p.Datasource.UID, len(p.Targets))
			}
			for _, tg := range p.Targets {
				exprs = append(exprs, grafanaVariables.ReplaceAllString(tg.Expr, "1m"))
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return exprs
}

type dashboardPanel struct {
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}

// metricFamilies scrapes /metrics at u (through the API's checking client)
// and returns its families by name; it fails t when u does not answer in
// Prometheus' text format.
func metricFamilies(t *testing.T, u string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := apiClient(t).Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", u, err)
	}
	return families
}

// exposedNames returns the series names /metrics at u exposes: every
// family's name, and a histogram's _bucket, _sum and _count series.
func exposedNames(t *testing.T, u string) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for name, f := range metricFamilies(t, u) {
		names[name] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[name+suffix] = true
			}
		}
	}
	return names
}
