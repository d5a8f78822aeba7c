package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/loadgen"
	"github.com/tagcount/tagcount/migrations/testdb"
)

func TestLoadgenScenarioOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args    []string
		wantErr string // "" when the args must parse
		check   func(s loadgenSettings) bool
	}{
		{args: []string{"--scenario", "retry-storm"}, check: func(s loadgenSettings) bool {
			c := s.Overload
			return s.Scenario == "retry-storm" && c.NormalAuthors == 50 && c.StormConns == 64 && c.BulkPosts == 5000 &&
				c.FloodConns == 2000 && c.BulkAfter == 10 && s.Duration == 20*time.Second
		}},
		{args: []string{"--scenario", "bulk-import", "--bulk-posts", "300", "--bulk-after", "0", "--duration", "5s"}, check: func(s loadgenSettings) bool {
			return s.Overload.BulkPosts == 300 && s.Overload.BulkAfter == 0 && s.Duration == 5*time.Second
		}},
		{args: []string{"--scenario", "flood", "--flood-connections", "10", "--flood-idle-share", "1"}, check: func(s loadgenSettings) bool {
			return s.Overload.FloodConns == 10 && s.Overload.FloodIdleShare == 1
		}},
		{args: []string{"--bulk-posts", "0"}, check: func(s loadgenSettings) bool { return s.Scenario == "paths" }},
		{args: []string{"--scenario", "stampede"}, wantErr: "retry-storm, bulk-import, flood"},
		{args: []string{"--scenario", "flood", "--url", "http://127.0.0.1:1", "--auth-secret", "s", "--paths", "new"}, wantErr: "not with --url"},
		{args: []string{"--scenario", "retry-storm", "--find-capacity"}, wantErr: "not with --url, --find-capacity"},
		{args: []string{"--scenario", "bulk-import", "--bulk-posts", "0"}, wantErr: "positive values"},
		{args: []string{"--scenario", "flood", "--flood-idle-share", "1.5"}, wantErr: "positive values"},
		{args: []string{"--scenario", "retry-storm", "--storm-alone", "0s"}, wantErr: "positive values"},
		{args: []string{"--scenario", "cutover"}, wantErr: "--archive-db NAME or --archive-works N"},
		{args: []string{"--scenario", "cutover", "--archive-db", "a", "--archive-works", "5"}, wantErr: "not both"},
		{args: []string{"--scenario", "cutover", "--archive-db", "a", "--fault", "counter-stop"}, wantErr: "the rollout scenario knows"},
		{args: []string{"--scenario", "rollout", "--rollout-steps", "5,1"}, wantErr: "--rollout-steps"},
		{args: []string{"--scenario", "rollout", "--rollout-hold", "0s"}, wantErr: "positive"},
		{args: []string{"--scenario", "rollout", "--url", "http://127.0.0.1:1", "--auth-secret", "s", "--paths", "new"}, wantErr: "not with --url"},
		{args: []string{"--scenario", "cutover", "--archive-works", "1000", "--steady", "10s", "--rollout-hold", "5s"}, check: func(s loadgenSettings) bool {
			c := s.Cutover
			return c.ArchiveWorks == 1000 && c.ReconcileAt == 20*time.Second && c.Steps == "1,5,25,50,100"
		}},
		{args: []string{"--scenario", "rollout", "--fault", "counter-stop", "--steady", "10s", "--rollout-hold", "4s"}, check: func(s loadgenSettings) bool {
			return s.Cutover.Fault == faultCounterStop && s.Cutover.FaultAt == 16*time.Second
		}},
	} {
		s, _, err := parseLoadgen(tc.args, io.Discard)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("loadgen %v: %v; want an error with %q", tc.args, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("loadgen %v: %v", tc.args, err)
		case tc.wantErr == "" && !tc.check(s):
			t.Errorf("loadgen %v: settings %+v", tc.args, s.Scenario)
		}
	}
}

