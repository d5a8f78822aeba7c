package counter

// Reconcile: the nightly job that finds tags whose stored count drifted from
// the number of posted works using them, and corrects them relatively
// (DESIGN.md invariants 5 and 6). See docs/reconcile.md for the why.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tagcount/tagcount/drafts/api"
	"golang.org/x/time/rate"
)

// ErrReconcileRunning is returned when a reconcile run is asked for while
// another one, on any worker using the same database, is still running.
var ErrReconcileRunning = errors.New("a reconcile run is already in progress")

// ErrReconcileRunNotFound is returned by Report for an id that names no run.
var ErrReconcileRunNotFound = errors.New("reconcile run not found")

// ErrReconcileTagNotFound is returned when a single-tag run names a tag that
// does not exist.
var ErrReconcileTagNotFound = errors.New("tag not found")

// States of a reconcile run, as stored in reconcile_runs.state.
const (
	ReconcileStateRunning = "running"
	ReconcileStateDone    = "done"
	ReconcileStateFailed  = "failed"
)

// Defaults used for zero ReconcileConfig fields.
const (
	ReconcileDefaultChunkSize            = 1000
	ReconcileDefaultCorrectionsPerSecond = 50
	ReconcileDefaultChunkPause           = 50 * time.Millisecond
)

// reconcileLockExpr names the advisory lock that makes runs one at a time.
// GET_LOCK names are server-wide, so the name carries a digest of the
// database: two deployments (or two tests) on one server do not block each
// other, and it stays under the 64-character limit.
const reconcileLockExpr = "CONCAT('tagcount_reconcile:', LEFT(MD5(COALESCE(DATABASE(), '')), 32))"

// ReconcileConfig configures a Reconciler. Zero values take the defaults
// above; a negative ChunkPause means no pause.
type ReconcileConfig struct {
	DB *sql.DB
	// ChunkSize is how many tags (by id) one consistent snapshot reads.
	ChunkSize int
	// CorrectionsPerSecond caps how fast corrections are written.
	CorrectionsPerSecond float64
	// ChunkPause is slept between chunks so the scan leaves room for traffic.
	ChunkPause time.Duration
	// ReconcileApply reports whether corrections may be written (the flag
	// tagcount.reconcile-apply). nil means on. It is asked at the start of a
	// run (false makes the run a dry run) and before each chunk's writes
	// (false mid-run stops further writes: a kill switch).
	ReconcileApply func() bool
	Logger         *slog.Logger
	// Registerer receives the reconcile metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Progress, if set, is called after each chunk with the tags scanned so
	// far and the number of tags there were when the run started.
	Progress func(scanned, total int64)
}

// ReconcileOptions says what one run does.
type ReconcileOptions struct {
	// DryRun computes and reports drift without correcting anything.
	DryRun bool
	// TagID, if non-zero, reconciles that tag only.
	TagID int64
}

// ReconcileReport is what a run found and did, as persisted in
// reconcile_runs. Drift is works − stored − pending for a tag; a positive
// drift means the stored count was too low.
type ReconcileReport struct {
	ID                int64
	State             string // running, done, failed
	DryRun            bool
	TagID             int64 // the only tag reconciled, 0 for all tags
	StartedAt         time.Time
	FinishedAt        time.Time // zero while running
	TagsScanned       int64
	TagsDrifted       int64
	TagsCorrected     int64
	TotalAbsDrift     int64
	LargestDrift      int64 // signed; the drift of largest absolute value
	LargestDriftTagID int64 // 0 when nothing drifted
	Error             string
}

// Duration is how long the run took, or has taken so far if still running.
func (rep ReconcileReport) Duration() time.Duration {
	if rep.FinishedAt.IsZero() {
		return time.Since(rep.StartedAt)
	}
	return rep.FinishedAt.Sub(rep.StartedAt)
}

// Reconciler runs reconcile jobs, one at a time across every process sharing
// its database.
type Reconciler struct {
	cfg     ReconcileConfig
	log     *slog.Logger
	metrics *reconcileMetrics

	baseCtx context.Context // background runs (Start) live under it
	cancel  context.CancelFunc
	mu      sync.Mutex
	closed  bool
	wg      sync.WaitGroup
}

