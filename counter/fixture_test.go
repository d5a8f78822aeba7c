package counter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// testLogger discards logs unless TAGCOUNT_TEST_LOG=1.
func testLogger() *slog.Logger {
	if os.Getenv("TAGCOUNT_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// archive is a test's own database, Kafka broker and publisher, with a
// posting helper that writes like the posting path.
type archive struct {
	t         testing.TB
	db        *testdb.DB
	broker    *EmbeddedBroker
	pub       *Publisher
	reg       *prometheus.Registry
	nextDraft atomic.Int64
	consumers atomic.Int32
}

type archiveOpts struct {
	partitions int
	dataDir    string
	dropRate   float64
	noBroker   bool
}

func newArchive(t testing.TB, o archiveOpts) *archive {
	t.Helper()
	db := testdb.New(t)
	db.SetMaxOpenConns(24)
	db.SetMaxIdleConns(24)
	a := &archive{t: t, db: db, reg: prometheus.NewRegistry()}
	if o.noBroker {
		return a
	}
	if o.partitions == 0 {
		o.partitions = 8
	}
	b, err := StartEmbeddedBroker(context.Background(), o.dataDir, o.partitions, DefaultTopic, 0)
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	a.broker = b
	t.Cleanup(func() { a.broker.Close() })
	a.pub = NewPublisher(PublisherConfig{Brokers: b.Addrs(), Logger: testLogger(), Registerer: a.reg, DropRate: o.dropRate})
	t.Cleanup(func() { a.pub.Close() })
	return a
}

// createTags inserts n tags of type typ and returns their ids.
func (a *archive) createTags(n int, typ string) []int64 {
	a.t.Helper()
	ids := make([]int64, 0, n)
	for start := 0; start < n; start += 500 {
		var sb strings.Builder
		sb.WriteString("INSERT INTO tags (type, name, name_key) VALUES ")
		end := min(start+500, n)
		for i := start; i < end; i++ {
			if i > start {
				sb.WriteByte(',')
			}
			name := fmt.Sprintf("%s Tag %d", strings.ToUpper(typ[:1])+typ[1:], i)
			fmt.Fprintf(&sb, "('%s','%s','%s')", typ, name, strings.ToLower(name))
		}
		if _, err := a.db.Exec(sb.String()); err != nil {
			a.t.Fatalf("create tags: %v", err)
		}
	}
	rows, err := a.db.Query("SELECT id FROM tags WHERE type = ? ORDER BY id", typ)
	if err != nil {
		a.t.Fatalf("create tags: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		rows.Scan(&id)
		ids = append(ids, id)
	}
	return ids[len(ids)-n:]
}

// post writes works (each a list of tag ids) with their taggings and one
// +1 tag_events row per tagging in one transaction, as the posting path
// does, and returns the events to announce after commit.
func (a *archive) post(ctx context.Context, works [][]int64) ([]Event, error) {
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	first := a.nextDraft.Add(int64(len(works))) - int64(len(works)) + 1
	var sb strings.Builder
	sb.WriteString("INSERT INTO works (draft_id, author_id, title, body, version) VALUES ")
	for i := range works {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, "(%d, 1, 't', 'b', 1)", first+int64(i))
	}
	if _, err := tx.ExecContext(ctx, sb.String()); err != nil {
		return nil, err
	}
	workIDs := make([]int64, len(works))
	rows, err := tx.QueryContext(ctx, "SELECT id, draft_id FROM works WHERE draft_id BETWEEN ? AND ?", first, first+int64(len(works))-1)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id, draft int64
		if err := rows.Scan(&id, &draft); err != nil {
			rows.Close()
			return nil, err
		}
		workIDs[draft-first] = id
	}
	rows.Close()
	var tg, ev strings.Builder
	tg.WriteString("INSERT INTO taggings (work_id, tag_id, position) VALUES ")
	ev.WriteString("INSERT INTO tag_events (tag_id, delta, work_id) VALUES ")
	n := 0
	for i, tags := range works {
		for pos, tag := range tags {
			if n > 0 {
				tg.WriteByte(',')
				ev.WriteByte(',')
			}
			n++
			fmt.Fprintf(&tg, "(%d,%d,%d)", workIDs[i], tag, pos)
			fmt.Fprintf(&ev, "(%d,1,%d)", tag, workIDs[i])
		}
	}
	if n == 0 {
		return nil, tx.Commit()
	}
	if _, err := tx.ExecContext(ctx, tg.String()); err != nil {
		return nil, err
	}
	res, err := tx.ExecContext(ctx, ev.String())
	if err != nil {
		return nil, err
	}
	// Every id of the statement is at least its first (LAST_INSERT_ID), so
	// the primary-key range finds them without an index on work_id.
	firstEvent, err := res.LastInsertId()
	if err != nil {
		return nil, err
	}
	rows, err = tx.QueryContext(ctx, migrations.IDList("SELECT id, tag_id, delta FROM tag_events WHERE id >= ? AND work_id IN (", workIDs, ")"), firstEvent)
	if err != nil {
		return nil, err
	}
	events := make([]Event, 0, n)
	for rows.Next() {
		var e Event
		if err := rows.Scan(&e.ID, &e.TagID, &e.Delta); err != nil {
			rows.Close()
			return nil, err
		}
		events = append(events, e)
	}
	rows.Close()
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return events, nil
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
func (a *archive) postAll(ctx context.Context, works [][]int64, perTx, workers int, announce func([]Event)) {
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

func (a *archive) countMap(q string) map[int64]int64 {
	a.t.Helper()
	rows, err := a.db.Query(q)
	if err != nil {
		a.t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	m := make(map[int64]int64)
	for rows.Next() {
		var tag, n int64
		if err := rows.Scan(&tag, &n); err != nil {
			a.t.Fatal(err)
		}
		if n != 0 {
			m[tag] = n
		}
	}
	return m
}

// trueCounts counts posted works per tag, independently of the counter.
func (a *archive) trueCounts() map[int64]int64 {
	return a.countMap("SELECT t.tag_id, COUNT(*) FROM taggings t JOIN works w ON w.id = t.work_id GROUP BY t.tag_id")
}

func (a *archive) storedCounts() map[int64]int64 {
	return a.countMap("SELECT tag_id, count FROM tag_counts")
}

func (a *archive) outboxDepth() int64 {
	var n int64
	if err := a.db.QueryRow("SELECT COUNT(*) FROM tag_events").Scan(&n); err != nil {
		a.t.Fatal(err)
	}
	return n
}

// countDiff describes how stored differs from want ("" when equal).
func countDiff(want, got map[int64]int64) string {
	var sb strings.Builder
	n := 0
	for tag, w := range want {
		if got[tag] != w {
			n++
			if n <= 5 {
				fmt.Fprintf(&sb, " tag %d: want %d got %d;", tag, w, got[tag])
			}
		}
	}
	for tag, g := range got {
		if _, ok := want[tag]; !ok {
			n++
			if n <= 5 {
				fmt.Fprintf(&sb, " tag %d: want 0 got %d;", tag, g)
			}
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%d tags differ:%s", n, sb.String())
}

// waitExact polls until the outbox is empty and every stored count equals
// the true count, failing the test after within.
func (a *archive) waitExact(within time.Duration) {
	a.t.Helper()
	deadline := time.Now().Add(within)
	for {
		depth := a.outboxDepth()
		d := countDiff(a.trueCounts(), a.storedCounts())
		if depth == 0 && d == "" {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("counts not exact after %v: outbox depth %d; %s", within, depth, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor polls cond every 20ms until it holds, failing after within.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// consumerConfig returns test defaults for a consumer: short tier intervals in
// real time, so deferral is exercised and still finishes within a test.
func (a *archive) consumerConfig() ConsumerConfig {
	return ConsumerConfig{
		Brokers:           a.broker.Addrs(),
		DB:                a.db.DB,
		Tiers:             testTiers(),
		BatchSize:         1000,
		BatchWait:         10 * time.Millisecond,
		Logger:            testLogger(),
		Registerer:        a.reg,
		HeartbeatInterval: 200 * time.Millisecond,
		SessionTimeout:    2 * time.Second,
	}
}

// testTiers are the default tier boundaries with sub-second intervals.
func testTiers() Tiers {
	return Tiers{
		MediumMinInterval: 100 * time.Millisecond,
		MediumMaxInterval: 400 * time.Millisecond,
		LargeInterval:     300 * time.Millisecond,
	}
}

// startConsumer runs a consumer until the returned stop is called (or the
// test ends); stop waits for Run to return and fails the test on an error.
func (a *archive) startConsumer(cfg ConsumerConfig) (stop func()) {
	a.t.Helper()
	if a.consumers.Add(1) > 1 && cfg.Registerer == a.reg {
		cfg.Registerer = prometheus.NewRegistry() // another process's consumer
	}
	c, err := NewConsumer(cfg)
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

// startSweeper runs a sweeper re-announcing rows older than olderThan.
func (a *archive) startSweeper(olderThan time.Duration, ann Announcer) {
	s := NewSweeper(SweeperConfig{DB: a.db.DB, Announcer: ann, OlderThan: olderThan, Interval: olderThan / 2, Logger: testLogger(), Registerer: a.reg})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	a.t.Cleanup(func() { cancel(); <-done })
}

// metric returns the value of the counter or gauge name on reg, summed
// over its labels (0 when absent).
func (a *archive) metric(reg *prometheus.Registry, name string) float64 {
	a.t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		a.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}
