// Package reconcile is the nightly job that finds tags whose stored count
// drifted from the number of posted works using them, and corrects them
// relatively (docs/design.md invariants 5 and 6), rate-limited, one run at a
// time across every process sharing the database. It also holds the
// conservation snapshot, which tests and the load generator use to check
// counts against an independent recount. See docs/reconcile.md for the why.
package reconcile

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/loop"
)

// ErrRunning is returned when a reconcile run is asked for while
// another one, on any worker using the same database, is still running.
var ErrRunning = errors.New("a reconcile run is already in progress")

// ErrRunNotFound is returned by FindReport for an id that names no run.
var ErrRunNotFound = errors.New("reconcile run not found")

// ErrTagNotFound is returned when a single-tag run names a tag that
// does not exist.
var ErrTagNotFound = errors.New("tag not found")

// States of a reconcile run, as stored in reconcile_runs.state.
const (
	StateRunning = "running"
	StateDone    = "done"
	StateFailed  = "failed"
)

// Defaults used for zero Config fields.
const (
	DefaultChunkSize            = 1000
	DefaultChunkUses            = 200_000
	DefaultCorrectionsPerSecond = 50
	DefaultChunkPause           = 50 * time.Millisecond
)

// lockExpr names the advisory lock that makes runs one at a time.
// GET_LOCK names are server-wide, so the name carries a digest of the
// database: two deployments (or two tests) on one server do not block each
// other, and it stays under the 64-character limit.
const lockExpr = "CONCAT('tagcount_reconcile:', LEFT(MD5(COALESCE(DATABASE(), '')), 32))"

// Config configures a Reconciler. DB is required; every other zero field
// takes its default (WithDefaults) or is off; a negative ChunkPause means
// no pause.
type Config struct {
	// DB is the primary: the lock, the corrections and the reports.
	DB *migrations.DB
	// ReadDB, if set, is where the snapshots are read (a replica), so a run
	// over a large archive loads the primary with its corrections only.
	// Relative corrections stay right on a lagging replica (see
	// docs/reconcile.md); a run waits until the replica has seen its own
	// start. Default DB.
	ReadDB *migrations.DB
	// ChunkSize is how many tags (by id) one consistent snapshot reads at
	// most.
	ChunkSize int
	// ChunkUses cuts a chunk short where its tags' stored uses (count and
	// filter count) pass it, so one snapshot's statements read about that
	// many taggings and filings at most (a tag with more is a chunk of its
	// own): on an archive, a chunk of the first thousand ids would read a
	// third of every tagging in one statement, longer than the driver's
	// read timeout at a million works.
	ChunkUses int64
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

// Options says what one run does; with no scope it covers every tag.
type Options struct {
	// DryRun computes and reports drift without correcting anything.
	DryRun bool
	// TagID, if non-zero, reconciles that tag only.
	TagID int64
	// Type, if set, limits the run to tags of that type.
	Type string
	// TagIDs, if set, limits the run to these tags.
	TagIDs []int64
}

// scope describes o's limits for the run's report ("" for every tag).
func (o Options) scope() string {
	var parts []string
	if o.Type != "" {
		parts = append(parts, "type "+o.Type)
	}
	if len(o.TagIDs) > 0 {
		parts = append(parts, fmt.Sprintf("%d tags", len(o.TagIDs)))
	}
	return strings.Join(parts, ", ")
}

// Report is what a run found and did, as persisted in
// reconcile_runs. Drift is works − stored − pending for a tag; a positive
// drift means the stored count was too low.
type Report struct {
	ID            int64
	State         string // running, done, failed
	DryRun        bool
	TagID         int64 // the only tag reconciled, 0 for all tags
	StartedAt     time.Time
	FinishedAt    time.Time // zero while running
	TagsScanned   int64
	TagsDrifted   int64
	TagsCorrected int64
	TotalAbsDrift int64 // of count (logged-in readers)
	// TotalAbsPublicDrift is the same for public_count,
	// TotalAbsFilterDrift and TotalAbsPublicFilterDrift for filter_count
	// and public_filter_count.
	TotalAbsPublicDrift       int64
	TotalAbsFilterDrift       int64
	TotalAbsPublicFilterDrift int64
	LargestDrift              int64 // signed; the count drift of largest absolute value
	LargestDriftTagID         int64 // 0 when nothing drifted
	// NegativeCounts is how many tags had a negative stored number: a bug
	// somewhere, always reported (log, metric) and corrected.
	NegativeCounts int64
	Scope          string // the run's limits beyond TagID, "" for none
	Error          string
}

// Duration is how long the run took, or has taken so far if still running.
func (rep Report) Duration() time.Duration {
	if rep.FinishedAt.IsZero() {
		return time.Since(rep.StartedAt)
	}
	return rep.FinishedAt.Sub(rep.StartedAt)
}

// Reconciler runs reconcile jobs, one at a time across every process sharing
// its database.
type Reconciler struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	baseCtx context.Context // background runs (Start) live under it
	cancel  context.CancelFunc
	mu      sync.Mutex
	closed  bool
	wg      sync.WaitGroup
}

