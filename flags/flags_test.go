package flags

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tagcount/tagcount/migrations/testdb"
)

func TestWithoutServerTheEmbeddedBootstrapTurnsEverythingOn(t *testing.T) {
	t.Parallel()
	c := newClient(t, Config{})

	if got := countOn(c, NewPostingPath, 200); got != 200 {
		t.Errorf("NewPostingPath on for %d of 200 authors, want all (bootstrap 100%%)", got)
	}
	if !c.TierDeferral() || !c.ReconcileApply() {
		t.Errorf("TierDeferral=%v ReconcileApply=%v, want both on", c.TierDeferral(), c.ReconcileApply())
	}
	if s := c.Snapshot(); s.Source != SourceBootstrap || !s.LastSync.IsZero() || s.ServerURL != "" {
		t.Errorf("snapshot = %+v, want source bootstrap, no sync, no server", s)
	}
	if err := c.WaitForSync(context.Background()); !errors.Is(err, ErrNoServer) {
		t.Errorf("WaitForSync = %v, want ErrNoServer", err)
	}
}

func TestUnknownFlagIsOff(t *testing.T) {
	t.Parallel()
	c := newClient(t, Config{})
	if c.Enabled("tagcount.no-such-flag", 7) {
		t.Error("an unknown flag is on")
	}
}

func TestUnreachableServerUsesTheBootstrapFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	boot := writeFile(t, dir, "bootstrap.json", featuresJSON(
		flagDoc{NewPostingPath, true, 0},
		flagDoc{TierDeferral, true, 100},
		flagDoc{ReconcileApply, false, 100},
	), time.Now())
	c := newClient(t, Config{URL: deadURL(t), RefreshInterval: 50 * time.Millisecond,
		BootstrapFile: boot, BackupDir: filepath.Join(dir, "backup")})

	// Let it try (and fail) to fetch before looking.
	testdb.WaitFor(t, 5*time.Second, "a failed fetch", func() bool { return syncErrors(c) > 0 })

	if got := countOn(c, NewPostingPath, 100); got != 0 {
		t.Errorf("NewPostingPath on for %d authors, want 0 (bootstrap 0%%)", got)
	}
	if !c.TierDeferral() || c.ReconcileApply() {
		t.Errorf("TierDeferral=%v ReconcileApply=%v, want true,false from the bootstrap", c.TierDeferral(), c.ReconcileApply())
	}
	if s := c.Snapshot(); s.Source != SourceBootstrap || !s.LastSync.IsZero() {
		t.Errorf("snapshot source %q last sync %v, want bootstrap and never", s.Source, s.LastSync)
	}
}

func TestUnreachableServerWithoutBootstrapTurnsEverythingOff(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	boot := writeFile(t, dir, "empty.json", []byte(`{"version":2,"features":[]}`), time.Now())
	c := newClient(t, Config{URL: deadURL(t), RefreshInterval: 50 * time.Millisecond, BootstrapFile: boot})
	testdb.WaitFor(t, 5*time.Second, "a failed fetch", func() bool { return syncErrors(c) > 0 })

	if countOn(c, NewPostingPath, 100) != 0 || c.TierDeferral() || c.ReconcileApply() {
		t.Error("a flag is on with no server and no bootstrap; want all off")
	}
	s := c.Snapshot()
	if s.Source != SourceDefault {
		t.Errorf("source = %q, want default", s.Source)
	}
	for _, f := range s.Flags {
		if f.Defined || f.Default || *f.RolloutPercent != 0 {
			t.Errorf("flag %+v, want undefined, default off, rollout 0", f)
		}
	}
}

func TestStaleBackupDoesNotOverrideANewerBootstrap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	backupDir := filepath.Join(dir, "unleash")
	os.MkdirAll(backupDir, 0o750)
	now := time.Now()
	writeBackup(t, backupDir, now.Add(-time.Hour), flagDoc{NewPostingPath, true, 100}, flagDoc{TierDeferral, true, 100})
	boot := writeFile(t, dir, "bootstrap.json", featuresJSON(flagDoc{NewPostingPath, true, 0}, flagDoc{TierDeferral, false, 100}), now)

	c := newClient(t, Config{URL: deadURL(t), RefreshInterval: time.Second, BootstrapFile: boot, BackupDir: backupDir})

	if got := countOn(c, NewPostingPath, 100); got != 0 {
		t.Errorf("NewPostingPath on for %d authors: the stale backup (100%%) won over the bootstrap (0%%)", got)
	}
	if c.TierDeferral() {
		t.Error("TierDeferral on: the stale backup won over the bootstrap")
	}
	if s := c.Snapshot(); s.Source != SourceBootstrap {
		t.Errorf("source = %q, want bootstrap", s.Source)
	}
}

