package counter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/tagcount/tagcount/migrations"
)

// DefaultGroupID is the consumer group of the counter.
const DefaultGroupID = "tagcount-counter"

// ConsumerConfig configures a Consumer. Brokers and DB are required.
type ConsumerConfig struct {
	Brokers []string
	// Topic defaults to DefaultTopic, GroupID to DefaultGroupID.
	Topic, GroupID string
	DB             *migrations.DB
	// Tiers sets the size tiers; the zero value means DefaultTiers.
	Tiers Tiers
	// BatchSize is the most messages one writer applies per transaction
	// (default 5,000); BatchWait is how long a writer waits after a batch's
	// first message for more (default 20ms).
	BatchSize int
	BatchWait time.Duration
	// TierDeferral is the kill switch of tier deferral (the flag
	// tagcount.tier-deferral). When it returns false every tag is flushed
	// every batch, including those already held. Nil means on.
	TierDeferral func() bool
	// Now is the clock of tier intervals (default time.Now). Batching
	// windows use real time.
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer

	// HeartbeatInterval and SessionTimeout tune the consumer group
	// (defaults 1s and 10s). A crashed consumer's partitions move after the
	// session timeout; a graceful stop moves them at once.
	HeartbeatInterval time.Duration
	SessionTimeout    time.Duration
	// OnApply, if set, is called by a partition's writer after each apply
	// transaction commits (instrumentation for tests and load generation).
	// Writers of different partitions call it concurrently.
	OnApply func(partition int, res ApplyResult)
}

// Consumer is the counter: a member of a Kafka consumer group that runs, for
// each partition assigned to it, exactly one writer goroutine. A writer
// batches its partition's events, holds deferred tiers in memory and applies
// the rest with ApplyBatch, then commits the partition's offset.
type Consumer struct {
	cfg   ConsumerConfig
	tiers Tiers
	now   func() time.Time
	log   *slog.Logger
	m     *consumerMetrics

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
	batchSize     prometheus.Histogram
	flushDuration prometheus.Histogram
	lag           *prometheus.GaugeVec
	// deferredTags and deferredEvts are indexed by Tier.
	deferredTags [3]prometheus.Gauge
	deferredEvts [3]prometheus.Gauge
}

func newConsumerMetrics(reg prometheus.Registerer) *consumerMetrics {
	tags := metricGaugeVec(reg, "tagcount_deferred_tags", "Tags whose events are held in memory for a deferred flush.", "tier")
	evts := metricGaugeVec(reg, "tagcount_deferred_events", "Event ids held in memory for deferred flushes.", "tier")
	m := &consumerMetrics{
		consumed:      metricCounter(reg, "tagcount_events_consumed_total", "Well-formed tag-use messages read from Kafka."),
		applied:       metricCounter(reg, "tagcount_events_applied_total", "Outbox rows applied to tag_counts and deleted."),
		stale:         metricCounter(reg, "tagcount_events_stale_total", "Applied event ids whose outbox row was already gone (duplicates, redeliveries)."),
		malformed:     metricCounter(reg, "tagcount_malformed_messages_total", "Messages on the topic that did not decode; skipped."),
		tagWrites:     metricCounter(reg, "tagcount_tag_count_writes_total", "tag_counts rows written by the counter."),
		applyErrors:   metricCounter(reg, "tagcount_apply_errors_total", "Apply transactions that failed after retries (the writer retries the batch)."),
		commitErrors:  metricCounter(reg, "tagcount_offset_commit_errors_total", "Kafka offset commits that failed."),
		batchSize:     metricHistogram(reg, "tagcount_batch_size", "Event ids per apply transaction.", prometheus.ExponentialBuckets(1, 4, 10)),
		flushDuration: metricHistogram(reg, "tagcount_flush_duration_seconds", "Duration of apply transactions.", prometheus.ExponentialBuckets(0.0005, 2, 16)),
		lag:           metricGaugeVec(reg, "tagcount_consumer_lag", "Messages behind the partition's high watermark after the last batch.", "partition"),
	}
	for _, t := range []Tier{TierMedium, TierLarge} {
		m.deferredTags[t] = tags.WithLabelValues(t.String())
		m.deferredEvts[t] = evts.WithLabelValues(t.String())
	}
	// Small tags are never held; their children exist so the index is safe.
	m.deferredTags[TierSmall] = prometheus.NewGauge(prometheus.GaugeOpts{Name: "unused"})
	m.deferredEvts[TierSmall] = prometheus.NewGauge(prometheus.GaugeOpts{Name: "unused"})
	return m
}

