package counter

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/tagcount/tagcount/migrations/loop"
)

// heldTag is a deferred tag: when its flush is due, and how many
// announcements arrived while it waited.
type heldTag struct {
	due    time.Time
	tier   Tier
	events int
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
	// backlog holds tags whose flush hit the row limit of one transaction:
	// each round applies one more bounded transaction of them, after the
	// round's small tags, so a large flush never holds up small tags.
	backlog map[int64]bool
	// requests holds, per tag, the request ids of its announcements not yet
	// applied, for the log line of the transaction that applies them.
	requests map[int64][]string
	tracked  int // request ids in requests

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
		backlog:   make(map[int64]bool),
		requests:  make(map[int64][]string),
		next:      -1,
		committed: -1,
	}
}

// idleWake is how often an idle writer wakes to flush deferred tags that
// have come due.
const idleWake = 100 * time.Millisecond

// DefaultFlushTimeout bounds the final flush when a writer stops
// (ConsumerConfig.FlushTimeout).
const DefaultFlushTimeout = 30 * time.Second

// recover takes over the pending tags of the partition found in the
// outbox: small ones are flushed in the first round, deferred ones are held
// until their oldest row is an interval old.
func (w *partitionWriter) recover(pending []PendingTag) {
	for _, t := range pending {
		w.c.m.recovered.Inc()
		w.counts[t.TagID] = t.Count
		tier := w.c.tiers.of(t.Count)
		if tier == TierSmall {
			w.backlog[t.TagID] = true
			continue
		}
		w.hold(t.TagID, tier, t.Oldest)
	}
	w.c.m.backlog.Add(float64(len(w.backlog)))
}

func (w *partitionWriter) run(runCtx, genCtx context.Context, offset int64) {
	ctx, cancel := context.WithCancel(runCtx)
	defer cancel()
	stop := context.AfterFunc(genCtx, cancel)
	defer stop()

	reader := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        w.c.cfg.Brokers,
		Dialer:         w.c.cfg.Security.dialer(),
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
	wg.Go(func() { w.fetch(ctx, reader, msgs) })
	w.log.Debug("writer started", "offset", offset, "held", len(w.held), "backlog", len(w.backlog))

	batch := make([]kafka.Message, 0, w.c.cfg.BatchSize)
	for ctx.Err() == nil {
		batch = w.collect(ctx, msgs, batch[:0])
		if ctx.Err() != nil {
			// Messages collected but not applied are not committed, so
			// they are redelivered to the partition's next writer.
			break
		}
		w.round(ctx, batch)
	}
	wg.Wait()
	reader.Close()
	w.finish(runCtx)
}

// fetch reads messages into msgs until ctx ends, then closes msgs.
func (w *partitionWriter) fetch(ctx context.Context, reader *kafka.Reader, msgs chan<- kafka.Message) {
	defer close(msgs)
	for {
		m, err := reader.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.log.Warn("fetching messages failed", "err", err)
			if loop.Sleep(ctx, 200*time.Millisecond) != nil {
				return
			}
			continue
		}
		select {
		case msgs <- m:
		case <-ctx.Done():
			return
		}
	}
}

// finish flushes everything held, then commits: on revocation the
// partition's next writer starts from here with nothing owed by this one.
// Rows a failed flush leaves are found by the next writer's recovery scan.
func (w *partitionWriter) finish(runCtx context.Context) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(runCtx), w.c.cfg.FlushTimeout)
	defer cancel()
	tags := sortedKeys(w.held)
	for tag := range w.backlog {
		tags = append(tags, tag)
	}
	if w.c.board.current(fctx).Paused {
		tags = nil // paused: the outbox keeps the rows for the partition's next writer
	}
	for len(tags) > 0 && fctx.Err() == nil {
		res, err := w.apply(fctx, tags, w.c.cfg.ApplyLimit)
		if errors.Is(err, errPaused) {
			break // the outbox keeps the rows for the partition's next writer
		}
		if err != nil {
			w.log.Warn("final flush failed; the outbox keeps the rows for the partition's next writer", "tags", len(tags), "err", err)
			break
		}
		if !res.Full {
			break
		}
	}
	for tag := range w.held {
		w.release(tag)
	}
	w.c.m.backlog.Sub(float64(len(w.backlog)))
	clear(w.backlog)
	w.commit()
	w.c.returnCounts(w.partition, w.counts)
	w.c.m.lag.DeleteLabelValues(w.label)
	w.log.Debug("writer stopped", "offset", w.next, "flushed", len(tags))
}