func TestBackupNewerThanBootstrapIsTheLastKnownState(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Now()
	boot := writeFile(t, dir, "bootstrap.json", featuresJSON(flagDoc{NewPostingPath, true, 0}), now.Add(-time.Hour))
	writeBackup(t, dir, now, flagDoc{NewPostingPath, true, 100})

	c := newClient(t, Config{URL: deadURL(t), RefreshInterval: time.Second, BootstrapFile: boot, BackupDir: dir})

	if got := countOn(c, NewPostingPath, 100); got != 100 {
		t.Errorf("NewPostingPath on for %d authors, want 100 from the backup", got)
	}
	if s := c.Snapshot(); s.Source != SourceBackup {
		t.Errorf("source = %q, want backup", s.Source)
	}
}

func TestWithoutServerTheBackupIsIgnored(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	boot := writeFile(t, dir, "bootstrap.json", featuresJSON(flagDoc{NewPostingPath, true, 0}), time.Now().Add(-time.Hour))
	writeBackup(t, dir, time.Now(), flagDoc{NewPostingPath, true, 100})

	c := newClient(t, Config{BootstrapFile: boot, BackupDir: dir})
	if c.NewPostingPath(1) || c.Snapshot().Source != SourceBootstrap {
		t.Error("with no URL the client used the backup; want the bootstrap only")
	}
}

func TestCorruptBackupFallsBackToBootstrap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, dir, backupFileName("tagcount"), []byte(`{"tagcount.new-posting-path": {"enabled": "yes"`), time.Now())
	c := newClient(t, Config{URL: deadURL(t), RefreshInterval: time.Second, BackupDir: dir})
	if s := c.Snapshot(); s.Source != SourceBootstrap {
		t.Errorf("source = %q, want bootstrap", s.Source)
	}
}

func TestNegativeRefreshIntervalWithURLIsAConfigError(t *testing.T) {
	t.Parallel()
	c, err := New(context.Background(), Config{URL: "http://127.0.0.1:1/api", RefreshInterval: -time.Second, Logger: testLogger(t)})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "RefreshInterval") {
		t.Errorf("New = %v, %v; want an ErrConfig naming RefreshInterval", c, err)
	}
}

// TestZeroConfigFieldsTakeThePackageDefaults: a zero field means its
// default, the one the service's flags show.
func TestZeroConfigFieldsTakeThePackageDefaults(t *testing.T) {
	t.Parallel()
	c := Config{URL: "http://127.0.0.1:1/api"}.WithDefaults()
	if c.RefreshInterval != DefaultRefreshInterval || c.AppName != DefaultAppName || c.MetricsInterval != DefaultMetricsInterval ||
		c.HTTPTimeout != DefaultHTTPTimeout || c.Logger == nil || c.InstanceID == "" {
		t.Errorf("WithDefaults() = %+v; want every default", c)
	}
	if again := c.WithDefaults(); again != c {
		t.Errorf("WithDefaults twice = %+v; want the same as once", again)
	}
}

func TestBadConfigIsAnError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cases := map[string]Config{
		"relative URL":      {URL: "127.0.0.1:4242/api", RefreshInterval: time.Second},
		"missing bootstrap": {BootstrapFile: filepath.Join(dir, "nope.json")},
		"bad app name":      {AppName: "../etc"},
	}
	for name, cfg := range cases {
		cfg.Logger = testLogger(t)
		if _, err := New(context.Background(), cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: New error = %v, want ErrConfig", name, err)
		}
	}
}

func TestMalformedBootstrapIsAConfigErrorNotAPanic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, body := range map[string]string{
		"not json":        `features: on`,
		"truncated":       `{"version":2,"features":[{"name":"x"`,
		"no features":     `{"version":2}`,
		"wrong types":     `{"version":2,"features":[{"name":"x","enabled":"yes"}]}`,
		"nameless flag":   `{"version":2,"features":[{"enabled":true}]}`,
		"trailing object": `{"version":2,"features":[]} {}`,
	} {
		p := writeFile(t, dir, strings.ReplaceAll(name, " ", "_")+".json", []byte(body), time.Now())
		_, err := New(context.Background(), Config{BootstrapFile: p, Logger: testLogger(t)})
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: New error = %v, want ErrConfig naming the file", name, err)
		}
	}
}

func TestMalformedStrategyParametersDoNotPanic(t *testing.T) {
	t.Parallel()
	// The Unleash client panics on a flexibleRollout without stickiness or
	// with a non-string groupId.
	body := `{"version":2,"features":[
	  {"name":"tagcount.new-posting-path","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":{"rollout":"100"}}]},
	  {"name":"tagcount.tier-deferral","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":{"rollout":100,"stickiness":7,"groupId":12}}]},
	  {"name":"tagcount.reconcile-apply","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":null}]}
	]}`
	p := writeFile(t, t.TempDir(), "b.json", []byte(body), time.Now())
	c := newClient(t, Config{BootstrapFile: p})

	if !c.NewPostingPath(42) || !c.TierDeferral() {
		t.Error("repaired 100% rollouts evaluate off")
	}
	if c.ReconcileApply() {
		t.Error("a rollout with no percentage evaluates on")
	}
	if n := testutil.ToFloat64(c.metrics.evalErrors); n != 0 {
		t.Errorf("%v evaluation errors, want repairs to prevent them", n)
	}
}

