package rollout

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tagcount/tagcount/migrations/testdb"
)

// work writes a posted work of a new draft with one tag of count uses, an
// outbox row for it when pending, and records a new-path Post of the draft
// at at.
func work(t *testing.T, db *testdb.DB, rec *Recorder, at time.Time, uses int64, pending bool, draftState string) int64 {
	t.Helper()
	ctx := context.Background()
	exec := func(q string, args ...any) int64 {
		res, err := db.ExecContext(ctx, q, args...)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := res.LastInsertId()
		return id
	}
	draft := exec("INSERT INTO drafts (author_id, title, body, tags, state) VALUES (1, 't', 'b', '{}', ?)", draftState)
	tag := exec("INSERT INTO tags (type, name, name_key) VALUES ('freeform', ?, ?)", draft, draft)
	exec("INSERT INTO tag_counts (tag_id, count) VALUES (?, ?)", tag, uses)
	if draftState == "posted" {
		w := exec("INSERT INTO works (draft_id, author_id, title, body, version) VALUES (?, 1, 't', 'b', 1)", draft)
		exec("INSERT INTO taggings (work_id, tag_id, position) VALUES (?, ?, 0)", w, tag)
		if pending {
			exec("INSERT INTO tag_events (tag_id, delta, work_id) VALUES (?, 1, ?)", tag, w)
		}
	}
	// A failed post job is found by the draft's state: the Post's answer
	// (queued) was a success.
	rec.ObservePost(ctx, draft, "new", at, 30*time.Millisecond, nil)
	return draft
}

// recording returns a database of its own and a Recorder writing to it.
func recording(t *testing.T) (*testdb.DB, *Recorder, context.Context) {
	t.Helper()
	db := testdb.New(t)
	rec, err := NewRecorder(RecorderConfig{DB: db.DB})
	if err != nil {
		t.Fatal(err)
	}
	return db, rec, context.Background()
}