// WithDefaults returns c with its zero ChunkSize, ChunkUses,
// CorrectionsPerSecond, ChunkPause and Logger set to their defaults: the
// one place Config's defaults are applied.
func (c Config) WithDefaults() Config {
	c.ChunkSize = loop.OrDefault(c.ChunkSize, DefaultChunkSize)
	c.ChunkUses = loop.OrDefault(c.ChunkUses, DefaultChunkUses)
	c.CorrectionsPerSecond = loop.OrDefault(c.CorrectionsPerSecond, DefaultCorrectionsPerSecond)
	if c.ChunkPause == 0 {
		c.ChunkPause = DefaultChunkPause
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// New returns a Reconciler for cfg with its defaults, or an error when
// cfg.DB is missing.
func New(cfg Config) (*Reconciler, error) {
	cfg = cfg.WithDefaults()
	if cfg.DB == nil {
		return nil, errors.New("reconcile: Config needs a DB")
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Reconciler{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "reconcile"),
		metrics: newMetrics(cfg.Registerer),
		baseCtx: ctx,
		cancel:  cancel,
	}, nil
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
// ErrRunning if another run holds the lock, ErrTagNotFound
// for a single-tag run of a missing tag, and otherwise the error that stopped
// the run (the report, state failed, is returned with it when the run had
// started).
func (r *Reconciler) Run(ctx context.Context, opts Options) (Report, error) {
	run, err := r.begin(ctx, opts)
	if err != nil {
		return Report{}, err
	}
	return r.execute(ctx, run)
}

// Start begins a run in the background and returns its report as it
// starts (its id, and whether it is a dry run). It returns ErrRunning if
// another run holds the lock. The run goes on until it finishes or Close is
// called, whatever happens to ctx.
func (r *Reconciler) Start(ctx context.Context, opts Options) (Report, error) {
	run, err := r.startBackground(ctx, opts)
	if err != nil {
		return Report{}, err
	}
	return Report{ID: run.id, State: StateRunning, DryRun: run.dryRun, TagID: opts.TagID, StartedAt: run.started}, nil
}

func (r *Reconciler) startBackground(ctx context.Context, opts Options) (*session, error) {
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

// session is a run that holds the lock: conn is the dedicated session
// holding GET_LOCK. Every write of the run (corrections, its report row) goes
// through that session, so a write can only happen while the lock is held:
// if the session dies, the server frees the lock and the run's next statement
// fails instead of racing a new run.
type session struct {
	id      int64
	opts    Options
	dryRun  bool
	conn    *sql.Conn
	read    *sql.Conn // where snapshots are read: a session of its own on the primary, or a replica's
	started time.Time
}

// openSnapshots gives run the connection its snapshots are read on: a
// session of its own (the run's locked session writes the corrections
// meanwhile, so reading cannot share it), on the primary or on the replica
// once the replica has seen the run's start (so it has every correction of
// the runs before). It runs when the run does, not when it is started: a
// start answers at once, and a replica that does not catch up fails the
// run, in its report.
func (r *Reconciler) openSnapshots(ctx context.Context, run *session) error {
	db := r.cfg.DB
	if r.cfg.ReadDB != nil {
		db = r.cfg.ReadDB
	}
	read, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: connect to the read database: %w", err)
	}
	if db == r.cfg.DB {
		run.read = read
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, replicaWait)
	defer cancel()
	for {
		if seen, err := runExists(wctx, read, run.id); err == nil && seen {
			run.read = read
			return nil
		}
		if err := loop.Sleep(wctx, 100*time.Millisecond); err != nil {
			read.Close()
			return fmt.Errorf("reconcile: the read database has not caught up with the primary within %v", replicaWait)
		}
	}
}

// replicaWait bounds how long a run waits for the read database to catch
// up with the primary.
const replicaWait = time.Minute

// begin takes the lock, marks runs left 'running' by dead processes failed,
// and records the new run.
func (r *Reconciler) begin(ctx context.Context, opts Options) (*session, error) {
	db := r.cfg.DB
	if opts.TagID < 0 {
		return nil, ErrTagNotFound
	}
	if opts.TagID > 0 {
		ok, err := tags.Exists(ctx, db, opts.TagID)
		if err != nil {
			return nil, fmt.Errorf("reconcile: look up tag %d: %w", opts.TagID, err)
		}
		if !ok {
			return nil, ErrTagNotFound
		}
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconcile: connect: %w", err)
	}
	var got sql.NullInt64
	// Wait up to half a second: a run records its outcome just before freeing the
	// lock, so a start right after a report reads done is not refused.
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK("+lockExpr+", 0.5)").Scan(&got); err != nil {
		discard(conn)
		return nil, fmt.Errorf("reconcile: take lock: %w", err)
	}
	if !got.Valid || got.Int64 != 1 {
		discard(conn)
		return nil, r.runningError(ctx)
	}
	fail := func(err error) (*session, error) {
		release(conn)
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
	run := &session{opts: opts, dryRun: dry, conn: conn}
	run.read = conn // until openSnapshots, when the run starts
	if run.id, run.started, err = recordRun(ctx, conn, dry, opts); err != nil {
		return fail(fmt.Errorf("reconcile: record run: %w", err))
	}
	r.log.Info("reconcile run started", "run", run.id, "dry_run", dry, "tag", opts.TagID, "scope", opts.scope())
	return run, nil
}

// runningError returns ErrRunning, naming the run in progress when
// it can be found.
func (r *Reconciler) runningError(ctx context.Context) error {
	var id int64
	var started time.Time
	err := r.cfg.DB.QueryRowContext(ctx,
		"SELECT id, started_at FROM reconcile_runs WHERE state = 'running' ORDER BY id DESC LIMIT 1").Scan(&id, &started)
	if err != nil {
		return ErrRunning
	}
	return fmt.Errorf("%w (run %d, started %s)", ErrRunning, id, started.UTC().Format(time.RFC3339))
}

func (r *Reconciler) applyOn() bool {
	return r.cfg.ReconcileApply == nil || r.cfg.ReconcileApply()
}

// finish records the run's outcome, updates the metrics and frees the lock.
func (r *Reconciler) finish(run *session, rep Report, runErr error) (Report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep.State = StateDone
	if runErr != nil {
		rep.State = StateFailed
		rep.Error = strings.ToValidUTF8(runErr.Error(), "\uFFFD")
		if len(rep.Error) > 1000 { // reconcile_runs.error is VARCHAR(1000): cut between characters
			rep.Error = strings.ToValidUTF8(rep.Error[:1000], "")
		}
	}
	// Record the outcome before freeing the lock: a running row with a free
	// lock then always means a dead run.
	if err := recordOutcome(ctx, run.conn, run.id, rep); err != nil {
		if err2 := recordOutcome(ctx, r.cfg.DB, run.id, rep); err2 != nil {
			r.log.Error("reconcile: could not record the run's outcome", "run", run.id, "err", err2)
		}
	}
	if run.read != run.conn {
		run.read.Close()
	}
	release(run.conn)
	if stored, err := r.FindReport(ctx, run.id); err == nil {
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

// FindReport returns the report of run id, or ErrRunNotFound. A run still
// marked running whose lock is free lost its process; it is marked failed
// here rather than reported as running forever.
func (r *Reconciler) FindReport(ctx context.Context, id int64) (Report, error) {
	rep, err := readReport(ctx, r.cfg.DB, id)
	if err != nil || rep.State != StateRunning {
		return rep, err
	}
	// The run's outcome is recorded before its lock is freed, so a free lock
	// here means nobody will ever finish this row.
	if _, err := r.cfg.DB.ExecContext(ctx, `UPDATE reconcile_runs SET state = 'failed', finished_at = NOW(6), error = ?
		WHERE id = ? AND state = 'running' AND IS_FREE_LOCK(`+lockExpr+`) = 1`,
		"abandoned: the process running it stopped before it finished", id); err != nil {
		return Report{}, fmt.Errorf("reconcile: report %d: %w", id, err)
	}
	return readReport(ctx, r.cfg.DB, id)
}

// release frees the lock and closes the session. The session is
// discarded rather than returned to the pool, so a RELEASE_LOCK that failed
// can never leave a pooled connection holding the lock.
func release(conn *sql.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn.ExecContext(ctx, "DO RELEASE_LOCK("+lockExpr+")")
	discard(conn)
}

// discard closes conn's underlying connection instead of pooling it.
func discard(conn *sql.Conn) {
	conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

func nullID(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}
