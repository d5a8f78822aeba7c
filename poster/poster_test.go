package poster_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
	"github.com/tagcount/tagcount/poster/postertest"
)

const author = 7

// env is one test's poster on its own database and queue.
type env struct {
	t         *testing.T
	db        *migrations.DB
	p         *poster.Poster
	store     *drafts.Store
	queue     string
	redis     string
	client    *asynq.Client // enqueues on the test's queue
	inspector *asynq.Inspector
	sink      *postertest.Sink
}

type envOpts struct {
	legacy    bool
	maxBatch  int
	redisAddr string // default: the machine's Redis
	db        *migrations.DB
	bulkAfter int
	limit     poster.AIMDConfig
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	e := &env{t: t, queue: testdb.Queue(t), sink: &postertest.Sink{}}
	if o.db == nil {
		o.db = testdb.New(t).DB
	}
	e.db = o.db
	e.redis = o.redisAddr
	if e.redis == "" {
		e.redis = testdb.RequireRedis(t)
	}
	e.client = asynq.NewClient(asynq.RedisClientOpt{Addr: e.redis})
	t.Cleanup(func() { e.client.Close() })
	e.inspector = asynq.NewInspector(asynq.RedisClientOpt{Addr: e.redis})
	t.Cleanup(func() { e.inspector.Close() })
	e.p = postertest.New(t, poster.Config{DB: e.db, Queue: e.client, Inspector: e.inspector, QueueName: e.queue, Paths: poster.FixedPath(!o.legacy),
		Announcer: e.sink, RequeueAfter: time.Nanosecond, MaxBatch: o.maxBatch, BulkAfter: o.bulkAfter, Limit: o.limit,
		RequeueEvery: 200 * time.Millisecond, OwedEvery: 20 * time.Millisecond})
	e.store = &drafts.Store{DB: e.db}
	return e
}

// enqueue enqueues task as it is (a job a past process left behind), or
// fails the test.
func (e *env) enqueue(task *asynq.Task, opts ...asynq.Option) {
	e.t.Helper()
	if _, err := e.client.Enqueue(task, opts...); err != nil {
		e.t.Fatal(err)
	}
}

