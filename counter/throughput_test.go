package counter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// BenchmarkRouteBatch measures a writer's in-memory work per batch of 5,000
// messages: decoding, tiering, holding deferred tags' ids and aggregating
// the ids to apply (20% of events on two medium tags, the rest on 20,000
// small ones).
func BenchmarkRouteBatch(b *testing.B) {
	c := &Consumer{tiers: DefaultTiers(), now: time.Now, log: testLogger(), m: newConsumerMetrics(nil)}
	w := newPartitionWriter(c, nil, 0)
	w.counts[1], w.counts[2] = 5_000, 20_000
	r := rand.New(rand.NewPCG(1, 2))
	batch := make([]kafka.Message, 5000)
	for i := range batch {
		tag := int64(3 + r.IntN(20_000))
		if i%10 < 2 {
			tag = int64(1 + i%10)
		}
		batch[i] = kafka.Message{Offset: int64(i), Key: EventKey(tag), Value: EncodeEvent(Event{ID: int64(i + 1), TagID: tag, Delta: 1})}
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		ids, _ := w.route(batch, now, true)
		if len(ids) != 4000 {
			b.Fatalf("%d ids to apply, want 4000", len(ids))
		}
		for tag := range w.held {
			w.release(tag)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
}

// TestCounterThroughput measures events per second through Kafka (kfake)
// into MariaDB. It is a measurement, not a check, and runs only when
// TAGCOUNT_E2E_EVENTS is set (e.g. 500000); see docs/counter.md.
//
// The outbox is filled directly with N rows (20% on two hot tags, the rest
// on 20,000 tags), every row is announced, and then a consumer with the
// production tiers and batch settings is started; the clock runs from its
// start until every event is consumed and every non-deferred one applied.
// TAGCOUNT_E2E_DEFERRAL=off applies every event (kill switch off).
func TestCounterThroughput(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("TAGCOUNT_E2E_EVENTS"))
	if n <= 0 {
		t.Skip("set TAGCOUNT_E2E_EVENTS=500000 to measure end-to-end throughput")
	}
	deferral := os.Getenv("TAGCOUNT_E2E_DEFERRAL") != "off"
	partitions := 8
	if p, _ := strconv.Atoi(os.Getenv("TAGCOUNT_E2E_PARTITIONS")); p > 0 {
		partitions = p
	}
	a := newArchive(t, archiveOpts{partitions: partitions})
	ctx := context.Background()
	tags := a.createTags(20_002, "freeform")
	hot := tags[:2]

	// Fill the outbox.
	start := time.Now()
	r := rand.New(rand.NewPCG(9, 9))
	events := make([]Event, 0, n)
	for len(events) < n {
		m := min(5000, n-len(events))
		var sb strings.Builder
		sb.WriteString("INSERT INTO tag_events (tag_id, delta, work_id) VALUES ")
		chunk := make([]int64, m)
		for i := range m {
			tag := tags[2+r.IntN(20_000)]
			if i%10 < 2 {
				tag = hot[i%10]
			}
			chunk[i] = tag
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, "(%d,1,%d)", tag, (len(events)+i)/10+1)
		}
		res, err := a.db.Exec(sb.String())
		if err != nil {
			t.Fatal(err)
		}
		first, _ := res.LastInsertId()
		for i, tag := range chunk {
			events = append(events, Event{ID: first + int64(i), TagID: tag, Delta: 1})
		}
	}
	t.Logf("outbox filled with %d rows in %v", n, time.Since(start))

	start = time.Now()
	for i := 0; i < len(events); i += 5000 {
		a.pub.Announce(ctx, events[i:min(i+5000, len(events))])
	}
	waitFor(t, 5*time.Minute, "every event published", func() bool {
		return a.metric(a.reg, "tagcount_events_published_total") >= float64(n)
	})
	pubDur := time.Since(start)
	t.Logf("published %d events in %v: %.0f events/s", n, pubDur, float64(n)/pubDur.Seconds())

	cfg := a.consumerConfig()
	cfg.Tiers = Tiers{}
	cfg.BatchSize = 5000
	if bs, _ := strconv.Atoi(os.Getenv("TAGCOUNT_E2E_BATCH")); bs > 0 {
		cfg.BatchSize = bs
	}
	cfg.BatchWait = 20 * time.Millisecond
	cfg.TierDeferral = func() bool { return deferral }
	var hotWrites [2]atomic.Int64
	cfg.OnApply = func(_ int, res ApplyResult) {
		for i, tag := range hot {
			if _, ok := res.Deltas[tag]; ok {
				hotWrites[i].Add(1)
			}
		}
	}
	goCPU0, dbCPU0 := processCPU(), mariadbCPU()
	start = time.Now()
	stop := a.startConsumer(cfg)
	// Progress is read from the metrics, not the database, so the
	// measurement does not load MariaDB (no duplicates are announced, so
	// applied + held = n means done).
	waitFor(t, 10*time.Minute, "every event consumed and applied or held", func() bool {
		return a.metric(a.reg, "tagcount_events_consumed_total") >= float64(n) &&
			a.metric(a.reg, "tagcount_events_applied_total")+a.metric(a.reg, "tagcount_deferred_events") >= float64(n)
	})
	dur := time.Since(start)
	goCPU, dbCPU := processCPU()-goCPU0, mariadbCPU()-dbCPU0
	held := a.metric(a.reg, "tagcount_deferred_events")
	t.Logf("deferral=%v partitions=%d batch=%d: consumed %d events in %v: %.0f events/s (%.0f applied, %.0f held for deferred tags); CPU: test process %.1fs, mariadbd %.1fs (wall %.1fs × 2 cores = %.1fs)",
		deferral, partitions, cfg.BatchSize, n, dur, float64(n)/dur.Seconds(), a.metric(a.reg, "tagcount_events_applied_total"), held,
		goCPU.Seconds(), dbCPU.Seconds(), dur.Seconds(), 2*dur.Seconds())
	t.Logf("tag_counts rows written: %.0f; the two hot tags (%d events each) written %d and %d times",
		a.metric(a.reg, "tagcount_tag_count_writes_total"), n/10, hotWrites[0].Load(), hotWrites[1].Load())

	start = time.Now()
	stop()
	t.Logf("shutdown flushed %.0f held events in %v", held, time.Since(start))
	if depth := a.outboxDepth(); depth != 0 {
		t.Errorf("outbox depth %d after shutdown", depth)
	}
	var sum int64
	a.db.QueryRow("SELECT COALESCE(SUM(count), 0) FROM tag_counts").Scan(&sum)
	if sum != int64(n) {
		t.Errorf("sum of counts %d, want %d", sum, n)
	}
}

// processCPU returns this process's user+system CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// mariadbCPU returns the CPU time of the local mariadbd (0 if not found).
func mariadbCPU() time.Duration {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		comm, err := os.ReadFile("/proc/" + d.Name() + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "mariadbd" {
			continue
		}
		stat, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			return 0
		}
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		return time.Duration(ut+st) * time.Second / 100 // USER_HZ
	}
	return 0
}
