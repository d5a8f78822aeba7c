package loadgen

import (
	"context"
	"sync"
	"time"

	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
)

// postWatcher learns when queued drafts become posted works by reading the
// drafts table a hundred times a second, for all of them in one query.
// Polling every draft through the API instead would add load that grows
// with the backlog, and slow the service it measures most when it is
// already slow.
type postWatcher struct {
	drafts   *drafts.Store
	interval time.Duration

	mu      sync.Mutex
	pending map[int64]chan int64 // draft id → its work id, 0 if posting failed
}

func newPostWatcher(db *migrations.DB) *postWatcher {
	return &postWatcher{drafts: &drafts.Store{DB: db}, interval: 10 * time.Millisecond, pending: map[int64]chan int64{}}
}

// watch returns a channel that receives the draft's work id once it is
// posted, or 0 if it failed.
func (w *postWatcher) watch(draftID int64) <-chan int64 {
	ch := make(chan int64, 1)
	w.mu.Lock()
	w.pending[draftID] = ch
	w.mu.Unlock()
	return ch
}

// forget stops watching a draft (its waiter gave up).
func (w *postWatcher) forget(draftID int64) {
	w.mu.Lock()
	delete(w.pending, draftID)
	w.mu.Unlock()
}

// run polls until ctx ends.
func (w *postWatcher) run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	var ids []int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ids = ids[:0]
		w.mu.Lock()
		for id := range w.pending {
			ids = append(ids, id)
		}
		w.mu.Unlock()
		for len(ids) > 0 {
			n := min(len(ids), 1000)
			w.check(ctx, ids[:n])
			ids = ids[n:]
		}
	}
}

func (w *postWatcher) check(ctx context.Context, ids []int64) {
	statuses, err := w.drafts.Statuses(ctx, ids)
	if err != nil {
		return // the next tick tries again
	}
	for id, st := range statuses {
		if st.State != drafts.StateFailed && (st.State != drafts.StatePosted || st.WorkID == 0) {
			continue
		}
		w.mu.Lock()
		ch := w.pending[id]
		delete(w.pending, id)
		w.mu.Unlock()
		if ch != nil {
			ch <- st.WorkID
		}
	}
}