// startWorker runs the post jobs of this test's queue until the test ends.
func (e *env) startWorker() {
	srv := asynq.NewServer(asynq.RedisClientOpt{Addr: e.redis}, asynq.Config{
		Concurrency: 8, Queues: poster.JobQueues(e.queue), LogLevel: asynq.ErrorLevel, TaskCheckInterval: 10 * time.Millisecond,
		RetryDelayFunc: func(n int, _ error, _ *asynq.Task) time.Duration { return poster.RetryDelay(n) },
		ErrorHandler:   asynq.ErrorHandlerFunc(e.p.HandleTaskError),
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(poster.TypeSyncDraft, e.p.HandleSyncDraftTask)
	if err := srv.Start(mux); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { srv.Shutdown(); e.p.Close() })
}

// eventIDs returns the ids of the events s was told of, ascending.
func eventIDs(s *postertest.Sink) []int64 {
	var out []int64
	for _, e := range s.Events() {
		out = append(out, e.ID)
	}
	slices.Sort(out)
	return out
}

// work returns a valid draft body with the given freeform tags.
func work(title string, freeforms ...string) drafts.Content {
	return drafts.Content{Title: title, Body: "Once upon a time.", Tags: drafts.Tags{
		Rating:    "Teen And Up Audiences",
		Warnings:  []string{"No Archive Warnings Apply"},
		Fandoms:   []string{"Star Trek"},
		Freeforms: freeforms,
	}}
}

func (e *env) draft(c drafts.Content) drafts.Draft {
	e.t.Helper()
	d, err := e.store.CreateDraft(context.Background(), author, c)
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func (e *env) waitState(draftID int64, state string) drafts.Draft {
	e.t.Helper()
	var d drafts.Draft
	testdb.WaitFor(e.t, 15*time.Second, fmt.Sprintf("draft %d to reach state %s", draftID, state), func() bool {
		var err error
		d, err = e.store.FindDraftByID(context.Background(), author, draftID)
		return err == nil && d.State == state
	})
	return d
}

// newEnvRedisDown returns an env on a private Redis, a draft titled title
// saved in it, and the Redis, stopped: what an author's Post meets while
// Redis is down.
func newEnvRedisDown(t *testing.T, title string) (*env, *testdb.Redis, drafts.Draft) {
	t.Helper()
	r := testdb.StartRedis(t)
	e := newEnv(t, envOpts{redisAddr: r.Addr()})
	d := e.draft(work(title, "Fluff"))
	r.Stop()
	return e, r, d
}

// post presses Post on the author's draft id, failing the test on an
// error, and returns what the Post answered.
func (e *env) post(id int64) poster.Result {
	e.t.Helper()
	res, err := e.p.PostDraft(context.Background(), author, id)
	if err != nil {
		e.t.Fatalf("post draft %d: %v", id, err)
	}
	return res
}

// wantCounts fails the test for each query (a COUNT) whose answer is not
// the number it maps to.
func (e *env) wantCounts(want map[string]int64) {
	e.t.Helper()
	for query, n := range want {
		if got := e.count(query); got != n {
			e.t.Errorf("%s = %d, want %d", query, got, n)
		}
	}
}

func (e *env) count(query string, args ...any) int64 {
	e.t.Helper()
	var n sql.NullInt64
	if err := e.db.QueryRow(query, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return n.Int64
}

// assertConserved checks docs/design.md invariant 5 for every tag with the
// reconcile's snapshot: taggings of posted works = stored count + pending
// outbox deltas.
func (e *env) assertConserved() {
	e.t.Helper()
	drifted, err := reconcile.Drifted(context.Background(), e.db)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, st := range drifted {
		e.t.Errorf("tag %d: %d uses but count %d + pending %d", st.TagID, st.Works, st.Stored, st.Pending)
	}
}

func TestNewPathPostedTwiceConcurrentlyMakesOneWork(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	d := e.draft(work("Twice", "Fluff", "Angst"))

	var wg sync.WaitGroup
	results := make([]poster.Result, 8)
	errs := make([]error, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.p.PostDraft(context.Background(), author, d.ID)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("post %d: %v", i, err)
		}
		if results[i].State != drafts.StateQueued && results[i].State != drafts.StatePosted {
			t.Fatalf("post %d answered %+v", i, results[i])
		}
	}
	e.startWorker()
	posted := e.waitState(d.ID, drafts.StatePosted)

	if n := e.count("SELECT COUNT(*) FROM works WHERE draft_id = ?", d.ID); n != 1 {
		t.Fatalf("%d works for one draft posted 8 times, want 1", n)
	}
	if n := e.count("SELECT COUNT(*) FROM taggings WHERE work_id = ?", posted.WorkID); n != 5 {
		t.Fatalf("%d taggings, want 5 (rating, warning, fandom, 2 freeforms)", n)
	}
	if n := e.count("SELECT COUNT(*) FROM tag_events WHERE delta = 1"); n != 5 {
		t.Fatalf("%d +1 outbox rows, want 5", n)
	}
}

func TestNewPathWritesOutboxRowsAndNoCountRow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	e.startWorker()
	d := e.draft(work("Outbox", "Fluff"))
	res, err := e.p.PostDraft(context.Background(), author, d.ID)
	if err != nil || !res.Async || res.State != drafts.StateQueued {
		t.Fatalf("post = %+v, %v; want async queued", res, err)
	}
	e.waitState(d.ID, drafts.StatePosted)

	if n := e.count("SELECT COUNT(*) FROM tag_counts"); n != 0 {
		t.Fatalf("new path wrote %d tag_counts rows, want none", n)
	}
	var ids []int64
	rows, _ := e.db.Query("SELECT id FROM tag_events ORDER BY id")
	for rows.Next() {
		var id int64
		rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()
	if len(ids) != 4 {
		t.Fatalf("%d outbox rows, want 4", len(ids))
	}
	// The job announces after its transaction commits, so the draft may
	// read posted before the announcement is made.
	testdb.WaitFor(t, 15*time.Second, "the job to announce its events", func() bool { return len(eventIDs(e.sink)) >= len(ids) })
	if got := eventIDs(e.sink); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("announced %v, outbox holds %v", got, ids)
	}
	e.assertConserved()
}

// concurrently runs f n times at once and returns how many returned true.
func concurrently(n int, f func() bool) int {
	var wg sync.WaitGroup
	var yes atomic.Int64
	for range n {
		wg.Go(func() {
			if f() {
				yes.Add(1)
			}
		})
	}
	wg.Wait()
	return int(yes.Load())
}

func TestLegacyPathPostedTwiceConcurrentlyMakesOneWorkAndCountsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{legacy: true})
	d := e.draft(work("Legacy", "Fluff"))
	created := concurrently(8, func() bool {
		res, err := e.p.PostDraft(context.Background(), author, d.ID)
		if err != nil {
			t.Errorf("legacy post: %v", err)
			return false
		}
		if res.Async || res.State != drafts.StatePosted || res.WorkID == 0 {
			t.Errorf("legacy post answered %+v, want posted in the request", res)
		}
		return res.Path == poster.PathLegacy
	})
	if created != 1 {
		t.Fatalf("%d posts created the work, want exactly 1", created)
	}
	e.wantCounts(map[string]int64{
		"SELECT COUNT(*) FROM works":                      1,
		"SELECT COUNT(*) FROM tag_counts WHERE count = 1": 4, // the work's tags, counted once
		"SELECT COUNT(*) FROM tag_events":                 0, // the legacy path writes no outbox
	})
}