// runScenarioCmd runs `tagcount loadgen --scenario` small, with flags, and
// returns its report; it fails the test if the command fails.
func runScenarioCmd(t *testing.T, flags ...string) loadgen.ScenarioReport {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "scenario.json")
	args := append([]string{"loadgen", "--mysql-dsn", testdb.ServerDSN(), "--redis-addr", testdb.RequireRedis(t),
		"--out-json", out, "--log-file", filepath.Join(dir, "service.log"),
		"--fandoms", "10", "--characters", "60", "--relationships", "60", "--freeforms", "200", "--body-chars", "200",
		"--normal-authors", "4", "--normal-rate", "8", "--duration", "2s", "--max-retry-wait", "50ms",
		"--poll-timeout", "20s", "--drain-timeout", "30s", "--outbox-wait", "15s"}, flags...)
	var stdout bytes.Buffer
	var stderr testdb.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	err := run(ctx, args, &stdout, &stderr)
	if m := loadgenRunID.FindStringSubmatch(stderr.String()); m != nil {
		t.Cleanup(func() { dropLoadgenDatabases(t, m[1]) })
	}
	if err != nil {
		t.Fatalf("tagcount loadgen: %v\nstderr:\n%s", err, stderr.String())
	}
	var rep loadgen.ScenarioReport
	b, err := os.ReadFile(out)
	if err == nil {
		err = json.Unmarshal(b, &rep)
	}
	if err != nil {
		t.Fatalf("--out-json: %v", err)
	}
	if !strings.Contains(stdout.String(), "targets:") {
		t.Errorf("the report printed no targets:\n%s", stdout.String())
	}
	return rep
}

func TestLoadgenBulkImportScenarioPostsEveryBulkWorkBesideTheNormalAuthorsWithExactCounts(t *testing.T) {
	t.Parallel()
	rep := runScenarioCmd(t, "--scenario", "bulk-import", "--bulk-posts", "60", "--bulk-concurrency", "8")
	run := rep.Run(loadgen.PhaseBulkImport)
	if run == nil || run.Class(loadgen.ClassNormal) == nil || run.Class(loadgen.ClassBulk) == nil || run.Check == nil {
		t.Fatalf("runs %+v; want the bulk-import run with both classes and the check", rep.Runs)
	}
	if b := run.Class(loadgen.ClassBulk).Works; b.Started != 60 || b.Completed != 60 {
		t.Errorf("bulk works %+v; want all 60 posted", b)
	}
	if n := run.Class(loadgen.ClassNormal).Works; n.Completed == 0 || n.Completed != n.Started {
		t.Errorf("normal works %+v; want every one posted", n)
	}
	if c := run.Check; !c.Exact || c.QueuedDrafts != 0 || c.Works != 60+run.Class(loadgen.ClassNormal).Works.Completed-run.Class(loadgen.ClassNormal).Works.Deleted {
		t.Errorf("check %+v; want exact counts and every work posted", c)
	}
}

func TestLoadgenRetryStormScenarioAnswersTheStorm429WithRetryAfterAndPricesIt(t *testing.T) {
	t.Parallel()
	rep := runScenarioCmd(t, "--scenario", "retry-storm", "--storm-connections", "4", "--storm-alone", "1s")
	calm, storm := rep.Run(loadgen.PhaseCalm), rep.Run(loadgen.PhaseStorm)
	if calm == nil || storm == nil || storm.Storm == nil || storm.Rejections == nil {
		t.Fatalf("runs %+v; want calm and storm, the storm's result and its rejections' cost", rep.Runs)
	}
	if s := storm.Storm; s.Statuses["429"] == 0 || s.Missing429RetryAfter != 0 {
		t.Errorf("storm %+v; want 429s, every one with Retry-After", s)
	}
	if c := storm.Rejections; c.Rejected == 0 || c.ProcessCPUSeconds <= 0 {
		t.Errorf("rejection cost %+v; want rejections and the CPU they took", c)
	}
	if len(rep.Targets) != 4 {
		t.Errorf("targets %+v; want the two latency ratios, the 429s and their cost", rep.Targets)
	}
}

func TestLoadgenFloodScenarioReportsMemoryAnswersAndRecovery(t *testing.T) {
	t.Parallel()
	rep := runScenarioCmd(t, "--scenario", "flood", "--flood-connections", "40", "--after-flood", "1s")
	during, after := rep.Run(loadgen.PhaseFlood), rep.Run(loadgen.PhaseAfterFlood)
	if during == nil || after == nil || during.Flood == nil || during.Recovery == nil || after.Class(loadgen.ClassNormal) == nil {
		t.Fatalf("runs %+v; want the flood with its recovery, and the normal authors after it", rep.Runs)
	}
	if f := during.Flood; f.Opened < 40 {
		t.Errorf("flood %+v; want at least its 40 connections opened", f)
	}
	if r := during.Class(loadgen.ClassNormal).Resources; r.PeakRSS <= 0 {
		t.Errorf("resources %+v; want the peak RSS", r)
	}
	if during.Recovery.Seconds < 0 {
		t.Errorf("recovery %+v; want the service idle again once the flood stopped", during.Recovery)
	}
}
