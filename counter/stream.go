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
)

// Defaults of StreamConfig.
const (
	DefaultCountsTopic    = "tag-counts"
	DefaultStreamInterval = time.Second
	// streamOverlap is how far behind its watermark the stream looks again:
	// a change's updated_at is taken when its statement runs, and its
	// transaction may commit a little later.
	streamOverlap = 5 * time.Second
	streamPage    = 5000
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

// StreamConfig configures a Stream.
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
// systems' way to learn that a count changed without polling. It reads the
// rows changed since its watermark (kept in counter_stream, so a restart
// goes on where it stopped), publishes them synchronously and moves the
// watermark. Only the process holding a database lock publishes; the
// others stand by.
type Stream struct {
	cfg StreamConfig
	log *slog.Logger
	w   *kafka.Writer
	// sent is the version last published per tag, so rows read again in
	// the overlap are not published twice by this process.
	sent      map[int64]uint64
	published prometheus.Counter
	lagSecs   prometheus.Gauge
}

// NewStream returns a Stream; cfg.DB and cfg.Brokers are required.
func NewStream(cfg StreamConfig) *Stream {
	cfg.Topic = cmp.Or(cfg.Topic, DefaultCountsTopic)
	cfg.Interval = OrDefault(cfg.Interval, DefaultStreamInterval)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	return &Stream{
		sent: make(map[int64]uint64),
		cfg:  cfg,
		log:  cfg.Logger.With("component", "count-stream"),
		w: &kafka.Writer{Addr: kafka.TCP(cfg.Brokers...), Topic: cfg.Topic, Balancer: &kafka.Hash{},
			BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireOne, MaxAttempts: 3, Transport: cfg.Security.transport()},
		published: metricCounter(cfg.Registerer, "tagcount_count_changes_published_total", "Count changes published to the count-change stream."),
		lagSecs:   metricGauge(cfg.Registerer, "tagcount_count_stream_lag_seconds", "How far the count-change stream's watermark is behind now."),
	}
}

// streamLock names the advisory lock of the one publishing process.
const streamLock = "CONCAT('tagcount_stream:', LEFT(MD5(COALESCE(DATABASE(), '')), 32))"

// Run publishes every Interval until ctx ends, holding the publishing lock
// on a connection of its own (taking it when the holder goes away), and
// returns nil.
func (s *Stream) Run(ctx context.Context) error {
	defer s.w.Close()
	var conn *sql.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	return Every(ctx, s.cfg.Interval, func(ctx context.Context) {
		if conn == nil {
			conn = s.lock(ctx)
			if conn == nil {
				return // another process publishes
			}
		}
		if err := conn.PingContext(ctx); err != nil {
			conn.Close() // the lock went with the session
			conn = nil
			return
		}
		if _, err := s.PublishOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("publishing count changes failed; the next round tries again", "err", err)
		}
	})
}

// lock returns a connection holding the publishing lock, or nil.
func (s *Stream) lock(ctx context.Context) *sql.Conn {
	conn, err := s.cfg.DB.Conn(ctx)
	if err != nil {
		return nil
	}
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK("+streamLock+", 0)").Scan(&got); err != nil || got.Int64 != 1 {
		conn.Close()
		return nil
	}
	return conn
}

// PublishOnce publishes the tag_counts rows changed since the watermark
// (less an overlap), page by page, and moves the watermark past each page
// the broker took. It returns how many it published and the first error.
func (s *Stream) PublishOnce(ctx context.Context) (int, error) {
	var since time.Time
	if err := s.cfg.DB.QueryRowContext(ctx, "SELECT published_until FROM counter_stream WHERE id = 1").Scan(&since); err != nil {
		return 0, err
	}
	n := 0
	for {
		msgs, versions, last, err := s.changedSince(ctx, since.Add(-streamOverlap))
		if err != nil || len(versions) == 0 {
			s.lagSecs.Set(max(0, time.Since(since).Seconds()))
			return n, err
		}
		if len(msgs) > 0 {
			if err := s.w.WriteMessages(ctx, msgs...); err != nil {
				return n, err
			}
		}
		s.remember(versions)
		n += len(msgs)
		s.published.Add(float64(len(msgs)))
		if _, err := s.cfg.DB.ExecContext(ctx, "UPDATE counter_stream SET published_until = ? WHERE id = 1 AND published_until < ?",
			last, last); err != nil {
			return n, err
		}
		if len(versions) < streamPage || !last.After(since) {
			s.lagSecs.Set(max(0, time.Since(last).Seconds()))
			return n, nil
		}
		since = last
	}
}

// changedSince reads a page of tag_counts rows changed at or after since;
// it returns as messages those not yet sent, every row's version by tag,
// and the last change's time.
func (s *Stream) changedSince(ctx context.Context, since time.Time) ([]kafka.Message, map[int64]uint64, time.Time, error) {
	rows, err := s.cfg.DB.QueryContext(ctx, `SELECT tag_id, `+storedColumns+`, version, updated_at FROM tag_counts
		WHERE updated_at >= ? ORDER BY updated_at LIMIT ?`, since, streamPage)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	defer rows.Close()
	var msgs []kafka.Message
	versions := make(map[int64]uint64)
	var last time.Time
	for rows.Next() {
		var tag int64
		var c CountChange
		if err := rows.Scan(&tag, &c.Count, &c.PublicCount, &c.FilterCount, &c.PublicFilterCount, &c.Version, &c.AsOf); err != nil {
			return nil, nil, time.Time{}, err
		}
		versions[tag], last = c.Version, c.AsOf
		if s.sent[tag] >= c.Version {
			continue
		}
		value, _ := json.Marshal(c) // plain values: cannot fail
		msgs = append(msgs, kafka.Message{Key: EventKey(tag), Value: value})
	}
	return msgs, versions, last, rows.Err()
}

// remember records what was sent; the memory is dropped when it grows past
// a bound (at worst some rows of the overlap are sent again, which the
// versions make harmless).
func (s *Stream) remember(versions map[int64]uint64) {
	if len(s.sent) > 100_000 {
		clear(s.sent)
	}
	for tag, v := range versions {
		s.sent[tag] = max(s.sent[tag], v)
	}
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