// Two authors' tabs deleting one work at once on the legacy path: one
// deletes it, the others learn it is gone (not an internal error), and
// its tags are taken away once.
func TestLegacyPathDeletedConcurrentlyDeletesOnceAndTellsTheRestItIsGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{legacy: true})
	ctx := context.Background()
	d := e.draft(work("Deleted twice", "Fluff"))
	res := e.post(d.ID)
	deleted := concurrently(8, func() bool {
		_, err := e.p.DeleteWork(ctx, author, res.WorkID)
		if err != nil && !errors.Is(err, poster.ErrWorkNotFound) {
			t.Errorf("concurrent delete: %v; want success or ErrWorkNotFound", err)
		}
		return err == nil
	})
	if deleted != 1 {
		t.Errorf("%d deletes succeeded, want exactly 1", deleted)
	}
	e.wantCounts(map[string]int64{
		"SELECT COUNT(*) FROM works":                       0,
		"SELECT COUNT(*) FROM tag_counts WHERE count <> 0": 0, // its tags are taken away
	})
}

func TestEditEmitsTheTagDifferenceAndDeleteTakesEveryTagAway(t *testing.T) {
	t.Parallel()
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOpts{legacy: legacy})
			e.startWorker()
			ctx := context.Background()
			d := e.draft(work("Edit me", "Fluff", "Angst"))
			e.post(d.ID)
			w := e.waitState(d.ID, drafts.StatePosted).WorkID

			edited := work("Edited", "fluff", "Hurt/Comfort") // "fluff" is the same tag as "Fluff"
			if _, err := e.p.UpdateWork(ctx, author, w, edited); err != nil {
				t.Fatal(err)
			}
			var got poster.Work
			testdb.WaitFor(t, 15*time.Second, "the edit to be applied", func() bool {
				var err error
				got, err = e.p.FindWorkByID(ctx, author, w)
				return err == nil && got.Title == "Edited"
			})
			if fmt.Sprint(got.Tags.Freeforms) != "[Fluff Hurt/Comfort]" {
				t.Fatalf("freeforms after edit = %v", got.Tags.Freeforms)
			}
			e.assertConserved()
			if !legacy {
				if n := e.count("SELECT COUNT(*) FROM tag_events WHERE delta = -1"); n != 1 {
					t.Fatalf("%d -1 events after edit, want 1 (Angst)", n)
				}
				if n := e.count("SELECT COUNT(*) FROM tag_events WHERE delta = 1"); n != 6 {
					t.Fatalf("%d +1 events after edit, want 6 (5 posted + Hurt/Comfort)", n)
				}
			}

			if _, err := e.p.DeleteWork(ctx, author, w); err != nil {
				t.Fatal(err)
			}
			testdb.WaitFor(t, 15*time.Second, "the work to be deleted", func() bool { return e.count("SELECT COUNT(*) FROM works") == 0 })
			e.assertConserved()
			if n := e.count("SELECT COALESCE(SUM(count), 0) FROM tag_counts") + e.count("SELECT COALESCE(SUM(delta), 0) FROM tag_events"); n != 0 {
				t.Fatalf("after delete, counts plus pending sum to %d, want 0", n)
			}
			if _, err := e.p.FindWorkByID(ctx, author, w); !errors.Is(err, poster.ErrWorkNotFound) {
				t.Fatalf("deleted work read: %v, want work not found", err)
			}
		})
	}
}

