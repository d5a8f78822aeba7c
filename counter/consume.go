package counter

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/loop"
)

// Defaults of ConsumerConfig.
const (
	DefaultGroupID   = "tagcount-counter"
	DefaultBatchSize = 5000
	DefaultBatchWait = 20 * time.Millisecond
	// DefaultHeartbeatInterval and DefaultSessionTimeout tune the consumer
	// group: a crashed consumer's partitions move after the session timeout.
	DefaultHeartbeatInterval = time.Second
	DefaultSessionTimeout    = 10 * time.Second
)

// ConsumerConfig configures a Consumer. Brokers and DB are required; every
// other zero field takes its default (WithDefaults).
type ConsumerConfig struct {
	Brokers []string
	// Security is how to authenticate and encrypt (zero = plaintext).
	Security KafkaSecurity
	// Topic defaults to DefaultTopic, GroupID to DefaultGroupID.
	Topic, GroupID string
	DB             *migrations.DB
	// Tiers sets the size tiers; the zero value means DefaultTiers.
	Tiers Tiers
	// BatchSize is the most messages one writer reads per round (default
	// DefaultBatchSize); BatchWait is how long a writer waits after a
	// round's first message for more (default DefaultBatchWait).
	BatchSize int
	BatchWait time.Duration
	// ApplyLimit caps the outbox rows of one apply transaction (default
	// DefaultApplyLimit).
	ApplyLimit int
	// TierDeferral is the kill switch of tier deferral (the flag
	// tagcount.tier-deferral). When it returns false every tag is flushed
	// every round, including those already held. Nil means on.
	TierDeferral func() bool
	// Paused, when it returns true (the flag tagcount.counter-pause),
	// pauses applying as Control.Pause does. Nil means never.
	Paused func() bool
	// Now is the clock of tier intervals (default time.Now). Batching
	// windows use real time.
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer

	// HeartbeatInterval and SessionTimeout tune the consumer group
	// (defaults DefaultHeartbeatInterval and DefaultSessionTimeout). A crashed consumer's partitions move after the
	// session timeout; a graceful stop moves them at once.
	HeartbeatInterval time.Duration
	SessionTimeout    time.Duration
	// FlushTimeout bounds each writer's final flush when its partition is
	// revoked or the consumer stops (default DefaultFlushTimeout); it is
	// also the group's rebalance timeout. A flush cut short leaves its rows
	// in the outbox for the partition's next writer.
	FlushTimeout time.Duration
	// OnApply, if set, is called by a partition's writer after each apply
	// transaction commits (instrumentation for tests and load generation).
	// Writers of different partitions call it concurrently.
	OnApply func(partition int, res ApplyResult)
}

// Consumer is the counter: a member of a Kafka consumer group that runs, for
// each partition assigned to it, exactly one writer goroutine. A writer
// reads its partition's events, applies the outbox rows of small tags at
// once and holds deferred tiers until they are due; a flush applies every
// outbox row of its tags (so a lost or late announcement of a tag is
// counted with the tag's next flush), in transactions of bounded size.
type Consumer struct {
	cfg   ConsumerConfig
	tiers Tiers
	now   func() time.Time
	log   *slog.Logger
	m     *consumerMetrics

	board *switchboard

	// counts keeps each partition's count cache across generations, so a
	// partition that stays with this consumer over a rebalance keeps
	// knowing its tags' tiers. A writer owns its partition's map while it
	// runs.
	mu     sync.Mutex
	counts map[int]map[int64]int64
}

type consumerMetrics struct {
	consumed      prometheus.Counter
	applied       prometheus.Counter
	stale         prometheus.Counter
	malformed     prometheus.Counter
	tagWrites     prometheus.Counter
	applyErrors   prometheus.Counter
	commitErrors  prometheus.Counter
	recovered     prometheus.Counter
	batchSize     prometheus.Histogram
	flushDuration prometheus.Histogram
	lag           *prometheus.GaugeVec
	heldTags      *prometheus.GaugeVec
	heldEvents    *prometheus.GaugeVec
	backlog       prometheus.Gauge
	announceAge   prometheus.Histogram
	paused        prometheus.Gauge
	catchUpRate   prometheus.Gauge
	partitions    prometheus.Gauge
}

