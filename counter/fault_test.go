package counter_test

import (
	"context"
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// faultLoad is the workload of the fault tests: 2,000 works of 8 tags, two
// hot tags in every work (medium tier by the end, so deferral is exercised).
func faultLoad(a *archive, seed uint64) [][]int64 {
	hot := a.createTags(2, "warning")
	pool := a.createTags(500, "freeform")
	return workload(rand.New(rand.NewPCG(seed, 7)), 2000, hot, pool, 8)
}

func TestCountsExactWhenEveryMessageIsDeliveredTwice(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{})
	works := faultLoad(a, 1)
	a.startConsumer(a.consumerConfig())
	ctx := context.Background()
	a.postAll(ctx, works, 10, 4, func(ev []counter.Event) {
		a.pub.Announce(ctx, ev)
		a.pub.Announce(ctx, ev)
	})
	a.waitExact(60 * time.Second)
	// Both copies were consumed, and the second added nothing.
	testdb.WaitFor(t, 10*time.Second, "every duplicate to be consumed", func() bool {
		return a.metric("tagcount_events_consumed_total") >= 2*float64(len(works)*8)
	})
	a.waitExact(10 * time.Second) // the duplicates added nothing
}

func TestCountsExactWhenTenPercentOfPublishesAreDropped(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{dropRate: 0.1})
	works := faultLoad(a, 2)
	a.startConsumer(a.consumerConfig())
	// The sweeper announces through the same lossy publisher: lost
	// re-announcements are swept again.
	a.startSweeper(time.Second)
	ctx := context.Background()
	a.postAll(ctx, works, 10, 4, func(ev []counter.Event) { a.pub.Announce(ctx, ev) })
	a.waitExact(60 * time.Second)
	dropped := a.metric("tagcount_publish_dropped_total")
	if dropped < float64(len(works)*8)/20 {
		t.Errorf("only %v publishes dropped; the fault was not injected", dropped)
	}
	t.Logf("dropped %v publishes, re-announced %v", dropped, a.metric("tagcount_events_reannounced_total"))
}

func TestCountsExactWhenBrokerRestartsDuringPosting(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := newArchive(t, archiveOpts{dataDir: dir})
	works := faultLoad(a, 3)
	_, portStr, _ := net.SplitHostPort(a.broker.Addrs()[0])
	port, _ := strconv.Atoi(portStr)
	a.startConsumer(a.consumerConfig())
	a.startSweeper(time.Second)
	ctx := context.Background()

	a.postAll(ctx, works[:700], 10, 4, func(ev []counter.Event) { a.pub.Announce(ctx, ev) })
	a.broker.Close()
	// Posting goes on while Kafka is down: the outbox keeps every event.
	a.postAll(ctx, works[700:1300], 10, 4, func(ev []counter.Event) { a.pub.Announce(ctx, ev) })
	b, err := counter.StartEmbeddedBroker(ctx, dir, 8, counter.DefaultTopic, port)
	if err != nil {
		t.Fatalf("restart broker: %v", err)
	}
	a.broker = b
	a.postAll(ctx, works[1300:], 10, 4, func(ev []counter.Event) { a.pub.Announce(ctx, ev) })
	a.waitExact(90 * time.Second)
	t.Logf("publish failures while the broker was down: %v", a.metric("tagcount_publish_failures_total"))
}

func TestCountsExactWhenPartitionsMoveBetweenConsumers(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{})
	works := faultLoad(a, 4)
	first := a.startConsumer(a.consumerConfig())
	ctx := context.Background()
	var applied2 atomic.Int64
	a.postAll(ctx, works[:600], 10, 4, func(ev []counter.Event) { a.pub.Announce(ctx, ev) })

	cfg2 := a.consumerConfig()
	cfg2.OnApply = func(_ int, r counter.ApplyResult) { applied2.Add(int64(r.Applied)) }
	a.startConsumer(cfg2)
	a.postAll(ctx, works[600:1400], 10, 4, func(ev []counter.Event) { a.pub.Announce(ctx, ev) })
	first()
	a.postAll(ctx, works[1400:], 10, 4, func(ev []counter.Event) { a.pub.Announce(ctx, ev) })
	a.waitExact(60 * time.Second)
	if applied2.Load() == 0 {
		t.Errorf("the second consumer applied nothing; partitions did not move")
	}
}

func TestMalformedMessageIsSkippedAndCounted(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{partitions: 1})
	tags := a.createTags(3, "fandom")
	a.startConsumer(a.consumerConfig())
	ctx := context.Background()

	ev, err := a.post(ctx, [][]int64{{tags[0], tags[1]}})
	if err != nil {
		t.Fatal(err)
	}
	a.pub.Announce(ctx, ev)
	w := &kafka.Writer{Addr: kafka.TCP(a.broker.Addrs()...), Topic: counter.DefaultTopic, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireOne}
	defer w.Close()
	err = w.WriteMessages(ctx,
		kafka.Message{Key: []byte("1"), Value: []byte{9, 9, 9}},
		kafka.Message{Key: []byte("x"), Value: nil},
	)
	if err != nil {
		t.Fatal(err)
	}
	ev, err = a.post(ctx, [][]int64{{tags[1], tags[2]}})
	if err != nil {
		t.Fatal(err)
	}
	a.pub.Announce(ctx, ev)
	a.waitExact(30 * time.Second)
	testdb.WaitFor(t, 10*time.Second, "two malformed messages counted", func() bool {
		return a.metric("tagcount_malformed_messages_total") == 2
	})
}
