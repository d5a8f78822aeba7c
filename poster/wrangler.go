package poster

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"golang.org/x/time/rate"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/loop"
)

// Defaults of the wrangling jobs' runner.
const (
	// DefaultWrangleRowsPerTx is the most rows (work_filters rows inserted
	// or deleted, outbox rows) one transaction of a wrangling job writes.
	DefaultWrangleRowsPerTx = 500
	// DefaultWrangleRowsPerSecond is the most rows the wrangling jobs of
	// one process write in any one second.
	DefaultWrangleRowsPerSecond = 2000
	// DefaultWranglePoll is how often an idle runner looks for jobs.
	DefaultWranglePoll = time.Second
)

// WrangleCommit is one committed transaction of a wrangling job, as
// Config.OnWrangleCommit sees it.
type WrangleCommit struct {
	JobID      int64
	Works      int // works examined
	Changes    int // work_filters rows written
	Rows       int // rows written: work_filters and outbox rows
	Started    time.Time
	Committed  time.Time
	Finished   bool // the job is done
	Superseded bool // the job found itself superseded and stopped
}

// wrangler is a process's runner state: one rate limit for all its jobs.
type wrangler struct {
	perTx   int
	limiter *rate.Limiter
	wake    chan struct{}
	poll    time.Duration
}

// newWrangler makes the rate limit of cfg's settings (defaults applied). Both settings are
// hard ceilings: before each transaction a job takes its maximum, perTx
// tokens, from a bucket that holds at most perTx (the burst) and refills
// at perSecond − perTx a second. The transactions that start in any one
// second can take at most a full bucket and one second's refill, perTx +
// (perSecond − perTx) = perSecond rows, and none writes more than perTx.
// A perSecond not above perTx leaves no refill, so perTx is halved to fit.
func newWrangler(cfg Config) *wrangler {
	perTx, perSecond := cfg.WrangleRowsPerTx, cfg.WrangleRowsPerSecond
	if perSecond <= perTx {
		perTx = max(1, perSecond/2)
	}
	return &wrangler{perTx: perTx, limiter: rate.NewLimiter(rate.Limit(perSecond-perTx), perTx),
		wake: make(chan struct{}, 1), poll: cfg.WranglePoll}
}

// wakeWrangler tells this process's runner a job was created.
func (p *Poster) wakeWrangler() {
	select {
	case p.wrangle.wake <- struct{}{}:
	default:
	}
}

// RunWrangler runs wrangling jobs until ctx ends: every poll interval, and
// at once when this process creates one. It returns nil. A job another
// process runs is left to it; a job whose process died is taken over where
// its last transaction left it.
func (p *Poster) RunWrangler(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-p.wrangle.wake:
		}
		if err := p.RunWranglingJobs(ctx); err != nil && ctx.Err() == nil {
			p.log.WarnContext(ctx, "wrangling job failed; retrying at the next poll", "err", err)
		}
		p.observeJobs(ctx)
		t.Reset(p.wrangle.poll)
	}
}

