package poster

import (
	"context"
	"encoding/json"
	"errors"
	"maps"

	"time"

	"github.com/hibiken/asynq"
	"github.com/tagcount/tagcount/migrations/loop"
)

// DefaultRequeueEvery is how often the requeuer runs.
const DefaultRequeueEvery = 2 * time.Second

// requeuePage is how many queued drafts the requeuer reads per statement.
const requeuePage = 1000

// owedJob is a job this process could not enqueue: the draft's version,
// the request that asked for it and the queue it goes to.
type owedJob struct {
	version   int64
	requestID string
	queue     string
}

// owe remembers a draft whose job could not be enqueued on queue (Redis
// down), so the requeuer enqueues it, for the same request, as soon as
// Redis answers.
func (p *Poster) owe(ctx context.Context, queue string, draftID, version int64) {
	p.owedMu.Lock()
	p.owed[draftID] = owedJob{version: version, requestID: RequestID(ctx), queue: queue}
	p.owedMu.Unlock()
}

// RequeueStale enqueues the jobs owed: those this process could not
// enqueue (Redis was down), those of drafts whose job's worker died, the
// jobs waiting for a retry once the database answers again (run now, so a
// post whose dependencies are back is posted within seconds), and, one
// page per call, drafts queued for longer than RequeueAfter whose job was
// lost (the page moves on each call, so none is starved). It returns how
// many jobs it enqueued or ran, and the first error.
func (p *Poster) RequeueStale(ctx context.Context) (int, error) {
	p.measureBacklog(ctx)
	n, err := p.requeueOwed(ctx)
	if err != nil {
		return n, err
	}
	rescued, err := p.rescueOrphans(ctx)
	n += rescued
	if err != nil {
		return n, err
	}
	retried, err := p.runRetries(ctx)
	n += retried
	if err != nil {
		return n, err
	}
	paged, err := p.requeuePage(ctx)
	n += paged
	p.metrics.requeued.Add(float64(n))
	return n, err
}

// requeuePage enqueues (or revives) the jobs of the next page of drafts
// queued for longer than RequeueAfter.
func (p *Poster) requeuePage(ctx context.Context) (int, error) {
	list, err := p.drafts.ListQueued(ctx, p.cfg.Now().Add(-p.cfg.RequeueAfter), p.scanAfter, requeuePage)
	if err != nil {
		return 0, err
	}
	n := 0
	queues := make(map[int64]string) // by author: one count per author a page
	for _, q := range list {
		queue, ok := queues[q.AuthorID]
		if !ok {
			queue = p.queueFor(ctx, q.AuthorID)
			queues[q.AuthorID] = queue
		}
		if err := p.enqueue(ctx, queue, q.ID, q.Version, true); err != nil {
			return n, err
		}
		n++
		p.scanAfter = q.ID
	}
	if len(list) < requeuePage {
		p.scanAfter = 0 // the next call starts over
	}
	return n, nil
}

// runRetries runs now every posting job waiting for a retry, once the
// database answers: what they waited for is back.
func (p *Poster) runRetries(ctx context.Context) (int, error) {
	if p.cfg.Inspector == nil {
		return 0, nil
	}
	n := 0
	for _, queue := range p.queues() {
		q, err := p.cfg.Inspector.GetQueueInfo(queue)
		if err != nil || q.Retry == 0 {
			continue // no queue yet, or nothing waits
		}
		if err := p.cfg.JobDB.PingContext(ctx); err != nil {
			return n, nil // still down: the jobs keep waiting
		}
		ran, err := p.cfg.Inspector.RunAllRetryTasks(queue)
		if n += ran; err != nil {
			return n, err
		}
	}
	return n, nil
}

// requeueOwed enqueues the jobs this process could not enqueue.
func (p *Poster) requeueOwed(ctx context.Context) (int, error) {
	p.owedMu.Lock()
	owed := maps.Clone(p.owed)
	p.owedMu.Unlock()
	n := 0
	for id, j := range owed {
		if err := p.enqueue(WithRequestID(ctx, j.requestID), j.queue, id, j.version, false); err != nil {
			return n, err
		}
		n++
		p.owedMu.Lock()
		if p.owed[id] == j {
			delete(p.owed, id)
		}
		p.owedMu.Unlock()
	}
	return n, nil
}