// collect returns the next batch: it waits up to idleWake for a first
// message (returning an empty batch so held tags can be checked; at once
// when a backlog waits), then up to BatchWait for more, up to BatchSize.
func (w *partitionWriter) collect(ctx context.Context, msgs <-chan kafka.Message, batch []kafka.Message) []kafka.Message {
	wait := idleWake
	if len(w.backlog) > 0 {
		wait = 0
	}
	idle := time.NewTimer(wait)
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

// round routes a batch's announcements, applies the small tags and the
// held tags that came due in one bounded transaction, then one bounded
// transaction of the backlog, and commits the offset after the batch.
// While the counter is paused it only holds what is announced; while it
// catches up after a pause, its applies are paced.
func (w *partitionWriter) round(ctx context.Context, batch []kafka.Message) {
	sw := w.c.board.current(ctx)
	deferral := w.c.cfg.TierDeferral == nil || w.c.cfg.TierDeferral()
	due := w.route(batch, w.c.now(), deferral, sw.Paused)
	if !sw.Paused {
		pace := pacing{perSecond: sw.CatchUpPerSecond, limit: w.c.cfg.ApplyLimit}
		if pace.perSecond > 0 {
			pace.limit = min(pace.limit, max(1, pace.perSecond/10))
		}
		if len(due) > 0 {
			_, err := w.applyUntilDone(ctx, due, pace)
			switch {
			case errors.Is(err, errPaused):
				// Paused since the switches were read: the tags wait
				// for the resume like those announced while paused.
				for _, tag := range due {
					w.holdUntilResumed(tag)
				}
			case err != nil:
				return // ctx ended: nothing of this batch is committed
			}
		}
		if len(w.backlog) > 0 {
			// Paused meanwhile, the backlog simply waits.
			if _, err := w.applyUntilDone(ctx, sortedKeys(w.backlog), pace); err != nil && !errors.Is(err, errPaused) {
				return
			}
		}
	}
	if len(batch) > 0 {
		last := batch[len(batch)-1]
		w.next = last.Offset + 1
		w.c.m.lag.WithLabelValues(w.label).Set(float64(max(0, last.HighWaterMark-w.next)))
		w.commit()
	}
	if sw.CatchUpPerSecond > 0 {
		w.c.board.report(ctx, w.partition, len(w.backlog))
	}
}

// pacing is how a round applies: at most limit rows per transaction, and,
// when perSecond > 0 (a catch-up), at most perSecond rows per second.
type pacing struct {
	perSecond, limit int
}

// route decodes a batch and returns the tags to flush now: small tags
// announced in it (every tag when deferral is off) and held tags that have
// come due, which it releases. Announced medium and large tags are held
// until their announcement is an interval old (a re-announced old row is
// due at once). A tag not seen before counts as small: its first apply
// tells its size.
func (w *partitionWriter) route(batch []kafka.Message, now time.Time, deferral, paused bool) []int64 {
	tiers := w.c.tiers
	now0 := make(map[int64]bool)
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
		w.noteRequest(e.TagID, m.Headers)
		if !m.Time.IsZero() {
			w.c.m.announceAge.Observe(max(0, time.Since(m.Time).Seconds()))
		}
		if h := w.held[e.TagID]; h != nil {
			h.events++
			w.c.m.heldEvents.WithLabelValues(h.tier.String()).Inc()
			continue
		}
		tier := TierSmall
		if count, known := w.counts[e.TagID]; known {
			tier = tiers.of(count)
		}
		switch {
		case paused:
			w.holdUntilResumed(e.TagID)
		case !deferral || tier == TierSmall:
			now0[e.TagID] = true
		default:
			w.hold(e.TagID, tier, m.Time)
		}
	}
	w.c.m.consumed.Add(float64(consumed))
	if paused {
		return nil
	}
	for tag, h := range w.held {
		if !deferral || !now.Before(h.due) {
			now0[tag] = true
			w.release(tag)
		}
	}
	return sortedKeys(now0)
}

// hold defers tag (of tier) until an interval (jittered) after written,
// when its oldest known row was written: a row announced late, or found
// after a restart, is not held a whole interval again. The age is measured
// on the wall clock (written comes from the database or the broker); the
// due time is on the writer's clock, which tests inject.
func (w *partitionWriter) hold(tag int64, tier Tier, written time.Time) {
	var age time.Duration
	if !written.IsZero() {
		age = max(0, time.Since(written))
	}
	t := w.c.tiers
	w.held[tag] = &heldTag{due: w.c.now().Add(t.jittered(t.interval(w.counts[tag])) - age), tier: tier, events: 1}
	w.c.m.heldTags.WithLabelValues(tier.String()).Inc()
	w.c.m.heldEvents.WithLabelValues(tier.String()).Inc()
}

// holdUntilResumed holds tag (not held yet) for a paused counter: it is
// due as soon as the counter resumes.
func (w *partitionWriter) holdUntilResumed(tag int64) {
	tier := TierSmall
	if count, known := w.counts[tag]; known {
		tier = w.c.tiers.of(count)
	}
	w.hold(tag, tier, time.Time{})
	w.held[tag].due = time.Time{}
}

