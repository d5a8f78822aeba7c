package poster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
)

// TypeSyncDraft is the job that makes a queued draft's work match it: posts
// it, applies an edit, or deletes it.
const TypeSyncDraft = "draft:sync"

// enqueueTimeout bounds how long a request waits on Redis.
const enqueueTimeout = 500 * time.Millisecond

type syncPayload struct {
	DraftID int64 `json:"draft_id"`
	Version int64 `json:"version"`
	// RequestID is the request that asked for the change, if known; the
	// job's log lines and announcements carry it. Jobs enqueued before it
	// existed have none.
	RequestID string `json:"request_id,omitempty"`
	// Drafts, in a job of several drafts (the group enqueue, enqueuer.go),
	// lists them, each with its version and request id; DraftID is 0 then.
	Drafts []syncPayload `json:"drafts,omitempty"`
	// At is when the Post was answered (Unix µs; 0: unknown), for the
	// job-pickup stage of tagcount_post_stage_seconds.
	At int64 `json:"at,omitempty"`
}

// drafts lists the drafts pl is the job of.
func (pl syncPayload) drafts() []syncPayload {
	if len(pl.Drafts) > 0 {
		return pl.Drafts
	}
	return []syncPayload{pl}
}

// NewSyncDraftTask returns the job for version of draftID. Its task id makes
// enqueueing the same version twice (a double click, the requeuer) harmless.
func NewSyncDraftTask(draftID, version int64, queue string, maxRetry int, opts ...asynq.Option) *asynq.Task {
	return newSyncTask(syncPayload{DraftID: draftID, Version: version}, queue, maxRetry, opts...)
}

func newSyncTask(pl syncPayload, queue string, maxRetry int, opts ...asynq.Option) *asynq.Task {
	b, _ := json.Marshal(pl)
	all := []asynq.Option{asynq.TaskID(taskID(pl.DraftID, pl.Version)), asynq.Queue(queue), asynq.MaxRetry(maxRetry), asynq.Timeout(time.Minute)}
	return asynq.NewTask(TypeSyncDraft, b, append(all, opts...)...)
}

// enqueue enqueues the job of version of draftID on queue, for the request
// ctx carries (RequestID). When a job with the same id exists already
// there it is left alone if it is pending or running; an archived or
// completed one (a post that failed and is posted again) is replaced; one
// waiting to be retried is run now when urgent (the requeuer found its
// draft waiting too long, so its dependencies may be back). A job of the
// same id on the other queue (the author's class changed meanwhile) may
// run too: running a job twice is harmless.
func (p *Poster) enqueue(ctx context.Context, queue string, draftID, version int64, urgent bool) error {
	return p.enqueueAt(ctx, queue, draftID, version, urgent, 0)
}

// enqueueAt is enqueue for a Post answered at (Unix µs; 0: unknown).
func (p *Poster) enqueueAt(ctx context.Context, queue string, draftID, version int64, urgent bool, at int64) error {
	if p.cfg.Queue == nil {
		return errors.New("no job queue configured")
	}
	// A post must answer at once even with Redis down: the draft row already
	// records the post, and the requeuer enqueues it later.
	ctx, cancel := context.WithTimeout(ctx, enqueueTimeout)
	defer cancel()
	task := newSyncTask(syncPayload{DraftID: draftID, Version: version, RequestID: RequestID(ctx), At: at}, queue, p.cfg.MaxRetry)
	_, err := p.cfg.Queue.EnqueueContext(ctx, task)
	if !errors.Is(err, asynq.ErrTaskIDConflict) {
		return err
	}
	if p.cfg.Inspector == nil {
		return nil // the job exists; without an inspector, trust it to run
	}
	id := taskID(draftID, version)
	info, err := p.cfg.Inspector.GetTaskInfo(queue, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound):
		// The job ended and was removed between the conflict and this
		// look: enqueue it again (for a draft already posted it changes
		// nothing).
		info = &asynq.TaskInfo{State: asynq.TaskStateCompleted}
	case err != nil:
		return err
	}
	switch info.State {
	case asynq.TaskStateArchived, asynq.TaskStateCompleted:
		if err := p.cfg.Inspector.DeleteTask(queue, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return err
		}
		_, err := p.cfg.Queue.EnqueueContext(ctx, task)
		if errors.Is(err, asynq.ErrTaskIDConflict) {
			return nil // enqueued meanwhile by another process
		}
		return err
	case asynq.TaskStateRetry, asynq.TaskStateScheduled:
		if urgent {
			return p.cfg.Inspector.RunTask(queue, id)
		}
	}
	return nil
}

func taskID(draftID, version int64) string { return fmt.Sprintf("draft-sync:%d:%d", draftID, version) }

