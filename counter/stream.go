package counter

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/loop"
)

// Defaults of StreamConfig, and the stream's freshness budget.
const (
	DefaultCountsTopic    = "tag-counts"
	DefaultStreamInterval = time.Second
	// StreamBudget is the count-change stream's freshness budget: every
	// committed change of tag_counts is published within it of its commit
	// (docs/events.md). The alert TagcountCountStreamBehind fires when the
	// stream's lag stays above it.
	StreamBudget = 30 * time.Second
	// streamPage is the most change-log rows one round reads, publishes
	// and deletes at a time.
	streamPage = 5000
)

// CountChange is a message of the count-change stream: a tag's numbers
// after a change, with a version that only grows per tag, so a consumer
// keeping a mirror keeps the highest version it has seen and drops stale
// and duplicate messages. The key is the tag id in decimal (EventKey).
type CountChange struct {
	Count             int64     `json:"count"`
	PublicCount       int64     `json:"public_count"`
	FilterCount       int64     `json:"filter_count"`
	PublicFilterCount int64     `json:"public_filter_count"`
	Version           uint64    `json:"version"`
	AsOf              time.Time `json:"as_of"`
}

// DecodeCountChange parses a count-change message value; it returns an
// error for anything that is not one.
func DecodeCountChange(b []byte) (CountChange, error) {
	var c CountChange
	if err := json.Unmarshal(b, &c); err != nil {
		return CountChange{}, fmt.Errorf("counter: malformed count change: %w", err)
	}
	if c.Version == 0 {
		return CountChange{}, errors.New("counter: malformed count change: no version")
	}
	return c, nil
}