// DefaultOwedEvery is how often RunOwed tries the jobs this process owes:
// an idle check costs nothing, and a post accepted while Redis was down is
// enqueued within about this long of Redis answering.
const DefaultOwedEvery = time.Second

// RunOwed enqueues the jobs this process could not enqueue (Redis was
// down) every Config.OwedEvery until ctx ends: the API's share of the
// requeuer, for an API process that runs no worker (whose requeuer does it
// too). It returns nil.
func (p *Poster) RunOwed(ctx context.Context) error {
	return loop.Every(ctx, p.cfg.OwedEvery, func(ctx context.Context) {
		if n, err := p.requeueOwed(ctx); err != nil && ctx.Err() == nil {
			p.log.DebugContext(ctx, "owed post jobs still cannot be enqueued", "enqueued", n, "err", err)
		} else if n > 0 {
			p.metrics.requeued.Add(float64(n))
			p.log.InfoContext(ctx, "enqueued post jobs owed since Redis was down", "count", n)
		}
	})
}

// RunRequeuer calls RequeueStale every Config.RequeueEvery until ctx ends;
// it returns nil.
func (p *Poster) RunRequeuer(ctx context.Context) error {
	return loop.Every(ctx, p.cfg.RequeueEvery, func(ctx context.Context) {
		if n, err := p.RequeueStale(ctx); err != nil && ctx.Err() == nil {
			p.log.WarnContext(ctx, "requeue of queued drafts failed", "enqueued", n, "err", err)
		} else if n > 0 {
			p.log.InfoContext(ctx, "requeued queued drafts", "count", n)
		}
	})
}

// rescueOrphans enqueues a second job for each draft queued for longer
// than RequeueAfter whose job is active with no live worker on it (its
// worker was killed): asynq itself retries such a job only after its
// 30-second lease and its recoverer's minute. Running a draft's job twice
// is harmless. It returns how many it enqueued.
func (p *Poster) rescueOrphans(ctx context.Context) (int, error) {
	if p.cfg.Inspector == nil || p.cfg.Queue == nil {
		return 0, nil
	}
	n := 0
	for _, queue := range p.queues() {
		rescued, err := p.rescueOrphansOf(ctx, queue)
		n += rescued
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// rescueOrphansOf rescues the orphans of queue (see rescueOrphans).
func (p *Poster) rescueOrphansOf(ctx context.Context, queue string) (int, error) {
	active, err := p.cfg.Inspector.ListActiveTasks(queue, asynq.PageSize(1000))
	if errors.Is(err, asynq.ErrQueueNotFound) || len(active) == 0 {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	servers, err := p.cfg.Inspector.Servers()
	if err != nil {
		return 0, err
	}
	running := make(map[string]bool)
	for _, s := range servers {
		for _, w := range s.ActiveWorkers {
			running[w.TaskID] = true
		}
	}
	var orphans []syncPayload
	for _, t := range active {
		var pl syncPayload
		if running[t.ID] || t.Type != TypeSyncDraft || json.Unmarshal(t.Payload, &pl) != nil {
			continue
		}
		orphans = append(orphans, pl.drafts()...)
	}
	return p.rescue(ctx, queue, orphans)
}

// rescue enqueues on queue a second job for each draft of orphans still
// queued at its version since before RequeueAfter.
func (p *Poster) rescue(ctx context.Context, queue string, orphans []syncPayload) (int, error) {
	ids := make([]int64, len(orphans))
	for i, o := range orphans {
		ids[i] = o.DraftID
	}
	stale, err := p.drafts.QueuedSince(ctx, ids, p.cfg.Now().Add(-p.cfg.RequeueAfter))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, o := range orphans {
		if stale[o.DraftID] != o.Version {
			continue
		}
		task := newSyncTask(o, queue, p.cfg.MaxRetry, asynq.TaskID(taskID(o.DraftID, o.Version)+":rescue"))
		if _, err := p.cfg.Queue.EnqueueContext(ctx, task); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			return n, err
		}
		n++
	}
	return n, nil
}

// measureBacklog updates the backlog gauges.
func (p *Poster) measureBacklog(ctx context.Context) {
	n, oldest, err := p.drafts.Backlog(ctx)
	if err != nil {
		return
	}
	p.metrics.backlog.Set(float64(n))
	p.metrics.backlogAge.Set(0)
	if !oldest.IsZero() {
		p.metrics.backlogAge.Set(max(0, p.cfg.Now().Sub(oldest).Seconds()))
	}
}
