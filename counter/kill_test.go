package counter_test

import (
	"context"
	"math/rand/v2"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

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
	db, err := migrations.Open(context.Background(), cc.DSN)
	if err != nil {
		t.Fatal(err)
	}
	stream := counter.NewStream(counter.StreamConfig{DB: db, Brokers: cc.Brokers, Interval: 50 * time.Millisecond,
		Logger: counter.TestLogger()})
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