func newConsumerMetrics(reg prometheus.Registerer) *consumerMetrics {
	return &consumerMetrics{
		consumed:      metricCounter(reg, "tagcount_events_consumed_total", "Well-formed tag-use messages read from Kafka."),
		applied:       metricCounter(reg, "tagcount_events_applied_total", "Outbox rows applied to tag_counts and deleted."),
		stale:         metricCounter(reg, "tagcount_events_stale_total", "Announced tags whose outbox rows were already applied when flushed (duplicates, redeliveries, rows applied with an earlier flush)."),
		malformed:     metricCounter(reg, "tagcount_malformed_messages_total", "Messages on the topic that did not decode; skipped."),
		tagWrites:     metricCounter(reg, "tagcount_tag_count_writes_total", "tag_counts rows written by the counter."),
		applyErrors:   metricCounter(reg, "tagcount_apply_errors_total", "Apply transactions that failed after retries (the writer retries)."),
		commitErrors:  metricCounter(reg, "tagcount_offset_commit_errors_total", "Kafka offset commits that failed."),
		recovered:     metricCounter(reg, "tagcount_recovered_tags_total", "Tags with outbox rows found when a writer took its partition (held by a writer that stopped, or never announced)."),
		batchSize:     metricHistogram(reg, "tagcount_batch_size", "Outbox rows per apply transaction.", prometheus.ExponentialBuckets(1, 4, 10)),
		flushDuration: metricHistogram(reg, "tagcount_flush_duration_seconds", "Duration of apply transactions.", prometheus.ExponentialBuckets(0.0005, 2, 16)),
		lag:           metricGaugeVec(reg, "tagcount_consumer_lag", "Messages behind the partition's high watermark after the last batch.", "partition"),
		heldTags:      metricGaugeVec(reg, "tagcount_deferred_tags", "Tags whose outbox rows are held for a deferred flush.", "tier"),
		heldEvents:    metricGaugeVec(reg, "tagcount_deferred_events", "Announcements received for tags while they were held.", "tier"),
		backlog:       metricGauge(reg, "tagcount_flush_backlog_tags", "Tags whose flush hit the row limit of one transaction and goes on in the next rounds."),
		paused:        metricGauge(reg, "tagcount_counter_paused", "1 while the counter is paused (it applies nothing; the outbox grows)."),
		catchUpRate:   metricGauge(reg, "tagcount_counter_catch_up_rows_per_second", "The catch-up's cap on outbox rows applied per second after a resume; 0 when not catching up."),
		partitions:    metricGauge(reg, "tagcount_counter_partitions", "Partitions this process's writers hold; set once their pending outbox rows are read, so rows written later arrive through Kafka."),
		announceAge:   metricHistogram(reg, "tagcount_event_age_seconds", "Age of announcements when a writer reads them: from the outbox row's commit (the message time) to the counter; small tags are applied in the same round.", prometheus.ExponentialBuckets(0.001, 2, 16)),
	}
}

// WithDefaults returns c with every zero field that has a default set to it
// (the tiers' zero fields too): the one place ConsumerConfig's defaults are
// applied.
func (c ConsumerConfig) WithDefaults() ConsumerConfig {
	c.Topic = cmp.Or(c.Topic, DefaultTopic)
	c.GroupID = cmp.Or(c.GroupID, DefaultGroupID)
	c.Tiers = c.Tiers.WithDefaults()
	c.BatchSize = loop.OrDefault(c.BatchSize, DefaultBatchSize)
	c.BatchWait = loop.OrDefault(c.BatchWait, DefaultBatchWait)
	c.ApplyLimit = loop.OrDefault(c.ApplyLimit, DefaultApplyLimit)
	c.HeartbeatInterval = loop.OrDefault(c.HeartbeatInterval, DefaultHeartbeatInterval)
	c.SessionTimeout = loop.OrDefault(c.SessionTimeout, DefaultSessionTimeout)
	c.FlushTimeout = loop.OrDefault(c.FlushTimeout, DefaultFlushTimeout)
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

func (c ConsumerConfig) validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("counter: consumer needs Kafka brokers")
	}
	if c.DB == nil {
		return errors.New("counter: consumer needs a DB")
	}
	return nil
}

// NewConsumer checks cfg and returns a Consumer; it does not connect. It
// returns an error when Brokers or DB is missing.
func NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := newConsumerMetrics(cfg.Registerer)
	return &Consumer{
		cfg:    cfg,
		tiers:  cfg.Tiers,
		now:    cfg.Now,
		log:    cfg.Logger.With("component", "counter", "group", cfg.GroupID),
		m:      m,
		board:  &switchboard{control: Control{DB: cfg.DB}, flag: cfg.Paused, m: m},
		counts: make(map[int]map[int64]int64),
	}, nil
}

// takeCounts hands a partition's count cache to its writer.
func (c *Consumer) takeCounts(partition int) map[int64]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.counts[partition]
	delete(c.counts, partition)
	if m == nil {
		m = make(map[int64]int64)
	}
	return m
}

// returnCounts keeps a stopped writer's count cache for the partition's
// next writer in this process.
func (c *Consumer) returnCounts(partition int, m map[int64]int64) {
	c.mu.Lock()
	c.counts[partition] = m
	c.mu.Unlock()
}