// StreamConfig configures a Stream. DB and Brokers are required; every
// other zero field takes its default (WithDefaults).
type StreamConfig struct {
	DB      *migrations.DB
	Brokers []string
	// Security is how to authenticate and encrypt (zero = plaintext).
	Security KafkaSecurity
	// Topic defaults to DefaultCountsTopic (create it compacted: see
	// EnsureCountsTopic).
	Topic string
	// Interval is how often changes are published (default
	// DefaultStreamInterval).
	Interval   time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Stream publishes every change of tag_counts (by the counter, the legacy
// path, reconcile) to a compacted topic, keyed by tag: the downstream
// systems' way to learn that a count changed without polling. Every count
// write appends a row to the count-change log (tag_count_changes) in its
// own transaction; the stream reads the oldest rows, publishes their tags'
// current numbers synchronously, and deletes the rows it published. Only
// the process holding a database lock publishes; the others stand by.
// Every process reports the stream's lag.
type Stream struct {
	cfg       StreamConfig
	log       *slog.Logger
	w         *kafka.Writer
	published prometheus.Counter
	lagSecs   prometheus.Gauge
}

// WithDefaults returns c with its zero Topic, Interval and Logger set to
// their defaults: the one place StreamConfig's defaults are applied.
func (c StreamConfig) WithDefaults() StreamConfig {
	c.Topic = cmp.Or(c.Topic, DefaultCountsTopic)
	c.Interval = loop.OrDefault(c.Interval, DefaultStreamInterval)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

func (c StreamConfig) validate() error {
	if c.DB == nil || len(c.Brokers) == 0 {
		return errors.New("counter: StreamConfig needs a DB and Kafka brokers")
	}
	return nil
}

// NewStream returns a Stream for cfg with its defaults, or an error when
// cfg.DB or cfg.Brokers is missing. It connects lazily.
func NewStream(cfg StreamConfig) (*Stream, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Stream{
		cfg: cfg,
		log: cfg.Logger.With("component", "count-stream"),
		// One batch per partition for a whole page: a page is written at
		// once, not in the default 100-message batches.
		w: &kafka.Writer{Addr: kafka.TCP(cfg.Brokers...), Topic: cfg.Topic, Balancer: &kafka.Hash{},
			BatchTimeout: 5 * time.Millisecond, BatchSize: streamPage, RequiredAcks: kafka.RequireOne, MaxAttempts: 3,
			Transport: cfg.Security.transport()},
		published: metricCounter(cfg.Registerer, "tagcount_count_changes_published_total", "Count changes published to the count-change stream."),
		lagSecs: metricGauge(cfg.Registerer, "tagcount_count_stream_lag_seconds",
			"Age of the oldest tag_counts change not yet published to the count-change stream (0 when all are)."),
	}, nil
}

// streamLock names the advisory lock of the one publishing process.
const streamLock = "CONCAT('tagcount_stream:', LEFT(MD5(COALESCE(DATABASE(), '')), 32))"

// Run publishes every Interval until ctx ends, holding the publishing lock
// on a connection of its own (taking it when the holder goes away), and
// returns nil. Publishing or not, it measures the lag every Interval, so a
// holder that cannot publish is seen by every process.
func (s *Stream) Run(ctx context.Context) error {
	defer s.w.Close()
	leader := migrations.NewLeader(s.cfg.DB, streamLock)
	defer leader.Close()
	return loop.Every(ctx, s.cfg.Interval, func(ctx context.Context) {
		defer s.measureLag(ctx)
		if held, _ := leader.Held(ctx); !held {
			return // another process publishes
		}
		if _, err := s.PublishOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("publishing count changes failed; the next round tries again", "err", err)
		}
	})
}

// measureLag sets the lag gauge (left as it was if the database cannot
// say).
func (s *Stream) measureLag(ctx context.Context) {
	if lag, err := StreamLag(ctx, s.cfg.DB); err == nil {
		s.lagSecs.Set(lag.Seconds())
	}
}

// StreamLag returns the age of the oldest change in the count-change log,
// by the database's clock: how long the oldest change not yet published
// has waited since it was written (0 when every change is published). A
// transaction that commits late shows its wait here once it commits. It
// returns the query's error.
func StreamLag(ctx context.Context, q migrations.Querier) (time.Duration, error) {
	var us int64
	err := q.QueryRowContext(ctx, `SELECT TIMESTAMPDIFF(MICROSECOND, created_at, NOW(6)) FROM tag_count_changes
		ORDER BY seq LIMIT 1`).Scan(&us)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return max(0, time.Duration(us)*time.Microsecond), err
}

// PublishOnce publishes the count-change log page by page, oldest first:
// for each page it publishes the current numbers of the page's tags, once
// per tag, and once the broker took them deletes exactly the page's rows.
// A row of a transaction not yet committed is invisible here and is left
// for a later round; nothing is passed over. It returns how many messages
// it published and the first error (rows not deleted are published again
// next round, which the versions make harmless).
func (s *Stream) PublishOnce(ctx context.Context) (int, error) {
	n := 0
	for {
		msgs, seqs, err := s.readPage(ctx)
		if err != nil || len(seqs) == 0 {
			return n, err
		}
		if len(msgs) > 0 {
			if err := s.w.WriteMessages(ctx, msgs...); err != nil {
				return n, err
			}
		}
		n += len(msgs)
		s.published.Add(float64(len(msgs)))
		if _, err := s.cfg.DB.ExecContext(ctx, deletePage(seqs)); err != nil {
			return n, err
		}
		if len(seqs) < streamPage {
			return n, nil
		}
	}
}

// deletePage is the statement that deletes the change-log rows seqs, by
// primary key look-ups only. A plain "seq IN (…)" of a page that is most of
// the table is planned as a scan, and a scan's locking read waits for the
// row of a transaction not yet committed (measured: it waited the whole
// lock-wait timeout, and a 60 s transaction stopped the stream); joining
// the list as a table leaves the planner only look-ups.
func deletePage(seqs []int64) string {
	return migrations.IDList(`DELETE l FROM JSON_TABLE('[`, seqs,
		`]', '$[*]' COLUMNS (seq BIGINT UNSIGNED PATH '$')) j JOIN tag_count_changes l ON l.seq = j.seq`)
}

// readPage reads the oldest streamPage rows of the count-change log with
// their tags' rows of tag_counts, in one statement: one snapshot, in which
// every log row's count write is visible, so the numbers read include it.
// It returns one message per tag and the log rows' sequence numbers.
func (s *Stream) readPage(ctx context.Context) ([]kafka.Message, []int64, error) {
	// A log row without a tag_counts row (none is ever deleted) reads as
	// version 0: deleted, with nothing to publish.
	rows, err := s.cfg.DB.QueryContext(ctx, `SELECT l.seq, l.tag_id, COALESCE(c.count, 0), COALESCE(c.public_count, 0),
		COALESCE(c.filter_count, 0), COALESCE(c.public_filter_count, 0), COALESCE(c.version, 0), COALESCE(c.updated_at, NOW(6))
		FROM (SELECT seq, tag_id FROM tag_count_changes ORDER BY seq LIMIT ?) l
		LEFT JOIN tag_counts c ON c.tag_id = l.tag_id`, streamPage)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var msgs []kafka.Message
	var seqs []int64
	seen := make(map[int64]bool)
	for rows.Next() {
		var seq, tag int64
		var c CountChange
		if err := rows.Scan(&seq, &tag, &c.Count, &c.PublicCount, &c.FilterCount, &c.PublicFilterCount, &c.Version, &c.AsOf); err != nil {
			return nil, nil, err
		}
		seqs = append(seqs, seq)
		if seen[tag] || c.Version == 0 {
			continue
		}
		seen[tag] = true
		value, _ := json.Marshal(c) // plain values: cannot fail
		msgs = append(msgs, kafka.Message{Key: EventKey(tag), Value: value})
	}
	return msgs, seqs, rows.Err()
}

// EnsureCountsTopic creates the count-change topic, compacted (a consumer
// reading it from the start finds every tag's latest numbers), unless it
// exists.
func EnsureCountsTopic(ctx context.Context, brokers []string, topic string, partitions int) error {
	return KafkaSecurity{}.EnsureCountsTopic(ctx, brokers, topic, partitions)
}

// EnsureCountsTopic is the package's EnsureCountsTopic, connecting with
// k's SASL and TLS.
func (k KafkaSecurity) EnsureCountsTopic(ctx context.Context, brokers []string, topic string, partitions int) error {
	topic = cmp.Or(topic, DefaultCountsTopic)
	return ensureTopic(ctx, k, brokers, kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: -1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"}}})
}
