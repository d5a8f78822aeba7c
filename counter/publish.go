package counter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/tagcount/tagcount/migrations/loop"
)

// Defaults of PublisherConfig.
const (
	// DefaultTopic is the topic tag-use events are announced on.
	DefaultTopic = "tag-uses"
	// DefaultBatchTimeout is how long the writer waits to fill a batch
	// (kafka-go's own default of 1s would add a second to every post's
	// visibility).
	DefaultBatchTimeout = 5 * time.Millisecond
)

// Announcer announces committed outbox rows. *Publisher is one; the sweeper
// takes any.
type Announcer interface {
	Announce(ctx context.Context, events []Event)
}

// PublisherConfig configures a Publisher. Brokers is required; every other
// zero field takes its default (WithDefaults) or is off.
type PublisherConfig struct {
	Brokers []string
	// Security is how to authenticate and encrypt (zero = plaintext).
	Security KafkaSecurity
	// Topic defaults to DefaultTopic.
	Topic string
	// BatchTimeout is how long the writer waits to fill a batch before
	// sending it (default DefaultBatchTimeout).
	BatchTimeout time.Duration
	// Logger defaults to slog.Default(); a nil Registerer registers nothing.
	Logger     *slog.Logger
	Registerer prometheus.Registerer

	// DropRate is fault injection for tests and load generation: each event
	// is silently not published with this probability (0 = never), as if
	// the message were lost. The outbox row stays, and the sweeper
	// re-announces it. Never set it in production.
	DropRate float64
}

// WithDefaults returns c with its zero Topic, BatchTimeout and Logger set
// to their defaults: the one place PublisherConfig's defaults are applied.
func (c PublisherConfig) WithDefaults() PublisherConfig {
	c.Topic = cmp.Or(c.Topic, DefaultTopic)
	c.BatchTimeout = loop.OrDefault(c.BatchTimeout, DefaultBatchTimeout)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

func (c PublisherConfig) validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("counter: PublisherConfig needs Kafka brokers")
	}
	if c.DropRate < 0 || c.DropRate > 1 {
		return fmt.Errorf("counter: PublisherConfig.DropRate must be between 0 and 1, not %v", c.DropRate)
	}
	return nil
}

// Publisher announces tag-use events on Kafka after the posting transaction
// commits. Failures never reach the caller: the outbox row is the record
// that the event is owed, and the sweeper re-announces what was lost.
type Publisher struct {
	w         *kafka.Writer // asynchronous: the posting path never waits
	sync      *kafka.Writer // synchronous: the sweeper's
	transport *kafka.Transport
	log       *slog.Logger
	dropRate  float64

	published prometheus.Counter
	failures  prometheus.Counter
	dropped   prometheus.Counter
}

// NewPublisher returns a Publisher writing to cfg.Topic, keyed by tag id
// (kafka.Hash balancer, so one tag's events land on one partition), with
// acks from the partition leader. It connects lazily. It returns an error
// when cfg has no brokers or a DropRate outside [0, 1].
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &Publisher{
		transport: cfg.Security.transport(),
		log:       cfg.Logger.With("component", "publisher"),
		dropRate:  cfg.DropRate,
		published: metricCounter(cfg.Registerer, "tagcount_events_published_total", "Tag-use events handed to Kafka and acknowledged."),
		failures:  metricCounter(cfg.Registerer, "tagcount_publish_failures_total", "Tag-use events that could not be published (the sweeper announces their tags again)."),
		dropped:   metricCounter(cfg.Registerer, "tagcount_publish_dropped_total", "Tag-use events dropped on purpose by fault injection (PublisherConfig.DropRate)."),
	}
	p.transport.MetadataTTL = 5 * time.Second
	p.w = &kafka.Writer{
		Addr:         kafka.TCP(cfg.Brokers...),
		Topic:        cfg.Topic,
		Balancer:     &kafka.Hash{},
		BatchTimeout: cfg.BatchTimeout,
		// kafka-go preallocates BatchSize messages (~160 B each) for every
		// batch, and a 5 ms batch holds a few dozen: 5000 cost ~1 GB/s of
		// allocation at 300 posts/s. 256 still fills a window at 50k events/s
		// over 8 partitions.
		BatchSize:    256,
		RequiredAcks: kafka.RequireOne,
		Async:        true,
		MaxAttempts:  5,
		Transport:    p.transport,
		Completion:   p.completed,
	}
	p.sync = &kafka.Writer{
		Addr:         kafka.TCP(cfg.Brokers...),
		Topic:        cfg.Topic,
		Balancer:     &kafka.Hash{},
		BatchTimeout: cfg.BatchTimeout,
		RequiredAcks: kafka.RequireOne,
		MaxAttempts:  3,
		Transport:    p.transport,
	}
	return p, nil
}

func (p *Publisher) completed(msgs []kafka.Message, err error) {
	if err != nil {
		p.failures.Add(float64(len(msgs)))
		p.log.Warn("publishing tag events failed; the sweeper will re-announce them", "events", len(msgs), "err", err)
		return
	}
	p.published.Add(float64(len(msgs)))
}

// announceTimeout bounds how long Announce may wait for topic metadata when
// the broker is unreachable; the write itself is asynchronous.
const announceTimeout = 2 * time.Second

// Announce queues events for publishing and returns without waiting for
// the broker. It never fails: an event that cannot be published is logged
// and counted (tagcount_publish_failures_total), and the sweeper announces
// its tag again once the row is older than the recovery budget.
func (p *Publisher) Announce(ctx context.Context, events []Event) {
	msgs := p.messages(events)
	if len(msgs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), announceTimeout)
	defer cancel()
	if err := p.w.WriteMessages(ctx, msgs...); err != nil {
		p.failures.Add(float64(len(msgs)))
		if errors.Is(err, context.DeadlineExceeded) {
			err = errors.New("Kafka unreachable: no topic metadata within " + announceTimeout.String())
		}
		p.log.Warn("publishing tag events failed; the sweeper will re-announce them", "events", len(msgs), "err", err)
	}
}

// AnnounceSync publishes events and waits for the broker's
// acknowledgement: the sweeper's way, so it knows whether to look at the
// same rows again. It returns the broker's error, or ctx's.
func (p *Publisher) AnnounceSync(ctx context.Context, events []Event) error {
	msgs := p.messages(events)
	if len(msgs) == 0 {
		return nil
	}
	if err := p.sync.WriteMessages(ctx, msgs...); err != nil {
		p.failures.Add(float64(len(msgs)))
		return err
	}
	p.published.Add(float64(len(msgs)))
	return nil
}

// messages encodes events, dropping some when fault injection asks.
func (p *Publisher) messages(events []Event) []kafka.Message {
	msgs := make([]kafka.Message, 0, len(events))
	for _, e := range events {
		if p.dropRate > 0 && rand.Float64() < p.dropRate {
			p.dropped.Inc()
			continue
		}
		m := kafka.Message{Key: EventKey(e.TagID), Value: EncodeEvent(e), Time: e.Time}
		if e.RequestID != "" {
			m.Headers = []kafka.Header{{Key: RequestIDHeader, Value: []byte(e.RequestID)}}
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// Close flushes queued events, waiting for their acknowledgements or
// failures, and releases the connections.
func (p *Publisher) Close() error {
	err := errors.Join(p.w.Close(), p.sync.Close())
	p.transport.CloseIdleConnections()
	return err
}
