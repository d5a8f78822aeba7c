package poster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
)

func TestPostsBeyondThePostingLimitArePostedOnceEachWithCountsExact(t *testing.T) {
	t.Parallel()
	// Posting is held to 40 drafts/s while 150 Posts arrive at once from
	// 50 authors' windows: they queue, share jobs, and drain.
	e := newEnv(t, envOpts{limit: poster.AIMDConfig{Min: 40, Max: 40}})
	e.startWorker()
	ids := make([]int64, 150)
	for i := range ids {
		ids[i] = e.draft(work(fmt.Sprintf("Saturated %d", i), "Fluff", fmt.Sprintf("Tag %d", i%7))).ID
	}
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Go(func() {
			for i := g; i < len(ids); i += 50 {
				if res, err := e.p.PostDraft(context.Background(), author, ids[i]); err != nil || res.State != drafts.StateQueued {
					t.Errorf("post %d = %+v, %v; want queued", ids[i], res, err)
				}
			}
		})
	}
	wg.Wait()
	testdb.WaitFor(t, 60*time.Second, "every draft posted", func() bool {
		return e.count("SELECT COUNT(*) FROM drafts WHERE state = 'posted'") == int64(len(ids))
	})
	e.wantCounts(map[string]int64{
		"SELECT COUNT(*) FROM works":                      int64(len(ids)),
		"SELECT COUNT(DISTINCT draft_id) FROM works":      int64(len(ids)),
		"SELECT COUNT(*) FROM tag_events WHERE delta = 1": int64(5 * len(ids)),
	})
	e.assertConserved()
}

func TestAJobOfSeveralDraftsPostsEachAndFailsOnlyThePoisonedOneAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	ids := e.queuedWithPoisonedMiddle()
	payload := fmt.Sprintf(`{"drafts":[{"draft_id":%d,"version":%d},{"draft_id":%d,"version":%d},{"draft_id":%d,"version":%d}]}`,
		ids[0], e.version(ids[0]), ids[1], e.version(ids[1]), ids[2], e.version(ids[2]))
	task := asynq.NewTask(poster.TypeSyncDraft, []byte(payload))
	// Retrying cannot fix the poisoned draft: it is marked failed at once,
	// and the job, whose other drafts posted, is done.
	if err := e.p.HandleSyncDraftTask(ctx, task); err != nil {
		t.Fatalf("job of three drafts, one poisoned: %v; want done", err)
	}
	defer e.p.Close()
	for _, id := range []int64{ids[0], ids[2]} {
		if d, err := e.store.FindDraftByID(ctx, author, id); err != nil || d.State != drafts.StatePosted {
			t.Errorf("draft %d beside the poisoned one: %+v, %v; want posted", id, d, err)
		}
	}
	if n := e.count("SELECT COUNT(*) FROM drafts WHERE id = ? AND state = 'failed'", ids[1]); n != 1 {
		t.Errorf("the poisoned draft is not marked failed")
	}
	// Run again (asynq retried it, or ran it twice): nothing changes.
	if err := e.p.HandleSyncDraftTask(ctx, task); err != nil {
		t.Fatalf("the same job again: %v", err)
	}
	e.wantCounts(map[string]int64{"SELECT COUNT(*) FROM works": 2})
	e.assertConserved()
}

// queuedWithPoisonedMiddle queues three drafts of author; the middle one's
// row is one nothing can post (its tags are not what a draft's tags are).
func (e *env) queuedWithPoisonedMiddle() []int64 {
	e.t.Helper()
	ids, err := e.store.CreateQueued(context.Background(), author, []drafts.Content{work("A", "Fluff"), work("Poisoned", "Angst"), work("B", "Fluff")})
	if err != nil {
		e.t.Fatal(err)
	}
	e.db.Exec(`UPDATE drafts SET tags = '{"rating": 5}' WHERE id = ?`, ids[1])
	return ids
}
