package poster

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
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
// tries a failed batch's drafts one by one. Drafts of the bulk queue wait
// apart, and fill a transaction only after every interactive draft waiting
// (fair.go): a person's post joins the next transaction, not the one after
// an import's backlog.
type committer struct {
	p        *Poster
	maxBatch int
	queue    chan *submission
	bulk     chan *submission
	rate     *rate.Limiter // drafts/s, set by the adaptive limit (nil: none)

	wg   sync.WaitGroup
	stop chan struct{}
}

// submission is one job's draft waiting for its batch.
type submission struct {
	ctx  context.Context
	req  request
	done chan outcome
	at   time.Time // when it began to wait
}

func newCommitter(p *Poster, committers, maxBatch int) *committer {
	c := &committer{p: p, maxBatch: maxBatch, queue: make(chan *submission, 4*maxBatch),
		bulk: make(chan *submission, 4*maxBatch), stop: make(chan struct{})}
	if !p.cfg.Limit.Off {
		c.rate = rate.NewLimiter(rate.Limit(p.limit.current()), maxBatch)
		p.metrics.limit.Set(p.limit.current())
		c.wg.Add(1)
		go c.adapt()
	}
	c.wg.Add(committers)
	for range committers {
		go c.loop()
	}
	return c
}

// adapt adjusts the posting rate to the adaptive limit every interval.
func (c *committer) adapt() {
	defer c.wg.Done()
	every := c.p.limit.cfg.Interval
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			l := c.p.limit.adjust(now, every)
			c.rate.SetLimit(rate.Limit(l))
			c.p.metrics.limit.Set(l)
		}
	}
}

// admit waits until the posting rate lets one more draft be posted, and
// returns how many more the batch may take at once; false when the
// committer stops meanwhile.
func (c *committer) admit() (int, bool) {
	if c.rate == nil {
		return c.maxBatch, true
	}
	r := c.rate.Reserve()
	select {
	case <-time.After(r.Delay()):
	case <-c.stop:
		r.Cancel()
		return 0, false
	}
	return max(1, min(c.maxBatch, 1+int(c.rate.Tokens()))), true
}

// charge takes from the posting rate the n drafts a batch took beyond its
// first (admit took that one), as a debt the next batches wait for.
func (c *committer) charge(n int) {
	c.p.limit.took(n + 1)
	if c.rate != nil && n > 0 {
		c.rate.ReserveN(time.Now(), n)
	}
}

// submit posts r in the next batch (behind the interactive drafts, when
// bulk) and returns its outcome, or ctx's error if ctx ends first (the
// batch may still post it: running the job again is harmless).
func (c *committer) submit(ctx context.Context, r request, bulk bool) (Result, error) {
	s := &submission{ctx: ctx, req: r, done: make(chan outcome, 1), at: time.Now()}
	queue := c.queue
	if bulk {
		queue = c.bulk
	}
	select {
	case queue <- s:
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
		var s *submission
		select { // an interactive draft first, if one waits
		case s = <-c.queue:
		default:
			select {
			case s = <-c.queue:
			case s = <-c.bulk:
			case <-c.stop:
				return
			}
		}
		limit, ok := c.admit()
		if !ok {
			s.done <- outcome{err: context.Canceled}
			return
		}
		batch = fill(append(batch[:0], s), limit, c.queue, c.bulk)
		c.charge(len(batch) - 1)
		c.post(batch)
	}
}

// fill appends to batch what waits on the channels, in order, up to limit.
func fill(batch []*submission, limit int, chans ...chan *submission) []*submission {
	for _, ch := range chans {
		for more := true; more && len(batch) < limit; {
			select {
			case s := <-ch:
				batch = append(batch, s)
			default:
				more = false
			}
		}
	}
	return batch
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
	start := time.Now()
	for i, s := range live {
		c.p.metrics.stage.WithLabelValues("batch_wait").Observe(start.Sub(s.at).Seconds())
		reqs[i] = s.req
		if id := RequestID(s.ctx); id != "" {
			ids[s.req.draftID] = id
		}
	}
	// The batch outlives any one job's context: its transaction serves
	// them all, and the worker's shutdown waits for the jobs in flight.
	ctx := withDraftRequestIDs(context.WithoutCancel(live[0].ctx), ids)
	outs := c.p.sync(ctx, c.p.cfg.JobDB, PathNew, reqs)
	c.p.metrics.stage.WithLabelValues("transaction").Observe(time.Since(start).Seconds())
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
