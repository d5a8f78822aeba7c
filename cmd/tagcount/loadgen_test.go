package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tagcount/tagcount/cmd/tagcount/loadgen"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// loadgenRun is one `tagcount loadgen` invocation on in-process stacks over
// the machine's MariaDB and Redis, and what it left behind.
type loadgenRun struct {
	Report   loadgen.Report
	JSON     string // the --out-json file
	PNG      string // the --out-png file ("" when none was asked for)
	Markdown string // the --out-md file
	Stdout   string // the table
	Stderr   string
	RunID    string // names the run's databases and queues
}

var loadgenRunID = regexp.MustCompile(`loadgen: run ([0-9a-f]+),`)

// runLoadgenCmd runs `tagcount loadgen` with a small vocabulary, the test's
// files, and flags; it fails the test if the command fails. Whatever
// databases the run leaves (it drops its own unless --keep-db) are dropped
// when the test ends.
// A run holds up to 32 connections per path it runs at once (its stack's
// pools, dev's sizes) and a few of its own; with --concurrency 32 it uses
// most of them.
func runLoadgenCmd(t *testing.T, flags ...string) *loadgenRun {
	t.Helper()
	redisAddr := testdb.RequireRedis(t)
	dir := t.TempDir()
	lr := &loadgenRun{JSON: filepath.Join(dir, "loadgen.json"), PNG: filepath.Join(dir, "loadgen.png"), Markdown: filepath.Join(dir, "loadgen.md")}
	args := []string{"loadgen", "--mysql-dsn", testdb.ServerDSN(), "--redis-addr", redisAddr,
		"--out-json", lr.JSON, "--out-png", lr.PNG, "--out-md", lr.Markdown, "--log-file", filepath.Join(dir, "service.log"),
		"--authors", "20", "--fandoms", "10", "--characters", "60", "--relationships", "60", "--freeforms", "200",
		"--body-chars", "200", "--probe-every", "10", "--max-retry-wait", "50ms",
		"--poll-timeout", "20s", "--drain-timeout", "30s", "--outbox-wait", "15s"}
	args = append(args, flags...)
	var stdout bytes.Buffer
	var stderr testdb.Buffer
	// The deadline bounds how long a failing run takes, not how fast a
	// passing one must be: a busy machine runs these several times slower.
	ctx, cancel := context.WithTimeout(context.Background(), 3*testdb.MinWait)
	defer cancel()
	err := run(ctx, args, &stdout, &stderr)
	lr.Stdout, lr.Stderr = stdout.String(), stderr.String()
	if m := loadgenRunID.FindStringSubmatch(lr.Stderr); m != nil {
		lr.RunID = m[1]
		t.Cleanup(func() { dropLoadgenDatabases(t, lr.RunID) })
	}
	if err != nil {
		t.Fatalf("tagcount loadgen: %v\nstderr:\n%s", err, lr.Stderr)
	}
	if lr.RunID == "" {
		t.Fatalf("loadgen printed no run id:\n%s", lr.Stderr)
	}
	b, err := os.ReadFile(lr.JSON)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &lr.Report); err != nil {
		t.Fatalf("--out-json is not a report: %v\n%s", err, b)
	}
	for _, r := range lr.Report.Results {
		t.Logf("%s: works %+v; errors %+v; %.0f posts/s", r.Path, r.Works, r.Errors, r.PostsPerSec)
	}
	return lr
}

