package poster_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
	"github.com/tagcount/tagcount/poster/postertest"
)

// version reads a draft's version.
func (e *env) version(draftID int64) int64 {
	e.t.Helper()
	return e.count("SELECT version FROM drafts WHERE id = ?", draftID)
}

// jobID is the asynq task id of the job that posts the draft's current
// version.
func (e *env) jobID(draftID int64) string {
	e.t.Helper()
	return fmt.Sprintf("draft-sync:%d:%d", draftID, e.version(draftID))
}

func TestFailedPostPostedAgainIsPosted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	d := e.draft(work("Again", "Fluff"))
	e.post(d.ID)
	// Its job used its last retry: asynq keeps it archived, and the draft
	// is marked failed.
	if err := e.inspector.ArchiveTask(e.queue, e.jobID(d.ID)); err != nil {
		t.Fatal(err)
	}
	if err := e.store.MarkFailed(ctx, d.ID, e.version(d.ID), "gave up"); err != nil {
		t.Fatal(err)
	}
	res, err := e.p.PostDraft(ctx, author, d.ID)
	if err != nil || res.State != drafts.StateQueued {
		t.Fatalf("post again = %+v, %v; want queued", res, err)
	}
	e.startWorker()
	e.waitState(d.ID, drafts.StatePosted)
}

func TestRequeuerRunsAJobWaitingForItsRetryNow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	d := e.draft(work("Waiting", "Fluff"))
	e.post(d.ID)
	// The job failed while the database was down and waits an hour for
	// its retry, as asynq's default backoff would make it.
	if err := e.inspector.DeleteTask(e.queue, e.jobID(d.ID)); err != nil {
		t.Fatal(err)
	}
	e.enqueue(poster.NewSyncDraftTask(d.ID, e.version(d.ID), e.queue, 5), asynq.ProcessIn(time.Hour))
	e.startWorker()
	// The requeuer finds the draft queued for too long and runs its job.
	if _, err := e.p.RequeueStale(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitState(d.ID, drafts.StatePosted)
}

func TestRequeuerReachesEveryStaleDraft(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	ids := postertest.Queued(ctx, t, e.db, make([]drafts.Content, 1201), &postertest.Opts{AuthorID: author})
	e.db.Exec("UPDATE drafts SET queued_at = NOW(6) - INTERVAL 1 HOUR")
	// A page per pass: the second pass goes on where the first stopped.
	total := 0
	for range 2 {
		n, err := e.p.RequeueStale(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != len(ids) {
		t.Fatalf("two passes requeued %d, want every one of the %d stale drafts", total, len(ids))
	}
}

func TestRetryDelayIsShortAndCapped(t *testing.T) {
	t.Parallel()
	for n := range 30 {
		d := poster.RetryDelay(n)
		if d <= 0 || d > 6*time.Second {
			t.Errorf("RetryDelay(%d) = %v, want within (0, 6s]", n, d)
		}
	}
}

func TestABatchWithOnePoisonedDraftPostsTheOthersAndFailsOnlyIt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	ids := e.queuedWithPoisonedMiddle()

	if _, err := e.p.PostQueued(ctx, poster.PathNew, ids...); err == nil {
		t.Fatal("the poisoned draft posted")
	}
	for _, id := range []int64{ids[0], ids[2]} {
		if d, err := e.store.FindDraftByID(ctx, author, id); err != nil || d.State != drafts.StatePosted {
			t.Errorf("draft %d beside the poisoned one: %+v, %v; want posted", id, d, err)
		}
	}
	// Its job gives up at once (retrying cannot fix it) and marks it failed.
	task := poster.NewSyncDraftTask(ids[1], e.version(ids[1]), e.queue, 5)
	if err := e.p.HandleSyncDraftTask(ctx, task); !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("job of the poisoned draft: %v; want SkipRetry", err)
	}
	e.startWorker()
	e.enqueue(task)
	testdb.WaitFor(t, 30*time.Second, "the poisoned draft marked failed", func() bool {
		return e.count("SELECT COUNT(*) FROM drafts WHERE id = ? AND state = 'failed'", ids[1]) == 1
	})
	e.assertConserved()
}

func TestALonePostIsPostedWithoutWaitingForABatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{maxBatch: 1000})
	e.startWorker()
	d := e.draft(work("Alone", "Fluff"))
	e.post(d.ID)
	e.waitState(d.ID, drafts.StatePosted)
}