func TestWorkPostedOnOnePathEditsAndDeletesOnTheOther(t *testing.T) {
	t.Parallel()
	db := testdb.New(t).DB
	newPath := newEnv(t, envOpts{db: db})
	legacy := newEnv(t, envOpts{db: db, legacy: true})
	newPath.startWorker()
	ctx := context.Background()

	a := newPath.draft(work("A", "Fluff"))
	newPath.p.PostDraft(ctx, author, a.ID)
	wa := newPath.waitState(a.ID, drafts.StatePosted).WorkID
	if _, err := legacy.p.UpdateWork(ctx, author, wa, work("A2", "Angst")); err != nil {
		t.Fatal(err)
	}
	b := legacy.draft(work("B", "Fluff", "Angst"))
	res, err := legacy.p.PostDraft(ctx, author, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newPath.p.DeleteWork(ctx, author, res.WorkID); err != nil {
		t.Fatal(err)
	}
	testdb.WaitFor(t, 15*time.Second, "the delete on the new path to be applied", func() bool {
		return newPath.count("SELECT COUNT(*) FROM works") == 1
	})
	newPath.assertConserved()
}

func TestLegacyLockWaitTimeoutIs503AndLeavesTheDraftUntouched(t *testing.T) {
	t.Parallel()
	tdb := testdb.New(t)
	// A pool whose sessions give up on a row lock after one second.
	short, err := migrations.Open(context.Background(), tdb.DSN+"&innodb_lock_wait_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer short.Close()
	e := newEnv(t, envOpts{db: short, legacy: true})
	ctx := context.Background()

	first := e.draft(work("First", "Fluff"))
	e.post(first.ID)
	// Another transaction holds the rating's count row, as a slow post would.
	blocker, err := tdb.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback()
	if _, err := blocker.Exec("UPDATE tag_counts SET count = count WHERE tag_id = (SELECT id FROM tags WHERE type = 'rating')"); err != nil {
		t.Fatal(err)
	}

	second := e.draft(work("Second", "Angst"))
	_, err = e.p.PostDraft(ctx, author, second.ID)
	if !migrations.IsLockConflict(err) || migrations.IsDeadlock(err) {
		t.Fatalf("post behind a held count row: %v; want a lock wait timeout (the API answers 503 with Retry-After)", err)
	}
	d, _ := e.store.FindDraftByID(ctx, author, second.ID)
	if d.State != drafts.StateDraft || d.WorkID != 0 {
		t.Fatalf("draft after the failed post = %+v; want untouched", d)
	}
	if n := e.count("SELECT COUNT(*) FROM works"); n != 1 {
		t.Fatalf("%d works, want 1", n)
	}
}

func TestPostPressedWhileRedisIsDownIsPostedAfterRedisReturns(t *testing.T) {
	t.Parallel()
	e, r, d := newEnvRedisDown(t, "Offline")

	res, err := e.p.PostDraft(context.Background(), author, d.ID)
	if err != nil || res.State != drafts.StateQueued {
		t.Fatalf("post with Redis down = %+v, %v; want recorded as queued", res, err)
	}
	if got, _ := e.store.FindDraftByID(context.Background(), author, d.ID); got.State != drafts.StateQueued {
		t.Fatalf("draft state = %s, want queued", got.State)
	}

	r.Start()
	e.startWorker()
	if _, err := e.p.RequeueStale(context.Background()); err != nil {
		t.Fatalf("requeue after Redis returned: %v", err)
	}
	posted := e.waitState(d.ID, drafts.StatePosted)
	if posted.WorkID == 0 {
		t.Fatal("posted draft has no work")
	}
}

func TestSyncJobWithMalformedPayloadIsNotRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	err := e.p.HandleSyncDraftTask(context.Background(), asynq.NewTask(poster.TypeSyncDraft, []byte("{not json")))
	if !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("malformed payload: %v, want SkipRetry", err)
	}
}

func TestEditingAWorkWhoseDeleteIsPendingIsNotFound(t *testing.T) {
	t.Parallel()
	db := testdb.New(t).DB
	legacy := newEnv(t, envOpts{db: db, legacy: true})
	newPath := newEnv(t, envOpts{db: db}) // no worker: the delete stays pending
	ctx := context.Background()
	d := legacy.draft(work("Going", "Fluff"))
	res, err := legacy.p.PostDraft(ctx, author, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if del, err := newPath.p.DeleteWork(ctx, author, res.WorkID); err != nil || !del.Async {
		t.Fatalf("delete = %+v, %v; want queued", del, err)
	}
	if _, err := newPath.p.UpdateWork(ctx, author, res.WorkID, work("Too late", "Angst")); !errors.Is(err, poster.ErrWorkNotFound) {
		t.Fatalf("edit during a pending delete: %v; want work not found", err)
	}
}

func TestConcurrentPostsCreatingTheSameNewTagsAllSucceed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	const rounds, posters = 10, 16
	for r := range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, posters)
		for i := range posters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Overlapping sets of tags nobody created yet, in different orders.
				c := work(fmt.Sprintf("W%d-%d", r, i))
				for k := range 8 {
					c.Tags.Freeforms = append(c.Tags.Freeforms, fmt.Sprintf("New %d-%d", r, (i+k*3)%12))
				}
				errs <- e.p.PostContent(context.Background(), author, c)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: post creating shared new tags: %v", r, err)
			}
		}
	}
	if n := e.count("SELECT COUNT(*) FROM tags WHERE type = 'freeform'"); n != rounds*12 {
		t.Fatalf("%d freeform tags, want %d (no duplicates)", n, rounds*12)
	}
	e.assertConserved()
}
