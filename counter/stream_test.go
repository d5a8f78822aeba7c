package counter_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// mirror is what a downstream consumer of the count-change stream keeps:
// each tag's latest numbers, by version.
type mirror struct {
	mu   sync.Mutex
	tags map[int64]counter.CountChange
	seen int // messages read, duplicates included
}

// follow reads every partition of the count-change topic from its start
// into m until ctx ends. It reads without a consumer group, so it commits
// nothing: a group reader's failed commit (a rebalance on a busy machine)
// would end ReadMessage. A reader that fails otherwise is opened again at
// the next offset.
func (m *mirror) follow(ctx context.Context, t *testing.T, brokers []string) {
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		t.Errorf("mirror: %v", err)
		return
	}
	parts, err := conn.ReadPartitions(counter.DefaultCountsTopic)
	conn.Close()
	if err != nil {
		t.Errorf("mirror: %v", err)
		return
	}
	for _, p := range parts {
		go m.followPartition(ctx, t, brokers, p.ID)
	}
}

// followPartition reads one partition into m until ctx ends.
func (m *mirror) followPartition(ctx context.Context, t *testing.T, brokers []string, partition int) {
	offset := kafka.FirstOffset
	for ctx.Err() == nil {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: counter.DefaultCountsTopic, Partition: partition,
			MaxWait: 100 * time.Millisecond})
		r.SetOffset(offset)
		for {
			msg, err := r.ReadMessage(ctx)
			if err != nil {
				break
			}
			offset = msg.Offset + 1
			m.apply(t, msg)
		}
		r.Close()
	}
}

// apply keeps msg's numbers unless m holds its tag at that version or a
// newer one: stale and duplicate messages are dropped by version.
func (m *mirror) apply(t *testing.T, msg kafka.Message) {
	tag, err := strconv.ParseInt(string(msg.Key), 10, 64)
	c, derr := counter.DecodeCountChange(msg.Value)
	if err != nil || derr != nil {
		t.Errorf("malformed count change %q: %v %v", msg.Value, err, derr)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seen++
	if old, ok := m.tags[tag]; !ok || c.Version > old.Version {
		m.tags[tag] = c
	}
}

// differs describes how m differs from tag_counts, all four numbers and
// the version of every row ("" when equal).
func (m *mirror) differs(a *archive) string {
	rows, err := a.db.Query("SELECT tag_id, count, public_count, filter_count, public_filter_count, version FROM tag_counts")
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for rows.Next() {
		var tag int64
		var c counter.CountChange
		if err := rows.Scan(&tag, &c.Count, &c.PublicCount, &c.FilterCount, &c.PublicFilterCount, &c.Version); err != nil {
			return err.Error()
		}
		n++
		got := m.tags[tag]
		got.AsOf = c.AsOf // not compared: all four numbers and the version are
		if got != c {
			b, _ := json.Marshal(got)
			return "tag " + strconv.FormatInt(tag, 10) + " mirrored as " + string(b)
		}
	}
	if n != len(m.tags) {
		return strconv.Itoa(len(m.tags)) + " tags mirrored, " + strconv.Itoa(n) + " counted"
	}
	return ""
}

// TestAMirrorOfTheCountStreamEqualsTheCountsEvenAfterACounterIsKilled runs
// a counter with the count-change stream in a child process, kills it with
// SIGKILL while works are posted, runs both again here, and checks that a
// consumer keeping the latest version of each tag from the stream ends with
// exactly tag_counts.
func TestAMirrorOfTheCountStreamEqualsTheCountsEvenAfterACounterIsKilled(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{})
	ctx := context.Background()
	if err := counter.EnsureCountsTopic(ctx, a.broker.Addrs(), "", 4); err != nil {
		t.Fatal(err)
	}
	hot := a.createTags(2, "warning")
	pool := a.createTags(200, "freeform")
	works := workload(rand.New(rand.NewPCG(6, 6)), 1200, hot, pool, 6)
	announce := func(ev []counter.Event) { a.pub.Announce(ctx, ev) }

	child := startCounterChild(t, childConfig{Brokers: a.broker.Addrs(), DSN: a.db.DSN, Stream: true})
	a.postAll(ctx, works[:600], 10, 4, announce)
	testdb.WaitFor(t, 60*time.Second, "the child to count and publish some", func() bool {
		var n int
		a.db.QueryRow("SELECT COUNT(*) FROM tag_counts").Scan(&n)
		return n > 0
	})
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()

	a.startConsumer(a.consumerConfig())
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go a.stream(nil).Run(sctx)
	a.postAll(ctx, works[600:], 10, 4, announce)
	a.waitExact(60 * time.Second)

	m := &mirror{tags: map[int64]counter.CountChange{}}
	go m.follow(sctx, t, a.broker.Addrs())
	var diff string
	testdb.WaitFor(t, 60*time.Second, "the mirror to equal tag_counts", func() bool {
		diff = m.differs(a)
		return diff == ""
	})
	m.mu.Lock()
	t.Logf("mirror of %d tags from %d messages", len(m.tags), m.seen)
	m.mu.Unlock()
}
