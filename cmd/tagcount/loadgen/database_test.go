package loadgen

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tagcount/tagcount/migrations/testdb"
)

func exec(t *testing.T, db *testdb.DB, queries ...string) {
	t.Helper()
	for _, q := range queries {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func TestCheckComparesCountPlusOutboxWithTheIndependentCount(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	exec(t, db,
		`INSERT INTO tags (id, type, name, name_key) VALUES (10, 'freeform', 'a', 'a'), (11, 'freeform', 'b', 'b'),
			(12, 'freeform', 'c', 'c'), (13, 'freeform', 'd', 'd')`,
		`INSERT INTO works (id, draft_id, author_id, title, body, version) VALUES (1, 1, 1, 'a', '', 1), (2, 2, 1, 'b', '', 1)`,
		`INSERT INTO taggings (work_id, tag_id, position) VALUES (1, 10, 0), (2, 10, 0), (1, 11, 1), (3, 12, 0)`, // work 3 does not exist
		`INSERT INTO tag_counts (tag_id, count) VALUES (10, 1), (11, 1)`,
		`INSERT INTO tag_events (tag_id, delta, work_id) VALUES (10, 1, 2)`, // tag 10's second use, still in the outbox
	)
	c := checkCounts(context.Background(), db.DB, 500*time.Millisecond)
	if c.Error != "" || !c.Exact || c.WrongTags != 0 || c.Tags != 2 {
		t.Fatalf("conserved counts judged %+v", c)
	}
	if c.OutboxDrained || c.OutboxPending != 1 || c.OutboxPendingSmall != 1 || c.StaleTags != 1 || c.Works != 2 {
		t.Errorf("outbox figures %+v, want 1 pending small-tag row and tag 10 stale", c)
	}

	exec(t, db, `INSERT INTO tag_counts (tag_id, count) VALUES (13, 3)`, `UPDATE tag_counts SET count = 2 WHERE tag_id = 11`)
	c = checkCounts(context.Background(), db.DB, 0)
	if c.Exact || c.WrongTags != 2 || len(c.Examples) != 2 {
		t.Fatalf("two drifted tags judged %+v", c)
	}
}

func TestWatcherReportsPostedAndFailedDrafts(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	exec(t, db, `INSERT INTO drafts (id, author_id, title, body, tags, state) VALUES
		(1, 1, 't', '', '{}', 'queued'), (2, 1, 't', '', '{}', 'queued'), (3, 1, 't', '', '{}', 'queued')`)
	w := newPostWatcher(db.DB)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.run(ctx)
	posted, failed, waiting := w.watch(1), w.watch(2), w.watch(3)
	exec(t, db, `UPDATE drafts SET state = 'posted', work_id = 77 WHERE id = 1`, `UPDATE drafts SET state = 'failed' WHERE id = 2`)
	for _, c := range []struct {
		ch   <-chan int64
		want int64
	}{{posted, 77}, {failed, 0}} {
		select {
		case got := <-c.ch:
			if got != c.want {
				t.Errorf("work id %d, want %d", got, c.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the watcher did not report a finished draft")
		}
	}
	select {
	case id := <-waiting:
		t.Fatalf("a queued draft reported as %d", id)
	case <-time.After(100 * time.Millisecond):
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
	db := testdb.New(t)
	exec(t, db, `INSERT INTO drafts (id, author_id, title, body, tags, state) VALUES (1, 1, 't', '', '{}', 'queued')`,
		`INSERT INTO tags (id, type, name, name_key) VALUES (10, 'freeform', 'a', 'a')`)
	c := checkCounts(context.Background(), db.DB, 300*time.Millisecond)
	if c.Error != "" || c.QueuedDrafts != 1 || c.WaitedSeconds < 0.3 {
		t.Fatalf("a draft left queued: %+v, want it reported after waiting 0.3 s", c)
	}

	// The worker posts it while the check waits.
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(500 * time.Millisecond) // the job runs after the check started
		tx, err := db.Begin()
		if err != nil {
			t.Error(err)
			return
		}
		defer tx.Rollback()
		for _, q := range []string{
			`INSERT INTO works (id, draft_id, author_id, title, body, version) VALUES (1, 1, 1, 't', '', 1)`,
			`INSERT INTO taggings (work_id, tag_id, position) VALUES (1, 10, 0)`,
			`INSERT INTO tag_counts (tag_id, count) VALUES (10, 1)`,
			`UPDATE drafts SET state = 'posted', work_id = 1 WHERE id = 1`,
		} {
			if _, err := tx.Exec(q); err != nil {
				t.Errorf("%s: %v", q, err)
				return
			}
		}
		if err := tx.Commit(); err != nil {
			t.Error(err)
		}
	}()
	c = checkCounts(context.Background(), db.DB, 10*time.Second)
	<-done
	if c.Error != "" || !c.Exact || c.QueuedDrafts != 0 || c.Works != 1 || c.Tags != 1 || c.WaitedSeconds < 0.5 || c.WaitedSeconds > 5 {
		t.Errorf("check %+v, want it to wait for the queued draft and then see its work", c)
	}
}
