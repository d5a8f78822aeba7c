package reconcile

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations"
)

// execute scans and corrects, then records the outcome and frees the lock.
func (r *Reconciler) execute(ctx context.Context, run *session) (Report, error) {
	rep := Report{ID: run.id, State: StateRunning, DryRun: run.dryRun, TagID: run.opts.TagID, StartedAt: run.started}
	err := r.scan(ctx, run, &rep)
	return r.finish(run, rep, err)
}

// scan walks the tags chunk by chunk, each chunk read in one consistent
// snapshot, and corrects what drifted.
func (r *Reconciler) scan(ctx context.Context, run *session, rep *Report) error {
	total := int64(1)
	if run.opts.TagID == 0 {
		var err error
		if total, err = counter.CountTags(ctx, run.conn); err != nil {
			return fmt.Errorf("count tags: %w", err)
		}
	}
	r.progress(0, total)
	pace := newPacer(r.cfg.CorrectionsPerSecond)
	applying := !run.dryRun
	var after int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk, err := r.readChunk(ctx, run.conn, after, run.opts.TagID)
		if err != nil || len(chunk) == 0 {
			return err
		}
		after = chunk[len(chunk)-1].TagID
		if applying && !r.applyOn() {
			applying = false
			r.log.Warn("reconcile-apply turned off during the run; no further corrections", "run", run.id)
		}
		if err := r.correctChunk(ctx, run, chunk, applying, pace, rep); err != nil {
			return err
		}
		if err := r.recordProgress(ctx, run, rep); err != nil {
			return err
		}
		r.progress(rep.TagsScanned, total)
		if run.opts.TagID != 0 || len(chunk) < r.cfg.ChunkSize {
			return nil
		}
		if r.cfg.ChunkPause > 0 {
			if err := counter.Sleep(ctx, r.cfg.ChunkPause); err != nil {
				return err
			}
		}
	}
}

// readChunk reads the snapshot of the next chunk of tags after id after, or
// of tag only.
func (r *Reconciler) readChunk(ctx context.Context, conn *sql.Conn, after, only int64) ([]TagState, error) {
	if only != 0 {
		return ReadSnapshot(ctx, conn, []int64{only})
	}
	ids, err := counter.TagIDs(ctx, conn, after, r.cfg.ChunkSize)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	return ReadSnapshot(ctx, conn, ids)
}

// correctChunk reports and (when applying) corrects the drifted tags of one
// chunk, paced.
func (r *Reconciler) correctChunk(ctx context.Context, run *session, chunk []TagState, applying bool, pace *pacer, rep *Report) error {
	for _, st := range chunk {
		rep.TagsScanned++
		d := st.Drift()
		if d.IsZero() {
			continue
		}
		rep.TagsDrifted++
		rep.TotalAbsDrift += abs(d.Count)
		rep.TotalAbsPublicDrift += abs(d.Public)
		if abs(d.Count) > abs(rep.LargestDrift) {
			rep.LargestDrift, rep.LargestDriftTagID = d.Count, st.TagID
		}
		r.log.Debug("tag drifted", "run", run.id, "tag", st.TagID, "drift", d,
			"works", st.Works, "stored", st.Stored, "pending", st.Pending)
		if !applying {
			continue
		}
		if err := pace.wait(ctx); err != nil {
			return err
		}
		if err := r.correct(ctx, run.conn, st, d); err != nil {
			return fmt.Errorf("correct tag %d by %+d (public %+d): %w", st.TagID, d.Count, d.Public, err)
		}
		rep.TagsCorrected++
		r.metrics.corrections.Inc()
	}
	return nil
}

func (r *Reconciler) recordProgress(ctx context.Context, run *session, rep *Report) error {
	if _, err := run.conn.ExecContext(ctx, `UPDATE reconcile_runs SET tags_scanned = ?, tags_drifted = ?,
		tags_corrected = ?, total_abs_drift = ?, largest_drift = ?, largest_drift_tag_id = ? WHERE id = ?`,
		rep.TagsScanned, rep.TagsDrifted, rep.TagsCorrected, rep.TotalAbsDrift, rep.LargestDrift,
		nullID(rep.LargestDriftTagID), run.id); err != nil {
		return fmt.Errorf("record progress: %w", err)
	}
	return nil
}

// correct applies one relative correction as its own autocommit statement
// on the run's session. Deadlock and lock-wait timeouts roll the statement
// back whole, so retrying them cannot apply a correction twice; any other
// error stops the run (never retried: a write whose outcome is unknown must
// not be repeated).
func (r *Reconciler) correct(ctx context.Context, conn *sql.Conn, st TagState, drift counter.Sum) error {
	for attempt := 1; ; attempt++ {
		err := counter.CorrectCount(ctx, conn, st.TagID, drift, st.HasRow)
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
		if err := counter.Sleep(ctx, time.Until(p.last.Add(p.interval))); err != nil {
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
