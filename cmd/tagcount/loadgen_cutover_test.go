package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/loadgen"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// TestLoadgenCutoverScenarioWritesItsSeriesAndComputesItsChecks runs the
// cutover scenario small on a drifted archive — the legacy run first, a
// two-step plan, the whole reconcile started mid-plan — and checks that
// its outputs exist and its checks were computed: the phases, the plan's
// and the reconcile's outcomes, and the convergence, which must hold (every
// count exact, the corrections the injected drift). Nothing is timed: the
// guards' bounds are wide, and the latency targets are only present.
func TestLoadgenCutoverScenarioWritesItsSeriesAndComputesItsChecks(t *testing.T) {
	t.Parallel()
	db, _ := buildArchive(t, 2_000)
	dir := t.TempDir()
	file := func(name string) string { return filepath.Join(dir, name) }
	args := []string{"loadgen", "--scenario", "cutover", "--archive-db", db.Name, "--mysql-dsn", testdb.ServerDSN(),
		"--redis-addr", testdb.RequireRedis(t), "--log-file", file("service.log"),
		"--out-json", file("cutover.json"), "--out-png", file("cutover.png"), "--out-md", file("cutover.md"),
		"--rate", "20", "--concurrency", "8", "--authors", "40", "--body-chars", "200", "--max-retry-wait", "50ms",
		"--legacy-first", "2s", "--steady", "3s", "--rollout-steps", "50,100", "--rollout-hold", "2s", "--rollout-interval", "500ms",
		"--rollout-min-posts", "3", "--rollout-post-p99", "1m", "--rollout-freshness-p99", "1m", "--reconcile-at", "4s",
		"--series-every", "1s", "--after", "1s", "--reconcile-timeout", "5m", "--plan-timeout", "3m",
		"--poll-timeout", "1m", "--drain-timeout", "2m"}
	var stdout bytes.Buffer
	var stderr testdb.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("tagcount loadgen: %v\nstderr:\n%s", err, stderr.String())
	}
	for _, name := range []string{"cutover.png", "cutover.md"} {
		if fi, err := os.Stat(file(name)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v; want the file written", name, err)
		}
	}
	var rep loadgen.CutoverReport
	b, err := os.ReadFile(file("cutover.json"))
	if err == nil {
		err = json.Unmarshal(b, &rep)
	}
	if err != nil {
		t.Fatalf("--out-json: %v", err)
	}
	checkCutoverReport(t, rep, stdout.String())
}

// checkCutoverReport fails t unless rep holds every part of a cutover's
// report, with counts that converged.
func checkCutoverReport(t *testing.T, rep loadgen.CutoverReport, text string) {
	t.Helper()
	phases := map[string]bool{}
	for _, s := range rep.Series {
		phases[s.Phase] = true
	}
	if !phases[loadgen.PhaseSteady] || len(rep.LegacySeries) == 0 || rep.Legacy == nil || rep.Run == nil {
		t.Errorf("phases %v, legacy run %v with %d samples; want a steady phase and the legacy run's series", phases, rep.Legacy != nil, len(rep.LegacySeries))
	}
	if ro := rep.Rollout; ro == nil || (ro.State != "done" && ro.State != "rolled_back") || len(ro.StateJSON) == 0 {
		t.Errorf("rollout %+v; want the plan ended, with its state", ro)
	}
	if rc := rep.Reconcile; rc == nil || rc.State != "done" || rc.Scanned == 0 || rc.Scanned < rc.Total {
		t.Errorf("reconcile %+v; want the whole run done", rc)
	}
	if c := rep.Converged; c == nil || c.Error != "" || c.WrongTags != 0 || !c.Checked || c.CorrectionMismatches != 0 || c.Corrections != c.Injected || c.Injected == 0 {
		t.Errorf("convergence %+v; want every count exact and the corrections the injected drift", c)
	}
	want := []string{"completed / accepted posts", "5xx other than 503 with Retry-After", "reconcile corrections/s, every interval",
		"every tag's four numbers = independent recount", "corrections = drift injected, tag for tag", "plan walked every step"}
	for _, name := range want {
		found := false
		for _, tg := range rep.Targets {
			found = found || tg.Name == name
		}
		if !found {
			t.Errorf("targets %+v; want %q", rep.Targets, name)
		}
	}
	if !strings.Contains(text, "targets:") || !strings.Contains(text, "legacy (flag 0 %)") {
		t.Errorf("the printed report lacks the targets or the legacy comparison:\n%s", text)
	}
}