// deleteWork deletes draft's work as the poster does: its taggings, the
// work and the draft (the delete's own outbox rows are left out).
func deleteWork(t *testing.T, db *testdb.DB, draft int64) {
	t.Helper()
	for _, q := range []string{"DELETE t FROM taggings t JOIN works w ON w.id = t.work_id WHERE w.draft_id = ?",
		"DELETE FROM works WHERE draft_id = ?", "DELETE FROM drafts WHERE id = ?"} {
		if _, err := db.ExecContext(context.Background(), q, draft); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDBMeasuresReadTheWindowsPostsFreshnessAndOutbox(t *testing.T) {
	t.Parallel()
	db, rec, ctx := recording(t)
	now := time.Now().UTC()
	since := now.Add(-time.Minute)
	work(t, db, rec, now.Add(-2*time.Minute), 1, false, "posted")    // before the window
	work(t, db, rec, now.Add(-10*time.Second), 1, false, "posted")   // counted
	work(t, db, rec, now.Add(-20*time.Second), 1, true, "posted")    // small tag pending: not counted
	work(t, db, rec, now.Add(-30*time.Second), 5000, true, "posted") // only a large tag pending: counted
	work(t, db, rec, now.Add(-5*time.Second), 1, false, "failed")    // the job gave up
	rec.ObservePost(ctx, 999, "legacy", now.Add(-time.Second), 2*time.Second, errors.New("lock wait"))
	rec.Flush(ctx)

	m := DBMeasures{DB: db.DB}
	r, err := m.Measure(ctx, since, now)
	if err != nil {
		t.Fatal(err)
	}
	if r.NewPosts != 4 || r.NewErrors != 1 || r.LegacyPosts != 1 || r.LegacyErrors != 1 {
		t.Fatalf("posts: new %d (%d failed), legacy %d (%d failed); want 4 (1), 1 (1)", r.NewPosts, r.NewErrors, r.LegacyPosts, r.LegacyErrors)
	}
	// Freshness over the three that did not fail: two counted now (10 s
	// and 30 s), one pending for 20 s so far.
	if r.FreshnessSamples != 3 || r.FreshnessP99 != 30*time.Second {
		t.Fatalf("freshness: %d samples, p99 %v; want 3, 30s", r.FreshnessSamples, r.FreshnessP99)
	}
	if r.NewPostP99 != 30*time.Millisecond {
		t.Fatalf("new-path Post p99 %v", r.NewPostP99)
	}
	if r.OutboxRows != 2 || r.OutboxAge < 0 || r.Backlog != 0 {
		t.Fatalf("outbox %d rows, oldest %v; backlog %d", r.OutboxRows, r.OutboxAge, r.Backlog)
	}
	// Later, the pending one is still not counted: its age grows.
	r, err = m.Measure(ctx, since, now.Add(40*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if r.FreshnessP99 != time.Minute {
		t.Fatalf("an uncounted post 60 s old: p99 %v", r.FreshnessP99)
	}
	// Samples older than the retention go; the rest stay.
	if err := rec.Prune(ctx, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM rollout_samples").Scan(&left); err != nil || left != 5 {
		t.Fatalf("%d samples left after pruning the one before the window (%v), want 5", left, err)
	}
}

// retryingList is the drafts whose posting job waits for a retry, as the
// job queue would list them (poster.Retrying reads the real one; the
// guarded-rollout test in cmd/tagcount runs it against Redis).
type retryingList []int64

func (l retryingList) RetryingDrafts(context.Context, int) ([]int64, error) { return l, nil }

func TestDBMeasuresCountAPostWhoseJobWaitsForARetryAsFailed(t *testing.T) {
	t.Parallel()
	db, rec, ctx := recording(t)
	now := time.Now().UTC()
	work(t, db, rec, now.Add(-10*time.Second), 1, false, "posted")
	retrying := work(t, db, rec, now.Add(-5*time.Second), 1, false, "queued")
	waiting := work(t, db, rec, now.Add(-4*time.Second), 1, false, "queued") // not run yet: not failed
	rec.Flush(ctx)
	m := DBMeasures{DB: db.DB, Retrying: retryingList{retrying, 12345}}
	r, err := m.Measure(ctx, now.Add(-time.Minute), now)
	if err != nil {
		t.Fatal(err)
	}
	if r.NewPosts != 3 || r.NewErrors != 1 || r.FreshnessSamples != 2 {
		t.Fatalf("new posts %d, failed %d, freshness samples %d; want 3, 1 (draft %d retrying, %d waiting), 2",
			r.NewPosts, r.NewErrors, r.FreshnessSamples, retrying, waiting)
	}
	// Its job succeeds later: the post stays a failed one of this window.
	m.Retrying = retryingList{}
	if r, err = m.Measure(ctx, now.Add(-time.Minute), now); err != nil || r.NewErrors != 1 {
		t.Fatalf("after the retry: %d failed (%v), want 1", r.NewErrors, err)
	}
}

func TestDBMeasuresDropAPostWhoseWorkWasDeleted(t *testing.T) {
	t.Parallel()
	db, rec, ctx := recording(t)
	now := time.Now().UTC()
	work(t, db, rec, now.Add(-10*time.Second), 1, false, "posted")
	gone := work(t, db, rec, now.Add(-20*time.Second), 1, true, "posted")
	rec.Flush(ctx)
	// The author deletes the work before a read (its post's outbox row is
	// left pending).
	deleteWork(t, db, gone)
	m := DBMeasures{DB: db.DB}
	r, err := m.Measure(ctx, now.Add(-time.Minute), now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	// Two Posts answered; one freshness sample, counted at the read (70 s).
	if r.NewPosts != 2 || r.NewErrors != 0 || r.FreshnessSamples != 1 || r.FreshnessP99 != 70*time.Second {
		t.Fatalf("new posts %d (%d failed), freshness %d samples p99 %v; want 2 (0), 1 sample of 70s",
			r.NewPosts, r.NewErrors, r.FreshnessSamples, r.FreshnessP99)
	}
}

// TestDBMeasuresKeepAnEarlierWindowsUncountedPostInFreshness: a counter
// that stopped shortly before a step ended must not pass the next step
// because the posts it left uncounted were made in the step before.
func TestDBMeasuresKeepAnEarlierWindowsUncountedPostInFreshness(t *testing.T) {
	t.Parallel()
	db, rec, ctx := recording(t)
	now := time.Now().UTC()
	since := now.Add(-time.Minute)                                 // the current step's window
	work(t, db, rec, now.Add(-10*time.Second), 1, false, "posted") // this window, counted
	work(t, db, rec, now.Add(-90*time.Second), 1, true, "posted")  // the step before, still pending
	work(t, db, rec, now.Add(-80*time.Second), 1, false, "posted") // the step before, counted
	work(t, db, rec, now.Add(-70*time.Second), 1, false, "failed") // the step before, its job gave up
	work(t, db, rec, now.Add(-15*time.Minute), 1, true, "posted")  // before the look-back
	gone := work(t, db, rec, now.Add(-85*time.Second), 1, true, "posted")
	deleteWork(t, db, gone)
	rec.Flush(ctx)
	m := DBMeasures{DB: db.DB}
	r, err := m.Measure(ctx, since, now)
	if err != nil {
		t.Fatal(err)
	}
	// The window's one post, and the earlier pending one at its age now.
	if r.NewPosts != 1 || r.FreshnessSamples != 2 || r.FreshnessP99 != 90*time.Second {
		t.Fatalf("new posts %d, freshness %d samples p99 %v; want 1, 2 samples of p99 90s", r.NewPosts, r.FreshnessSamples, r.FreshnessP99)
	}
	// Once the counter applies its row it is counted and leaves.
	if _, err := db.ExecContext(ctx, "DELETE FROM tag_events"); err != nil {
		t.Fatal(err)
	}
	if r, err = m.Measure(ctx, since, now.Add(time.Second)); err != nil || r.FreshnessSamples != 1 || r.FreshnessP99 != 10*time.Second {
		t.Fatalf("after the count: %d samples, p99 %v (%v); want 1, 10s", r.FreshnessSamples, r.FreshnessP99, err)
	}
}
