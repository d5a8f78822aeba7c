package counter_test

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// TestCounterThroughput measures events per second through Kafka (kfake)
// into MariaDB. It is a measurement, not a check, and runs only when
// TAGCOUNT_E2E_EVENTS is set (e.g. 500000); see docs/counter.md.
//
// The outbox is filled with N rows by posting works of ten tags through the
// real posting transaction (two hot tags in every work, the rest from
// 20,000 tags), every row is announced, and then a consumer with the
// production tiers and batch settings is started; the clock runs from its
// start until every event is consumed and every row applied or held.
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
	tags := a.createTags(20_002, "freeform")
	hot := tags[:2]
	n = fillAndPublish(t, a, n, hot, tags[2:])

	cfg := a.consumerConfig()
	cfg.Tiers = counter.Tiers{}
	cfg.BatchSize = 5000
	if bs, _ := strconv.Atoi(os.Getenv("TAGCOUNT_E2E_BATCH")); bs > 0 {
		cfg.BatchSize = bs
	}
	cfg.BatchWait = 20 * time.Millisecond
	cfg.TierDeferral = func() bool { return deferral }
	var hotWrites [2]atomic.Int64
	cfg.OnApply = func(_ int, res counter.ApplyResult) {
		for i, tag := range hot {
			if _, ok := res.Deltas[tag]; ok {
				hotWrites[i].Add(1)
			}
		}
	}
	goCPU0, dbCPU0 := processCPU(), mariadbCPU()
	start := time.Now()
	stop := a.startConsumer(cfg)
	// Progress is read from the metrics, not the database, so the
	// measurement does not load MariaDB (no duplicates are announced, so
	// applied + held = n means done).
	testdb.WaitFor(t, 10*time.Minute, "every event consumed and applied or held", func() bool {
		return a.metric("tagcount_events_consumed_total") >= float64(n) &&
			a.metric("tagcount_events_applied_total")+a.metric("tagcount_deferred_events") >= float64(n)
	})
	dur := time.Since(start)
	goCPU, dbCPU := processCPU()-goCPU0, mariadbCPU()-dbCPU0
	held := a.heldRows()
	t.Logf("deferral=%v partitions=%d batch=%d: consumed %d events in %v: %.0f events/s (%.0f applied, %.0f held for deferred tags); CPU: test process %.1fs, mariadbd %.1fs (wall %.1fs × 2 cores = %.1fs)",
		deferral, partitions, cfg.BatchSize, n, dur, float64(n)/dur.Seconds(), a.metric("tagcount_events_applied_total"), held,
		goCPU.Seconds(), dbCPU.Seconds(), dur.Seconds(), 2*dur.Seconds())
	t.Logf("tag_counts rows written: %.0f; the two hot tags (%d events each) written %d and %d times",
		a.metric("tagcount_tag_count_writes_total"), n/10, hotWrites[0].Load(), hotWrites[1].Load())

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

// fillAndPublish fills a's outbox with about n rows by posting works of
// ten tags (the two hot ones in every work, the rest from pool) through the
// real posting transaction, announces every row and waits until all are
// published. It returns how many rows it wrote.
func fillAndPublish(t *testing.T, a *archive, n int, hot, pool []int64) int {
	ctx := context.Background()
	start := time.Now()
	works := workload(rand.New(rand.NewPCG(9, 9)), n/10, hot, pool, 10)
	var mu sync.Mutex
	events := make([]counter.Event, 0, n)
	a.postAll(ctx, works, 500, 4, func(ev []counter.Event) {
		mu.Lock()
		events = append(events, ev...)
		mu.Unlock()
	})
	n = len(events)
	t.Logf("outbox filled with %d rows in %v", n, time.Since(start))

	start = time.Now()
	for i := 0; i < len(events); i += 5000 {
		a.pub.Announce(ctx, events[i:min(i+5000, len(events))])
	}
	testdb.WaitFor(t, 5*time.Minute, "every event published", func() bool {
		return a.metric("tagcount_events_published_total") >= float64(n)
	})
	pubDur := time.Since(start)
	t.Logf("published %d events in %v: %.0f events/s", n, pubDur, float64(n)/pubDur.Seconds())
	return n
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

// heldRows is the outbox rows of the tags held for a deferred flush: every
// row left while the consumer still reads or holds them.
func (a *archive) heldRows() float64 {
	if a.metric("tagcount_deferred_tags") == 0 {
		return 0
	}
	return float64(a.outboxDepth())
}
