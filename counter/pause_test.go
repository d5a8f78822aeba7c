package counter_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// TestPausedCounterCatchesUpInChunksOfItsRateAndEndsExact pauses the
// counter while works are posted (the outbox grows, nothing is applied),
// then resumes it with a catch-up rate.
// The catch-up's pace is x/time/rate's (a limiter the writers wait on per
// chunk); what is the counter's own, and asserted here without timing, is
// that nothing is applied while paused, that the catch-up applies in chunks
// of a tenth of the rate, and that it ends exact.
func TestPausedCounterCatchesUpInChunksOfItsRateAndEndsExact(t *testing.T) {
	t.Parallel()
	const rate = 4000
	a := newArchive(t, archiveOpts{})
	hot := a.createTags(2, "warning")
	pool := a.createTags(400, "freeform")
	works := workload(rand.New(rand.NewPCG(8, 8)), 1600, hot, pool, 6)
	ctx := context.Background()
	control := counter.Control{DB: a.db.DB}
	type apply struct {
		at   time.Time
		rows int
	}
	var mu sync.Mutex
	var applies []apply
	cfg := a.consumerConfig()
	cfg.OnApply = func(_ int, res counter.ApplyResult) {
		mu.Lock()
		applies = append(applies, apply{time.Now(), res.Applied})
		mu.Unlock()
	}
	a.startConsumer(cfg)
	announce := func(ev []counter.Event) { a.pub.Announce(ctx, ev) }
	a.postAll(ctx, works[:100], 10, 2, announce)
	a.waitExact(30 * time.Second)

	if err := control.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	testdb.WaitFor(t, 10*time.Second, "the counter to see the pause", func() bool { return a.metric("tagcount_counter_paused") == 1 })
	mu.Lock()
	before := len(applies)
	mu.Unlock()
	a.postAll(ctx, works[100:], 10, 4, announce)
	testdb.WaitFor(t, 30*time.Second, "every announcement read while paused", func() bool {
		return a.metric("tagcount_events_consumed_total") >= float64(a.outboxDepth())
	})
	backlog := a.outboxDepth()
	mu.Lock()
	applied := 0
	for _, ap := range applies[before:] {
		applied += ap.rows
	}
	mu.Unlock()
	if applied != 0 || backlog < 5000 {
		t.Fatalf("while paused: %d rows applied, %d waiting; want none applied and the outbox grown", applied, backlog)
	}

	if err := control.Resume(ctx, rate); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	a.waitExact(60 * time.Second)
	testdb.WaitFor(t, 10*time.Second, "the catch-up to end", func() bool {
		st, err := control.State(ctx)
		return err == nil && st.CatchUpPerSecond == 0
	})

	mu.Lock()
	defer mu.Unlock()
	var catchUp []apply
	for _, ap := range applies {
		if ap.at.After(resumed) && ap.rows > 0 {
			catchUp = append(catchUp, ap)
		}
	}
	chunk := rate / 10
	total := 0
	for _, ap := range catchUp {
		total += ap.rows
		if ap.rows > chunk {
			t.Errorf("an apply transaction of the catch-up wrote %d rows, over the chunk of %d", ap.rows, chunk)
		}
	}
	if int64(total) < backlog {
		t.Errorf("the catch-up applied %d rows of the %d waiting", total, backlog)
	}
	t.Logf("caught up %d rows in %v at up to %d/s", total, catchUp[len(catchUp)-1].at.Sub(resumed), rate)
}
