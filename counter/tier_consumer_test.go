package counter_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// tierRig is a consumer configuration with an injected clock, production
// tier intervals without jitter, and a record of every tag_counts write.
type tierRig struct {
	*archive
	clock     *counter.TestClock
	cfg       counter.ConsumerConfig
	mu        sync.Mutex
	writes    map[int64]int // tag → tag_counts writes
	announced int
}

func newTierRig(t *testing.T) *tierRig {
	a := newArchive(t, archiveOpts{partitions: 2})
	r := &tierRig{archive: a, clock: counter.NewTestClock(), writes: make(map[int64]int)}
	r.cfg = a.consumerConfig()
	r.cfg.Tiers = counter.Tiers{Jitter: -1} // production intervals, exact
	r.cfg.Now = r.clock.Now
	r.cfg.OnApply = func(_ int, res counter.ApplyResult) {
		r.mu.Lock()
		defer r.mu.Unlock()
		for tag := range res.Deltas {
			r.writes[tag]++
		}
	}
	return r
}

// start runs a consumer with r.cfg and waits until it holds both
// partitions and has read their pending outbox rows: from then on what is
// posted reaches it through Kafka, not through a writer's recovery (which
// holds a deferred tag's rows without the first write these tests count).
func (r *tierRig) start() (stop func()) {
	r.t.Helper()
	stop = r.startConsumer(r.cfg)
	testdb.WaitFor(r.t, time.Minute, "the consumer to take both partitions", func() bool {
		return r.metric("tagcount_counter_partitions") == 2
	})
	return stop
}

func (r *tierRig) writesOf(tag int64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes[tag]
}

// postRound posts n works each using tags, announces them and waits until
// the consumer has read every event announced so far.
func (r *tierRig) postRound(n int, tags ...int64) {
	r.t.Helper()
	works := make([][]int64, n)
	for i := range works {
		works[i] = tags
	}
	ctx := context.Background()
	ev, err := r.post(ctx, works)
	if err != nil {
		r.t.Fatal(err)
	}
	r.pub.Announce(ctx, ev)
	r.announced += len(ev)
	testdb.WaitFor(r.t, 20*time.Second, "the round to be consumed", func() bool {
		return r.metric("tagcount_events_consumed_total") >= float64(r.announced)
	})
}

// largeAndSmall creates two tags: a large one counted 50,000 and a small
// one with no count yet.
func (r *tierRig) largeAndSmall() (large, small int64) {
	r.t.Helper()
	tags := r.createTags(2, "fandom")
	if _, err := r.db.Exec("INSERT INTO tag_counts (tag_id, count) VALUES (?, 50000)", tags[0]); err != nil {
		r.t.Fatal(err)
	}
	return tags[0], tags[1]
}

