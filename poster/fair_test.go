package poster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
)

func TestAnAuthorsPostsPastBulkAfterWaitOnTheBulkQueueAndAreStillPosted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{bulkAfter: 3})
	ctx := context.Background()
	var ids []int64
	for i := range 5 {
		d := e.draft(work(fmt.Sprint("Import ", i)))
		e.post(d.ID)
		ids = append(ids, d.ID)
	}
	other, err := e.store.CreateDraft(ctx, author+1, work("Someone else's"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.PostDraft(ctx, author+1, other.ID); err != nil {
		t.Fatal(err)
	}
	pending := func(queue string) int {
		q, err := e.inspector.GetQueueInfo(queue)
		if err != nil {
			t.Fatalf("queue %s: %v", queue, err)
		}
		return q.Pending
	}
	// The author's third queued post is the first past BulkAfter.
	if i, b := pending(e.queue), pending(poster.BulkQueue(e.queue)); i != 3 || b != 3 {
		t.Errorf("%d jobs on the interactive queue, %d on the bulk queue; want 3 (two of the importer's, one of the other author's) and 3",
			i, b)
	}
	e.startWorker()
	for _, id := range ids {
		e.waitState(id, drafts.StatePosted)
	}
	testdb.WaitFor(t, 15*time.Second, "the other author's draft to be posted", func() bool {
		d, err := e.store.FindDraftByID(ctx, author+1, other.ID)
		return err == nil && d.State == drafts.StatePosted
	})
}
