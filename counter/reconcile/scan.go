package reconcile

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/loop"
)

// execute scans and corrects, then records the outcome and frees the lock.
func (r *Reconciler) execute(ctx context.Context, run *session) (Report, error) {
	rep := Report{ID: run.id, State: StateRunning, DryRun: run.dryRun, TagID: run.opts.TagID, Scope: run.opts.scope(),
		StartedAt: run.started}
	err := r.openSnapshots(ctx, run)
	if err == nil {
		err = r.scan(ctx, run, &rep)
	}
	return r.finish(run, rep, err)
}

// scan walks the run's tags chunk by chunk, each chunk read in one
// consistent snapshot, and records and (when applying) corrects what
// drifted. Reading and correcting overlap: a reader goroutine reads the
// snapshots on the run's read session, up to readAhead chunks ahead, while
// this one paces the corrections on the locked session. A run so takes
// about the longer of its scan and its corrections at the budget, not
// their sum; a relative correction stays right however long after its
// snapshot it is applied (docs/reconcile.md).
func (r *Reconciler) scan(ctx context.Context, run *session, rep *Report) error {
	total, err := r.total(ctx, run)
	if err != nil {
		return fmt.Errorf("count tags: %w", err)
	}
	r.progress(0, total)
	ctx, cancel := context.WithCancel(ctx)
	chunks := make(chan chunkRead, readAhead)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.read(ctx, run, chunks)
	}()
	defer func() {
		cancel()
		<-done // the read session is not used after scan returns
	}()
	pace := newPacer(r.cfg.CorrectionsPerSecond)
	applying := !run.dryRun
	for c := range chunks {
		if c.err != nil {
			return c.err
		}
		if applying && !r.applyOn() {
			applying = false
			r.log.Warn("reconcile-apply turned off during the run; no further corrections", "run", run.id)
		}
		rep.TagsScanned += c.tags
		if err := r.correctChunk(ctx, run, c.found, applying, pace, rep); err != nil {
			return err
		}
		if err := recordProgress(ctx, run.conn, run.id, rep); err != nil {
			return fmt.Errorf("record progress: %w", err)
		}
		r.progress(rep.TagsScanned, total)
	}
	return ctx.Err()
}

// readAhead is how many chunks the reader may have read ahead of the
// corrections. It bounds the run's memory (at most readAhead × ChunkSize
// tag states, when every tag drifted) and how stale a snapshot can be
// when its corrections are written.
const readAhead = 16

// chunkRead is one chunk as the reader hands it on: how many tags it
// covered, those that need a look (drifted, or a negative stored number),
// or the error that stopped the reading.
type chunkRead struct {
	tags  int64
	found []TagState
	err   error
}

