package counter_test

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// outboxRows writes one outbox row per tag (+1 to all four numbers) and
// commits, in chunks of counter.DefaultApplyLimit rows; it returns each
// chunk's event ids: what the counter applies in one transaction each.
func outboxRows(t *testing.T, db *migrations.DB, tags []int64, work int64) [][]int64 {
	t.Helper()
	ctx := context.Background()
	var chunks [][]int64
	for lo := 0; lo < len(tags); lo += counter.DefaultApplyLimit {
		part := tags[lo:min(lo+counter.DefaultApplyLimit, len(tags))]
		deltas := make([]counter.Delta, len(part))
		for i, tag := range part {
			deltas[i] = counter.Delta{WorkID: work, TagID: tag, Delta: 1, PublicDelta: 1, FilterDelta: 1, PublicFilterDelta: 1}
		}
		work++
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		events, err := counter.WriteOutbox(ctx, db, tx, deltas)
		if err != nil {
			tx.Rollback()
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		ids := make([]int64, len(events))
		for i, e := range events {
			ids[i] = e.ID
		}
		chunks = append(chunks, ids)
	}
	return chunks
}

// applyChunks applies the chunks as the counter's writers do (each chunk
// one transaction, one multi-row upsert of tag_counts), workers at a time,
// and returns how long that took.
func applyChunks(t *testing.T, db *migrations.DB, chunks [][]int64, workers int) time.Duration {
	t.Helper()
	start := time.Now()
	next := make(chan []int64)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ids := range next {
				if res, err := counter.ApplyBatch(context.Background(), db, ids); err != nil || res.Applied != len(ids) {
					t.Errorf("apply %d events: applied %d, %v", len(ids), res.Applied, err)
				}
			}
		})
	}
	for _, ids := range chunks {
		next <- ids
	}
	close(next)
	wg.Wait()
	return time.Since(start)
}

// bump is a legacy-path count change of tags in tx (+1 each).
func bump(t *testing.T, tx *sql.Tx, tags ...int64) {
	t.Helper()
	deltas := make([]counter.Delta, len(tags))
	for i, tag := range tags {
		deltas[i] = counter.Delta{TagID: tag, Delta: 1, PublicDelta: 1, FilterDelta: 1, PublicFilterDelta: 1}
	}
	if err := counter.BumpCounts(context.Background(), tx, deltas); err != nil {
		t.Fatal(err)
	}
}

// followStream ensures the count-change topic and follows it from its start
// into a new mirror until the test ends.
func followStream(t *testing.T, a *archive) *mirror {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	if err := counter.EnsureCountsTopic(ctx, a.broker.Addrs(), "", 4); err != nil {
		t.Fatal(err)
	}
	m := &mirror{tags: map[int64]counter.CountChange{}}
	go m.follow(ctx, t, a.broker.Addrs())
	return m
}

// runStream runs a count-change stream in this process until the test ends.
func runStream(t *testing.T, a *archive) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { stop(); <-done })
	s := a.stream(a.reg)
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
}

// stream returns a count-change stream of a's database and broker that
// publishes every 50 ms and registers its metrics on reg (nil: none).
func (a *archive) stream(reg prometheus.Registerer) *counter.Stream {
	a.t.Helper()
	s, err := counter.NewStream(counter.StreamConfig{DB: a.db.DB, Brokers: a.broker.Addrs(), Interval: 50 * time.Millisecond,
		Logger: counter.TestLogger(), Registerer: reg})
	if err != nil {
		a.t.Fatal(err)
	}
	return s
}

// TestTheCountStreamGoesOnAfterABurstOfChanges is the audit's stall: 6,000
// tags' counts change in one statement (the counter applying a chunk of
// their outbox rows), then one more tag's on the legacy path; a mirror of
// the stream must end equal to tag_counts, the last change included.
func TestTheCountStreamGoesOnAfterABurstOfChanges(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{})
	m := followStream(t, a)
	runStream(t, a)

	burst := make([]int64, 6000)
	for i := range burst {
		burst[i] = int64(i + 1)
	}
	chunks := outboxRows(t, a.db.DB, burst, 1)
	// One transaction of 6,000 rows: every change has the same timestamp.
	applyChunks(t, a.db.DB, [][]int64{append(chunks[0], chunks[1]...)}, 1)

	tx, err := a.db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	bump(t, tx, 6001)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	waitMirror(t, a, m)
}