// RunWranglingJobs runs every running job that no other process runs, one
// after the other, each to its end. It returns the first error, or ctx's.
func (p *Poster) RunWranglingJobs(ctx context.Context) error {
	ids, err := runningJobs(ctx, p.cfg.JobDB)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := p.runJob(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

func runningJobs(ctx context.Context, q migrations.Querier) ([]int64, error) {
	return migrations.Collect(ctx, q, migrations.ScanInt64, "SELECT id FROM wrangling_jobs WHERE state = 'running' ORDER BY id")
}

// jobLock names a job's advisory lock; names are server-wide, so it
// carries a digest of the database.
const jobLock = "CONCAT('tagcount-wrangle:', LEFT(MD5(COALESCE(DATABASE(), '')), 16), ':', ?)"

// runJob runs job id to its end unless another session holds its lock.
// Its transactions run on the session that holds the lock: if the session
// dies, the server frees the lock and rolls the transaction back, and the
// next runner resumes from the last committed cursor.
func (p *Poster) runJob(ctx context.Context, id int64) error {
	conn, err := p.cfg.JobDB.Conn(ctx)
	if err != nil {
		return err
	}
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK("+jobLock+", 0)", id).Scan(&got); err != nil || got.Int64 != 1 {
		discard(conn)
		return err // nil: another process runs it
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		conn.ExecContext(rctx, "DO RELEASE_LOCK("+jobLock+")", id)
		discard(conn)
	}()
	for attempt := 0; ; {
		if err := p.wrangle.limiter.WaitN(ctx, p.wrangle.perTx); err != nil {
			return err
		}
		done, err := p.wrangleBatch(ctx, conn, id)
		switch {
		case err == nil && done:
			return nil
		case err == nil:
			attempt = 0
		case migrations.IsLockConflict(err) && attempt < maxLockRetries && ctx.Err() == nil:
			attempt++
			if err := loop.Sleep(ctx, time.Duration(1+rand.IntN(10*attempt))*time.Millisecond); err != nil {
				return err
			}
		default:
			return fmt.Errorf("wrangling job %d: %w", id, err)
		}
	}
}

// discard closes conn's underlying connection instead of pooling it, so a
// lock that failed to be released cannot stay with a pooled connection.
func discard(conn *sql.Conn) {
	conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}

// jobBatch is what one transaction of a job writes.
type jobBatch struct {
	filings  []filing
	deltas   []counter.Delta
	cursor   int64 // the last work examined
	examined int
	changes  int // work_filters rows
	rows     int // work_filters rows and outbox rows
}

// wrangleBatch runs one transaction of job id on conn: it re-files the
// next works tagged with the job's tag, as many as fit in the rows of one
// transaction, and moves the job's cursor past them; with no work left it
// marks the job done. It reports whether the job is over (done, or
// superseded by a later switch of its tag).
func (p *Poster) wrangleBatch(ctx context.Context, conn *sql.Conn, id int64) (over bool, err error) {
	c := WrangleCommit{JobID: id, Started: time.Now()}
	err = p.commitAndAnnounce(ctx, conn, PathNew, func(ctx context.Context, tx *sql.Tx) ([]counter.Event, error) {
		var events []counter.Event
		events, over, err = p.wrangleTx(ctx, tx, &c)
		return events, err
	})
	if err != nil {
		return false, err
	}
	c.Committed = time.Now()
	p.observeCommit(c)
	return over, nil
}

// wrangleTx is wrangleBatch's transaction: it records in c what it did,
// and returns the events to announce and whether the job is over.
func (p *Poster) wrangleTx(ctx context.Context, tx *sql.Tx, c *WrangleCommit) ([]counter.Event, bool, error) {
	var tag, after int64
	var state string
	err := tx.QueryRowContext(ctx, "SELECT tag_id, state, after_work_id FROM wrangling_jobs WHERE id = ? FOR UPDATE", c.JobID).
		Scan(&tag, &state, &after)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && state != JobRunning) {
		c.Superseded = state == JobSuperseded
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	works, err := migrations.SumsByID(ctx, tx, `SELECT work_id, work_id FROM taggings WHERE tag_id = ? AND work_id > ?
		ORDER BY work_id LIMIT ?`, tag, after, max(1, p.wrangle.perTx/4))
	if err != nil {
		return nil, false, err
	}
	if len(works) == 0 {
		_, err := tx.ExecContext(ctx, "UPDATE wrangling_jobs SET state = 'done', finished_at = NOW(6) WHERE id = ?", c.JobID)
		c.Finished = true
		return nil, true, err
	}
	b, err := p.refile(ctx, tx, slices.Sorted(maps.Keys(works)))
	if err != nil {
		return nil, false, err
	}
	c.Works, c.Changes, c.Rows = b.examined, b.changes, b.rows
	events, err := p.writeBatch(ctx, tx, c.JobID, b)
	return events, false, err
}

// refile locks the drafts of works (ascending ids), reads their states
// and the canonical tags of their tags (shared locks, as posting does),
// and returns the filings and outbox rows that file the first of them
// under their canonical tags, stopping before the rows would pass one
// transaction's limit.
func (p *Poster) refile(ctx context.Context, tx *sql.Tx, works []int64) (jobBatch, error) {
	var b jobBatch
	draftOf, err := migrations.SumsByID(ctx, tx, migrations.IDList("SELECT id, draft_id FROM works WHERE id IN (", works, ")"))
	if err != nil {
		return b, err
	}
	if _, err := p.drafts.LockForSync(ctx, tx, slices.Sorted(maps.Values(draftOf))); err != nil {
		return b, err
	}
	states, err := workStates(ctx, tx, works)
	if err != nil {
		return b, err
	}
	var ids []int64
	for _, st := range states {
		ids = append(ids, st.tags...)
	}
	slices.Sort(ids)
	canonical, err := tags.Canonicals(ctx, tx, slices.Compact(ids))
	if err != nil {
		return b, err
	}
	for _, w := range works {
		var f filing
		var deltas []counter.Delta
		if st := states[w]; st != nil { // else deleted meanwhile
			now := *st
			now.filters = distinct(st.tags, canonical)
			f, deltas = refiling(w, st, &now), change(w, st, &now)
		}
		rows := f.rows() + len(deltas)
		if b.examined > 0 && b.rows+rows > p.wrangle.perTx {
			break
		}
		if f.rows() > 0 {
			b.filings = append(b.filings, f)
		}
		b.deltas = append(b.deltas, deltas...)
		b.cursor, b.examined, b.changes, b.rows = w, b.examined+1, b.changes+f.rows(), b.rows+rows
	}
	return b, nil
}

// writeBatch writes b's filings and outbox rows (always the outbox:
// wrangling is background work, never a hot-row bump) and moves job id's
// cursor and figures, in tx. It returns the events to announce.
func (p *Poster) writeBatch(ctx context.Context, tx *sql.Tx, id int64, b jobBatch) ([]counter.Event, error) {
	if _, err := writeFilings(ctx, tx, b.filings); err != nil {
		return nil, err
	}
	events, err := counter.WriteOutbox(ctx, p.cfg.JobDB, tx, b.deltas)
	if err != nil {
		return nil, err
	}
	_, err = tx.ExecContext(ctx, `UPDATE wrangling_jobs SET after_work_id = ?, works_examined = works_examined + ?,
		filter_changes = filter_changes + ?, rows_written = rows_written + ?, max_rows_tx = GREATEST(max_rows_tx, ?)
		WHERE id = ?`, b.cursor, b.examined, b.changes, b.rows, b.rows, id)
	return events, err
}

// observeCommit records a job's transaction in the metrics and hands it to
// the configured hook.
func (p *Poster) observeCommit(c WrangleCommit) {
	m := p.metrics
	if c.Works > 0 || c.Rows > 0 {
		m.wrangleRows.Add(float64(c.Rows))
		m.wrangleWorks.Add(float64(c.Works))
		m.wrangleChanges.Add(float64(c.Changes))
		m.wrangleRowsPerTx.Observe(float64(c.Rows))
	}
	if p.cfg.OnWrangleCommit != nil {
		p.cfg.OnWrangleCommit(c)
	}
}

// observeJobs sets the jobs-by-state gauge from the table.
func (p *Poster) observeJobs(ctx context.Context) {
	rows, err := p.cfg.JobDB.QueryContext(ctx, "SELECT state, COUNT(*) FROM wrangling_jobs GROUP BY state")
	if err != nil {
		return
	}
	defer rows.Close()
	n := map[string]float64{JobRunning: 0, JobDone: 0, JobSuperseded: 0}
	for rows.Next() {
		var state string
		var count float64
		if rows.Scan(&state, &count) == nil {
			n[state] = count
		}
	}
	for state, count := range n {
		p.metrics.wrangleJobs.WithLabelValues(state).Set(count)
	}
}