// NewConsumer checks cfg and returns a Consumer; it does not connect. It
// returns an error when Brokers or DB is missing.
func NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("counter: consumer needs Kafka brokers")
	}
	if cfg.DB == nil {
		return nil, errors.New("counter: consumer needs a DB")
	}
	if cfg.Topic == "" {
		cfg.Topic = DefaultTopic
	}
	if cfg.GroupID == "" {
		cfg.GroupID = DefaultGroupID
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 5000
	}
	if cfg.BatchWait <= 0 {
		cfg.BatchWait = 20 * time.Millisecond
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Consumer{
		cfg:    cfg,
		tiers:  cfg.Tiers.withDefaults(),
		now:    now,
		log:    log.With("component", "counter", "group", cfg.GroupID),
		m:      newConsumerMetrics(cfg.Registerer),
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
// until ctx is done. On a rebalance, and when ctx ends, every writer flushes
// the events it holds and commits its offset before the partition moves.
// It returns nil on a clean shutdown; errors joining the group are logged
// and retried.
func (c *Consumer) Run(ctx context.Context) error {
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                c.cfg.GroupID,
		Brokers:           c.cfg.Brokers,
		Topics:            []string{c.cfg.Topic},
		HeartbeatInterval: c.cfg.HeartbeatInterval,
		SessionTimeout:    c.cfg.SessionTimeout,
		// Long enough for writers to flush what they hold before the
		// coordinator gives up on this member's rejoin.
		RebalanceTimeout: shutdownFlushTimeout,
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
		assigned := gen.Assignments[c.cfg.Topic]
		c.log.Info("partitions assigned", "generation", gen.ID, "partitions", len(assigned))
		for _, a := range assigned {
			gen.Start(func(gctx context.Context) {
				w := newPartitionWriter(c, gen, a.ID)
				w.run(ctx, gctx, a.Offset)
			})
		}
	}
	group.Close()
	return nil
}

// kafkaLogger adapts kafka-go's printf logging to slog at level.
func kafkaLogger(log *slog.Logger, level slog.Level) kafka.LoggerFunc {
	return func(msg string, args ...any) {
		if log.Enabled(context.Background(), level) {
			log.Log(context.Background(), level, "kafka: "+fmt.Sprintf(msg, args...))
		}
	}
}

// heldTag is a deferred tag's pending event ids and when they are due.
type heldTag struct {
	ids  []int64
	due  time.Time
	tier Tier
}

// partitionWriter is the single writer of one partition for one generation.
type partitionWriter struct {
	c         *Consumer
	gen       *kafka.Generation
	partition int
	label     string
	log       *slog.Logger

	// counts caches tag_counts.count of tags seen, as committed by this
	// process's applies; an unknown tag is treated as small, and its first
	// apply tells its size.
	counts map[int64]int64
	held   map[int64]*heldTag

	next      int64 // offset after the last message processed
	committed int64 // last offset committed
}

// maxCachedCounts bounds the writer's count cache; past it the cache is
// dropped (held tags keep their tier) and refills from later applies.
const maxCachedCounts = 1 << 20

func newPartitionWriter(c *Consumer, gen *kafka.Generation, partition int) *partitionWriter {
	return &partitionWriter{
		c:         c,
		gen:       gen,
		partition: partition,
		label:     strconv.Itoa(partition),
		log:       c.log.With("partition", partition),
		counts:    c.takeCounts(partition),
		held:      make(map[int64]*heldTag),
		next:      -1,
		committed: -1,
	}
}

// idleWake is how often an idle writer wakes to flush deferred tags that
// have come due.
const idleWake = 100 * time.Millisecond

// shutdownFlushTimeout bounds the final flush when a writer stops.
const shutdownFlushTimeout = 30 * time.Second

func (w *partitionWriter) run(runCtx, genCtx context.Context, offset int64) {
	ctx, cancel := context.WithCancel(runCtx)
	defer cancel()
	stop := context.AfterFunc(genCtx, cancel)
	defer stop()

	reader := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        w.c.cfg.Brokers,
		Topic:          w.c.cfg.Topic,
		Partition:      w.partition,
		MinBytes:       1,
		MaxBytes:       2 << 20, // bounds memory when the writer lags; still many batches' worth
		MaxWait:        250 * time.Millisecond,
		QueueCapacity:  w.c.cfg.BatchSize,
		ReadBackoffMin: 50 * time.Millisecond,
		ReadBackoffMax: time.Second,
		Logger:         kafkaLogger(w.log, slog.LevelDebug),
		ErrorLogger:    kafkaLogger(w.log, slog.LevelInfo),
	})
	if err := reader.SetOffset(offset); err != nil {
		w.log.Error("cannot seek partition reader", "offset", offset, "err", err)
	}
	msgs := make(chan kafka.Message, w.c.cfg.BatchSize)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(msgs)
		for {
			m, err := reader.FetchMessage(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				w.log.Warn("fetching messages failed", "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	})
	w.log.Debug("writer started", "offset", offset)

	batch := make([]kafka.Message, 0, w.c.cfg.BatchSize)
	for ctx.Err() == nil {
		batch = w.collect(ctx, msgs, batch[:0])
		if ctx.Err() != nil {
			// Messages collected but not applied are not committed, so
			// they are redelivered to the partition's next writer.
			break
		}
		w.process(ctx, batch)
	}
	wg.Wait()
	reader.Close()

	// Flush everything held, then commit: on revocation the partition's
	// next writer starts from here with nothing owed by this one.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(runCtx), shutdownFlushTimeout)
	defer fcancel()
	var ids []int64
	var tags []int64
	for tag, h := range w.held {
		ids = append(ids, h.ids...)
		tags = append(tags, tag)
	}
	if len(ids) > 0 {
		if _, err := w.apply(fctx, ids); err != nil {
			// The rows stay in the outbox; the sweeper re-announces them.
			w.log.Warn("final flush failed; held events stay in the outbox for the sweeper", "events", len(ids), "err", err)
		}
	}
	for _, tag := range tags {
		w.release(tag)
	}
	w.commit()
	w.c.returnCounts(w.partition, w.counts)
	w.c.m.lag.DeleteLabelValues(w.label)
	w.log.Debug("writer stopped", "offset", w.next, "flushed", len(ids))
}

// collect returns the next batch: it waits up to idleWake for a first
// message (returning an empty batch so held tags can be checked), then up
// to BatchWait for more, up to BatchSize.
func (w *partitionWriter) collect(ctx context.Context, msgs <-chan kafka.Message, batch []kafka.Message) []kafka.Message {
	idle := time.NewTimer(idleWake)
	defer idle.Stop()
	select {
	case m, ok := <-msgs:
		if !ok {
			<-ctx.Done()
			return batch
		}
		batch = append(batch, m)
	case <-idle.C:
		return batch
	case <-ctx.Done():
		return batch
	}
	deadline := time.NewTimer(w.c.cfg.BatchWait)
	defer deadline.Stop()
	for len(batch) < w.c.cfg.BatchSize {
		// Messages already queued come before the deadline and ctx, so a
		// backlog fills the batch.
		var m kafka.Message
		var ok bool
		select {
		case m, ok = <-msgs:
		default:
			select {
			case m, ok = <-msgs:
			case <-deadline.C:
				return batch
			case <-ctx.Done():
				return batch
			}
		}
		if !ok {
			return batch
		}
		batch = append(batch, m)
	}
	return batch
}

// process routes a batch's events to an immediate apply or to the held set,
// applies what is due, and commits the offset after the batch.
func (w *partitionWriter) process(ctx context.Context, batch []kafka.Message) {
	deferral := w.c.cfg.TierDeferral == nil || w.c.cfg.TierDeferral()
	ids, flushed := w.route(batch, w.c.now(), deferral)
	if len(ids) > 0 {
		if _, err := w.applyUntilDone(ctx, ids); err != nil {
			// ctx ended while the database failed: nothing of this batch
			// is committed; held tags stay held for the final flush.
			return
		}
		for _, tag := range flushed {
			w.release(tag)
		}
	}
	if len(batch) > 0 {
		last := batch[len(batch)-1]
		w.next = last.Offset + 1
		w.c.m.lag.WithLabelValues(w.label).Set(float64(max(0, last.HighWaterMark-w.next)))
		w.commit()
	}
}

// route decodes a batch and returns the event ids to apply now: those of
// small tags (and of every tag when deferral is off) plus those of held
// tags that have come due, whose tags it also returns (flushed). Events of
// medium and large tags are added to the held set. A tag not seen before
// counts as small: its first apply tells its size.
func (w *partitionWriter) route(batch []kafka.Message, now time.Time, deferral bool) (ids, flushed []int64) {
	tiers := w.c.tiers
	ids = make([]int64, 0, len(batch))
	consumed := 0
	for i := range batch {
		m := &batch[i]
		e, err := DecodeEvent(m.Value)
		if err != nil {
			w.c.m.malformed.Inc()
			w.log.Warn("skipping malformed message", "offset", m.Offset, "key", string(m.Key), "err", err)
			continue
		}
		consumed++
		if h := w.held[e.TagID]; h != nil {
			h.ids = append(h.ids, e.ID)
			w.c.m.deferredEvts[h.tier].Inc()
			continue
		}
		count, known := w.counts[e.TagID]
		tier := TierSmall
		if known {
			tier = tiers.of(count)
		}
		if !deferral || tier == TierSmall {
			ids = append(ids, e.ID)
			continue
		}
		w.held[e.TagID] = &heldTag{ids: []int64{e.ID}, due: now.Add(tiers.jittered(tiers.interval(count))), tier: tier}
		w.c.m.deferredTags[tier].Inc()
		w.c.m.deferredEvts[tier].Inc()
	}
	w.c.m.consumed.Add(float64(consumed))
	for tag, h := range w.held {
		if !deferral || !now.Before(h.due) || len(h.ids) >= tiers.MaxHeld {
			ids = append(ids, h.ids...)
			flushed = append(flushed, tag)
		}
	}
	return ids, flushed
}

// release forgets a flushed held tag.
func (w *partitionWriter) release(tag int64) {
	h := w.held[tag]
	if h == nil {
		return
	}
	delete(w.held, tag)
	w.c.m.deferredTags[h.tier].Dec()
	w.c.m.deferredEvts[h.tier].Sub(float64(len(h.ids)))
}

// applyUntilDone applies ids, retrying with backoff while the database
// fails, until it succeeds or ctx ends.
func (w *partitionWriter) applyUntilDone(ctx context.Context, ids []int64) (ApplyResult, error) {
	backoff := 100 * time.Millisecond
	for {
		res, err := w.apply(ctx, ids)
		if err == nil {
			return res, nil
		}
		w.c.m.applyErrors.Inc()
		if ctx.Err() != nil {
			return res, err
		}
		w.log.Warn("apply failed; retrying", "events", len(ids), "backoff", backoff, "err", err)
		if err := Sleep(ctx, backoff); err != nil {
			return res, err
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// apply runs one apply transaction and records its effects.
func (w *partitionWriter) apply(ctx context.Context, ids []int64) (ApplyResult, error) {
	start := time.Now()
	res, err := applyBatch(ctx, w.c.cfg.DB, ids, applyOpts{readCount: w.needsCount})
	if err != nil {
		return res, err
	}
	w.c.m.flushDuration.Observe(time.Since(start).Seconds())
	w.c.m.batchSize.Observe(float64(res.Requested))
	w.c.m.applied.Add(float64(res.Applied))
	w.c.m.stale.Add(float64(res.Requested - res.Applied))
	w.c.m.tagWrites.Add(float64(len(res.Deltas)))
	if len(w.counts)+len(res.Deltas) > maxCachedCounts {
		clear(w.counts)
	}
	for tag, d := range res.Deltas {
		if n, ok := res.Counts[tag]; ok {
			w.counts[tag] = n
		} else if n, ok := w.counts[tag]; ok {
			w.counts[tag] = n + d
		}
	}
	if w.c.cfg.OnApply != nil {
		w.c.cfg.OnApply(w.partition, res)
	}
	return res, nil
}

// needsCount says which written tags' counts an apply reads back: those
// this writer does not know yet, and deferred tiers (few, and worth exact
// tiering). A known small tag's count is tracked as cached + delta, which
// drifts only by writes of the legacy path or reconcile and only affects
// how soon it is tiered up.
func (w *partitionWriter) needsCount(tag int64) bool {
	n, ok := w.counts[tag]
	return !ok || w.c.tiers.of(n) != TierSmall
}

// commit commits the offset after the last processed message, if it moved.
// A failure is logged and counted; the next commit covers it, and an
// uncommitted message is only redelivered, which is harmless.
func (w *partitionWriter) commit() {
	if w.next < 0 || w.next == w.committed {
		return
	}
	err := w.gen.CommitOffsets(map[string]map[int]int64{w.c.cfg.Topic: {w.partition: w.next}})
	if err != nil {
		w.c.m.commitErrors.Inc()
		w.log.Info("offset commit failed", "offset", w.next, "err", err)
		return
	}
	w.committed = w.next
}