// waitMirror waits until m equals tag_counts, and says how they differed
// last if they never do. It compares at most twice a second: a comparison
// reads every tag_counts row and holds the mirror's lock.
func waitMirror(t *testing.T, a *archive, m *mirror) {
	t.Helper()
	var diff string
	t.Cleanup(func() {
		if t.Failed() && diff != "" {
			t.Logf("the mirror still differs: %s", diff)
		}
	})
	var last time.Time
	testdb.WaitFor(t, 5*time.Minute, "the mirror to equal tag_counts", func() bool {
		if time.Since(last) < 500*time.Millisecond {
			return false
		}
		last = time.Now()
		diff = m.differs(a)
		return diff == ""
	})
}

// unpublished is the number of changes not yet published (a count of the
// change log: for logs, not for polling).
func unpublished(t *testing.T, a *archive) int64 {
	var n int64
	if err := a.db.QueryRow("SELECT COUNT(*) FROM tag_count_changes").Scan(&n); err != nil {
		t.Error(err)
	}
	return n
}

// allPublished reports whether every committed change is published: the
// change log has no row (an index look-up, cheap to poll).
func allPublished(t *testing.T, a *archive) bool {
	ok, err := migrations.Exists(context.Background(), a.db, "SELECT 1 FROM tag_count_changes LIMIT 1")
	if err != nil {
		t.Error(err)
	}
	return err == nil && !ok
}

// TestTheCountStreamIsCompleteThroughABurstALateCommitAndAKilledPublisher
// is the audit's done-when: 100,000 count changes at once (the counter
// applying 25,000 tags' outbox rows four times over, four transactions at
// a time), a legacy post whose transaction commits 60 s after its write,
// the publishing process killed with SIGKILL mid-run and a successor
// taking over, and reconcile corrections; once the stream's lag is back
// under its budget, a mirror built from tag-counts equals tag_counts, all
// four numbers and the version of every tag.
func TestTheCountStreamIsCompleteThroughABurstALateCommitAndAKilledPublisher(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{})
	ctx := context.Background()
	m := followStream(t, a)
	const late, tags, rounds = 1, 25_000, 4
	burst := make([]int64, tags)
	for i := range burst {
		burst[i] = int64(late + 1 + i)
	}
	var chunks [][]int64
	for r := range rounds {
		chunks = append(chunks, outboxRows(t, a.db.DB, burst, int64(1+100*r))...)
	}

	// The late transaction writes first and stays open through all below.
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	bump(t, tx, late)
	wrote := time.Now()

	child := startCounterChild(t, childConfig{Brokers: a.broker.Addrs(), DSN: a.db.DSN, StreamOnly: true})
	took := applyChunks(t, a.db.DB, chunks, 4)
	t.Logf("%d count changes written in %v", tags*rounds, took.Round(time.Millisecond))
	testdb.WaitFor(t, 60*time.Second, "the child to publish some changes", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.seen > 0
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	t.Logf("publisher killed with %d changes unpublished", unpublished(t, a))

	takeover := time.Now()
	runStream(t, a)
	correct(t, a, burst[:3], counter.Sum{Count: -1, Public: -1, Filter: -1, PublicFilter: -1})
	testdb.WaitFor(t, 5*time.Minute, "the successor to publish every committed change", func() bool { return allPublished(t, a) })
	t.Logf("the successor published the rest in %v", time.Since(takeover).Round(time.Millisecond))

	testdb.WaitFor(t, 2*time.Minute, "60 s since the late write", func() bool { return time.Since(wrote) >= 60*time.Second })
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	testdb.WaitFor(t, 5*time.Minute, "the stream's lag back under its budget", func() bool {
		lag, err := counter.StreamLag(ctx, a.db.DB)
		return err == nil && lag < counter.StreamBudget
	})
	waitMirror(t, a, m)
	m.mu.Lock()
	defer m.mu.Unlock()
	if got := m.tags[late]; got.Count != 1 || got.Version != 1 {
		t.Errorf("the late write mirrored as %+v; want count 1 at version 1", got)
	}
	t.Logf("mirror of %d tags from %d messages", len(m.tags), m.seen)
}

