package counter

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func testWriter() *partitionWriter {
	c := &Consumer{tiers: Tiers{Jitter: -1}.WithDefaults(), now: time.Now, log: testLogger(), m: newConsumerMetrics(nil),
		board: &switchboard{}}
	return newPartitionWriter(c, nil, 0)
}

func message(offset, tag int64, written time.Time) kafka.Message {
	return kafka.Message{Offset: offset, Key: EventKey(tag), Value: EncodeEvent(Event{ID: offset + 1, TagID: tag, Delta: 1}), Time: written}
}

func TestRouteFlushesSmallTagsAndHoldsDeferredOnesFromWhenTheyWereWritten(t *testing.T) {
	t.Parallel()
	w := testWriter()
	clock := newTestClock()
	w.c.now = clock.Now
	const unknown, small, medium, large = 1, 2, 3, 4
	w.counts[small], w.counts[medium], w.counts[large] = 10, 1_000, 40_000
	now := time.Now()
	batch := []kafka.Message{
		message(0, unknown, now), message(1, small, now), message(2, medium, now),
		message(3, large, now.Add(-29*time.Minute)), // announced late: written 29 minutes ago
		{Offset: 4, Value: []byte{7}},               // malformed
	}
	due := w.route(batch, clock.Now(), true, false)
	if len(due) != 2 || due[0] != unknown || due[1] != small {
		t.Fatalf("flushed now %v, want the unknown and the small tag", due)
	}
	if len(w.held) != 2 || w.held[medium] == nil || w.held[large] == nil {
		t.Fatalf("held %v, want the medium and the large tag", w.held)
	}
	clock.Advance(2 * time.Minute)
	if due := w.route(nil, clock.Now(), true, false); len(due) != 1 || due[0] != large {
		t.Fatalf("after 2 minutes flushed %v, want the large tag (written 31 minutes ago)", due)
	}
	clock.Advance(time.Minute)
	if due := w.route(nil, clock.Now(), true, false); len(due) != 1 || due[0] != medium {
		t.Fatalf("after 3 minutes flushed %v, want the medium tag", due)
	}
	// With deferral off nothing is held.
	if due := w.route([]kafka.Message{message(5, large, time.Now())}, clock.Now(), false, false); len(due) != 1 || len(w.held) != 0 {
		t.Fatalf("deferral off: flushed %v, held %v", due, w.held)
	}
}

// BenchmarkRouteBatch measures a writer's in-memory work per batch of 5,000
// messages: decoding, tiering, holding deferred tags and listing the tags to
// flush (20% of events on two medium tags, the rest on 20,000 small ones).
func BenchmarkRouteBatch(b *testing.B) {
	w := testWriter()
	w.counts[1], w.counts[2] = 5_000, 20_000
	r := rand.New(rand.NewPCG(1, 2))
	batch := make([]kafka.Message, 5000)
	now := time.Now()
	for i := range batch {
		tag := int64(3 + r.IntN(20_000))
		if i%10 < 2 {
			tag = int64(1 + i%10)
		}
		batch[i] = message(int64(i), tag, now)
	}
	b.ReportAllocs()
	for b.Loop() {
		if due := w.route(batch, now, true, false); len(due) == 0 {
			b.Fatal("nothing to flush")
		}
		for tag := range w.held {
			w.release(tag)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
}
