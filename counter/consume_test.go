package counter_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
	"github.com/tagcount/tagcount/poster/postertest"
)

// TestCountsExactAfterTenThousandWorks posts 10,000 works of 10 tags (three
// hot tags in every work, the rest from 2,000) through Kafka and checks that,
// once quiet, every stored count equals the number of posted works using the
// tag. While the load runs, probe works with a fresh small tag measure how
// soon a small tag's count is visible after its post commits.
func TestCountsExactAfterTenThousandWorks(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{})
	hot := a.createTags(3, "warning")
	pool := a.createTags(2000, "freeform")
	probes := a.createTags(20, "character")
	a.startConsumer(a.consumerConfig())
	ctx := context.Background()

	var wg sync.WaitGroup
	var latencies []time.Duration
	loadDone := make(chan struct{})
	wg.Go(func() {
		for _, tag := range probes {
			select {
			case <-loadDone:
				return
			case <-time.After(100 * time.Millisecond):
			}
			ev, err := a.post(ctx, [][]int64{{tag}})
			if err != nil {
				t.Error(err)
				return
			}
			start := time.Now()
			a.pub.Announce(ctx, ev)
			testdb.WaitFor(t, 60*time.Second, "a small tag's count during load", func() bool {
				var n int64
				a.db.QueryRow("SELECT count FROM tag_counts WHERE tag_id = ?", tag).Scan(&n)
				return n == 1
			})
			latencies = append(latencies, time.Since(start))
		}
	})

	works := workload(rand.New(rand.NewPCG(1, 2)), 10_000, hot, pool, 10)
	start := time.Now()
	a.postAll(ctx, works, 20, 4, func(ev []counter.Event) { a.pub.Announce(ctx, ev) })
	posted := time.Since(start)
	close(loadDone)
	wg.Wait()
	a.waitExact(60 * time.Second)
	t.Logf("10,000 works (100,000 events) posted in %v, all counts exact %v after the first post", posted, time.Since(start))
	if len(latencies) > 0 {
		slices.Sort(latencies)
		t.Logf("small tag visible after its post, during load: median %v, max %v (%d probes)",
			latencies[len(latencies)/2], latencies[len(latencies)-1], len(latencies))
	}
}

// TestFilterOnlyEventsAreAppliedLikeAnyOther wrangles a tag: the job's
// outbox rows move filter numbers only (their count delta is 0), and the
// consumer must apply and delete them like any other, so the outbox drains
// and the canonical tag's filter_count counts the works of both tags.
func TestFilterOnlyEventsAreAppliedLikeAnyOther(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{partitions: 2})
	tags := a.createTags(2, "freeform")
	a.startConsumer(a.consumerConfig())
	ctx := context.Background()
	ev, err := a.post(ctx, [][]int64{{tags[0]}, {tags[0]}, {tags[1]}, {tags[0], tags[1]}})
	if err != nil {
		t.Fatal(err)
	}
	a.pub.Announce(ctx, ev)
	a.waitExact(30 * time.Second)

	announced := &countingAnnouncer{next: a.pub}
	p := postertest.New(t, poster.Config{DB: a.db.DB, Announcer: announced, Logger: counter.TestLogger()})
	if _, err := p.MakeSynonym(ctx, tags[0], tags[1]); err != nil {
		t.Fatal(err)
	}
	if err := p.RunWranglingJobs(ctx); err != nil {
		t.Fatal(err)
	}
	if announced.zero.Load() == 0 {
		t.Fatal("the job announced no event with a count delta of 0")
	}
	a.waitExact(30 * time.Second)
	var filter, count int64
	a.db.QueryRow("SELECT filter_count, count FROM tag_counts WHERE tag_id = ?", tags[1]).Scan(&filter, &count)
	if filter != 4 || count != 2 {
		t.Errorf("the canonical tag: filter_count %d, count %d; want its 2 works and the synonym's, 4 in all", filter, count)
	}
	t.Logf("%d filter-only outbox rows were applied", announced.zero.Load())
}

// countingAnnouncer counts the events with no count delta it passes on.
type countingAnnouncer struct {
	next counter.Announcer
	zero atomic.Int32
}

func (c *countingAnnouncer) Announce(ctx context.Context, events []counter.Event) {
	for _, e := range events {
		if e.Delta == 0 {
			c.zero.Add(1)
		}
	}
	c.next.Announce(ctx, events)
}

// TestExactReadsEqualTheRecountWhileTheCounterHoldsDeferredTags posts in
// bursts while a counter runs with deferred tags held for an hour; between
// bursts, at random moments, an exact read of every tag equals the
// independent recount of posted works, whatever the counter holds or is
// applying.
func TestExactReadsEqualTheRecountWhileTheCounterHoldsDeferredTags(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{})
	hot := a.createTags(2, "warning")
	pool := a.createTags(60, "freeform")
	cfg := a.consumerConfig()
	cfg.Tiers = counter.Tiers{MediumFrom: 50, LargeFrom: 500, MediumMinInterval: time.Hour, MediumMaxInterval: time.Hour, LargeInterval: time.Hour}
	a.startConsumer(cfg)
	reader, err := counter.NewReader(counter.ReaderConfig{DB: a.db.DB, Tiers: cfg.Tiers})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	all := append(append([]int64(nil), hot...), pool...)
	for round := range 8 {
		var wg sync.WaitGroup
		for range 4 {
			works := workload(rand.New(rand.NewPCG(uint64(round), rng.Uint64())), 40, hot, pool, 5)
			wg.Go(func() {
				for i := 0; i < len(works); i += 8 {
					ev, err := a.post(ctx, works[i:i+8])
					if err != nil {
						t.Error(err)
						return
					}
					a.pub.Announce(ctx, ev)
				}
			})
		}
		wg.Wait()
		time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond) // a random moment of the counter's work, not a wait for it
		exact, err := reader.ExactCounts(ctx, all)
		if err != nil {
			t.Fatal(err)
		}
		truth := map[int64]counter.Sum{}
		if err := reconcile.Walk(ctx, a.db.DB, func(st reconcile.TagState) { truth[st.TagID] = st.Works }); err != nil {
			t.Fatal(err)
		}
		for _, tc := range exact {
			if w := truth[tc.ID]; tc.Count != w.Count || tc.PublicCount != w.Public {
				t.Fatalf("round %d: tag %d read exactly as %d/%d, recount %d/%d", round, tc.ID, tc.Count, tc.PublicCount, w.Count, w.Public)
			}
		}
	}
	if a.metric("tagcount_deferred_tags") == 0 {
		t.Error("the counter held no tag: the exact reads were never tested against pending rows")
	}
}