// Run joins the consumer group and runs a writer per assigned partition
// until ctx is done. A writer taking a partition first finds the tags of
// that partition with rows in the outbox (what a writer that stopped held,
// or what was never announced) and holds or applies them at once. On a
// rebalance, and when ctx ends, every writer flushes the tags it holds and
// commits its offset before the partition moves. It returns nil on a clean
// shutdown; errors joining the group are logged and retried.
func (c *Consumer) Run(ctx context.Context) error {
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                c.cfg.GroupID,
		Brokers:           c.cfg.Brokers,
		Dialer:            c.cfg.Security.dialer(),
		Topics:            []string{c.cfg.Topic},
		HeartbeatInterval: c.cfg.HeartbeatInterval,
		SessionTimeout:    c.cfg.SessionTimeout,
		// Long enough for writers to flush what they hold before the
		// coordinator gives up on this member's rejoin.
		RebalanceTimeout: c.cfg.FlushTimeout,
		JoinGroupBackoff: 500 * time.Millisecond,
		// Partitions added to the topic trigger a rebalance that assigns
		// them, instead of waiting for the next membership change.
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 30 * time.Second,
		StartOffset:            kafka.FirstOffset,
		Logger:                 kafkaLogger(c.log, slog.LevelDebug),
		ErrorLogger:            kafkaLogger(c.log, slog.LevelInfo),
	})
	if err != nil {
		return fmt.Errorf("counter: consumer group: %w", err)
	}
	// Closing the group ends the current generation (cancelling the
	// writers' contexts), waits for the writers, and leaves the group.
	stop := context.AfterFunc(ctx, func() { group.Close() })
	defer stop()
	for {
		gen, err := group.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				break
			}
			c.log.Info("consumer group generation failed; rejoining", "err", err)
			continue
		}
		c.startGeneration(ctx, gen)
	}
	group.Close()
	c.m.partitions.Set(0)
	return nil
}

// startGeneration starts a writer for each partition of gen, each with the
// outbox's pending tags of its partition.
func (c *Consumer) startGeneration(ctx context.Context, gen *kafka.Generation) {
	assigned := gen.Assignments[c.cfg.Topic]
	c.log.Info("partitions assigned", "generation", gen.ID, "partitions", len(assigned))
	c.board.assign(len(assigned))
	pending, err := c.pendingTags(ctx)
	if err != nil {
		// The sweeper announces what waits too long; the writers go on.
		c.log.Warn("reading the outbox's pending tags failed", "err", err)
	}
	c.m.partitions.Set(float64(len(assigned)))
	for _, a := range assigned {
		mine := pending[a.ID]
		gen.Start(func(gctx context.Context) {
			w := newPartitionWriter(c, gen, a.ID)
			w.recover(mine)
			w.run(ctx, gctx, a.Offset)
		})
	}
}

// pendingTags returns the tags with outbox rows, by the partition their
// announcements go to.
func (c *Consumer) pendingTags(ctx context.Context) (map[int][]PendingTag, error) {
	n, err := topicPartitions(ctx, c.cfg.Security, c.cfg.Brokers, c.cfg.Topic)
	if err != nil {
		return nil, err
	}
	tags, err := PendingTags(ctx, c.cfg.DB)
	if err != nil {
		return nil, err
	}
	out := make(map[int][]PendingTag)
	for _, t := range tags {
		p := PartitionOf(t.TagID, n)
		out[p] = append(out[p], t)
	}
	return out, nil
}

// PartitionOf is the partition of n the publisher's hash balancer sends a
// tag's announcements to.
func PartitionOf(tagID int64, n int) int {
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	return (&kafka.Hash{}).Balance(kafka.Message{Key: EventKey(tagID)}, parts...)
}

// topicPartitions returns how many partitions topic has.
func topicPartitions(ctx context.Context, sec KafkaSecurity, brokers []string, topic string) (int, error) {
	transport := sec.transport()
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: transport, Timeout: 10 * time.Second}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, err
	}
	for _, t := range md.Topics {
		if t.Name == topic && t.Error == nil && len(t.Partitions) > 0 {
			return len(t.Partitions), nil
		}
	}
	return 0, fmt.Errorf("counter: topic %s has no partitions", topic)
}

// PendingTag is a tag with rows in the outbox: the oldest row's time and
// the tag's stored count (its tier).
type PendingTag struct {
	TagID  int64
	Oldest time.Time
	Count  int64
}

// PendingTags returns every tag with rows in the outbox.
func PendingTags(ctx context.Context, q migrations.Querier) ([]PendingTag, error) {
	return migrations.Collect(ctx, q, func(rows *sql.Rows) (t PendingTag, err error) {
		err = rows.Scan(&t.TagID, &t.Oldest, &t.Count)
		return t, err
	}, `SELECT e.tag_id, MIN(e.created_at), COALESCE(MAX(c.count), 0)
		FROM tag_events e LEFT JOIN tag_counts c ON c.tag_id = e.tag_id GROUP BY e.tag_id`)
}

// kafkaLogger adapts kafka-go's printf logging to slog at level.
func kafkaLogger(log *slog.Logger, level slog.Level) kafka.LoggerFunc {
	return func(msg string, args ...any) {
		if log.Enabled(context.Background(), level) {
			log.Log(context.Background(), level, "kafka: "+fmt.Sprintf(msg, args...))
		}
	}
}

// sortedKeys returns m's keys in ascending order.
func sortedKeys[V any](m map[int64]V) []int64 {
	keys := make([]int64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
