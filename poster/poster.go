// Package poster turns drafts into posted works, on two paths. It owns the
// works and taggings tables, and the posting transaction, which exists once
// and serves both paths.
//
// The new path records a post on the draft row (state queued), enqueues an
// asynq job after that commits, and the job writes the work, its taggings and
// one tag_events outbox row per tag delta in one transaction that updates no
// count row. After commit it announces the events for the counter.
//
// The legacy path is what the archive used to do, kept as the rollback target
// and the benchmark baseline: it posts inside the HTTP request and bumps
// tag_counts for each tag, in the order the author listed them, inside the
// posting transaction.
//
// Both paths make a work match its draft's content by the same diff, so a
// work posted on one path can be edited or deleted on the other and every
// count stays right (docs/design.md invariants 2 to 5).
package poster

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/loop"
)

// Posting paths, as reported in Result.Path and metrics.
const (
	PathLegacy = "legacy"
	PathNew    = "new"
)

// StateDeleted is the state a Result reports for a deleted work.
const StateDeleted = "deleted"

// Defaults of Config and of the posting job server.
const (
	DefaultQueue        = "tagcount"
	DefaultRequeueAfter = 10 * time.Second
	DefaultMaxRetry     = 20
	// DefaultJobConcurrency is how many posting jobs a worker runs at once.
	DefaultJobConcurrency = 256
	// DefaultJobPoll is how often an idle worker checks Redis for jobs
	// (asynq's default of 1s would add up to a second to every post).
	DefaultJobPoll = 20 * time.Millisecond
)

// JobServer is how a worker runs the posting jobs: the job server's
// concurrency and how often it polls when idle. Zero fields take their
// defaults (WithDefaults).
type JobServer struct {
	Concurrency int           // default DefaultJobConcurrency
	Poll        time.Duration // default DefaultJobPoll
}

// WithDefaults returns j with its zero (or negative) fields set to their
// defaults: the one place JobServer's defaults are applied.
func (j JobServer) WithDefaults() JobServer {
	j.Concurrency = loop.OrDefault(j.Concurrency, DefaultJobConcurrency)
	j.Poll = loop.OrDefault(j.Poll, DefaultJobPoll)
	return j
}

// ErrWorkNotFound: the work does not exist, belongs to another author, or
// its delete is under way.
var ErrWorkNotFound = errors.New("work not found")

// PathChooser decides per author which path a post takes; the flags package
// implements it with a sticky gradual rollout.
type PathChooser interface {
	NewPostingPath(authorID int64) bool
}

// PostObserver is told of every Post a Poster answers: the draft, the path
// it took, when it was asked, how long the answer took and its error. The
// guarded rollout (flags/rollout) records these to compare the paths. It
// must not block.
type PostObserver interface {
	ObservePost(ctx context.Context, draftID int64, path string, start time.Time, took time.Duration, err error)
}

// FixedPath is a PathChooser that always answers the same.
type FixedPath bool

// NewPostingPath implements PathChooser.
func (f FixedPath) NewPostingPath(int64) bool { return bool(f) }

// Announcer tells the counter about committed outbox rows. It must not block
// for long and never fails the caller: a lost announcement only delays a
// count, because the sweeper re-announces old outbox rows.
type Announcer interface {
	Announce(ctx context.Context, events []counter.Event)
}

