package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
)

// TypeRun is the asynq task type of a reconcile run.
const TypeRun = "reconcile:run"

type taskPayload struct {
	DryRun bool  `json:"dry_run,omitempty"`
	TagID  int64 `json:"tag_id,omitempty"`
}

// NewTask returns a task that runs reconcile with opts. It carries
// a 12-hour timeout (asynq's default of 30 minutes is too short for a
// rate-limited run over a large archive) and 3 retries; taskOpts override.
func NewTask(opts Options, taskOpts ...asynq.Option) *asynq.Task {
	payload, _ := json.Marshal(taskPayload{DryRun: opts.DryRun, TagID: opts.TagID}) // cannot fail
	all := append([]asynq.Option{asynq.MaxRetry(3), asynq.Timeout(12 * time.Hour)}, taskOpts...)
	return asynq.NewTask(TypeRun, payload, all...)
}

// HandleTask runs the reconcile a TypeRun task asks for. When
// another run holds the lock, or the payload is malformed, it returns an
// error wrapping asynq.SkipRetry: retrying cannot help (the run in progress
// does the work). Other failures are returned for asynq to retry.
func (r *Reconciler) HandleTask(ctx context.Context, t *asynq.Task) error {
	var p taskPayload
	if len(t.Payload()) > 0 {
		if err := json.Unmarshal(t.Payload(), &p); err != nil {
			return fmt.Errorf("reconcile task: bad payload: %v: %w", err, asynq.SkipRetry)
		}
	}
	_, err := r.Run(ctx, Options{DryRun: p.DryRun, TagID: p.TagID})
	if errors.Is(err, ErrRunning) || errors.Is(err, ErrTagNotFound) {
		return fmt.Errorf("reconcile task: %w: %w", err, asynq.SkipRetry)
	}
	return err
}

// Schedule returns the cron spec, for asynq's Scheduler, of a daily
// run at hourUTC:minute UTC whatever the scheduler's location.
func Schedule(hourUTC, minute int) string {
	return fmt.Sprintf("CRON_TZ=UTC %d %d * * *", minute, hourUTC)
}
