package poster

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"

	"github.com/hibiken/asynq"
)

// Retrying finds the drafts whose posting job failed and waits in the job
// queue for its next try. While a job retries its draft stays queued, so
// the drafts table alone cannot tell it from one not yet run: the guarded
// rollout (flags/rollout) asks this to count such a post as failed, rather
// than only once its job gives up.
type Retrying struct {
	Inspector *asynq.Inspector // required
	Queue     string           // the posting queue; default DefaultQueue (its bulk queue is read too)
}

// RetryingDrafts returns the ids of up to limit drafts whose posting job
// waits for a retry, across the posting queue and its bulk queue. A queue
// that does not exist yet has none. It returns Redis's error.
func (r Retrying) RetryingDrafts(_ context.Context, limit int) ([]int64, error) {
	queue := cmp.Or(r.Queue, DefaultQueue)
	var ids []int64
	for _, q := range []string{queue, BulkQueue(queue)} {
		if len(ids) >= limit {
			break
		}
		tasks, err := r.Inspector.ListRetryTasks(q, asynq.PageSize(limit-len(ids)))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, t := range tasks {
			var pl syncPayload
			if t.Type == TypeSyncDraft && json.Unmarshal(t.Payload, &pl) == nil && pl.DraftID > 0 {
				ids = append(ids, pl.DraftID)
			}
		}
	}
	return ids, nil
}