// loadgenDatabases lists the databases of a run: tagcount_loadgen_<run>_<path>.
func loadgenDatabases(t *testing.T, runID string) []string {
	t.Helper()
	db, err := sqlOpen(testdb.ServerDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	return queryStrings(t, db, `SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE ?`,
		"tagcount\\_loadgen\\_"+runID+"\\_%")
}

func dropLoadgenDatabases(t *testing.T, runID string) {
	db, err := sqlOpen(testdb.ServerDSN())
	if err != nil {
		t.Error(err)
		return
	}
	defer db.Close()
	for _, name := range loadgenDatabases(t, runID) {
		if _, err := db.Exec("DROP DATABASE IF EXISTS `" + name + "`"); err != nil {
			t.Errorf("dropping %s: %v", name, err)
		}
	}
}

// pathDB opens the database a run kept (--keep-db) for path.
func (lr *loadgenRun) pathDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	dsn, err := migrations.WithDatabase(testdb.ServerDSN(), "tagcount_loadgen_"+lr.RunID+"_"+path)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sqlOpen(dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// queryStrings returns the rows of a one-string-column query, sorted.
func queryStrings(t *testing.T, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// Every work as it ended (author, title, body, tags in the author's order),
// and every tag's stored count.
const (
	worksQuery = `SELECT CONCAT_WS('|', w.author_id, w.title, MD5(w.body),
			GROUP_CONCAT(CONCAT(t.type, ':', t.name) ORDER BY tg.position SEPARATOR ','))
		FROM works w LEFT JOIN taggings tg ON tg.work_id = w.id LEFT JOIN tags t ON t.id = tg.tag_id
		GROUP BY w.id`
	countsQuery = `SELECT CONCAT(t.type, ':', t.name, '=', c.count) FROM tags t JOIN tag_counts c ON c.tag_id = t.id WHERE c.count <> 0`
)

// checkExact fails the test unless the run's counts were conserved and the
// outbox drained.
func checkExact(t *testing.T, r *loadgen.Result) {
	t.Helper()
	switch c := r.Check; {
	case c == nil:
		t.Errorf("%s: counts not checked", r.Path)
	case c.Error != "" || !c.Exact || c.WrongTags != 0 || c.Tags == 0:
		t.Errorf("%s: counts not exact: %+v", r.Path, c)
	case !c.OutboxDrained || c.QueuedDrafts != 0:
		t.Errorf("%s: %d outbox rows and %d queued drafts left", r.Path, c.OutboxPending, c.QueuedDrafts)
	case c.Works != r.Works.Completed-r.Works.Deleted:
		t.Errorf("%s: %d works in the database, want %d posted - %d deleted", r.Path, c.Works, r.Works.Completed, r.Works.Deleted)
	}
}

func TestLoadgenRunsBothPathsOnRealStacksWithTheSameWorksAndExactCounts(t *testing.T) {
	t.Parallel()
	const posts = 200
	lr := runLoadgenCmd(t, "--paths", "legacy,new", "--concurrency", "8", "--posts", "200", "--seed", "7", "--keep-db")
	rep := lr.Report

	if len(rep.Results) != 2 || rep.Results[0].Path != "legacy" || rep.Results[1].Path != "new" {
		t.Fatalf("results for %d paths, want legacy then new: %s", len(rep.Results), lr.Stdout)
	}
	legacy, nw := rep.Results[0], rep.Results[1]
	for _, r := range rep.Results {
		checkPathResult(t, r, posts)
	}
	if legacy.PostToPosted.Count != 0 {
		t.Errorf("legacy: %d post→posted waits; it posts in the request", legacy.PostToPosted.Count)
	}
	if nw.PostToPosted.Count != posts {
		t.Errorf("new: %d post→posted waits, want %d", nw.PostToPosted.Count, posts)
	}
	if w, _ := legacy.RowsOf("tag_events"); w.Rows != 0 {
		t.Errorf("legacy wrote %d outbox rows, want none", w.Rows)
	}
	if w, _ := nw.RowsOf("tag_events"); w.Rows == 0 {
		t.Error("new wrote no outbox rows")
	}
	if e := nw.Errors; e.Deadlock != 0 || e.LockWait != 0 {
		t.Errorf("new path: %d deadlocks, %d lock-wait timeouts; want none", e.Deadlock, e.LockWait)
	}
	if c := rep.Ceiling; c == nil || c.Posts+c.Errors.Deadlock+c.Errors.LockWait+c.Errors.Other5xx+c.Errors.Other != posts ||
		c.Posts == 0 || c.PostsPerSec <= 0 || c.Latency.Count != posts {
		t.Errorf("ceiling %+v, want %d bare transactions", rep.Ceiling, posts)
	}
	targets := map[string]loadgen.Target{}
	for _, tg := range rep.Targets {
		targets[tg.Name] = tg
	}
	for _, name := range []string{"legacy path counts at the end", "new path counts at the end", "new path deadlocks + lock-wait timeouts"} {
		if tg, ok := targets[name]; !ok || !tg.Met {
			t.Errorf("target %q: %+v", name, tg)
		}
	}

	// Both paths posted, edited and deleted the same works, and ended with
	// the same count on every tag.
	legacyDB, newDB := lr.pathDB(t, "legacy"), lr.pathDB(t, "new")
	lw, nwWorks := queryStrings(t, legacyDB, worksQuery), queryStrings(t, newDB, worksQuery)
	if len(lw) != posts-int(legacy.Works.Deleted) || !slices.Equal(lw, nwWorks) {
		t.Errorf("legacy kept %d works, new %d; want the same %d", len(lw), len(nwWorks), posts-int(legacy.Works.Deleted))
	}
	if lc, nc := queryStrings(t, legacyDB, countsQuery), queryStrings(t, newDB, countsQuery); len(lc) == 0 || !slices.Equal(lc, nc) {
		t.Errorf("tag counts differ between the paths:\nlegacy %v\nnew    %v", lc, nc)
	}

	checkReportFiles(t, lr)
}

// checkPathResult fails the test unless path result r posted, edited and
// deleted all posts works without errors, measured every figure and kept
// its counts exact.
func checkPathResult(t *testing.T, r *loadgen.Result, posts int64) {
	t.Helper()
	w := r.Works
	if w.Started != posts || w.Created != posts || w.Accepted != posts || w.Completed != posts ||
		w.Failed != 0 || w.NotCompleted != 0 || w.Missed != 0 {
		t.Errorf("%s: works %+v, want all %d posted", r.Path, w, posts)
	}
	if w.Edited == 0 || w.Deleted == 0 {
		t.Errorf("%s: %d works edited and %d deleted later, want some of each", r.Path, w.Edited, w.Deleted)
	}
	if r.Errors.GaveUp != 0 || r.Errors.Other5xx != 0 || r.Errors.Other != 0 {
		t.Errorf("%s: errors %+v, want at most retried deadlocks or lock waits", r.Path, r.Errors)
	}
	if r.Latency["save"].Count < 2*posts || r.Latency["post"].Count < posts || r.Latency["read"].Count == 0 {
		t.Errorf("%s: %d saves, %d posts, %d reads measured", r.Path, r.Latency["save"].Count, r.Latency["post"].Count, r.Latency["read"].Count)
	}
	if r.PostToCount.Count != posts/10 || r.Works.ProbeTimeout != 0 {
		t.Errorf("%s: %d small-tag counts seen, %d timed out; want %d", r.Path, r.PostToCount.Count, r.Works.ProbeTimeout, posts/10)
	}
	if r.PostsPerSec <= 0 || r.AcceptedPerSec <= 0 || len(r.Series) == 0 || r.CeilingFraction <= 0 {
		t.Errorf("%s: %.1f posts/s, %.1f accepted/s, %d seconds of series, %.3f of the ceiling",
			r.Path, r.PostsPerSec, r.AcceptedPerSec, len(r.Series), r.CeilingFraction)
	}
	if r.Server == nil || r.Server.Commits == 0 || r.Resources.Pool == nil || r.Resources.CPUSeconds <= 0 || r.Resources.PeakRSS == 0 {
		t.Errorf("%s: resources %+v, server %+v", r.Path, r.Resources, r.Server)
	}
	// The job queue's workers poll Redis on both paths.
	if r.Redis == nil || r.Redis.Commands <= 0 || r.Redis.CommandsPerW <= 0 {
		t.Errorf("%s: Redis commands %+v, want some", r.Path, r.Redis)
	}
	for _, table := range []string{"tag_counts", "tag_events"} {
		if w, ok := r.RowsOf(table); !ok || w.Rows < 0 {
			t.Errorf("%s: rows written to %s unknown: %+v", r.Path, table, w)
		}
	}
	checkExact(t, r)
}

// checkReportFiles fails the test unless the JSON report holds every figure
// of the printed table, the Markdown file has the same rows and the chart
// is a PNG.
func checkReportFiles(t *testing.T, lr *loadgenRun) {
	t.Helper()
	rep := lr.Report
	// The JSON holds every figure of the printed table, and the Markdown
	// file has the same rows.
	var again bytes.Buffer
	if err := rep.WriteText(&again); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(lr.Stdout, again.String()) {
		t.Errorf("the table rendered from the JSON differs from the printed one:\nprinted:\n%s\nfrom JSON:\n%s", lr.Stdout, again.String())
	}
	table := rep.Table()
	if got := strings.Join(table[0], ","); got != "figure,legacy,new,new/legacy" {
		t.Errorf("table header %q", got)
	}
	for _, row := range table[1:] {
		name := row[0]
		switch {
		case name == "database CPU (s)": // only when the server runs on this machine
		case strings.HasPrefix(name, "Post→work posted"): // the legacy path posts in the request
			if row[1] != "-" || row[2] == "-" {
				t.Errorf("figure %q: %q, want a value on the new path only", name, row)
			}
		case row[1] == "-" || row[2] == "-" || row[1] == "" || row[2] == "":
			t.Errorf("figure %q has no value on a path: %q", name, row)
		}
	}
	md, err := os.ReadFile(lr.Markdown)
	if err != nil || !strings.Contains(string(md), "| figure | legacy | new | new/legacy |") ||
		strings.Count(string(md), "\n| ") < len(table) {
		t.Errorf("--out-md (%v):\n%s", err, md)
	}
	f, err := os.Open(lr.PNG)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("--out-png is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 800 || b.Dy() < 600 {
		t.Errorf("chart is %v", b)
	}
}

// runDeadlockingLoadgen runs posts legacy posts of 32 authors at once on
// 12 tags (so transactions deadlock), with args added, and returns the run
// and its legacy result; it fails the test when there is none.
func runDeadlockingLoadgen(t *testing.T, posts int, args ...string) (*loadgenRun, *loadgen.Result) {
	t.Helper()
	lr := runLoadgenCmd(t, append([]string{"--paths", "legacy", "--concurrency", "32", "--posts", strconv.Itoa(posts),
		"--authors", "32", "--fandoms", "2", "--characters", "3", "--relationships", "3", "--freeforms", "4",
		"--probe-every", "-1", "--ceiling=false", "--out-png", ""}, args...)...)
	r := lr.Report.Result("legacy")
	if r == nil {
		t.Fatalf("no legacy result:\n%s", lr.Stdout)
	}
	return lr, r
}

func TestLoadgenCountsLegacyDeadlocksByKindRetriesThemAndDropsItsDatabases(t *testing.T) {
	t.Parallel()
	const posts = 400
	// Many authors at once on a handful of tags: the legacy path bumps the
	// same tag_counts rows in each work's own tag order, so transactions
	// deadlock.
	//
	// On a busy machine a post waits long behind its peers' locks and for
	// a database slot: the load generator's client used to give up at 60 s,
	// as the service's own deadline ran out, and counted the post failed
	// (a client-side timeout leaves the outcome unknown); it now waits past
	// the service's deadline, whose 503 is retried. How often one request
	// deadlocks in a row also grows with how busy the machine is, so any
	// fixed count of retries is a bet on its speed: a 503 deadlock promises
	// nothing was applied, and the test retries until the post goes
	// through, bounded by the run's deadline, as is the drain that waits
	// for the later edits and deletes (a follow-up it cuts off counts as
	// given up).
	lr, r := runDeadlockingLoadgen(t, posts, "--max-retries", "1000000", "--drain-timeout", "2m")
	if r.Errors.Deadlock == 0 {
		t.Errorf("no deadlock counted among %d posts of 32 authors on 12 tags: %+v", posts, r.Errors)
	}
	if r.Errors.Other5xx != 0 || r.Errors.Other != 0 {
		t.Errorf("errors %+v, want only deadlocks and lock-wait timeouts", r.Errors)
	}
	// Every deadlocked request was sent again until it went through.
	if r.Works.Completed != posts || r.Works.Failed != 0 || r.Errors.GaveUp != 0 {
		t.Errorf("works %+v, %d requests given up; want all %d posted after retries", r.Works, r.Errors.GaveUp, posts)
	}
	checkExact(t, r)
	if row := tableRow(lr.Report.Table(), "errors: deadlock"); row == nil || row[1] == "0" || !strings.Contains(lr.Stdout, "errors: deadlock") {
		t.Errorf("deadlock row %q in:\n%s", row, lr.Stdout)
	}
	if _, err := os.Stat(lr.PNG); !os.IsNotExist(err) {
		t.Errorf("--out-png \"\" wrote a chart (%v)", err)
	}
	if left := loadgenDatabases(t, lr.RunID); len(left) != 0 {
		t.Errorf("the run left its databases behind: %v", left)
	}
}

func TestLoadgenWithoutRetriesGivesUpDeadlockedWorksAndCountsStayExact(t *testing.T) {
	t.Parallel()
	const posts = 200
	_, r := runDeadlockingLoadgen(t, posts, "--max-retries", "-1")
	e := r.Errors
	if e.GaveUp != e.Deadlock+e.LockWait+e.Other5xx+e.Other {
		t.Errorf("errors %+v: without retries every failed request is given up", e)
	}
	if r.Works.Completed+r.Works.Failed != posts || r.Works.Failed > e.GaveUp {
		t.Errorf("works %+v, errors %+v: each work is posted or failed", r.Works, e)
	}
	// A 503 promises nothing was applied: the given-up works left no count.
	checkExact(t, r)
}

// An open loop starts works on a schedule until the duration ends, counting
// arrivals it had no free slot for as missed. How many arrive depends on how
// fast the machine is; the schedule only bounds them from above.
func TestLoadgenOpenLoopForADurationStartsWorksOnAScheduleAndCompletesThem(t *testing.T) {
	t.Parallel()
	const rate, seconds = 50, 2
	lr := runLoadgenCmd(t, "--paths", "new", "--open-loop", "--rate", fmt.Sprint(rate), "--duration", fmt.Sprint(seconds)+"s",
		"--concurrency", "16", "--ceiling=false", "--out-png", "")
	r := lr.Report.Result("new")
	if r == nil {
		t.Fatalf("no new result:\n%s", lr.Stdout)
	}
	// The first arrival at once, then rate a second: never more.
	if n := r.Works.Started + r.Works.Missed; r.Works.Started == 0 || n > rate*seconds+1 {
		t.Errorf("%d works started, %d arrivals missed; want some started and at most %d arrivals", r.Works.Started, r.Works.Missed, rate*seconds+1)
	}
	if r.Works.Completed != r.Works.Started || r.Works.Failed != 0 || r.Works.NotCompleted != 0 {
		t.Errorf("works %+v, want every started work posted", r.Works)
	}
	if r.Rate != rate || !r.OpenLoop || r.Concurrency != 16 {
		t.Errorf("result says rate %g, open loop %v, concurrency %d", r.Rate, r.OpenLoop, r.Concurrency)
	}
	if e := r.Errors; e.Deadlock != 0 || e.LockWait != 0 || e.GaveUp != 0 {
		t.Errorf("errors %+v", e)
	}
	checkExact(t, r)
}

func tableRow(table [][]string, name string) []string {
	for _, row := range table {
		if row[0] == name {
			return row
		}
	}
	return nil
}

func TestLoadgenWithADatabaseLatencyDelaysEveryStackAndReportsTheLink(t *testing.T) {
	t.Parallel()
	const posts = 60
	lr := runLoadgenCmd(t, "--paths", "new", "--concurrency", "8", "--posts", "60", "--db-latency", "1ms", "--out-png", "")
	rep := lr.Report
	if l := rep.DBLink; l == nil || l.OneWayMs != 1 || l.Cost.DirectRoundTrips == 0 || l.Cost.DelayRoundTrips == 0 {
		t.Fatalf("report's link %+v, want 1 ms and a calibration", l)
	}
	r := rep.Result("new")
	if r == nil {
		t.Fatalf("no new result:\n%s", lr.Stdout)
	}
	if u := r.DBLink; u == nil || u.OneWayMs != 1 || u.Packets == 0 || u.PacketsPerWk <= 0 || u.CPUSeconds < 0 {
		t.Errorf("the path's link use %+v, want its packets", u)
	}
	if r.Works.Completed != posts || r.Errors.GaveUp != 0 {
		t.Errorf("works %+v, errors %+v: want all %d posted through the link", r.Works, r.Errors, posts)
	}
	checkExact(t, r)
	if c := rep.Ceiling; c == nil || c.Posts == 0 {
		t.Errorf("ceiling %+v, want bare transactions through the link", c)
	}
	for _, want := range []string{"DB link: packets / posted work", "db link: every packet"} {
		if !strings.Contains(lr.Stdout, want) {
			t.Errorf("the table lacks %q:\n%s", want, lr.Stdout)
		}
	}
}

func TestLoadgenFindCapacityProbesFreshStacksAndReportsTheHighestPassingRate(t *testing.T) {
	t.Parallel()
	lr := runLoadgenCmd(t, "--paths", "new", "--find-capacity", "--probe-duration", "1s", "--capacity-start", "10",
		"--capacity-probes", "2", "--capacity-p99", "5s")
	c := lr.Report.Capacity
	if c == nil || len(c.Paths) != 1 || c.Paths[0].Path != "new" {
		t.Fatalf("capacity %+v, want the new path's", c)
	}
	pc := c.Paths[0]
	if len(pc.Probes) != 2 || pc.Probes[0].Rate != 10 {
		t.Fatalf("probes %+v, want two, the first at 10/s", pc.Probes)
	}
	// After a pass the rate doubles; after a failure it halves.
	first, second := pc.Probes[0], pc.Probes[1]
	if want := map[bool]float64{true: 20, false: 5}[first.OK]; second.Rate != want {
		t.Errorf("second probe at %v/s after the first (ok %v), want %v/s", second.Rate, first.OK, want)
	}
	var good, bad float64
	for _, p := range pc.Probes {
		if p.Posts == 0 || p.Exact == nil || !*p.Exact {
			t.Errorf("probe %+v: want posts measured and exact counts", p)
		}
		if p.OK != (p.Why == "") {
			t.Errorf("probe %+v: a verdict and its reasons disagree", p)
		}
		switch {
		case p.OK && p.Rate > good:
			good = p.Rate
		case !p.OK && (bad == 0 || p.Rate < bad):
			bad = p.Rate
		}
	}
	if pc.Capacity != good || pc.FirstBad != bad {
		t.Errorf("capacity %v and first bad %v, want the highest passing (%v) and lowest failing (%v) probe", pc.Capacity, pc.FirstBad, good, bad)
	}
	if !strings.Contains(lr.Stdout, "capacity new") || len(lr.Report.Results) != 0 {
		t.Errorf("printed:\n%s", lr.Stdout)
	}
	if left := loadgenDatabases(t, lr.RunID); len(left) != 0 {
		t.Errorf("the probes left their databases behind: %v", left)
	}
}