func TestDraftWithAWorkIsChangedThroughItsWorkOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{legacy: true})
	ctx := context.Background()
	d := e.draft(work("Posted", "Fluff"))
	res := e.post(d.ID)
	// An edit of the work failed: its draft is failed, the work remains.
	e.db.Exec("UPDATE drafts SET state = 'failed' WHERE id = ?", d.ID)
	if _, err := e.store.ReplaceDraft(ctx, author, d.ID, work("Replaced")); !errors.Is(err, drafts.ErrPosted) {
		t.Errorf("replace the draft of a work: %v; want ErrPosted", err)
	}
	if err := e.store.DeleteDraft(ctx, author, d.ID); !errors.Is(err, drafts.ErrPosted) {
		t.Errorf("delete the draft of a work: %v; want ErrPosted", err)
	}
	if _, err := e.p.DeleteWork(ctx, author, res.WorkID); err != nil {
		t.Fatalf("delete the work: %v", err)
	}
	if _, err := e.p.DeleteWork(ctx, author, res.WorkID); !errors.Is(err, poster.ErrWorkNotFound) {
		t.Errorf("delete it again: %v; want ErrWorkNotFound", err)
	}
	e.assertConserved()
}

// An API process runs no requeuer: what it could not enqueue while Redis
// was down is enqueued by its own loop once Redis answers.
func TestAnAPIProcessEnqueuesThePostsItOwesOnceRedisAnswers(t *testing.T) {
	t.Parallel()
	e, r, d := newEnvRedisDown(t, "Accepted offline")
	if res, err := e.p.PostDraft(context.Background(), author, d.ID); err != nil || res.State != drafts.StateQueued {
		t.Fatalf("post while Redis is down: %+v, %v; want it queued", res, err)
	}
	r.Start()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.p.RunOwed(ctx)
	e.startWorker()
	e.waitState(d.ID, drafts.StatePosted)
}

// requestIDs returns how many of the sink's events carry each request id.
func requestIDs(s *postertest.Sink) map[string]int {
	out := map[string]int{}
	for _, e := range s.Events() {
		out[e.RequestID]++
	}
	return out
}

func TestAPostsRequestIDRidesInItsJobOntoItsAnnouncedEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	traced := e.draft(work("Traced", "Fluff"))
	ctx := poster.WithRequestID(context.Background(), "req-traced")
	if _, err := e.p.PostDraft(ctx, author, traced.ID); err != nil {
		t.Fatal(err)
	}
	info, err := e.inspector.GetTaskInfo(e.queue, e.jobID(traced.ID))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(info.Payload), `"request_id":"req-traced"`) {
		t.Fatalf("the job of a post with a request id has the payload %s; want the id in it", info.Payload)
	}
	// A job enqueued before jobs carried request ids still posts.
	old := e.draft(work("Old job", "Angst"))
	if _, err := e.store.QueuePost(context.Background(), author, old.ID); err != nil {
		t.Fatal(err)
	}
	e.enqueue(poster.NewSyncDraftTask(old.ID, 1, e.queue, 5))

	e.startWorker()
	e.waitState(traced.ID, drafts.StatePosted)
	e.waitState(old.ID, drafts.StatePosted)
	// Four tags each: rating, warning, fandom, one freeform. The events are
	// announced after the commit that marks the drafts posted.
	var got map[string]int
	testdb.WaitFor(t, 15*time.Second, "both posts' events to be announced", func() bool {
		got = requestIDs(e.sink)
		return got["req-traced"]+got[""] == 8
	})
	if got["req-traced"] != 4 || got[""] != 4 {
		t.Errorf("announced events by request id: %v; want 4 of req-traced and 4 without", got)
	}
}

func TestAPostOwedWhileRedisIsDownKeepsItsRequestID(t *testing.T) {
	t.Parallel()
	e, r, d := newEnvRedisDown(t, "Offline")
	if _, err := e.p.PostDraft(poster.WithRequestID(context.Background(), "req-offline"), author, d.ID); err != nil {
		t.Fatal(err)
	}
	r.Start()
	if _, err := e.p.RequeueStale(context.Background()); err != nil {
		t.Fatalf("requeue after Redis returned: %v", err)
	}
	e.startWorker()
	e.waitState(d.ID, drafts.StatePosted)
	var got map[string]int
	testdb.WaitFor(t, 15*time.Second, "the post's events to be announced", func() bool {
		got = requestIDs(e.sink)
		return len(got) > 0
	})
	if got["req-offline"] != 4 || len(got) != 1 {
		t.Errorf("announced events by request id: %v; want all 4 of req-offline", got)
	}
}