// NewReconciler returns a Reconciler for cfg, filling in defaults.
func NewReconciler(cfg ReconcileConfig) *Reconciler {
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = ReconcileDefaultChunkSize
	}
	if cfg.CorrectionsPerSecond <= 0 {
		cfg.CorrectionsPerSecond = ReconcileDefaultCorrectionsPerSecond
	}
	if cfg.ChunkPause == 0 {
		cfg.ChunkPause = ReconcileDefaultChunkPause
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Reconciler{
		cfg:     cfg,
		log:     log.With("component", "reconcile"),
		metrics: newReconcileMetrics(cfg.Registerer),
		baseCtx: ctx,
		cancel:  cancel,
	}
}

// Close cancels runs started with Start and waits for them to stop; a
// cancelled run is recorded as failed. Start fails after Close.
func (r *Reconciler) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	return nil
}

// Run reconciles synchronously and returns the run's report. It returns
// ErrReconcileRunning if another run holds the lock, ErrReconcileTagNotFound
// for a single-tag run of a missing tag, and otherwise the error that stopped
// the run (the report, state failed, is returned with it when the run had
// started).
func (r *Reconciler) Run(ctx context.Context, opts ReconcileOptions) (ReconcileReport, error) {
	run, err := r.begin(ctx, opts)
	if err != nil {
		return ReconcileReport{}, err
	}
	return r.execute(ctx, run)
}

// Start begins a run in the background and returns its id at once. It
// returns ErrReconcileRunning if another run holds the lock. The run goes on
// until it finishes or Close is called, whatever happens to ctx.
func (r *Reconciler) Start(ctx context.Context, opts ReconcileOptions) (int64, error) {
	run, err := r.startBackground(ctx, opts)
	if err != nil {
		return 0, err
	}
	return run.id, nil
}

func (r *Reconciler) startBackground(ctx context.Context, opts ReconcileOptions) (*reconcileRun, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errors.New("reconcile: reconciler is closed")
	}
	r.wg.Add(1)
	r.mu.Unlock()
	run, err := r.begin(ctx, opts)
	if err != nil {
		r.wg.Done()
		return nil, err
	}
	go func() {
		defer r.wg.Done()
		r.execute(r.baseCtx, run)
	}()
	return run, nil
}

// reconcileRun is a run that holds the lock: conn is the dedicated session
// holding GET_LOCK. Every write of the run (corrections, its report row) goes
// through that session, so a write can only happen while the lock is held:
// if the session dies, the server frees the lock and the run's next statement
// fails instead of racing a new run.
type reconcileRun struct {
	id      int64
	opts    ReconcileOptions
	dryRun  bool
	conn    *sql.Conn
	started time.Time
}

// begin takes the lock, marks runs left 'running' by dead processes failed,
// and records the new run.
func (r *Reconciler) begin(ctx context.Context, opts ReconcileOptions) (*reconcileRun, error) {
	db := r.cfg.DB
	if opts.TagID < 0 {
		return nil, ErrReconcileTagNotFound
	}
	if opts.TagID > 0 {
		var one int
		err := db.QueryRowContext(ctx, "SELECT 1 FROM tags WHERE id = ?", opts.TagID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrReconcileTagNotFound
		}
		if err != nil {
			return nil, fmt.Errorf("reconcile: look up tag %d: %w", opts.TagID, err)
		}
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconcile: connect: %w", err)
	}
	var got sql.NullInt64
	// Wait up to half a second: a run records its outcome just before freeing the
	// lock, so a start right after a report reads done is not refused.
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK("+reconcileLockExpr+", 0.5)").Scan(&got); err != nil {
		reconcileDiscard(conn)
		return nil, fmt.Errorf("reconcile: take lock: %w", err)
	}
	if !got.Valid || got.Int64 != 1 {
		reconcileDiscard(conn)
		return nil, r.runningError(ctx)
	}
	fail := func(err error) (*reconcileRun, error) {
		reconcileRelease(conn)
		return nil, err
	}
	// We hold the lock, so any run still marked running lost its session:
	// its process died. Mark it so it does not read as running forever.
	if _, err := conn.ExecContext(ctx,
		"UPDATE reconcile_runs SET state = 'failed', finished_at = NOW(6), error = ? WHERE state = 'running'",
		"abandoned: the process running it stopped before it finished"); err != nil {
		return fail(fmt.Errorf("reconcile: mark abandoned runs: %w", err))
	}
	dry := opts.DryRun || !r.applyOn()
	res, err := conn.ExecContext(ctx,
		"INSERT INTO reconcile_runs (state, dry_run, only_tag_id) VALUES ('running', ?, ?)", dry, reconcileNullID(opts.TagID))
	if err != nil {
		return fail(fmt.Errorf("reconcile: record run: %w", err))
	}
	id, err := res.LastInsertId()
	if err != nil {
		return fail(fmt.Errorf("reconcile: record run: %w", err))
	}
	run := &reconcileRun{id: id, opts: opts, dryRun: dry, conn: conn}
	if err := conn.QueryRowContext(ctx, "SELECT started_at FROM reconcile_runs WHERE id = ?", id).Scan(&run.started); err != nil {
		return fail(fmt.Errorf("reconcile: record run: %w", err))
	}
	r.log.Info("reconcile run started", "run", id, "dry_run", dry, "tag", opts.TagID)
	return run, nil
}

