package poster

import (
	"context"
	"strconv"
)

// Fair posting. Posting jobs run from two asynq queues: the interactive
// queue (Config.QueueName) and its bulk queue (BulkQueue). A Post, edit or
// delete goes to the bulk queue when its author already has BulkAfter or
// more drafts queued, as a bulk importer has and a person at a keyboard
// does not; the worker takes jobs from the interactive queue nine times in
// ten when both have some, and the group commit fills each transaction
// with interactive drafts first. So an importer's thousands of posts wait
// behind everyone else's few instead of everyone waiting behind them, and
// they still drain at the full rate whenever nobody else posts.
//
// Deciding per Post, from the drafts table, needs no state of its own and
// holds across API replicas: the count is a bounded read of the
// drafts_author_state index. A per-author cap on jobs in flight was the
// other design: asynq cannot put a job back without counting a retry, and
// a cap shared by several workers needs a counter in Redis kept right
// across crashes.
const (
	// DefaultBulkAfter is how many drafts an author must have queued (the
	// new one included) for the next to go to the bulk queue. A person
	// posts one work at a time, a web app saving a batch a few; ten queued
	// is an importer or a script.
	DefaultBulkAfter = 10
	// DefaultInteractiveWeight and DefaultBulkWeight are the worker's
	// asynq queue weights: while both queues hold jobs, one job in ten
	// comes from the bulk queue, so an import drains at a tenth of the
	// worker's rate at worst, and at all of it when the interactive queue
	// is empty.
	DefaultInteractiveWeight = 9
	DefaultBulkWeight        = 1
)

// BulkQueue is the name of queue's bulk queue.
func BulkQueue(queue string) string { return queue + "-bulk" }

// JobQueues returns the asynq server's queue weights for the posting jobs
// of queue (and any other job enqueued on queue itself).
func JobQueues(queue string) map[string]int {
	return map[string]int{queue: DefaultInteractiveWeight, BulkQueue(queue): DefaultBulkWeight}
}

// queues lists the queues posting jobs may be on (the bulk queue too when
// this process puts none there: another may).
func (p *Poster) queues() []string {
	return []string{p.cfg.QueueName, BulkQueue(p.cfg.QueueName)}
}

// queueFor returns the queue for the next job of author: the bulk queue
// when the author has BulkAfter or more drafts queued. When the count
// cannot be read the job goes to the interactive queue: a person's post
// must not wait behind an import because the database was slow once.
func (p *Poster) queueFor(ctx context.Context, authorID int64) string {
	if p.cfg.BulkAfter <= 0 || authorID <= 0 {
		return p.cfg.QueueName
	}
	n, err := p.drafts.CountQueuedBy(ctx, authorID, p.cfg.BulkAfter)
	if err != nil {
		p.log.WarnContext(ctx, "counting an author's queued drafts; using the interactive queue",
			"author_id", strconv.FormatInt(authorID, 10), "err", err)
		return p.cfg.QueueName
	}
	if n >= p.cfg.BulkAfter {
		return BulkQueue(p.cfg.QueueName)
	}
	return p.cfg.QueueName
}

// isBulk reports whether queue is the bulk queue.
func (p *Poster) isBulk(queue string) bool { return queue == BulkQueue(p.cfg.QueueName) }
