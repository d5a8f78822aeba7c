package poster

import (
	"context"
	"sync"
)

// Defaults of the group commit.
const (
	// DefaultCommitters is how many posting transactions a worker runs at
	// once. Few: each carries a batch, and the database's cores are shared
	// with the authors' requests, which must keep their latency.
	DefaultCommitters = 3
	// DefaultMaxBatch is the most drafts one posting transaction posts.
	DefaultMaxBatch = 128
)

// committer posts the drafts that posting jobs hand it by group commit:
// each of a few committer goroutines takes the first draft waiting and
// every other draft already waiting (up to a batch) and posts them in one
// transaction. A lone post on an idle worker is posted at once; under load,
// the drafts that arrive while a transaction runs share the next one, so a
// transaction, its round trips and its commit are paid per batch, not per
// post. One draft that cannot be posted does not fail the others: sync
// tries a failed batch's drafts one by one.
type committer struct {
	p        *Poster
	maxBatch int
	queue    chan *submission

	wg   sync.WaitGroup
	stop chan struct{}
}

// submission is one job's draft waiting for its batch.
type submission struct {
	ctx  context.Context
	req  request
	done chan outcome
}

func newCommitter(p *Poster, committers, maxBatch int) *committer {
	c := &committer{p: p, maxBatch: maxBatch, queue: make(chan *submission, 4*maxBatch), stop: make(chan struct{})}
	c.wg.Add(committers)
	for range committers {
		go c.loop()
	}
	return c
}

// submit posts r in the next batch and returns its outcome, or ctx's error
// if ctx ends first (the batch may still post it: running the job again is
// harmless).
func (c *committer) submit(ctx context.Context, r request) (Result, error) {
	s := &submission{ctx: ctx, req: r, done: make(chan outcome, 1)}
	select {
	case c.queue <- s:
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	select {
	case o := <-s.done:
		return o.res, o.err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

func (c *committer) loop() {
	defer c.wg.Done()
	batch := make([]*submission, 0, c.maxBatch)
	for {
		select {
		case s := <-c.queue:
			batch = append(batch[:0], s)
		case <-c.stop:
			return
		}
	fill:
		for len(batch) < c.maxBatch {
			select {
			case s := <-c.queue:
				batch = append(batch, s)
			default:
				break fill
			}
		}
		c.post(batch)
	}
}

// post runs one posting transaction for batch and hands each submission
// its outcome. Submissions whose job gave up meanwhile are left out.
func (c *committer) post(batch []*submission) {
	live := batch[:0]
	for _, s := range batch {
		if s.ctx.Err() != nil {
			s.done <- outcome{err: s.ctx.Err()}
			continue
		}
		live = append(live, s)
	}
	if len(live) == 0 {
		return
	}
	reqs := make([]request, len(live))
	ids := make(map[int64]string, len(live))
	for i, s := range live {
		reqs[i] = s.req
		if id := RequestID(s.ctx); id != "" {
			ids[s.req.draftID] = id
		}
	}
	// The batch outlives any one job's context: its transaction serves
	// them all, and the worker's shutdown waits for the jobs in flight.
	ctx := withDraftRequestIDs(context.WithoutCancel(live[0].ctx), ids)
	outs := c.p.sync(ctx, c.p.cfg.JobDB, PathNew, reqs)
	for i, s := range live {
		s.done <- outs[i]
	}
	c.p.metrics.batchSize.Observe(float64(len(live)))
	c.logPosted(ctx, live, outs)
}

// logPosted logs, at info level, one line per posting transaction naming
// the requests whose drafts it synced (with their drafts, in the same
// order), so a post's request id shows where its job ran; none when no job
// carried a request id. Jobs that failed are logged by HandleTaskError.
func (c *committer) logPosted(ctx context.Context, live []*submission, outs []outcome) {
	var ids []string
	var drafts []int64
	for i, s := range live {
		if id := requestIDOf(ctx, s.req.draftID); id != "" && outs[i].err == nil {
			ids, drafts = append(ids, id), append(drafts, s.req.draftID)
		}
	}
	if len(ids) > 0 {
		c.p.log.InfoContext(ctx, "posted", "drafts", len(live), "request_ids", ids, "draft_ids", drafts)
	}
}

// close stops the committer goroutines once the jobs in flight are done.
func (c *committer) close() {
	close(c.stop)
	c.wg.Wait()
}
