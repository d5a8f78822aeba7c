package counter_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations/testdb"
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
