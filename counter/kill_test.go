package counter

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/tagcount/tagcount/migrations"
)

// childEnv carries the configuration of a counter run in a child process.
const childEnv = "TAGCOUNT_COUNTER_CHILD"

type childConfig struct {
	Brokers []string
	DSN     string
}

// TestCounterChildProcess is not a test: it is the counter process that
// TestCountsExactAfterCounterIsKilledMidBatch starts and kills with SIGKILL.
func TestCounterChildProcess(t *testing.T) {
	raw := os.Getenv(childEnv)
	if raw == "" {
		t.Skip("helper process of TestCountsExactAfterCounterIsKilledMidBatch")
	}
	var cc childConfig
	if err := json.Unmarshal([]byte(raw), &cc); err != nil {
		t.Fatal(err)
	}
	db, err := migrations.Open(context.Background(), cc.DSN)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConsumer(ConsumerConfig{
		Brokers:           cc.Brokers,
		DB:                db,
		Tiers:             testTiers(),
		BatchSize:         100,
		BatchWait:         5 * time.Millisecond,
		Logger:            testLogger(),
		HeartbeatInterval: 200 * time.Millisecond,
		SessionTimeout:    2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Run(context.Background()) // until killed
}

func TestCountsExactAfterCounterIsKilledMidBatch(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{})
	works := faultLoad(a, 5)
	ctx := context.Background()
	a.postAll(ctx, works, 10, 4, func(ev []Event) { a.pub.Announce(ctx, ev) })
	total := a.outboxDepth()

	raw, _ := json.Marshal(childConfig{Brokers: a.broker.Addrs(), DSN: a.db.DSN})
	child := exec.Command(os.Args[0], "-test.run=^TestCounterChildProcess$")
	child.Env = append(os.Environ(), childEnv+"="+string(raw))
	child.Stdout, child.Stderr = os.Stderr, os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it while it is applying: once it has drained some of the
	// outbox but not all of it.
	waitFor(t, 60*time.Second, "the child counter to apply some events", func() bool {
		d := a.outboxDepth()
		return d < total*7/10
	})
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	left := a.outboxDepth()
	if left == 0 {
		t.Fatal("the child finished before it was killed")
	}
	t.Logf("killed the counter with %d of %d events left in the outbox", left, total)

	// A new counter in the same group takes over from the committed
	// offsets; the sweeper re-announces what the dead one held.
	a.startConsumer(a.consumerConfig())
	a.startSweeper(time.Second, a.pub)
	a.waitExact(60 * time.Second)
}
