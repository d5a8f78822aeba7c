package loadgen

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
	"github.com/tagcount/tagcount/poster/postertest"
)

func exec(t *testing.T, db *testdb.DB, queries ...string) {
	t.Helper()
	for _, q := range queries {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func freeform(names ...string) []tags.Ref {
	refs := make([]tags.Ref, len(names))
	for i, n := range names {
		refs[i] = tags.NewRef(tags.TypeFreeform, n)
	}
	return refs
}

// tagID returns the id of the freeform tag name (creating it if missing).
func tagID(t *testing.T, db *testdb.DB, name string) int64 {
	t.Helper()
	ids, err := tags.NewResolver(db.DB).Resolve(context.Background(), []tags.Ref{{Type: tags.TypeFreeform, Name: name, Key: tags.NameKey(name)}})
	if err != nil {
		t.Fatal(err)
	}
	return ids[0]
}

func TestCheckComparesCountPlusOutboxWithTheIndependentCount(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t)
	legacy := &postertest.Opts{Path: poster.PathLegacy}
	// Tags a and b counted in the posting transaction; c and d used by a
	// work since deleted (rows of count 0, no uses: nothing to compare);
	// a's second use posted on the new path, its +1 still in the outbox.
	postertest.Works(ctx, t, db.DB, []drafts.Content{postertest.Content("one", freeform("a", "b")...)}, legacy)
	gone, _ := postertest.Works(ctx, t, db.DB, []drafts.Content{postertest.Content("gone", freeform("c", "d")...)}, legacy)
	if _, err := postertest.Delete(ctx, db.DB, gone[0], legacy); err != nil {
		t.Fatal(err)
	}
	postertest.Works(ctx, t, db.DB, []drafts.Content{postertest.Content("two", freeform("a")...)}, nil)

	c := checkCounts(ctx, db.DB, 500*time.Millisecond)
	if c.Error != "" || !c.Exact || c.WrongTags != 0 || c.Tags != 2 {
		t.Fatalf("conserved counts judged %+v", c)
	}
	if c.OutboxDrained || c.OutboxPending != 1 || c.OutboxPendingSmall != 1 || c.StaleTags != 1 || c.Works != 2 {
		t.Errorf("outbox figures %+v, want 1 pending small-tag row and tag a stale", c)
	}

	// Injected drift, the fault under test: b counted twice, d counted
	// with no work using it.
	exec(t, db, fmt.Sprintf(`UPDATE tag_counts SET count = 3 WHERE tag_id = %d`, tagID(t, db, "d")),
		fmt.Sprintf(`UPDATE tag_counts SET count = 2 WHERE tag_id = %d`, tagID(t, db, "b")))
	c = checkCounts(ctx, db.DB, 0)
	if c.Exact || c.WrongTags != 2 || len(c.Examples) != 2 {
		t.Fatalf("two drifted tags judged %+v", c)
	}
}

func TestWatcherReportsPostedAndFailedDrafts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t)
	ids := postertest.Queued(ctx, t, db.DB, []drafts.Content{postertest.Content("posted", freeform("a")...),
		postertest.Content("failed", freeform("a")...), postertest.Content("waiting", freeform("a")...)}, nil)
	w := newPostWatcher(db.DB)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go w.run(ctx)
	posted, failed, waiting := w.watch(ids[0]), w.watch(ids[1]), w.watch(ids[2])

	// A worker posts the first; the second's job gives up.
	if _, err := postertest.Sync(ctx, db.DB, ids[0]); err != nil {
		t.Fatal(err)
	}
	store := &drafts.Store{DB: db.DB}
	if err := store.MarkFailed(ctx, ids[1], 1, "gave up"); err != nil {
		t.Fatal(err)
	}
	d, err := store.FindDraftByID(ctx, 1, ids[0])
	if err != nil || d.WorkID == 0 {
		t.Fatalf("posted draft %+v, %v", d, err)
	}
	for _, c := range []struct {
		ch   <-chan int64
		want int64
	}{{posted, d.WorkID}, {failed, 0}} {
		select {
		case got := <-c.ch:
			if got != c.want {
				t.Errorf("work id %d, want %d", got, c.want)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the watcher did not report a finished draft")
		}
	}
	// The poll that reported them read the queued draft too, and kept it.
	select {
	case id := <-waiting:
		t.Fatalf("a queued draft reported as %d", id)
	default:
	}
	w.mu.Lock()
	_, still := w.pending[ids[2]]
	w.mu.Unlock()
	if !still {
		t.Error("the watcher stopped watching a draft still queued")
	}
}

func TestRowsWrittenComeFromTheServersCounters(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	rc := newRowCounter(ctx, db.DB)
	before := rc.snapshot(ctx, "tag_counts")
	if before == nil {
		t.Skipf("no table counters on this server: %s", rc.source)
	}
	exec(t, db, `INSERT INTO tag_counts (tag_id, count) VALUES (1, 1), (2, 1), (3, 1)`, `UPDATE tag_counts SET count = 2 WHERE tag_id = 1`)
	after := rc.snapshot(ctx, "tag_counts")
	if got := after["tag_counts"] - before["tag_counts"]; got != 4 {
		t.Errorf("%d rows changed, want 4 (%s)", got, rc.source)
	}
	if !strings.Contains(rc.source, "userstat") && !strings.Contains(rc.source, "performance_schema") {
		t.Errorf("source %q", rc.source)
	}
}

func TestCheckWaitsForQueuedDraftsToBeApplied(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t)
	queued := postertest.Queued(ctx, t, db.DB, []drafts.Content{postertest.Content("t", freeform("a")...)}, nil)
	c := checkCounts(ctx, db.DB, 300*time.Millisecond)
	if c.Error != "" || c.QueuedDrafts != 1 {
		t.Fatalf("a draft left queued: %+v, want it reported", c)
	}

	// The check runs on a pool that keeps no idle connection, so each
	// statement it finishes shows in the pool's MaxIdleClosed: once its
	// first one (counting queued drafts) is done, it has seen the draft
	// queued and must wait for it.
	checkDB, err := migrations.Open(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer checkDB.Close()
	checkDB.SetMaxIdleConns(0)
	before := checkDB.Stats().MaxIdleClosed
	result := make(chan Check, 1)
	go func() { result <- checkCounts(ctx, checkDB, time.Minute) }()
	testdb.WaitFor(t, 30*time.Second, "the check to read the queued draft", func() bool {
		return checkDB.Stats().MaxIdleClosed > before
	})

	// The worker posts it and the counter applies its outbox rows while the
	// check waits.
	events, err := postertest.Sync(ctx, db.DB, queued...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := counter.ApplyBatch(ctx, db.DB, postertest.EventIDs(events)); err != nil {
		t.Fatal(err)
	}
	c = <-result
	t.Logf("the check waited %.3f s", c.WaitedSeconds)
	if c.Error != "" || !c.Exact || !c.OutboxDrained || c.QueuedDrafts != 0 || c.Works != 1 || c.Tags != 1 {
		t.Errorf("check %+v, want it to wait for the queued draft and then see its work", c)
	}
}