// read reads the run's chunks, each in its own snapshot on run.read, and
// sends them on out, which it closes at the end (after an error, sent as
// the last chunk). Between chunks it pauses ChunkPause.
func (r *Reconciler) read(ctx context.Context, run *session, out chan<- chunkRead) {
	defer close(out)
	send := func(c chunkRead) bool {
		select {
		case out <- c:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var after int64
	for {
		ids, uses, last, err := r.nextChunk(ctx, run, after)
		if err != nil {
			send(chunkRead{err: err})
			return
		}
		if len(ids) == 0 {
			return
		}
		after = ids[len(ids)-1]
		states, err := readSnapshot(ctx, run.read, ids, slicesFor(ids, uses, r.cfg.ChunkUses))
		if err != nil {
			send(chunkRead{err: err})
			return
		}
		if !send(chunkRead{tags: int64(len(ids)), found: needLook(states)}) || last {
			return
		}
		if r.cfg.ChunkPause > 0 && loop.Sleep(ctx, r.cfg.ChunkPause) != nil {
			return
		}
	}
}

// needLook returns the states a run acts on: drifted, or with a negative
// stored number (reported even when it does not drift).
func needLook(states []TagState) []TagState {
	var out []TagState
	for _, st := range states {
		if n := st.Stored; !st.Drift().IsZero() || n.Count < 0 || n.Public < 0 || n.Filter < 0 || n.PublicFilter < 0 {
			out = append(out, st)
		}
	}
	return out
}

// total is how many tags the run covers, as it starts.
func (r *Reconciler) total(ctx context.Context, run *session) (int64, error) {
	switch o := run.opts; {
	case o.TagID != 0:
		return 1, nil
	case len(o.TagIDs) > 0:
		return int64(len(o.TagIDs)), nil
	}
	return tags.Count(ctx, run.read, run.opts.Type)
}

// nextChunk returns the ids of the run's next chunk of tags after id
// after, their stored uses, and whether no tag of the run comes after
// them.
func (r *Reconciler) nextChunk(ctx context.Context, run *session, after int64) (ids []int64, uses int64, last bool, err error) {
	o := run.opts
	if o.TagID == 0 && len(o.TagIDs) == 0 {
		return chunkAfter(ctx, run.read, o.Type, after, r.cfg.ChunkSize, r.cfg.ChunkUses)
	}
	listed := []int64{o.TagID}
	if o.TagID == 0 {
		listed = slices.Compact(slices.Sorted(slices.Values(o.TagIDs)))
	}
	i, _ := slices.BinarySearch(listed, after+1)
	listed = listed[i:]
	ids = listed[:min(len(listed), r.cfg.ChunkSize)]
	cut, uses, err := weigh(ctx, run.read, ids, r.cfg.ChunkUses)
	return cut, uses, len(cut) == len(listed), err
}

// chunkAfter returns the ids of up to size tags (of type typ, unless
// empty) after id after, cut by weigh; their stored uses; and whether no
// tag comes after them.
func chunkAfter(ctx context.Context, q migrations.Querier, typ string, after int64, size int, maxUses int64) ([]int64, int64, bool, error) {
	ids, err := tags.IDs(ctx, q, typ, after, size)
	if err != nil {
		return nil, 0, false, err
	}
	cut, uses, err := weigh(ctx, q, ids, maxUses)
	return cut, uses, len(ids) < size && len(cut) == len(ids), err
}

// weigh cuts ids (ascending) where their stored uses (count and filter
// count, read from q: about the taggings and filings their snapshot
// reads) pass maxUses, keeping at least the first tag, and returns the
// uses of those it kept. A snapshot's statements so read a bounded number
// of rows however the uses are spread over the ids (on an archive the
// first thousand ids, ratings, warnings and the largest fandoms, hold a
// third of all taggings); a tag with more uses than that is a chunk of its
// own, read in slices (readSnapshot).
func weigh(ctx context.Context, q migrations.Querier, ids []int64, maxUses int64) ([]int64, int64, error) {
	if len(ids) == 0 {
		return nil, 0, nil
	}
	stored, err := counter.StoredCounts(ctx, q, ids[0], ids[len(ids)-1])
	if err != nil {
		return nil, 0, fmt.Errorf("tag sizes: %w", err)
	}
	var uses int64
	for i, id := range ids {
		n := stored[id]
		u := max(n.Count, 0) + max(n.Filter, 0)
		if i > 0 && uses+u > maxUses {
			return ids[:i], uses, nil
		}
		uses += u
	}
	return ids, uses, nil
}

// slicesFor is how many work-id slices a chunk's works are read in: one,
// unless it is a single tag with more uses than maxUses.
func slicesFor(ids []int64, uses, maxUses int64) int {
	if len(ids) != 1 || uses <= maxUses {
		return 1
	}
	return int((uses + maxUses - 1) / maxUses)
}

// correctChunk reports, records and (when applying) corrects the drifted
// tags of one chunk (those needLook kept), paced.
func (r *Reconciler) correctChunk(ctx context.Context, run *session, chunk []TagState, applying bool, pace *pacer, rep *Report) error {
	var found []TagState
	for _, st := range chunk {
		if n := st.Stored; n.Count < 0 || n.Public < 0 || n.Filter < 0 || n.PublicFilter < 0 {
			rep.NegativeCounts++
			r.log.Error("a tag's stored count is negative: a bug somewhere; correcting it", "run", run.id, "tag", st.TagID,
				"count", n.Count, "public_count", n.Public, "filter_count", n.Filter, "public_filter_count", n.PublicFilter,
				"works", st.Works.Count)
		}
		d := st.Drift()
		if d.IsZero() {
			continue
		}
		rep.TagsDrifted++
		rep.TotalAbsDrift += abs(d.Count)
		rep.TotalAbsPublicDrift += abs(d.Public)
		rep.TotalAbsFilterDrift += abs(d.Filter)
		rep.TotalAbsPublicFilterDrift += abs(d.PublicFilter)
		if abs(d.Count) > abs(rep.LargestDrift) {
			rep.LargestDrift, rep.LargestDriftTagID = d.Count, st.TagID
		}
		r.log.Debug("tag drifted", "run", run.id, "tag", st.TagID, "drift", d.Count, "public_drift", d.Public,
			"filter_drift", d.Filter, "public_filter_drift", d.PublicFilter, "works", st.Works.Count, "stored", st.Stored.Count,
			"pending", st.Pending.Count)
		if !applying {
			found = append(found, st)
			continue
		}
		if err := pace.wait(ctx); err != nil {
			return err
		}
		if err := r.correct(ctx, run, st); err != nil {
			return fmt.Errorf("correct tag %d by %+d (public %+d, filter %+d, public filter %+d): %w", st.TagID, d.Count, d.Public,
				d.Filter, d.PublicFilter, err)
		}
		rep.TagsCorrected++
		r.metrics.corrections.Inc()
	}
	if err := insertCorrections(ctx, run.conn, run.id, found, false); err != nil {
		return fmt.Errorf("record drift: %w", err)
	}
	return nil
}

// correct applies and records one relative correction as its own short
// transaction on the run's session, so it holds the row lock briefly.
// Deadlock and lock-wait timeouts roll it back whole, so retrying them
// cannot apply a correction twice; any other error stops the run (never
// retried: a write whose outcome is unknown must not be repeated).
func (r *Reconciler) correct(ctx context.Context, run *session, st TagState) error {
	for attempt := 1; ; attempt++ {
		err := recordCorrection(ctx, run.conn, run.id, st)
		if err == nil || attempt >= 4 || !migrations.IsLockConflict(err) {
			return err
		}
		r.log.Warn("reconcile correction rolled back; retrying", "tag", st.TagID, "attempt", attempt, "err", err)
	}
}

// pacer keeps at least 1/perSecond between the actual starts of consecutive
// corrections, so the rate is never exceeded over any window, however late
// a wake-up came (a slow statement, a busy CPU), and a pause between chunks
// banks nothing for a burst.
type pacer struct {
	interval time.Duration
	last     time.Time
}

func newPacer(perSecond float64) *pacer {
	return &pacer{interval: time.Duration(float64(time.Second) / perSecond)}
}

func (p *pacer) wait(ctx context.Context) error {
	if !p.last.IsZero() {
		if err := loop.Sleep(ctx, time.Until(p.last.Add(p.interval))); err != nil {
			return err
		}
	}
	p.last = time.Now()
	return nil
}

func (r *Reconciler) progress(scanned, total int64) {
	if r.cfg.Progress != nil {
		r.cfg.Progress(scanned, total)
	}
}
