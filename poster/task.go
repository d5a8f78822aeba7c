package poster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/drafts"
)

// TypeSyncDraft is the job that makes a queued draft's work match it: posts
// it, applies an edit, or deletes it.
const TypeSyncDraft = "draft:sync"

// enqueueTimeout bounds how long a request waits on Redis.
const enqueueTimeout = 500 * time.Millisecond

type syncPayload struct {
	DraftID int64 `json:"draft_id"`
	Version int64 `json:"version"`
}

// NewSyncDraftTask returns the job for version of draftID. Its task id makes
// enqueueing the same version twice (a double click, the requeuer) harmless.
func NewSyncDraftTask(draftID, version int64, queue string, maxRetry int) *asynq.Task {
	b, _ := json.Marshal(syncPayload{DraftID: draftID, Version: version})
	return asynq.NewTask(TypeSyncDraft, b,
		asynq.TaskID(fmt.Sprintf("draft-sync:%d:%d", draftID, version)),
		asynq.Queue(queue), asynq.MaxRetry(maxRetry), asynq.Timeout(time.Minute))
}

func (p *Poster) enqueue(ctx context.Context, draftID, version int64) error {
	if p.cfg.Queue == nil {
		return errors.New("no job queue configured")
	}
	// A post must answer at once even with Redis down: the draft row already
	// records the post, and the requeuer enqueues it later.
	ctx, cancel := context.WithTimeout(ctx, enqueueTimeout)
	defer cancel()
	_, err := p.cfg.Queue.EnqueueContext(ctx, NewSyncDraftTask(draftID, version, p.cfg.QueueName, p.cfg.MaxRetry))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}

// HandleSyncDraftTask runs the job. Running it again, or for a draft that was
// already synced, changes nothing. A payload that cannot be read is dropped
// with asynq.SkipRetry.
func (p *Poster) HandleSyncDraftTask(ctx context.Context, t *asynq.Task) error {
	var pl syncPayload
	if err := json.Unmarshal(t.Payload(), &pl); err != nil || pl.DraftID <= 0 {
		return fmt.Errorf("malformed %s payload %q: %v: %w", TypeSyncDraft, t.Payload(), err, asynq.SkipRetry)
	}
	_, err := p.syncOne(ctx, p.cfg.JobDB, PathNew, request{draftID: pl.DraftID, requireQueued: true})
	if errors.Is(err, errDraftGone) {
		return nil // deleted meanwhile: nothing is owed
	}
	return err
}

// HandleTaskError is the asynq server's error handler: once a sync job has
// used its last retry (or cannot be retried), its draft is marked failed so the
// author sees it and can post again.
func (p *Poster) HandleTaskError(ctx context.Context, t *asynq.Task, err error) {
	if t.Type() != TypeSyncDraft {
		return
	}
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	var pl syncPayload
	_ = json.Unmarshal(t.Payload(), &pl)
	p.log.WarnContext(ctx, "post job failed", "draft_id", pl.DraftID, "retry", retried, "max_retry", maxRetry, "err", err)
	if retried < maxRetry && !errors.Is(err, asynq.SkipRetry) {
		return
	}
	if uerr := p.drafts.MarkFailed(context.WithoutCancel(ctx), pl.DraftID, pl.Version, failureMessage(err)); uerr != nil {
		p.log.ErrorContext(ctx, "marking draft failed", "draft_id", pl.DraftID, "err", uerr)
	}
}

// failureMessage is err's text as stored in drafts.error: valid UTF-8 (the
// column is utf8mb4 and a strict server refuses anything else, which would
// leave the draft queued) and at most 1,000 bytes, cut between characters.
func failureMessage(err error) string {
	const maxLen = 1000 // drafts.error is VARCHAR(1000)
	msg := strings.ToValidUTF8(err.Error(), "\uFFFD")
	if len(msg) > maxLen {
		msg = strings.ToValidUTF8(msg[:maxLen], "")
	}
	return msg
}

// RequeueStale enqueues the job of every draft queued for longer than
// RequeueAfter: posts pressed while Redis was down, or whose job was lost.
// It returns how many it enqueued.
func (p *Poster) RequeueStale(ctx context.Context) (int, error) {
	list, err := p.drafts.ListQueued(ctx, p.cfg.Now().Add(-p.cfg.RequeueAfter), 1000)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, q := range list {
		if err := p.enqueue(ctx, q.ID, q.Version); err != nil {
			return n, err
		}
		n++
	}
	p.metrics.requeued.Add(float64(n))
	return n, nil
}

// RunRequeuer calls RequeueStale every interval until ctx ends.
func (p *Poster) RunRequeuer(ctx context.Context, interval time.Duration) error {
	return counter.Every(ctx, interval, func(ctx context.Context) {
		if n, err := p.RequeueStale(ctx); err != nil && ctx.Err() == nil {
			p.log.WarnContext(ctx, "requeue of queued drafts failed", "enqueued", n, "err", err)
		} else if n > 0 {
			p.log.InfoContext(ctx, "requeued queued drafts", "count", n)
		}
	})
}

// PostContent is the bare new-path posting transaction with no HTTP and no
// queue: it stores c as a draft of author and posts it at once. The load
// generator uses it to measure the machine's ceiling.
func (p *Poster) PostContent(ctx context.Context, authorID int64, c drafts.Content) error {
	_, err := p.PostContents(ctx, authorID, PathNew, []drafts.Content{c})
	return err
}

// PostContents stores each of contents as a draft of author, queued, and
// posts them all in one posting transaction on path (PathNew or
// PathLegacy), with no HTTP and no job queue: a bulk import, and the test
// builders' way to make works through the real posting transaction. It
// returns the work ids in order, or the first error.
func (p *Poster) PostContents(ctx context.Context, authorID int64, path string, contents []drafts.Content) ([]int64, error) {
	ids, err := p.drafts.CreateQueued(ctx, authorID, contents)
	if err != nil {
		return nil, err
	}
	reqs := make([]request, len(ids))
	for i, id := range ids {
		reqs[i] = request{draftID: id, requireQueued: true}
	}
	works := make([]int64, len(contents))
	for i, o := range p.sync(ctx, p.cfg.JobDB, path, reqs) {
		if o.err != nil {
			return nil, o.err
		}
		works[i] = o.res.WorkID
	}
	return works, nil
}

// SyncDrafts does what the posting job does for each queued draft of ids:
// it posts it, applies its edit or deletes it, on the new path, in one
// transaction. Drafts that are not queued are left alone. It returns the
// first error.
func (p *Poster) SyncDrafts(ctx context.Context, ids ...int64) error {
	reqs := make([]request, len(ids))
	for i, id := range ids {
		reqs[i] = request{draftID: id, requireQueued: true}
	}
	for _, o := range p.sync(ctx, p.cfg.JobDB, PathNew, reqs) {
		if o.err != nil && !errors.Is(o.err, errDraftGone) {
			return o.err
		}
	}
	return nil
}