// Config configures a Poster. DB is required; every other zero field takes
// its default (WithDefaults) or is off, as its comment says.
type Config struct {
	// DB serves authors' requests (and the legacy path's posting).
	DB *migrations.DB
	// JobDB, if set, is the pool posting jobs use, so authors' requests
	// never wait for a connection behind a backlog of jobs. Default DB.
	JobDB *migrations.DB
	// Writes, if set, is a pool from migrations.OpenManualCommit for the
	// authors' own draft writes (see drafts.Store.Writes).
	Writes *migrations.DB
	Queue  *asynq.Client // enqueues post jobs; required for the new path
	// Inspector, if set, lets an enqueue replace an archived job of the
	// same draft version (a failed post posted again) and run a job
	// waiting for its retry now.
	Inspector *asynq.Inspector
	QueueName string // asynq queue; default DefaultQueue
	// BulkAfter sends the jobs of an author with this many drafts queued
	// (the new one included) to BulkQueue(QueueName) (see fair.go); 0
	// puts every job on QueueName, first come first served (the service's
	// --bulk-after defaults to DefaultBulkAfter).
	BulkAfter int
	// NewTags, when set, is the new-tag quota content saved through the
	// poster (an edit of a work, the bulk path) is charged against; nil
	// means no quota.
	NewTags   *tags.Quota
	Paths     PathChooser // nil: every author takes the new path
	Announcer Announcer   // nil: events are not announced (the sweeper still finds them)
	// Observer, if set, is told of every Post (the guarded rollout's samples).
	Observer PostObserver
	// RequeueAfter is how long a draft may stay queued before the requeuer
	// enqueues its job again (Redis was down, or the job was lost); default
	// DefaultRequeueAfter. MaxRetry is a posting job's retries (default
	// DefaultMaxRetry).
	RequeueAfter time.Duration
	MaxRetry     int
	// RequeueEvery is how often RunRequeuer looks (default
	// DefaultRequeueEvery), OwedEvery how often RunOwed does (default
	// DefaultOwedEvery).
	RequeueEvery, OwedEvery time.Duration
	// Committers and MaxBatch tune the posting jobs' group commit
	// (defaults DefaultCommitters, DefaultMaxBatch).
	Committers int
	MaxBatch   int
	// EnqueueWindow is how long, under load, a Post's job waits for
	// others to share its enqueue (enqueuer.go; default
	// DefaultEnqueueWindow; negative: no wait).
	EnqueueWindow time.Duration
	// Limit is the adaptive limit on the drafts a second posting jobs
	// post, which yields the database to authors' requests (aimd.go).
	Limit AIMDConfig
	// WrangleRowsPerTx and WrangleRowsPerSecond cap the rows the wrangling
	// jobs of this process write per transaction and per second (defaults
	// DefaultWrangleRowsPerTx, DefaultWrangleRowsPerSecond); WranglePoll is
	// how often an idle runner looks for jobs.
	WrangleRowsPerTx     int
	WrangleRowsPerSecond int
	WranglePoll          time.Duration
	// OnWrangleCommit, if set, is called after each transaction of a
	// wrangling job (the load generator's commit log).
	OnWrangleCommit func(WrangleCommit)
	// Logger defaults to slog.Default(), Now to time.Now; a nil Registerer
	// registers nothing.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Poster posts drafts, edits and deletes works, and runs the posting job.
type Poster struct {
	cfg     Config
	drafts  *drafts.Store
	tags    *tags.Resolver
	log     *slog.Logger
	metrics *metrics
	wrangle *wrangler

	commitOnce sync.Once
	commit     *committer // started by the first posting job
	enq        *enqueuer  // the group enqueue of Posts' jobs
	limit      *aimd      // the adaptive posting limit, fed by Posts' latency

	owedMu sync.Mutex
	owed   map[int64]owedJob // by draft id: jobs that could not be enqueued

	scanAfter int64 // the requeuer's place in its walk over stale drafts
}

// Result says what a post, edit or delete did. Async results are done
// shortly, by a background job.
type Result struct {
	Async   bool
	State   string
	Path    string // empty when nothing was done (already posted)
	WorkID  int64
	DraftID int64
}

// WithDefaults returns c with every zero field that has a default set to
// it (JobDB to DB): the one place Config's defaults are applied.
func (c Config) WithDefaults() Config {
	c.JobDB = cmp.Or(c.JobDB, c.DB)
	c.QueueName = cmp.Or(c.QueueName, DefaultQueue)
	c.RequeueAfter = loop.OrDefault(c.RequeueAfter, DefaultRequeueAfter)
	c.MaxRetry = loop.OrDefault(c.MaxRetry, DefaultMaxRetry)
	c.RequeueEvery = loop.OrDefault(c.RequeueEvery, DefaultRequeueEvery)
	c.OwedEvery = loop.OrDefault(c.OwedEvery, DefaultOwedEvery)
	c.Committers = loop.OrDefault(c.Committers, DefaultCommitters)
	c.MaxBatch = loop.OrDefault(c.MaxBatch, DefaultMaxBatch)
	c.WrangleRowsPerTx = loop.OrDefault(c.WrangleRowsPerTx, DefaultWrangleRowsPerTx)
	c.WrangleRowsPerSecond = loop.OrDefault(c.WrangleRowsPerSecond, DefaultWrangleRowsPerSecond)
	c.WranglePoll = loop.OrDefault(c.WranglePoll, DefaultWranglePoll)
	if c.EnqueueWindow == 0 {
		c.EnqueueWindow = DefaultEnqueueWindow
	}
	c.EnqueueWindow = max(0, c.EnqueueWindow)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// New returns a Poster for cfg with its defaults, or an error when cfg.DB
// is missing.
func New(cfg Config) (*Poster, error) {
	cfg = cfg.WithDefaults()
	if cfg.DB == nil {
		return nil, errors.New("poster: Config needs a DB")
	}
	p := &Poster{cfg: cfg, drafts: &drafts.Store{DB: cfg.DB, Writes: cfg.Writes, NewTags: cfg.NewTags}, tags: tags.NewResolver(cfg.DB),
		log: cfg.Logger.With("component", "poster"), metrics: newMetrics(cfg.Registerer), wrangle: newWrangler(cfg), owed: make(map[int64]owedJob)}
	p.enq = &enqueuer{p: p}
	p.limit = newAIMD(cfg.Limit)
	return p, nil
}

// Close stops the group commit once no posting job runs (after the job
// server's shutdown). It never fails.
func (p *Poster) Close() error {
	p.commitOnce.Do(func() {}) // none started from here on
	if p.commit != nil {
		p.commit.close()
	}
	return nil
}

func (p *Poster) useNewPath(authorID int64) bool {
	return p.cfg.Paths == nil || p.cfg.Paths.NewPostingPath(authorID)
}

// PostDraft posts author's draft on the author's path. Posting a draft that is
// already queued or posted changes nothing and reports its state. It returns
// drafts.ErrNotFound for another author's draft.
func (p *Poster) PostDraft(ctx context.Context, authorID, draftID int64) (Result, error) {
	start := time.Now()
	if !p.useNewPath(authorID) {
		res, err := p.syncOne(ctx, p.cfg.DB, PathLegacy, request{draftID: draftID, authorID: authorID, post: true})
		p.metrics.observe(PathLegacy, start, err)
		p.observe(ctx, draftID, PathLegacy, start, err)
		return res, err
	}
	version, err := p.drafts.QueuePost(ctx, authorID, draftID)
	p.ObserveInteractive(time.Since(start))
	if errors.Is(err, drafts.ErrNotQueued) {
		d, ferr := p.drafts.FindDraftByID(ctx, authorID, draftID)
		if ferr != nil {
			return Result{}, ferr
		}
		// Already queued or posted: a double click or a retry.
		return Result{Async: d.State == drafts.StateQueued, State: d.State, WorkID: d.WorkID, DraftID: draftID}, nil
	}
	res, err := p.queued(ctx, queuedChange{authorID: authorID, draftID: draftID, version: version}, err)
	res.DraftID = draftID
	p.metrics.observe(PathNew, start, err)
	p.observe(ctx, draftID, PathNew, start, err)
	return res, err
}

// ObserveInteractive tells the adaptive posting limit how long an
// author's request took on the database posting jobs share (a Post's
// recording, a save): while these rise above their unloaded level,
// posting slows down.
func (p *Poster) ObserveInteractive(d time.Duration) { p.limit.observe(d) }

func (p *Poster) observe(ctx context.Context, draftID int64, path string, start time.Time, err error) {
	if p.cfg.Observer != nil {
		p.cfg.Observer.ObservePost(ctx, draftID, path, start, time.Since(start), err)
	}
}

// UpdateWork makes author's work match c: +1/-1 for the tag difference. It
// returns ErrWorkNotFound for another author's work or one being deleted,
// and drafts.Store.Admit's errors (c is admitted once the work is known to
// be the author's).
func (p *Poster) UpdateWork(ctx context.Context, authorID, workID int64, c drafts.Content) (Result, error) {
	draftID, err := p.draftOfWork(ctx, authorID, workID)
	if err != nil {
		return Result{}, err
	}
	if err := p.drafts.Admit(ctx, authorID, nil, c); err != nil {
		return Result{}, err
	}
	if !p.useNewPath(authorID) {
		return workGone(p.syncOne(ctx, p.cfg.DB, PathLegacy, request{draftID: draftID, authorID: authorID, content: &c}))
	}
	version, err := p.drafts.QueueEdit(ctx, authorID, draftID, c)
	return p.queued(ctx, queuedChange{authorID: authorID, draftID: draftID, workID: workID, version: version}, err)
}

// DeleteWork deletes author's work; its tags' counts go down. It returns
// ErrWorkNotFound for another author's work or one already deleted.
func (p *Poster) DeleteWork(ctx context.Context, authorID, workID int64) (Result, error) {
	draftID, err := p.draftOfWork(ctx, authorID, workID)
	if err != nil {
		return Result{}, err
	}
	if !p.useNewPath(authorID) {
		return workGone(p.syncOne(ctx, p.cfg.DB, PathLegacy, request{draftID: draftID, authorID: authorID, delete: true}))
	}
	version, err := p.drafts.QueueDelete(ctx, authorID, draftID)
	return p.queued(ctx, queuedChange{authorID: authorID, draftID: draftID, workID: workID, version: version}, err)
}

// workGone reports a work whose draft disappeared under a change of it
// (another request deleted it meanwhile) as the work not found.
func workGone(res Result, err error) (Result, error) {
	if errors.Is(err, drafts.ErrNotFound) {
		return res, ErrWorkNotFound
	}
	return res, err
}

// queuedChange is a change the drafts store recorded as owed: the author's draft,
// its work (0 for a first post) and the version the job is for.
type queuedChange struct {
	authorID, draftID, workID, version int64
}

// queued finishes the change o (err is the store's answer to recording
// it): it enqueues the job, on the author's queue. The draft row is the
// record: if the enqueue fails, the requeuer enqueues the job later, so the
// answer is still "queued".
func (p *Poster) queued(ctx context.Context, o queuedChange, err error) (Result, error) {
	if errors.Is(err, drafts.ErrNotQueued) {
		return Result{}, ErrWorkNotFound // deleted, or its delete is under way
	}
	if err != nil {
		return Result{}, err
	}
	queue := p.queueFor(ctx, o.authorID)
	if err := p.enqueueBatched(ctx, queue, o.draftID, o.version); err != nil {
		p.log.WarnContext(ctx, "post job not enqueued; the requeuer will retry", "draft_id", o.draftID, "err", err)
		p.metrics.enqueueFailures.Inc()
		p.owe(ctx, queue, o.draftID, o.version)
	}
	return Result{Async: true, State: drafts.StateQueued, Path: PathNew, WorkID: o.workID, DraftID: o.draftID}, nil
}
