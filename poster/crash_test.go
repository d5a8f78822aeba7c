package poster_test

import (
	"context"
	"io"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
	"github.com/tagcount/tagcount/poster/postertest"
)

type workerChild struct {
	DSN, Redis, Queue string
}

// TestWorkerChildProcess is not a test: it is the posting worker that
// TestWorkerKilledMidBatchLeavesEveryDraftPostedOnceOrQueued starts and
// kills with SIGKILL.
func TestWorkerChildProcess(t *testing.T) {
	var wc workerChild
	testdb.ChildConfig(t, &wc)
	db := testdb.ChildDB(t, wc.DSN)
	p := postertest.New(t, poster.Config{DB: db, QueueName: wc.Queue, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv := asynq.NewServer(asynq.RedisClientOpt{Addr: wc.Redis}, asynq.Config{
		Concurrency: 32, Queues: map[string]int{wc.Queue: 1}, LogLevel: asynq.ErrorLevel, TaskCheckInterval: 10 * time.Millisecond,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(poster.TypeSyncDraft, p.HandleSyncDraftTask)
	if err := srv.Run(mux); err != nil { // until killed
		t.Fatal(err)
	}
}

func TestWorkerKilledMidBatchLeavesEveryDraftPostedOnceOrQueued(t *testing.T) {
	t.Parallel()
	tdb := testdb.New(t)
	e := newEnv(t, envOpts{db: tdb.DB})
	ctx := context.Background()
	const n = 2000
	contents := make([]drafts.Content, n)
	for i := range contents {
		contents[i] = work("Crash", "Fluff", "Angst")
	}
	ids, err := e.store.CreateQueued(ctx, author, contents)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		e.enqueue(poster.NewSyncDraftTask(id, 1, e.queue, 20))
	}

	child := testdb.StartChild(t, "TestWorkerChildProcess", workerChild{DSN: tdb.DSN, Redis: e.redis, Queue: e.queue})
	testdb.WaitFor(t, 60*time.Second, "the child worker to post some drafts", func() bool {
		return e.count("SELECT COUNT(*) FROM works") > 0
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	posted := e.count("SELECT COUNT(*) FROM works")
	t.Logf("killed the worker after %d of %d posts", posted, n)

	// Every draft is posted once or still queued: a batch commits whole
	// or not at all.
	if bad := e.count(`SELECT COUNT(*) FROM drafts d LEFT JOIN works w ON w.draft_id = d.id
		WHERE NOT ((d.state = 'posted' AND w.id IS NOT NULL) OR (d.state = 'queued' AND w.id IS NULL))`); bad != 0 {
		t.Fatalf("%d drafts neither posted with a work nor queued without one", bad)
	}
	e.assertConserved()

	// A new worker takes over: the jobs the dead one held are run again.
	e.startWorker()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go e.p.RunRequeuer(rctx)
	testdb.WaitFor(t, 120*time.Second, "every draft posted", func() bool {
		return e.count("SELECT COUNT(*) FROM drafts WHERE state = 'posted'") == n
	})
	if works := e.count("SELECT COUNT(*) FROM works"); works != n {
		t.Errorf("%d works for %d drafts, want one each", works, n)
	}
	e.assertConserved()
}