// runningError returns ErrReconcileRunning, naming the run in progress when
// it can be found.
func (r *Reconciler) runningError(ctx context.Context) error {
	var id int64
	var started time.Time
	err := r.cfg.DB.QueryRowContext(ctx,
		"SELECT id, started_at FROM reconcile_runs WHERE state = 'running' ORDER BY id DESC LIMIT 1").Scan(&id, &started)
	if err != nil {
		return ErrReconcileRunning
	}
	return fmt.Errorf("%w (run %d, started %s)", ErrReconcileRunning, id, started.UTC().Format(time.RFC3339))
}

func (r *Reconciler) applyOn() bool {
	return r.cfg.ReconcileApply == nil || r.cfg.ReconcileApply()
}

// reconcileTagState is one tag's three terms read in one snapshot.
type reconcileTagState struct {
	tagID   int64
	works   int64 // COUNT of taggings of posted works
	stored  int64 // tag_counts.count, 0 without a row
	hasRow  bool
	pending int64 // SUM of tag_events.delta
}

func (s reconcileTagState) drift() int64 { return s.works - s.stored - s.pending }

// execute scans and corrects, then records the outcome and frees the lock.
func (r *Reconciler) execute(ctx context.Context, run *reconcileRun) (ReconcileReport, error) {
	rep := ReconcileReport{ID: run.id, State: ReconcileStateRunning, DryRun: run.dryRun, TagID: run.opts.TagID, StartedAt: run.started}
	err := r.scan(ctx, run, &rep)
	return r.finish(run, rep, err)
}

