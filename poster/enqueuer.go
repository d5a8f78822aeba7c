package poster

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/hibiken/asynq"
)

// DefaultEnqueueWindow is how long, under load, the group enqueue waits
// after the first Post of a batch for others to join it. Under no load (the
// last batch carried one job) it does not wait at all.
const DefaultEnqueueWindow = 2 * time.Millisecond

// Group enqueue. Every asynq job costs about twenty Redis commands (the
// enqueue, the dequeue, the lease and the done, with their bookkeeping)
// and as many round trips' worth of CPU in this process, whatever it
// carries. So the Posts that a process answers at the same moment share
// one job: the first Post waiting is enqueued at once, and the Posts that
// arrive while that enqueue runs (or, under load, within
// Config.EnqueueWindow) go in the next job together, one per queue, so
// fair posting (fair.go) still sees each author's queue. A job of one
// draft is the per-draft job it always was (its task id makes a double
// click harmless, and the requeuer can find and run it); a job of several
// carries their list (syncPayload.Drafts) and retries as one: running a
// draft's sync again once it is posted changes nothing, a draft that
// cannot be posted is marked failed at once, and a batch that used its
// last retry marks each draft still queued failed (HandleTaskError).
type enqueuer struct {
	p *Poster

	mu      sync.Mutex
	waiting []*pendingJob
	running bool // a flusher goroutine is enqueuing
	lastLen int  // jobs in the last batch: above 1, the next one waits the window
}

// pendingJob is one Post's job waiting for its batch's enqueue.
type pendingJob struct {
	queue string
	pl    syncPayload
	done  chan error
}

// enqueueBatched enqueues the job of version of draftID on queue with the
// jobs of the other Posts answered meanwhile, and returns its enqueue's
// error (the caller owes the job then), or ctx's when ctx ends first.
func (p *Poster) enqueueBatched(ctx context.Context, queue string, draftID, version int64) error {
	if p.cfg.Queue == nil {
		return p.enqueue(ctx, queue, draftID, version, false) // says what is missing
	}
	j := &pendingJob{queue: queue, pl: syncPayload{DraftID: draftID, Version: version, RequestID: RequestID(ctx), At: time.Now().UnixMicro()},
		done: make(chan error, 1)}
	e := p.enq
	e.mu.Lock()
	e.waiting = append(e.waiting, j)
	if !e.running {
		e.running = true
		go e.run()
	}
	e.mu.Unlock()
	select {
	case err := <-j.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run enqueues what waits, batch after batch, until nothing does.
func (e *enqueuer) run() {
	for {
		e.mu.Lock()
		wait := e.lastLen > 1 && len(e.waiting) < e.p.cfg.MaxBatch
		e.mu.Unlock()
		if wait {
			time.Sleep(e.p.cfg.EnqueueWindow)
		}
		e.mu.Lock()
		n := min(len(e.waiting), e.p.cfg.MaxBatch)
		batch := e.waiting[:n:n]
		e.waiting = e.waiting[n:]
		e.lastLen = n
		if n == 0 {
			e.running = false
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
		e.flush(batch)
	}
}

// flush enqueues batch as one job per queue and tells each its result.
func (e *enqueuer) flush(batch []*pendingJob) {
	byQueue := make(map[string][]*pendingJob, 2)
	var order []string
	for _, j := range batch {
		if _, ok := byQueue[j.queue]; !ok {
			order = append(order, j.queue)
		}
		byQueue[j.queue] = append(byQueue[j.queue], j)
	}
	for _, q := range order {
		jobs := byQueue[q]
		err := e.enqueueJobs(q, jobs)
		for _, j := range jobs {
			j.done <- err
		}
	}
	e.p.metrics.enqueueBatch.Observe(float64(len(batch)))
}

// enqueueJobs enqueues jobs (all on queue) as one job.
func (e *enqueuer) enqueueJobs(queue string, jobs []*pendingJob) error {
	ctx, cancel := context.WithTimeout(context.Background(), enqueueTimeout)
	defer cancel()
	if len(jobs) == 1 {
		pl := jobs[0].pl
		return e.p.enqueueAt(WithRequestID(ctx, pl.RequestID), queue, pl.DraftID, pl.Version, false, pl.At)
	}
	pl := syncPayload{Drafts: make([]syncPayload, len(jobs))}
	for i, j := range jobs {
		pl.Drafts[i] = j.pl
	}
	b, _ := json.Marshal(pl)
	task := asynq.NewTask(TypeSyncDraft, b, asynq.Queue(queue), asynq.MaxRetry(e.p.cfg.MaxRetry), asynq.Timeout(time.Minute))
	_, err := e.p.cfg.Queue.EnqueueContext(ctx, task)
	return err
}
