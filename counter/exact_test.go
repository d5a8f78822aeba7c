package counter_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
)

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
	reader := counter.NewReader(a.db.DB, cfg.Tiers)
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
