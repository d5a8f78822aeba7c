package counter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tagcount/tagcount/counter/tags"
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

// testClock is an injected clock that moves only when told.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// rig is a test's own database and registry, for the counter's parts that
// need no posted works: the outbox, the apply transaction, the read path.
type rig struct {
	t   testing.TB
	db  *testdb.DB
	reg *prometheus.Registry
}

func newRig(t testing.TB) *rig {
	t.Helper()
	return &rig{t: t, db: testdb.New(t), reg: prometheus.NewRegistry()}
}

// createTags creates n tags of type typ named "<Type> Tag <i>" through the
// tag resolver and returns their ids in order.
func (r *rig) createTags(n int, typ string) []int64 {
	r.t.Helper()
	return createTags(r.t, r.db.DB, n, typ)
}

func createTags(t testing.TB, db *migrations.DB, n int, typ string) []int64 {
	t.Helper()
	res := tags.NewResolver(db)
	ids := make([]int64, 0, n)
	for start := 0; start < n; start += 1000 {
		refs := make([]tags.Ref, 0, 1000)
		for i := start; i < min(start+1000, n); i++ {
			name := fmt.Sprintf("%s Tag %d", strings.ToUpper(typ[:1])+typ[1:], i)
			refs = append(refs, tags.Ref{Type: typ, Name: name, Key: strings.ToLower(name)})
		}
		got, err := res.Resolve(context.Background(), refs)
		if err != nil {
			t.Fatalf("create tags: %v", err)
		}
		ids = append(ids, got...)
	}
	return ids
}

// outbox writes one +1 outbox row per tag (as the posting transaction
// does, through WriteOutbox) and returns the events.
func (r *rig) outbox(tags ...int64) []Event {
	r.t.Helper()
	deltas := make([]Delta, len(tags))
	for i, tag := range tags {
		deltas[i] = Delta{WorkID: 1, TagID: tag, Delta: +1}
	}
	ev, err := WriteOutbox(context.Background(), r.db.DB, r.db, deltas)
	if err != nil {
		r.t.Fatal(err)
	}
	return ev
}

func (r *rig) setCount(tag, n int64) {
	r.t.Helper()
	_, err := r.db.Exec("INSERT INTO tag_counts (tag_id, count) VALUES (?, ?) ON DUPLICATE KEY UPDATE count = VALUES(count)", tag, n)
	if err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) storedCounts() map[int64]int64 {
	r.t.Helper()
	m, err := migrations.SumsByID(context.Background(), r.db, "SELECT tag_id, count FROM tag_counts WHERE count != 0")
	if err != nil {
		r.t.Fatal(err)
	}
	return m
}

func (r *rig) outboxDepth() int64 {
	total, _, err := OutboxDepth(context.Background(), r.db, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	return total
}

// metric returns the value of the counter or gauge name on reg, summed
// over its labels (0 when absent).
func metric(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
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

// countDiff describes how got differs from want ("" when equal).
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
		if _, ok := want[tag]; !ok && g != 0 {
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