func (r *Reconciler) scan(ctx context.Context, run *reconcileRun, rep *ReconcileReport) error {
	conn := run.conn
	total := int64(1)
	if run.opts.TagID == 0 {
		if err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM tags").Scan(&total); err != nil {
			return fmt.Errorf("count tags: %w", err)
		}
	}
	r.progress(0, total)
	pace := newReconcilePacer(r.cfg.CorrectionsPerSecond)
	applying := !run.dryRun
	var after int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk, err := r.readChunk(ctx, conn, after, run.opts.TagID)
		if err != nil {
			return err
		}
		if len(chunk) == 0 {
			break
		}
		after = chunk[len(chunk)-1].tagID
		if applying && !r.applyOn() {
			applying = false
			r.log.Warn("reconcile-apply turned off during the run; no further corrections", "run", run.id)
		}
		for _, st := range chunk {
			d := st.drift()
			if d == 0 {
				continue
			}
			rep.TagsDrifted++
			rep.TotalAbsDrift += reconcileAbs(d)
			if reconcileAbs(d) > reconcileAbs(rep.LargestDrift) {
				rep.LargestDrift, rep.LargestDriftTagID = d, st.tagID
			}
			r.log.Debug("tag drifted", "run", run.id, "tag", st.tagID, "drift", d,
				"works", st.works, "stored", st.stored, "pending", st.pending)
			if !applying {
				continue
			}
			if err := pace.wait(ctx); err != nil {
				return err
			}
			if err := r.correct(ctx, conn, st, d); err != nil {
				return fmt.Errorf("correct tag %d by %+d: %w", st.tagID, d, err)
			}
			rep.TagsCorrected++
			r.metrics.corrections.Inc()
		}
		rep.TagsScanned += int64(len(chunk))
		if _, err := conn.ExecContext(ctx, `UPDATE reconcile_runs SET tags_scanned = ?, tags_drifted = ?,
			tags_corrected = ?, total_abs_drift = ?, largest_drift = ?, largest_drift_tag_id = ? WHERE id = ?`,
			rep.TagsScanned, rep.TagsDrifted, rep.TagsCorrected, rep.TotalAbsDrift, rep.LargestDrift,
			reconcileNullID(rep.LargestDriftTagID), run.id); err != nil {
			return fmt.Errorf("record progress: %w", err)
		}
		r.progress(rep.TagsScanned, total)
		if run.opts.TagID != 0 || len(chunk) < r.cfg.ChunkSize {
			break
		}
		if r.cfg.ChunkPause > 0 {
			if err := sleepCtx(ctx, r.cfg.ChunkPause); err != nil {
				return err
			}
		}
	}
	return nil
}

// reconcilePacer spaces corrections at most perSecond apart. The limiter has
// burst 1, so a chunk pause cannot bank tokens for a burst; and because a
// limiter schedules against ideal times, a wake-up that came late (a slow
// statement, a busy CPU) would be followed by one that comes early to catch
// up, so the pacer also keeps at least 1/perSecond between the actual starts
// of consecutive corrections. The rate is never exceeded over any window.
type reconcilePacer struct {
	limiter  *rate.Limiter
	interval time.Duration
	last     time.Time
}

func newReconcilePacer(perSecond float64) *reconcilePacer {
	return &reconcilePacer{
		limiter:  rate.NewLimiter(rate.Limit(perSecond), 1),
		interval: time.Duration(float64(time.Second) / perSecond),
	}
}