// release forgets a held tag that is being flushed.
func (w *partitionWriter) release(tag int64) {
	h := w.held[tag]
	if h == nil {
		return
	}
	delete(w.held, tag)
	w.c.m.heldTags.WithLabelValues(h.tier.String()).Dec()
	w.c.m.heldEvents.WithLabelValues(h.tier.String()).Sub(float64(h.events))
}

// applyUntilDone applies tags as pace allows, retrying with backoff while
// the database fails, until it succeeds or ctx ends.
func (w *partitionWriter) applyUntilDone(ctx context.Context, tags []int64, pace pacing) (ApplyResult, error) {
	backoff := 100 * time.Millisecond
	for {
		if err := w.c.board.wait(ctx, pace.perSecond, pace.limit); err != nil {
			return ApplyResult{}, err
		}
		res, err := w.apply(ctx, tags, pace.limit)
		if err == nil {
			return res, nil
		}
		if errors.Is(err, errPaused) {
			w.c.board.sawPaused()
			return res, err
		}
		w.c.m.applyErrors.Inc()
		if ctx.Err() != nil {
			return res, err
		}
		w.log.Warn("apply failed; retrying", "tags", len(tags), "backoff", backoff, "err", err)
		if err := loop.Sleep(ctx, backoff); err != nil {
			return res, err
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// apply runs one apply transaction of at most limit of tags' outbox rows,
// records its effects, and keeps the tags in the backlog while rows may
// remain.
func (w *partitionWriter) apply(ctx context.Context, tags []int64, limit int) (ApplyResult, error) {
	start := time.Now()
	res, err := applyBatch(ctx, w.c.cfg.DB, tags, applyOpts{byTag: true, limit: limit, readCount: w.needsCount, fenced: true})
	if err != nil {
		return res, err
	}
	w.c.m.flushDuration.Observe(time.Since(start).Seconds())
	w.c.m.batchSize.Observe(float64(res.Applied))
	w.c.m.applied.Add(float64(res.Applied))
	if res.Applied == 0 {
		w.c.m.stale.Add(float64(res.Requested))
	}
	w.c.m.tagWrites.Add(float64(len(res.Deltas)))
	w.remember(res)
	if !res.Full {
		w.logCounted(tags, res)
	}
	for _, tag := range tags {
		switch {
		case res.Full && !w.backlog[tag]:
			w.backlog[tag] = true
			w.c.m.backlog.Inc()
		case !res.Full && w.backlog[tag]:
			delete(w.backlog, tag)
			w.c.m.backlog.Dec()
		}
	}
	if w.c.cfg.OnApply != nil {
		w.c.cfg.OnApply(w.partition, res)
	}
	return res, nil
}

// remember updates the count cache with an apply's results.
func (w *partitionWriter) remember(res ApplyResult) {
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

// Bounds of the request ids a writer keeps for its log lines: a few per
// tag (a hot tag held for its interval sees thousands of posts), and a
// total, so a long pause cannot grow them without end. Ids past them are
// not logged; the posts are counted all the same.
const (
	maxRequestIDsPerTag  = 16
	maxTrackedRequestIDs = 100_000
)

// noteRequest remembers the request id an announcement of tag carries, if
// any, until the transaction that applies tag.
func (w *partitionWriter) noteRequest(tag int64, headers []kafka.Header) {
	if w.tracked >= maxTrackedRequestIDs {
		return
	}
	for _, h := range headers {
		if h.Key != RequestIDHeader || len(h.Value) == 0 {
			continue
		}
		ids := w.requests[tag]
		if id := string(h.Value); len(ids) < maxRequestIDsPerTag && !slices.Contains(ids, id) {
			w.requests[tag] = append(ids, id)
			w.tracked++
		}
	}
}

// logCounted logs, at info level, the request ids whose announcements of
// tags the apply transaction res handled: one line per transaction, and
// none when no announcement carried an id (the sweeper's, a legacy post's).
// A transaction applies every outbox row of its tags, so a row committed
// before an earlier transaction of its tag was counted by that one; its
// announcement still gets a line here (events=0 when no row was left).
func (w *partitionWriter) logCounted(tags []int64, res ApplyResult) {
	if w.tracked == 0 {
		return
	}
	var ids []string
	for _, tag := range tags {
		if r, ok := w.requests[tag]; ok {
			ids = append(ids, r...)
			w.tracked -= len(r)
			delete(w.requests, tag)
		}
	}
	if len(ids) == 0 {
		return
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	w.log.Info("counted", "events", res.Applied, "tags", len(tags), "request_ids", ids)
}