func TestEvaluationPanicIsOffNotACrash(t *testing.T) {
	t.Parallel()
	c := newClient(t, Config{})
	// Bypass the repairs, as a client bug they do not know of would.
	broken, err := parseFeatures([]byte(`{"version":2,"features":[{"name":"tagcount.new-posting-path","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":{"rollout":"100"}}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	f := broken[NewPostingPath]
	delete(f.Strategies[0].Parameters, "stickiness")
	c.store.mu.Lock()
	c.store.data[NewPostingPath] = f
	c.store.mu.Unlock()

	if c.NewPostingPath(1) {
		t.Error("a definition that panics evaluates on")
	}
	if n := testutil.ToFloat64(c.metrics.evalErrors); n != 1 {
		t.Errorf("evaluation errors = %v, want 1", n)
	}
}

func TestNewDoesNotWaitForAServerThatNeverAnswers(t *testing.T) {
	t.Parallel()
	l := testdb.Listen(t)
	go func() { // accept and never answer
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()

	// New and Close return while the server stays silent; the deadlines
	// only catch a hang.
	type newResult struct {
		c   *Client
		err error
	}
	created := make(chan newResult, 1)
	go func() {
		c, err := New(context.Background(), Config{URL: "http://" + l.Addr().String() + "/api", RefreshInterval: time.Second, Logger: testLogger(t)})
		created <- newResult{c, err}
	}()
	var r newResult
	testdb.WaitFor(t, 30*time.Second, "New to return while the server is silent", func() bool {
		select {
		case r = <-created:
			return true
		default:
			return false
		}
	})
	if r.err != nil {
		t.Fatal(r.err)
	}
	c := r.c
	if !c.NewPostingPath(3) {
		t.Error("bootstrap not in force while the server is silent")
	}
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	testdb.WaitFor(t, 30*time.Second, "Close to return while the server is silent", func() bool {
		select {
		case <-closed:
			return true
		default:
			return false
		}
	})
	if c.NewPostingPath(3) {
		t.Error("evaluation after Close is on, want off")
	}
}

func TestEvaluationsAreCountedOnTheRegistryAndASecondClientThereIsAWiringBug(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	a := newClient(t, Config{Registerer: reg})
	a.NewPostingPath(1)
	a.NewPostingPath(2)
	a.Enabled("tagcount.other", 2)
	if got := testutil.ToFloat64(a.metrics.evaluations.WithLabelValues(NewPostingPath, "on")); got != 2 {
		t.Errorf("evaluations{on} = %v, want 2", got)
	}
	if n, err := testutil.GatherAndCount(reg, "tagcount_flags_evaluations_total"); err != nil || n == 0 {
		t.Errorf("gather: %d series, %v", n, err)
	}
	defer func() {
		if recover() == nil {
			t.Error("a second client registered its metrics on the same registry without complaint")
		}
	}()
	newMetrics(reg)
}

func TestRolloutSummary(t *testing.T) {
	t.Parallel()
	features, err := parseFeatures([]byte(`{"version":2,"features":[
	  {"name":"off","enabled":false,"strategies":[{"name":"default"}]},
	  {"name":"bare","enabled":true,"strategies":[]},
	  {"name":"std","enabled":true,"strategies":[{"name":"default"}]},
	  {"name":"half","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":{"rollout":"50","stickiness":"userId","groupId":"half"}}]},
	  {"name":"constrained","enabled":true,"strategies":[{"name":"flexibleRollout","constraints":[{"contextName":"userId","operator":"IN","values":["1"]}],"parameters":{"rollout":"100"}}]}
	]}`))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{"off": 0, "bare": 100, "std": 100, "half": 50, "constrained": -1} {
		got, _ := rollout(features[name])
		switch {
		case want < 0 && got != nil:
			t.Errorf("%s: rollout %v, want unknown (nil)", name, *got)
		case want >= 0 && (got == nil || *got != want):
			t.Errorf("%s: rollout %v, want %v", name, got, want)
		}
	}
}

func TestUnchangedFetchRefreshesTheBackupDate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), backupFileName("tagcount"))
	m := newMetrics(nil)
	s := newStore(testLogger(t), m, bootstrap{}, path, true)
	features, _ := parseFeatures(featuresJSON(flagDoc{NewPostingPath, true, 100}))
	s.Reset(toAny(features), true)
	old := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}

	confirmed := time.Now().Truncate(time.Second)
	s.touch(confirmed) // a 304 from the server

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(confirmed) {
		t.Errorf("backup dated %v after the server confirmed it at %v", fi.ModTime(), confirmed)
	}
	if got, _, err := readBackup(path); err != nil || !got[NewPostingPath].Enabled {
		t.Errorf("backup = %v, %v; want the fetched state", got, err)
	}
}
