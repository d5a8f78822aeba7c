package rollout

import (
	"cmp"
	"context"
	"database/sql"
	"slices"
	"time"

	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
)

// Defaults of DBMeasures.
const (
	// DefaultSampleLimit is how many of a window's latest Posts the
	// percentiles are read from.
	DefaultSampleLimit = 20_000
	// DefaultLagCap is where counting the outbox's rows stops.
	DefaultLagCap = 1_000_000
	// SampleRetention is how long Post samples are kept (each Recorder
	// drops older ones once a minute).
	SampleRetention = time.Hour
	// DefaultLookback is how long before a window its still-uncounted
	// posts keep counting in freshness.
	DefaultLookback = 10 * time.Minute
)

// DBMeasures reads the guards' measures from the database, so they cover
// every replica: the Post samples the API processes record, the outbox and
// the queued drafts. Each read also brings the samples up to date: a
// new-path post whose draft failed is marked failed, and one whose small
// tags' outbox rows are all applied is marked counted at the time of the
// read (so freshness is known to within the runner's interval).
type DBMeasures struct {
	DB *migrations.DB
	// SmallBelow is the count under which a tag is small (the counter's
	// medium tier starts there); default 1,000.
	SmallBelow int64
	// SampleLimit and LagCap: defaults above.
	SampleLimit int
	LagCap      int64
	// Lookback: a new-path post made this long before the window began
	// (default DefaultLookback) and still not counted counts in the
	// window's freshness with its age now, so a counter that stopped late
	// in a step fails the next one, whatever step the post was made in.
	// Keep it above the freshness bound.
	Lookback time.Duration
	// Retrying, if set, names the drafts whose posting job failed and is
	// being retried (poster.Retrying): their posts count as failed while
	// they retry, not only once the job gives up, which with the job's
	// retries would be a minute and more after the new path broke.
	Retrying RetryingDrafts
}

// RetryingDrafts lists up to limit drafts whose posting job failed at
// least once and has not ended. It returns an error when it cannot read
// them.
type RetryingDrafts interface {
	RetryingDrafts(ctx context.Context, limit int) ([]int64, error)
}

// Measure implements Measures. It returns the first error of its reads.
func (m DBMeasures) Measure(ctx context.Context, since, now time.Time) (Reading, error) {
	if err := m.update(ctx, since.Add(-cmp.Or(m.Lookback, DefaultLookback)), now); err != nil {
		return Reading{}, err
	}
	var r Reading
	err := migrations.EachRow(ctx, m.DB, func(rows *sql.Rows) error {
		var path string
		var posts, errs int64
		if err := rows.Scan(&path, &posts, &errs); err != nil {
			return err
		}
		if path == "new" {
			r.NewPosts, r.NewErrors = posts, errs
		} else {
			r.LegacyPosts, r.LegacyErrors = posts, errs
		}
		return nil
	}, `SELECT path, COUNT(*), COALESCE(SUM(ok = 0), 0) FROM rollout_samples WHERE requested_at >= ? GROUP BY path`, since)
	if err != nil {
		return Reading{}, err
	}
	if err := m.percentiles(ctx, &r, since, now); err != nil {
		return Reading{}, err
	}
	if err := m.outbox(ctx, &r, now); err != nil {
		return Reading{}, err
	}
	r.Backlog, _, err = (&drafts.Store{DB: m.DB}).Backlog(ctx)
	return r, err
}

// update marks the new-path samples since from (the window's and the
// look-back's) failed (their post job gave
// up, or is being retried) or counted (no outbox row of a small tag of
// their work is left). The posting and counting tables are only read, by
// plain SELECTs that take no locks (an UPDATE joining them would lock
// outbox rows and gaps, and hold up the very counter it measures); the
// samples are then written by primary key.
func (m DBMeasures) update(ctx context.Context, from, now time.Time) error {
	failed, err := migrations.Collect(ctx, m.DB, migrations.ScanInt64, `SELECT s.id FROM rollout_samples s JOIN drafts d ON d.id = s.draft_id
		WHERE s.path = 'new' AND s.ok = 1 AND s.counted_at IS NULL AND s.requested_at >= ? AND d.state = 'failed' LIMIT 5000`, from)
	if err != nil {
		return err
	}
	retrying, err := m.retrying(ctx, from)
	if err != nil {
		return err
	}
	if err := m.setByID(ctx, "ok = 0", append(failed, retrying...)); err != nil {
		return err
	}
	// Every look-up is by key: the work by its draft, its taggings by the
	// work, the outbox rows by tag (a small tag has few).
	counted, err := migrations.Collect(ctx, m.DB, migrations.ScanInt64, `SELECT s.id FROM rollout_samples s JOIN works w ON w.draft_id = s.draft_id
		WHERE s.path = 'new' AND s.ok = 1 AND s.counted_at IS NULL AND s.requested_at >= ?
		AND NOT EXISTS (SELECT 1 FROM taggings t JOIN tag_events e ON e.tag_id = t.tag_id AND e.work_id = t.work_id
			LEFT JOIN tag_counts c ON c.tag_id = t.tag_id WHERE t.work_id = w.id AND COALESCE(c.count, 0) < ?) LIMIT 5000`,
		from, cmp.Or(m.SmallBelow, 1000))
	if err != nil {
		return err
	}
	return m.setByID(ctx, "counted_at = ?", counted, now)
}