// correct applies reconcile's correction drift to tags, one transaction
// each, as a reconcile run does.
func correct(t *testing.T, a *archive, tags []int64, drift counter.Sum) {
	t.Helper()
	for _, tag := range tags {
		tx, err := a.db.BeginTx(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := counter.CorrectCount(context.Background(), tx, tag, drift); err != nil {
			tx.Rollback()
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestEveryStreamProcessReportsTheLagWhileThePublisherIsStuck holds the
// publishing lock as a stuck publisher would (it publishes nothing): a
// standing-by stream process still reports the unpublished change's
// growing lag, and once the lock is free it publishes the change and the
// lag is 0.
func TestEveryStreamProcessReportsTheLagWhileThePublisherIsStuck(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{})
	ctx := context.Background()
	m := followStream(t, a)
	stuck, err := a.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	var got int
	if err := stuck.QueryRowContext(ctx, "SELECT GET_LOCK("+counter.StreamLock+", 0)").Scan(&got); err != nil || got != 1 {
		t.Fatalf("take the publishing lock: %d, %v", got, err)
	}
	runStream(t, a)
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	bump(t, tx, 7)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	lag := func() float64 { return a.metric("tagcount_count_stream_lag_seconds") }
	testdb.WaitFor(t, 60*time.Second, "the standby to report a lag over a second", func() bool { return lag() >= 1 })
	if allPublished(t, a) {
		t.Fatal("the change was published while the lock was held")
	}
	stuck.Close() // the stuck publisher's session ends
	testdb.WaitFor(t, 60*time.Second, "the change published and the lag back to 0", func() bool {
		return allPublished(t, a) && lag() == 0
	})
	waitMirror(t, a, m)
}

type childConfig struct {
	Brokers []string
	DSN     string
	Stream  bool // also run the count-change stream
	// StreamOnly runs the count-change stream alone: no consumer, which
	// would apply (at its start) outbox rows the test applies itself.
	StreamOnly bool
}

// TestCounterChildProcess is not a test: it is the counter process that
// TestCountsExactAfterCounterIsKilledHoldingDeferredTags starts and kills with SIGKILL.
func TestCounterChildProcess(t *testing.T) {
	var cc childConfig
	testdb.ChildConfig(t, &cc)
	db := testdb.ChildDB(t, cc.DSN)
	stream, err := counter.NewStream(counter.StreamConfig{DB: db, Brokers: cc.Brokers, Interval: 50 * time.Millisecond,
		Logger: counter.TestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if cc.StreamOnly {
		stream.Run(context.Background()) // until killed
		return
	}
	c, err := counter.NewConsumer(counter.ConsumerConfig{
		Brokers: cc.Brokers,
		DB:      db,
		// Deferred tags wait an hour: held until the test kills it.
		Tiers:             counter.Tiers{MediumMinInterval: time.Hour, MediumMaxInterval: time.Hour, LargeInterval: time.Hour},
		BatchSize:         100,
		BatchWait:         5 * time.Millisecond,
		Logger:            counter.TestLogger(),
		HeartbeatInterval: 200 * time.Millisecond,
		SessionTimeout:    2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if cc.Stream {
		go stream.Run(context.Background())
	}
	c.Run(context.Background()) // until killed
}

// startCounterChild runs TestCounterChildProcess with cfg in a child
// process that dies with the test binary, even when that is killed.
func startCounterChild(t *testing.T, cfg childConfig) *exec.Cmd {
	t.Helper()
	return testdb.StartChild(t, "TestCounterChildProcess", cfg)
}

// TestCountsExactAfterCounterIsKilledHoldingDeferredTags kills a counter
// with SIGKILL while it holds the hot tags' rows for a deferred flush (its
// offsets committed past their announcements), and checks that its
// successor finds them in the outbox and counts them, with no sweeper.
func TestCountsExactAfterCounterIsKilledHoldingDeferredTags(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{})
	hot := a.createTags(2, "warning")
	pool := a.createTags(500, "freeform")
	works := workload(rand.New(rand.NewPCG(5, 7)), 2500, hot, pool, 8)
	ctx := context.Background()
	announce := func(ev []counter.Event) { a.pub.Announce(ctx, ev) }
	// The hot tags grow past the small tier in the first part...
	a.postAll(ctx, works[:2000], 10, 4, announce)

	child := startCounterChild(t, childConfig{Brokers: a.broker.Addrs(), DSN: a.db.DSN})
	testdb.WaitFor(t, 60*time.Second, "the child counter to apply the first part", func() bool { return a.outboxDepth() == 0 })
	// ...so the child holds their rows of the second part (for an hour),
	// and applies the rest.
	a.postAll(ctx, works[2000:], 10, 4, announce)
	held := int64(2 * 500)
	testdb.WaitFor(t, 60*time.Second, "the child to apply all but the hot tags' rows", func() bool { return a.outboxDepth() == held })
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	if left := a.outboxDepth(); left != held {
		t.Fatalf("%d rows left after the kill, want the %d held", left, held)
	}

	// A new counter in the same group takes over from the committed
	// offsets (past the held announcements) and finds in the outbox what
	// the dead one held.
	a.startConsumer(a.consumerConfig())
	a.waitExact(60 * time.Second)
}
