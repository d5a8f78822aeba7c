// Package poster turns drafts into posted works, on two paths.
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
// count stays right (DESIGN.md invariants 2 to 5).
package poster

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/drafts/api"
)

// Posting paths, as reported in PostResult.Path and metrics.
const (
	PathLegacy = "legacy"
	PathNew    = "new"
)

// PathChooser decides per author which path a post takes; the flags package
// implements it with a sticky gradual rollout.
type PathChooser interface {
	NewPostingPath(authorID int64) bool
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

// Config configures a Poster.
type Config struct {
	DB        *sql.DB
	Queue     *asynq.Client // enqueues post jobs; required for the new path
	QueueName string        // asynq queue; default "tagcount"
	Paths     PathChooser   // nil: every author takes the new path
	Announcer Announcer     // nil: events are not announced (the sweeper still finds them)
	// RequeueAfter is how long a draft may stay queued before the requeuer
	// enqueues its job again (Redis was down, or the job was lost).
	RequeueAfter time.Duration
	MaxRetry     int
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
	Now          func() time.Time
}

// Poster implements drafts.Poster and the post-draft job.
type Poster struct {
	cfg     Config
	drafts  *drafts.Store
	tags    *tagResolver
	log     *slog.Logger
	metrics *metrics

	autoincOnce sync.Once
	consecutive bool
}

// New returns a Poster. It panics on a nil DB, which is a wiring bug.
func New(cfg Config) *Poster {
	if cfg.DB == nil {
		panic("poster: nil DB")
	}
	if cfg.QueueName == "" {
		cfg.QueueName = "tagcount"
	}
	if cfg.RequeueAfter <= 0 {
		cfg.RequeueAfter = 30 * time.Second
	}
	if cfg.MaxRetry <= 0 {
		cfg.MaxRetry = 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Poster{cfg: cfg, drafts: &drafts.Store{DB: cfg.DB}, tags: newTagResolver(cfg.DB), log: cfg.Logger, metrics: newMetrics(cfg.Registerer)}
}

func (p *Poster) useNewPath(authorID int64) bool {
	return p.cfg.Paths == nil || p.cfg.Paths.NewPostingPath(authorID)
}

// PostDraft posts author's draft on the author's path. Posting a draft that is
// already queued or posted changes nothing and reports its state.
func (p *Poster) PostDraft(ctx context.Context, authorID, draftID int64) (drafts.PostResult, error) {
	start := time.Now()
	if !p.useNewPath(authorID) {
		res, err := p.sync(ctx, draftID, syncOpts{legacy: true, authorID: authorID, post: true})
		p.metrics.observe(PathLegacy, start, err)
		return res, err
	}
	res, err := p.queue(ctx, draftID, 0, `UPDATE drafts SET state = 'queued', queued_at = NOW(6),
		version = LAST_INSERT_ID(version)
		WHERE id = ? AND author_id = ? AND state IN ('draft', 'failed')`, draftID, authorID)
	if errors.Is(err, errNoRow) {
		d, ferr := p.drafts.FindDraftByID(ctx, authorID, draftID)
		if ferr != nil {
			return drafts.PostResult{}, ferr
		}
		// Already queued or posted: a double click or a retry.
		return drafts.PostResult{Async: d.State == drafts.StateQueued, State: d.State, WorkID: d.WorkID}, nil
	}
	p.metrics.observe(PathNew, start, err)
	return res, err
}

// UpdateWork makes author's work match c: +1/-1 for the tag difference.
func (p *Poster) UpdateWork(ctx context.Context, authorID, workID int64, c drafts.Content) (drafts.PostResult, error) {
	draftID, err := p.draftOfWork(ctx, authorID, workID)
	if err != nil {
		return drafts.PostResult{}, err
	}
	if !p.useNewPath(authorID) {
		return p.sync(ctx, draftID, syncOpts{legacy: true, authorID: authorID, content: &c})
	}
	tags, err := marshalTags(c.Tags)
	if err != nil {
		return drafts.PostResult{}, err
	}
	res, err := p.queue(ctx, draftID, workID, `UPDATE drafts SET title = ?, body = ?, tags = ?, version = LAST_INSERT_ID(version + 1),
		state = 'queued', queued_at = NOW(6), error = NULL, updated_at = NOW(6)
		WHERE id = ? AND author_id = ? AND delete_requested = 0`, c.Title, c.Body, tags, draftID, authorID)
	if errors.Is(err, errNoRow) {
		return res, api.NotFound("work") // its delete is under way
	}
	return res, err
}

// DeleteWork deletes author's work; its tags' counts go down.
func (p *Poster) DeleteWork(ctx context.Context, authorID, workID int64) (drafts.PostResult, error) {
	draftID, err := p.draftOfWork(ctx, authorID, workID)
	if err != nil {
		return drafts.PostResult{}, err
	}
	if !p.useNewPath(authorID) {
		return p.sync(ctx, draftID, syncOpts{legacy: true, authorID: authorID, delete: true})
	}
	res, err := p.queue(ctx, draftID, workID, `UPDATE drafts SET delete_requested = 1, version = LAST_INSERT_ID(version + 1),
		state = 'queued', queued_at = NOW(6), updated_at = NOW(6)
		WHERE id = ? AND author_id = ?`, draftID, authorID)
	if errors.Is(err, errNoRow) {
		return res, api.NotFound("work") // deleted meanwhile
	}
	return res, err
}

var errNoRow = errors.New("no row changed")

// queue records that a sync of draftID is owed (the UPDATE in query, which
// must set version = LAST_INSERT_ID(...) so the new version comes back
// without another read), then enqueues its job. The draft row is the record:
// if the enqueue fails, the requeuer enqueues the job later, so the answer is
// still "queued".
func (p *Poster) queue(ctx context.Context, draftID, workID int64, query string, args ...any) (drafts.PostResult, error) {
	res, err := p.cfg.DB.ExecContext(ctx, query, args...)
	if err != nil {
		return drafts.PostResult{}, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return drafts.PostResult{}, errNoRow
	}
	version, err := res.LastInsertId()
	if err != nil {
		return drafts.PostResult{}, err
	}
	if err := p.enqueue(ctx, draftID, version); err != nil {
		p.log.WarnContext(ctx, "post job not enqueued; the requeuer will retry", "draft_id", draftID, "err", err)
		p.metrics.enqueueFailures.Inc()
	}
	return drafts.PostResult{Async: true, State: drafts.StateQueued, Path: PathNew, WorkID: workID}, nil
}
