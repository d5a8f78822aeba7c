package loadgen

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/drafts"
)

// BareTx is the bare posting transaction of the new path: the work, its
// taggings and its outbox rows written for authorID, with no HTTP and no
// queue. Its rate at the run's concurrency is the machine's ceiling.
type BareTx func(ctx context.Context, authorID int64, c drafts.Content) error

// Ceiling is the rate of the bare posting transaction alone.
type Ceiling struct {
	Concurrency int            `json:"concurrency"`
	Seconds     float64        `json:"s"`
	Posts       int64          `json:"posts"`
	PostsPerSec float64        `json:"posts_per_s"`
	Latency     LatencySummary `json:"latency"`
	Errors      Errors         `json:"errors"`
}

// RunBare runs tx for the workload's posted content of each slot, at
// concurrency, for d or n posts (whichever first), and returns its rate.
// Failed transactions are counted by kind and not retried.
func RunBare(ctx context.Context, tx BareTx, wl *Workload, concurrency int, d time.Duration, n int64) (*Ceiling, error) {
	if tx == nil || wl == nil {
		return nil, errors.New("loadgen: no bare transaction or workload")
	}
	if d <= 0 && n <= 0 {
		return nil, errors.New("loadgen: set a duration or a number of posts")
	}
	concurrency = max(concurrency, 1)
	lctx := ctx
	if d > 0 {
		var cancel context.CancelFunc
		lctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	rec := newRecorder(time.Now())
	var posts atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	c := int64(concurrency)
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for slot := w; n <= 0 || slot < n; slot += c {
				if lctx.Err() != nil {
					return
				}
				wk := wl.Work(slot)
				t0 := time.Now()
				// ctx, not lctx: a transaction under way when time is up
				// finishes, as an HTTP request would.
				err := tx(ctx, wk.AuthorID, wk.Posted)
				rec.latency(OpPost, time.Since(t0), t0)
				if err != nil {
					rec.failure(classifyTx(err))
					continue
				}
				posts.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	out := &Ceiling{Concurrency: concurrency, Seconds: round3(el.Seconds()), Posts: posts.Load()}
	if el > 0 {
		out.PostsPerSec = round3(float64(out.Posts) / el.Seconds())
	}
	rec.mu.Lock()
	out.Latency = summarize(rec.ops[OpPost])
	out.Errors = rec.errorCounts()
	rec.mu.Unlock()
	return out, nil
}

// classifyTx maps a transaction's error to the kind its HTTP response would
// have been counted as.
func classifyTx(err error) ErrorKind {
	switch e := httpapi.ErrorFor(err); {
	case e.Code == "deadlock":
		return ErrDeadlock
	case e.Code == "lock_wait_timeout":
		return ErrLockWait
	case e.Status >= 500:
		return ErrOther5xx
	}
	return ErrOther
}
