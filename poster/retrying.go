package poster

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"

	"github.com/hibiken/asynq"
)

// Retrying finds the drafts whose posting job failed and is being retried.
// While a job retries its draft stays queued, so the drafts table alone
// cannot tell it from one not yet run: the guarded rollout (flags/rollout)
// asks this to count such a post as failed, rather than only once its job
// gives up.
type Retrying struct {
	Inspector *asynq.Inspector // required
	Queue     string           // the posting queue; default DefaultQueue (its bulk queue is read too)
}

// RetryingDrafts returns the ids of up to limit drafts whose posting job
// failed at least once and has not ended: it waits for its retry, or is
// pending or running again (the requeuer runs waiting retries early, and a
// busy worker holds a job a while), in the posting queue and its bulk
// queue. A queue that does not exist yet has none. It returns Redis's
// error.
func (r Retrying) RetryingDrafts(_ context.Context, limit int) ([]int64, error) {
	queue := cmp.Or(r.Queue, DefaultQueue)
	lists := []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		r.Inspector.ListRetryTasks, r.Inspector.ListActiveTasks, r.Inspector.ListPendingTasks}
	seen := make(map[int64]bool)
	var ids []int64
	for _, q := range []string{queue, BulkQueue(queue)} {
		for _, list := range lists {
			if len(ids) >= limit {
				return ids[:limit], nil
			}
			tasks, err := list(q, asynq.PageSize(limit))
			if errors.Is(err, asynq.ErrQueueNotFound) {
				break
			}
			if err != nil {
				return nil, err
			}
			for _, t := range tasks {
				var pl syncPayload
				if t.Retried > 0 && t.Type == TypeSyncDraft && json.Unmarshal(t.Payload, &pl) == nil && pl.DraftID > 0 && !seen[pl.DraftID] {
					seen[pl.DraftID] = true
					ids = append(ids, pl.DraftID)
				}
			}
		}
	}
	return ids[:min(len(ids), limit)], nil
}