// HandleSyncDraftTask runs the job: it hands its drafts to the group
// commit, which posts them with the other drafts waiting. Running it again,
// or for a draft that was already synced, changes nothing. A payload that
// cannot be read ends the job with asynq.SkipRetry; a draft whose error
// retrying cannot fix is marked failed (a job of one draft ends with
// asynq.SkipRetry, and HandleTaskError marks it); a dependency that is down
// or slow is retried soon (RetryDelay), the whole job again.
func (p *Poster) HandleSyncDraftTask(ctx context.Context, t *asynq.Task) error {
	var pl syncPayload
	if err := json.Unmarshal(t.Payload(), &pl); err != nil || (pl.DraftID <= 0 && len(pl.Drafts) == 0) {
		return fmt.Errorf("malformed %s payload %q: %v: %w", TypeSyncDraft, t.Payload(), err, asynq.SkipRetry)
	}
	p.commitOnce.Do(func() { p.commit = newCommitter(p, p.cfg.Committers, p.cfg.MaxBatch) })
	queue, _ := asynq.GetQueueName(ctx)
	list := pl.drafts()
	for _, d := range list {
		if d.At > 0 {
			age := time.Since(time.UnixMicro(d.At))
			p.metrics.stage.WithLabelValues("pickup").Observe(age.Seconds())
			p.limit.started(age)
		}
	}
	errs := make([]error, len(list))
	var wg sync.WaitGroup
	for i, d := range list {
		wg.Go(func() {
			_, errs[i] = p.commit.submit(WithRequestID(ctx, d.RequestID), request{draftID: d.DraftID, requireQueued: true}, p.isBulk(queue))
		})
	}
	wg.Wait()
	var retry []error
	for i, err := range errs {
		switch {
		case err == nil, errors.Is(err, errDraftGone):
			// done, or deleted meanwhile: nothing is owed
		case transient(err):
			retry = append(retry, err)
		case len(list) == 1:
			return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
		default:
			p.giveUp(ctx, list[i], -1, -1, err)
		}
	}
	return errors.Join(retry...)
}

// transient reports whether err may go away without a change of the draft:
// a dependency down, slow or busy, a lock conflict, a deadline, or a
// privilege the job's database user lacks (a grant the new path needs and
// an operator restores: until then the draft stays queued and is posted
// once the grant is back, instead of failing an accepted post).
func transient(err error) bool {
	return migrations.IsUnavailable(err) || migrations.IsLockConflict(err) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || migrations.IsServerBusy(err) ||
		migrations.IsAccessDenied(err)
}

// RetryDelay is how long a failed posting job waits before its retry n:
// short and capped (100 ms doubling up to 5 s, ±20%), so a post whose
// dependencies are back is posted within seconds, not asynq's default of
// minutes growing to hours.
func RetryDelay(n int) time.Duration {
	d := min(100*time.Millisecond<<min(n, 10), 5*time.Second)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// HandleTaskError is the asynq server's error handler: once a sync job has
// used its last retry (or cannot be retried), each of its drafts still
// queued is marked failed so the author sees it and can post again.
func (p *Poster) HandleTaskError(ctx context.Context, t *asynq.Task, err error) {
	if t.Type() != TypeSyncDraft {
		return
	}
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	var pl syncPayload
	_ = json.Unmarshal(t.Payload(), &pl)
	if retried < maxRetry && !errors.Is(err, asynq.SkipRetry) {
		for _, d := range pl.drafts() {
			p.log.WarnContext(WithRequestID(ctx, d.RequestID), "post job failed", "draft_id", d.DraftID, "retry", retried, "max_retry", maxRetry, "err", err)
		}
		return
	}
	for _, d := range pl.drafts() {
		p.giveUp(ctx, d, retried, maxRetry, err)
	}
}

// giveUp marks d's draft failed, if it is still queued at d's version,
// after its job ended with err at retry of maxRetry (-1: not retried).
func (p *Poster) giveUp(ctx context.Context, d syncPayload, retried, maxRetry int, err error) {
	ctx = WithRequestID(ctx, d.RequestID)
	// The whole error goes to the log only: it may name tables, hosts and
	// addresses. The author reads failureMessage's sentence on the draft.
	p.log.ErrorContext(ctx, "post job gave up", "draft_id", d.DraftID, "version", d.Version,
		"retry", retried, "max_retry", maxRetry, "err", err)
	if uerr := p.drafts.MarkFailed(context.WithoutCancel(ctx), d.DraftID, d.Version, failureMessage(err)); uerr != nil {
		p.log.ErrorContext(ctx, "marking draft failed", "draft_id", d.DraftID, "err", uerr)
	}
}

// Messages a failed draft shows its author for errors that are not the
// author's to fix (docs/api.md, "Draft").
const (
	msgInternal    = "internal error"
	msgUnavailable = "the service could not post it in time; post it again"
)

// failureMessage is what drafts.error says of a job that ended with err: for
// an error the author can act on (content that breaks a rule, a draft that
// kept changing) its own sentence; for a dependency that stayed down or
// slow, that posting again may work; for anything else "internal error".
// The raw error never reaches the author. The sentence is valid UTF-8 (the
// column is utf8mb4 and a strict server refuses anything else, which would
// leave the draft queued) and at most 1,000 bytes, cut between characters.
func failureMessage(err error) string {
	const maxLen = 1000 // drafts.error is VARCHAR(1000)
	var invalid *drafts.ValidationError
	msg := msgInternal
	switch {
	case errors.As(err, &invalid):
		msg = invalid.Message
	case errors.Is(err, errVersionMoved), errors.Is(err, drafts.ErrChanged):
		msg = drafts.ErrChanged.Error()
	case transient(err):
		msg = msgUnavailable
	}
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) > maxLen {
		msg = strings.ToValidUTF8(msg[:maxLen], "")
	}
	return msg
}
