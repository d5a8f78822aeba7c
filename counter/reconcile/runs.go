package reconcile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations"
)

// The reconcile's own tables: reconcile_runs (one row per run: its report)
// and reconcile_corrections (one row per drifted tag a run found).

// Correction is one drifted tag a run found: its stored numbers (all four),
// the true ones (stored + drift), and when the run corrected it (zero: not
// corrected, a dry run or apply turned off).
type Correction struct {
	TagID       int64
	Stored      counter.Sum
	True        counter.Sum
	Drift       counter.Sum
	CorrectedAt time.Time
}

// recordRun inserts a running run and returns its id and start time.
func recordRun(ctx context.Context, q migrations.Querier, dry bool, opts Options) (int64, time.Time, error) {
	res, err := q.ExecContext(ctx, "INSERT INTO reconcile_runs (state, dry_run, only_tag_id, scope) VALUES ('running', ?, ?, ?)",
		dry, nullID(opts.TagID), nullString(opts.scope()))
	if err != nil {
		return 0, time.Time{}, err
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, time.Time{}, err
	}
	var started time.Time
	err = q.QueryRowContext(ctx, "SELECT started_at FROM reconcile_runs WHERE id = ?", id).Scan(&started)
	return id, started, err
}

// runExists reports whether run id is visible on q.
func runExists(ctx context.Context, q migrations.Querier, id int64) (bool, error) {
	return migrations.Exists(ctx, q, "SELECT 1 FROM reconcile_runs WHERE id = ?", id)
}

// recordProgress writes rep's figures to the run's row.
func recordProgress(ctx context.Context, q migrations.Querier, id int64, rep *Report) error {
	_, err := q.ExecContext(ctx, `UPDATE reconcile_runs SET tags_scanned = ?, tags_drifted = ?, tags_corrected = ?,
		total_abs_drift = ?, total_abs_public_drift = ?, total_abs_filter_drift = ?, total_abs_public_filter_drift = ?,
		largest_drift = ?, largest_drift_tag_id = ?, negative_counts = ?
		WHERE id = ?`, rep.TagsScanned, rep.TagsDrifted, rep.TagsCorrected, rep.TotalAbsDrift, rep.TotalAbsPublicDrift,
		rep.TotalAbsFilterDrift, rep.TotalAbsPublicFilterDrift, rep.LargestDrift, nullID(rep.LargestDriftTagID), rep.NegativeCounts, id)
	return err
}

// recordOutcome finishes the run's row with rep.
func recordOutcome(ctx context.Context, q migrations.Querier, id int64, rep Report) error {
	if err := recordProgress(ctx, q, id, &rep); err != nil {
		return err
	}
	_, err := q.ExecContext(ctx, `UPDATE reconcile_runs SET state = ?, finished_at = NOW(6), error = ?
		WHERE id = ? AND state = 'running'`, rep.State, nullString(rep.Error), id)
	return err
}

func readReport(ctx context.Context, q migrations.Querier, id int64) (Report, error) {
	var rep Report
	var onlyTag, largestTag sql.NullInt64
	var finished sql.NullTime
	var errText, scope sql.NullString
	err := q.QueryRowContext(ctx, `SELECT id, state, dry_run, only_tag_id, scope, started_at, finished_at,
		tags_scanned, tags_drifted, tags_corrected, total_abs_drift, total_abs_public_drift, total_abs_filter_drift,
		total_abs_public_filter_drift, largest_drift, largest_drift_tag_id, negative_counts, error
		FROM reconcile_runs WHERE id = ?`, id).Scan(&rep.ID, &rep.State, &rep.DryRun, &onlyTag, &scope, &rep.StartedAt,
		&finished, &rep.TagsScanned, &rep.TagsDrifted, &rep.TagsCorrected, &rep.TotalAbsDrift, &rep.TotalAbsPublicDrift,
		&rep.TotalAbsFilterDrift, &rep.TotalAbsPublicFilterDrift, &rep.LargestDrift, &largestTag, &rep.NegativeCounts, &errText)
	if errors.Is(err, sql.ErrNoRows) {
		return Report{}, ErrRunNotFound
	}
	if err != nil {
		return Report{}, fmt.Errorf("reconcile: report %d: %w", id, err)
	}
	rep.TagID = onlyTag.Int64
	rep.LargestDriftTagID = largestTag.Int64
	rep.FinishedAt = finished.Time
	rep.Error = errText.String
	rep.Scope = scope.String
	return rep, nil
}

// recordCorrection applies one correction of st on conn and records it, in
// one transaction, so a correction is never written without its record.
func recordCorrection(ctx context.Context, conn *sql.Conn, run int64, st TagState) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := counter.CorrectCount(ctx, tx, st.TagID, st.Drift()); err != nil {
		return err
	}
	if err := insertCorrections(ctx, tx, run, []TagState{st}, true); err != nil {
		return err
	}
	return migrations.Commit(ctx, tx)
}

// insertCorrections records the drifted states of a run, corrected now or
// not.
func insertCorrections(ctx context.Context, q migrations.Querier, run int64, states []TagState, corrected bool) error {
	if len(states) == 0 {
		return nil
	}
	args := make([]any, 0, 15*len(states))
	for _, st := range states {
		d, truth, n := st.Drift(), st.truth(), st.Stored
		args = append(args, run, st.TagID, n.Count, truth.Count, d.Count, n.Public, truth.Public, d.Public,
			n.Filter, truth.Filter, d.Filter, n.PublicFilter, truth.PublicFilter, d.PublicFilter, corrected)
	}
	_, err := q.ExecContext(ctx, `INSERT INTO reconcile_corrections (run_id, tag_id, stored_count, true_count, drift,
		stored_public, true_public, public_drift, stored_filter, true_filter, filter_drift, stored_public_filter,
		true_public_filter, public_filter_drift, corrected_at) VALUES `+
		migrations.Placeholders("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, IF(?, NOW(6), NULL))", ",", len(states)), args...)
	return err
}

// Corrections returns up to limit of run id's corrections with a tag id
// greater than after, in tag id order: a page of the run's findings. It
// returns ErrRunNotFound for an unknown run.
func (r *Reconciler) Corrections(ctx context.Context, id, after int64, limit int) ([]Correction, error) {
	if ok, err := runExists(ctx, r.cfg.DB, id); err != nil || !ok {
		if err == nil {
			err = ErrRunNotFound
		}
		return nil, err
	}
	out, err := migrations.Collect(ctx, r.cfg.DB, func(rows *sql.Rows) (c Correction, err error) {
		var at sql.NullTime
		err = rows.Scan(&c.TagID, &c.Stored.Count, &c.True.Count, &c.Drift.Count, &c.Stored.Public, &c.True.Public,
			&c.Drift.Public, &c.Stored.Filter, &c.True.Filter, &c.Drift.Filter, &c.Stored.PublicFilter, &c.True.PublicFilter,
			&c.Drift.PublicFilter, &at)
		c.CorrectedAt = at.Time
		return c, err
	}, `SELECT tag_id, stored_count, true_count, drift, stored_public, true_public,
		public_drift, stored_filter, true_filter, filter_drift, stored_public_filter, true_public_filter, public_filter_drift,
		corrected_at FROM reconcile_corrections WHERE run_id = ? AND tag_id > ? ORDER BY tag_id LIMIT ?`,
		id, after, limit)
	if err != nil {
		return nil, fmt.Errorf("reconcile: corrections of run %d: %w", id, err)
	}
	return out, nil
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return strings.ToValidUTF8(s, "")
}