func TestLargeTagIsWrittenOncePerIntervalAndSmallTagsEveryBatch(t *testing.T) {
	t.Parallel()
	r := newTierRig(t)
	tags := r.createTags(3, "fandom")
	large, medium, small := tags[0], tags[1], tags[2]
	for tag, n := range map[int64]int64{large: 50_000, medium: 5_000} {
		r.db.Exec("INSERT INTO tag_counts (tag_id, count) VALUES (?, ?)", tag, n)
	}
	r.start()

	// A tag's first event is applied at once (its size is learned from
	// that write); from then on it is held until its interval is up.
	for round := 1; round <= 5; round++ {
		r.postRound(20, large, medium, small)
		testdb.WaitFor(t, 10*time.Second, "the small tag flushed", func() bool { return r.count(small) == int64(20*round) })
		if round == 1 {
			testdb.WaitFor(t, 10*time.Second, "the first writes", func() bool { return r.writesOf(large) >= 1 && r.writesOf(medium) >= 1 })
		}
		if w := r.writesOf(large); w != 1 {
			t.Fatalf("round %d: large tag written %d times before its interval, want 1", round, w)
		}
		if w := r.writesOf(medium); w != 1 {
			t.Fatalf("round %d: medium tag written %d times before its interval, want 1", round, w)
		}
	}
	testdb.WaitFor(t, 10*time.Second, "a write of the small tag per round", func() bool { return r.writesOf(small) >= 5 })
	if r.outboxDepth() == 0 {
		t.Fatal("no events held for the deferred tags")
	}

	// The medium tag (count ~5,000: interval 3m + 4000/38999×37m ≈ 6.8m)
	// comes due before the large one (30m).
	r.clock.Advance(10 * time.Minute)
	testdb.WaitFor(t, 10*time.Second, "the medium tag's flush", func() bool { return r.writesOf(medium) == 2 })
	if w := r.writesOf(large); w != 1 {
		t.Fatalf("large tag written %d times 10 minutes in, want 1", w)
	}
	r.clock.Advance(20 * time.Minute)
	testdb.WaitFor(t, 10*time.Second, "the large tag's flush", func() bool { return r.writesOf(large) == 2 })
	if got := r.count(large); got != 50_000+100 {
		t.Errorf("large count = %d, want %d", got, 50_000+100)
	}
	if got := r.count(medium); got != 5_000+100 {
		t.Errorf("medium count = %d, want %d", got, 5_000+100)
	}
	if d := r.outboxDepth(); d != 0 {
		t.Errorf("outbox depth %d after every flush", d)
	}

	// A new interval starts with the next event.
	r.postRound(20, large, small)
	r.clock.Advance(29 * time.Minute)
	r.postRound(20, large, small)
	if w := r.writesOf(large); w != 2 {
		t.Errorf("large tag written %d times within its next interval, want 2", w)
	}
	r.clock.Advance(time.Minute)
	testdb.WaitFor(t, 10*time.Second, "the large tag's second flush", func() bool { return r.writesOf(large) == 3 })
	if got := r.count(large); got != 50_000+140 {
		t.Errorf("large count = %d, want %d", got, 50_000+140)
	}
}

func TestKillSwitchOffFlushesEveryTagEveryBatch(t *testing.T) {
	t.Parallel()
	r := newTierRig(t)
	large, small := r.largeAndSmall()
	var deferral atomic.Bool // off
	r.cfg.TierDeferral = deferral.Load
	r.start()

	// Each round is applied before the next is posted, and every one
	// writes the large tag.
	for round := 1; round <= 4; round++ {
		r.postRound(10, large, small)
		testdb.WaitFor(t, 10*time.Second, "the large tag written", func() bool { return r.count(large) == 50_000+int64(10*round) })
	}
	testdb.WaitFor(t, 10*time.Second, "a write of the large tag per round", func() bool { return r.writesOf(large) >= 4 })

	deferral.Store(true)
	r.postRound(10, large, small)
	testdb.WaitFor(t, 10*time.Second, "the small tag", func() bool { return r.count(small) == 50 })
	if got := r.count(large); got != 50_040 {
		t.Fatalf("deferral on: large tag was written (count %d, want 50040 until its interval)", got)
	}
	// Turning deferral off flushes what is held without waiting for its
	// interval.
	deferral.Store(false)
	testdb.WaitFor(t, 10*time.Second, "held events flushed", func() bool { return r.count(large) == 50_050 })
}

func TestShutdownFlushesHeldEvents(t *testing.T) {
	t.Parallel()
	r := newTierRig(t)
	large, small := r.largeAndSmall()
	stop := r.start()
	for range 3 {
		r.postRound(10, large, small)
	}
	testdb.WaitFor(t, 10*time.Second, "the small tag", func() bool { return r.count(small) == 30 })
	if r.count(large) == 50_030 {
		t.Fatal("the large tag was not deferred")
	}
	stop()
	if got := r.count(large); got != 50_030 {
		t.Errorf("after shutdown large count = %d, want 50030", got)
	}
	if d := r.outboxDepth(); d != 0 {
		t.Errorf("outbox depth %d after shutdown", d)
	}
}

func TestRebalanceFlushesHeldEvents(t *testing.T) {
	t.Parallel()
	r := newTierRig(t)
	large, small := r.largeAndSmall()
	r.start()
	for range 3 {
		r.postRound(10, large, small)
	}
	if r.count(large) == 50_030 {
		t.Fatal("the large tag was not deferred")
	}
	// A second member joins: every partition is revoked, and its writer
	// flushes what it holds before the partition moves. The clock never
	// moves, so nothing else could flush it.
	r.start()
	testdb.WaitFor(t, 20*time.Second, "held events flushed on revocation", func() bool { return r.count(large) == 50_030 })
}
