package counter_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster/postertest"
)

// archive is a test's own database, Kafka broker and publisher; works are
// posted through the real posting transaction (postertest) and announced
// by the test.
type archive struct {
	t         testing.TB
	db        *testdb.DB
	broker    *counter.EmbeddedBroker
	pub       *counter.Publisher
	reg       *prometheus.Registry
	consumers atomic.Int32

	mu   sync.Mutex
	refs map[int64]tags.Ref // the tags created, by id
}

type archiveOpts struct {
	partitions int
	dataDir    string
	dropRate   float64
}

func newArchive(t testing.TB, o archiveOpts) *archive {
	t.Helper()
	db := testdb.New(t)
	db.SetMaxOpenConns(24)
	db.SetMaxIdleConns(24)
	a := &archive{t: t, db: db, reg: prometheus.NewRegistry(), refs: make(map[int64]tags.Ref)}
	if o.partitions == 0 {
		o.partitions = 8
	}
	b, err := counter.StartEmbeddedBroker(context.Background(), o.dataDir, o.partitions, counter.DefaultTopic, 0)
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	a.broker = b
	t.Cleanup(func() { a.broker.Close() })
	if a.pub, err = counter.NewPublisher(counter.PublisherConfig{Brokers: b.Addrs(), Logger: counter.TestLogger(), Registerer: a.reg,
		DropRate: o.dropRate}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.pub.Close() })
	return a
}

// createTags creates n tags of type typ and returns their ids.
func (a *archive) createTags(n int, typ string) []int64 {
	a.t.Helper()
	ids := counter.CreateTags(a.t, a.db.DB, n, typ)
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, id := range ids {
		a.refs[id] = tags.NewRef(typ, fmt.Sprintf("%s Tag %d", strings.ToUpper(typ[:1])+typ[1:], i))
	}
	return ids
}

// content is a work carrying exactly the tags ids (created by createTags).
func (a *archive) content(ids []int64) drafts.Content {
	a.mu.Lock()
	defer a.mu.Unlock()
	refs := make([]tags.Ref, len(ids))
	for i, id := range ids {
		refs[i] = a.refs[id]
	}
	return postertest.Content("work", refs...)
}

// post posts works (each a list of tag ids) in one posting transaction on
// the new path and returns the events to announce.
func (a *archive) post(ctx context.Context, works [][]int64) ([]counter.Event, error) {
	contents := make([]drafts.Content, len(works))
	for i, tags := range works {
		contents[i] = a.content(tags)
	}
	_, events, err := postertest.TryWorks(ctx, a.db.DB, contents, nil)
	return events, err
}

// workload draws works of about tagsPerWork tags: every hot tag, then
// distinct random tags from pool.
func workload(r *rand.Rand, n int, hot, pool []int64, tagsPerWork int) [][]int64 {
	works := make([][]int64, n)
	for i := range works {
		tags := append([]int64(nil), hot...)
		seen := make(map[int64]bool, tagsPerWork)
		for len(tags) < tagsPerWork {
			tag := pool[r.IntN(len(pool))]
			if !seen[tag] {
				seen[tag] = true
				tags = append(tags, tag)
			}
		}
		works[i] = tags
	}
	return works
}

// postAll posts works in transactions of perTx works from workers
// goroutines and hands each transaction's events to announce.
func (a *archive) postAll(ctx context.Context, works [][]int64, perTx, workers int, announce func([]counter.Event)) {
	a.t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(int64(perTx))) - perTx
				if i >= len(works) {
					return
				}
				events, err := a.post(ctx, works[i:min(i+perTx, len(works))])
				if err != nil {
					failed.Store(err)
					return
				}
				announce(events)
			}
		})
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		a.t.Fatalf("post: %v", err)
	}
}

func (a *archive) outboxDepth() int64 {
	total, _, err := counter.OutboxDepth(context.Background(), a.db, 0)
	if err != nil {
		a.t.Fatal(err)
	}
	return total
}

func (a *archive) count(tag int64) int64 {
	var n int64
	a.db.QueryRow("SELECT count FROM tag_counts WHERE tag_id = ?", tag).Scan(&n)
	return n
}

// waitExact polls until the outbox is empty and every stored count equals
// the independent count of posted works (the reconcile's conservation
// snapshot), failing the test after within.
func (a *archive) waitExact(within time.Duration) {
	a.t.Helper()
	var depth int64
	var drifted []reconcile.TagState
	ok := func() bool {
		var err error
		if depth = a.outboxDepth(); depth != 0 {
			return false
		}
		drifted, err = reconcile.Drifted(context.Background(), a.db.DB)
		return err == nil && len(drifted) == 0
	}
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			a.t.Fatalf("counts not exact after %v: outbox depth %d; drifted %v", within, depth, drifted[:min(len(drifted), 5)])
		}
		time.Sleep(50 * time.Millisecond) // polling the counter's effect
	}
}

func (a *archive) metric(name string) float64 { return counter.Metric(a.t, a.reg, name) }

// consumerConfig returns test defaults for a consumer: short tier intervals in
// real time, so deferral is exercised and still finishes within a test.
func (a *archive) consumerConfig() counter.ConsumerConfig {
	return counter.ConsumerConfig{
		Brokers:           a.broker.Addrs(),
		DB:                a.db.DB,
		Tiers:             testTiers(),
		BatchSize:         1000,
		BatchWait:         10 * time.Millisecond,
		Logger:            counter.TestLogger(),
		Registerer:        a.reg,
		HeartbeatInterval: 200 * time.Millisecond,
		SessionTimeout:    2 * time.Second,
	}
}

// testTiers are the default tier boundaries with sub-second intervals.
func testTiers() counter.Tiers {
	return counter.Tiers{
		MediumMinInterval: 100 * time.Millisecond,
		MediumMaxInterval: 400 * time.Millisecond,
		LargeInterval:     300 * time.Millisecond,
	}
}

// startConsumer runs a consumer until the returned stop is called (or the
// test ends); stop waits for Run to return and fails the test on an error.
func (a *archive) startConsumer(cfg counter.ConsumerConfig) (stop func()) {
	a.t.Helper()
	if a.consumers.Add(1) > 1 && cfg.Registerer == a.reg {
		cfg.Registerer = prometheus.NewRegistry() // another process's consumer
	}
	c, err := counter.NewConsumer(cfg)
	if err != nil {
		a.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					a.t.Errorf("consumer: %v", err)
				}
			case <-time.After(60 * time.Second):
				a.t.Errorf("consumer did not stop within 60s")
			}
		})
	}
	a.t.Cleanup(stop)
	return stop
}

// startSweeper runs a sweeper announcing tags whose rows are older than
// after, and every old tag again every 4×after (the last resort for an
// announcement lost twice).
func (a *archive) startSweeper(after time.Duration) {
	s, err := counter.NewSweeper(counter.SweeperConfig{DB: a.db.DB, Announcer: a.pub, After: after, Interval: after / 2,
		FullEvery: 4 * after, Logger: counter.TestLogger(), Registerer: a.reg})
	if err != nil {
		a.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	a.t.Cleanup(func() { cancel(); <-done })
}