func (p *reconcilePacer) wait(ctx context.Context) error {
	if err := p.limiter.Wait(ctx); err != nil {
		return err
	}
	if !p.last.IsZero() {
		if d := time.Until(p.last.Add(p.interval)); d > 0 {
			if err := sleepCtx(ctx, d); err != nil {
				return err
			}
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

// readChunk reads, in one consistent snapshot, the three terms for the next
// chunk of tags after id after (or for tag only). The reads are non-locking:
// posting and flushing never wait on them.
func (r *Reconciler) readChunk(ctx context.Context, conn *sql.Conn, after, only int64) (chunk []reconcileTagState, err error) {
	if _, err := conn.ExecContext(ctx, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	defer func() {
		end := "COMMIT"
		if err != nil {
			end = "ROLLBACK"
		}
		if _, e := conn.ExecContext(context.WithoutCancel(ctx), end); e != nil && err == nil {
			err = fmt.Errorf("snapshot: %s: %w", end, e)
		}
	}()

	var rows *sql.Rows
	if only != 0 {
		rows, err = conn.QueryContext(ctx, "SELECT id FROM tags WHERE id = ?", only)
	} else {
		rows, err = conn.QueryContext(ctx, "SELECT id FROM tags WHERE id > ? ORDER BY id LIMIT ?", after, r.cfg.ChunkSize)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot: tags: %w", err)
	}
	index := map[int64]int{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("snapshot: tags: %w", err)
		}
		index[id] = len(chunk)
		chunk = append(chunk, reconcileTagState{tagID: id})
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("snapshot: tags: %w", err)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("snapshot: tags: %w", err)
	}
	if len(chunk) == 0 {
		return nil, nil
	}
	lo, hi := chunk[0].tagID, chunk[len(chunk)-1].tagID

	// Range scans of taggings_tag (tag_id, work_id) with a primary-key probe
	// of works each; tag_counts by primary key; tag_events_tag.
	terms := []struct {
		name  string
		query string
		set   func(st *reconcileTagState, v int64)
	}{
		{"works", `SELECT tg.tag_id, COUNT(*) FROM taggings tg STRAIGHT_JOIN works w ON w.id = tg.work_id
			WHERE tg.tag_id BETWEEN ? AND ? GROUP BY tg.tag_id`,
			func(st *reconcileTagState, v int64) { st.works = v }},
		{"stored", `SELECT tag_id, count FROM tag_counts WHERE tag_id BETWEEN ? AND ?`,
			func(st *reconcileTagState, v int64) { st.stored, st.hasRow = v, true }},
		{"pending", `SELECT tag_id, CAST(SUM(delta) AS SIGNED) FROM tag_events WHERE tag_id BETWEEN ? AND ? GROUP BY tag_id`,
			func(st *reconcileTagState, v int64) { st.pending = v }},
	}
	for _, term := range terms {
		rows, err := conn.QueryContext(ctx, term.query, lo, hi)
		if err != nil {
			return nil, fmt.Errorf("snapshot: %s: %w", term.name, err)
		}
		for rows.Next() {
			var id, v int64
			if err := rows.Scan(&id, &v); err != nil {
				rows.Close()
				return nil, fmt.Errorf("snapshot: %s: %w", term.name, err)
			}
			if i, ok := index[id]; ok { // rows of ids with no tags row are not ours to judge
				term.set(&chunk[i], v)
			}
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("snapshot: %s: %w", term.name, err)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("snapshot: %s: %w", term.name, err)
		}
	}
	return chunk, nil
}

// correct applies one relative correction as its own autocommit statement,
// so it holds the row lock for one statement only. Deadlock and lock-wait
// timeouts roll the statement back whole, so retrying them cannot apply a
// correction twice; any other error stops the run (never retried: a write
// whose outcome is unknown must not be repeated).
func (r *Reconciler) correct(ctx context.Context, conn *sql.Conn, st reconcileTagState, drift int64) error {
	for attempt := 1; ; attempt++ {
		var res sql.Result
		var err error
		if st.hasRow {
			res, err = conn.ExecContext(ctx, "UPDATE tag_counts SET count = count + ? WHERE tag_id = ?", drift, st.tagID)
		}
		if !st.hasRow || (err == nil && reconcileNoRows(res)) {
			_, err = conn.ExecContext(ctx,
				"INSERT INTO tag_counts (tag_id, count) VALUES (?, ?) ON DUPLICATE KEY UPDATE count = count + ?",
				st.tagID, drift, drift)
		}
		if err == nil {
			return nil
		}
		if attempt < 4 && api.IsLockConflict(err) {
			r.log.Warn("reconcile correction rolled back; retrying", "tag", st.tagID, "attempt", attempt, "err", err)
			continue
		}
		return err
	}
}

func reconcileNoRows(res sql.Result) bool {
	n, err := res.RowsAffected()
	return err == nil && n == 0
}

// finish records the run's outcome, updates the metrics and frees the lock.
func (r *Reconciler) finish(run *reconcileRun, rep ReconcileReport, runErr error) (ReconcileReport, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep.State = ReconcileStateDone
	if runErr != nil {
		rep.State = ReconcileStateFailed
		rep.Error = runErr.Error()
		if len(rep.Error) > 1000 {
			rep.Error = rep.Error[:1000]
		}
	}
	const q = `UPDATE reconcile_runs SET state = ?, finished_at = NOW(6), tags_scanned = ?, tags_drifted = ?,
		tags_corrected = ?, total_abs_drift = ?, largest_drift = ?, largest_drift_tag_id = ?, error = ?
		WHERE id = ? AND state = 'running'`
	args := []any{rep.State, rep.TagsScanned, rep.TagsDrifted, rep.TagsCorrected, rep.TotalAbsDrift,
		rep.LargestDrift, reconcileNullID(rep.LargestDriftTagID), reconcileNullString(rep.Error), run.id}
	// Record the outcome before freeing the lock: a running row with a free
	// lock then always means a dead run.
	if _, err := run.conn.ExecContext(ctx, q, args...); err != nil {
		if _, err2 := r.cfg.DB.ExecContext(ctx, q, args...); err2 != nil {
			r.log.Error("reconcile: could not record the run's outcome", "run", run.id, "err", err2)
		}
	}
	reconcileRelease(run.conn)
	if stored, err := r.Report(ctx, run.id); err == nil {
		rep = stored
	} else {
		rep.FinishedAt = time.Now().UTC()
	}
	r.metrics.observe(rep)
	if runErr != nil {
		r.log.Error("reconcile run failed", "run", rep.ID, "err", runErr, "scanned", rep.TagsScanned,
			"drifted", rep.TagsDrifted, "corrected", rep.TagsCorrected)
		return rep, fmt.Errorf("reconcile run %d: %w", rep.ID, runErr)
	}
	r.log.Info("reconcile run done", "run", rep.ID, "dry_run", rep.DryRun, "scanned", rep.TagsScanned,
		"drifted", rep.TagsDrifted, "corrected", rep.TagsCorrected, "total_abs_drift", rep.TotalAbsDrift,
		"largest_drift", rep.LargestDrift, "largest_drift_tag", rep.LargestDriftTagID, "duration", rep.Duration())
	return rep, nil
}

// Report returns the report of run id, or ErrReconcileRunNotFound. A run
// still marked running whose lock is free lost its process; it is marked
// failed here rather than reported as running forever.
func (r *Reconciler) Report(ctx context.Context, id int64) (ReconcileReport, error) {
	rep, err := r.readReport(ctx, id)
	if err != nil || rep.State != ReconcileStateRunning {
		return rep, err
	}
	// The run's outcome is recorded before its lock is freed, so a free lock
	// here means nobody will ever finish this row.
	if _, err := r.cfg.DB.ExecContext(ctx, `UPDATE reconcile_runs SET state = 'failed', finished_at = NOW(6), error = ?
		WHERE id = ? AND state = 'running' AND IS_FREE_LOCK(`+reconcileLockExpr+`) = 1`,
		"abandoned: the process running it stopped before it finished", id); err != nil {
		return ReconcileReport{}, fmt.Errorf("reconcile: report %d: %w", id, err)
	}
	return r.readReport(ctx, id)
}

func (r *Reconciler) readReport(ctx context.Context, id int64) (ReconcileReport, error) {
	var rep ReconcileReport
	var onlyTag, largestTag sql.NullInt64
	var finished sql.NullTime
	var errText sql.NullString
	err := r.cfg.DB.QueryRowContext(ctx, `SELECT id, state, dry_run, only_tag_id, started_at, finished_at,
		tags_scanned, tags_drifted, tags_corrected, total_abs_drift, largest_drift, largest_drift_tag_id, error
		FROM reconcile_runs WHERE id = ?`, id).Scan(&rep.ID, &rep.State, &rep.DryRun, &onlyTag, &rep.StartedAt,
		&finished, &rep.TagsScanned, &rep.TagsDrifted, &rep.TagsCorrected, &rep.TotalAbsDrift, &rep.LargestDrift,
		&largestTag, &errText)
	if errors.Is(err, sql.ErrNoRows) {
		return ReconcileReport{}, ErrReconcileRunNotFound
	}
	if err != nil {
		return ReconcileReport{}, fmt.Errorf("reconcile: report %d: %w", id, err)
	}
	rep.TagID = onlyTag.Int64
	rep.LargestDriftTagID = largestTag.Int64
	rep.FinishedAt = finished.Time
	rep.Error = errText.String
	return rep, nil
}

// reconcileRelease frees the lock and closes the session. The session is
// discarded rather than returned to the pool, so a RELEASE_LOCK that failed
// can never leave a pooled connection holding the lock.
func reconcileRelease(conn *sql.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn.ExecContext(ctx, "DO RELEASE_LOCK("+reconcileLockExpr+")")
	reconcileDiscard(conn)
}

// reconcileDiscard closes conn's underlying connection instead of pooling it.
func reconcileDiscard(conn *sql.Conn) {
	conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}

func reconcileAbs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

func reconcileNullID(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}

func reconcileNullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