// retrying returns the new-path samples since from not yet marked failed
// whose draft's posting job is being retried.
func (m DBMeasures) retrying(ctx context.Context, from time.Time) ([]int64, error) {
	if m.Retrying == nil {
		return nil, nil
	}
	drafts, err := m.Retrying.RetryingDrafts(ctx, 5000)
	if err != nil || len(drafts) == 0 {
		return nil, err
	}
	return migrations.Collect(ctx, m.DB, migrations.ScanInt64, migrations.IDList(`SELECT id FROM rollout_samples
		WHERE path = 'new' AND ok = 1 AND requested_at >= ? AND draft_id IN (`, drafts, ")"), from)
}

func (m DBMeasures) setByID(ctx context.Context, set string, ids []int64, args ...any) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := m.DB.ExecContext(ctx, migrations.IDList("UPDATE rollout_samples SET "+set+" WHERE id IN (", ids, ")"), args...)
	return err
}

// percentiles reads the window's latest new-path Posts: their answer times
// and, for those that did not fail, the time to their count (their age so
// far while not counted).
//
// A post not counted whose draft is gone leaves the freshness measure (its
// answer time stays): deleting a work deletes its draft, and the delete's
// own outbox rows take back what the post added, so no count will ever
// include the post; there is no time to its count to measure, and its age
// would grow until the guard failed a healthy step. The delete's rows are
// still watched by the outbox guards.
func (m DBMeasures) percentiles(ctx context.Context, r *Reading, since, now time.Time) error {
	var answers, fresh []time.Duration
	err := migrations.EachRow(ctx, m.DB, func(rows *sql.Rows) error {
		var answerUS, freshUS int64
		var ok, measured bool
		if err := rows.Scan(&answerUS, &ok, &measured, &freshUS); err != nil {
			return err
		}
		answers = append(answers, time.Duration(answerUS)*time.Microsecond)
		if ok && measured {
			fresh = append(fresh, time.Duration(freshUS)*time.Microsecond)
		}
		return nil
	}, `SELECT s.answer_us, s.ok, s.counted_at IS NOT NULL OR d.id IS NOT NULL,
		TIMESTAMPDIFF(MICROSECOND, s.requested_at, COALESCE(s.counted_at, ?))
		FROM rollout_samples s LEFT JOIN drafts d ON d.id = s.draft_id
		WHERE s.path = 'new' AND s.requested_at >= ? ORDER BY s.requested_at DESC LIMIT ?`, now, since, cmp.Or(m.SampleLimit, DefaultSampleLimit))
	if err != nil {
		return err
	}
	earlier, err := m.uncountedBefore(ctx, since, now)
	if err != nil {
		return err
	}
	fresh = append(fresh, earlier...)
	r.NewPostP99 = P99(answers)
	r.FreshnessP99, r.FreshnessSamples = P99(fresh), int64(len(fresh))
	return nil
}

// uncountedBefore returns the ages now of the look-back's new-path posts
// (made before the window) that did not fail and are still not counted,
// less those whose draft is gone (percentiles says why).
func (m DBMeasures) uncountedBefore(ctx context.Context, since, now time.Time) ([]time.Duration, error) {
	us, err := migrations.Collect(ctx, m.DB, migrations.ScanInt64, `SELECT TIMESTAMPDIFF(MICROSECOND, s.requested_at, ?)
		FROM rollout_samples s JOIN drafts d ON d.id = s.draft_id
		WHERE s.path = 'new' AND s.ok = 1 AND s.counted_at IS NULL AND s.requested_at >= ? AND s.requested_at < ? LIMIT ?`,
		now, since.Add(-cmp.Or(m.Lookback, DefaultLookback)), since, cmp.Or(m.SampleLimit, DefaultSampleLimit))
	ages := make([]time.Duration, len(us))
	for i, v := range us {
		ages[i] = time.Duration(v) * time.Microsecond
	}
	return ages, err
}

func (m DBMeasures) outbox(ctx context.Context, r *Reading, now time.Time) error {
	var oldest sql.NullTime
	err := m.DB.QueryRowContext(ctx, "SELECT MIN(created_at) FROM tag_events").Scan(&oldest)
	if err != nil {
		return err
	}
	if oldest.Valid {
		r.OutboxAge = max(now.Sub(oldest.Time), 0)
	}
	return m.DB.QueryRowContext(ctx, "SELECT COUNT(*) FROM (SELECT 1 FROM tag_events LIMIT ?) q",
		cmp.Or(m.LagCap, DefaultLagCap)).Scan(&r.OutboxRows)
}

// P99 returns the 99th percentile of d (nearest rank), 0 for none.
func P99(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*99+99)/100 - 1
	return s[min(max(i, 0), len(s)-1)]
}
