package counter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
)

// TypeReconcile is the asynq task type of a reconcile run.
const TypeReconcile = "reconcile:run"

type reconcileTaskPayload struct {
	DryRun bool  `json:"dry_run,omitempty"`
	TagID  int64 `json:"tag_id,omitempty"`
}

// NewReconcileTask returns a task that runs reconcile with opts. It carries
// a 12-hour timeout (asynq's default of 30 minutes is too short for a
// rate-limited run over a large archive) and 3 retries; taskOpts override.
func NewReconcileTask(opts ReconcileOptions, taskOpts ...asynq.Option) *asynq.Task {
	payload, _ := json.Marshal(reconcileTaskPayload{DryRun: opts.DryRun, TagID: opts.TagID}) // cannot fail
	all := append([]asynq.Option{asynq.MaxRetry(3), asynq.Timeout(12 * time.Hour)}, taskOpts...)
	return asynq.NewTask(TypeReconcile, payload, all...)
}

// HandleReconcileTask runs the reconcile a TypeReconcile task asks for. When
// another run holds the lock, or the payload is malformed, it returns an
// error wrapping asynq.SkipRetry: retrying cannot help (the run in progress
// does the work). Other failures are returned for asynq to retry.
func (r *Reconciler) HandleReconcileTask(ctx context.Context, t *asynq.Task) error {
	var p reconcileTaskPayload
	if len(t.Payload()) > 0 {
		if err := json.Unmarshal(t.Payload(), &p); err != nil {
			return fmt.Errorf("reconcile task: bad payload: %v: %w", err, asynq.SkipRetry)
		}
	}
	_, err := r.Run(ctx, ReconcileOptions{DryRun: p.DryRun, TagID: p.TagID})
	if errors.Is(err, ErrReconcileRunning) || errors.Is(err, ErrReconcileTagNotFound) {
		return fmt.Errorf("reconcile task: %w: %w", err, asynq.SkipRetry)
	}
	return err
}

// ReconcileSchedule returns the cron spec, for asynq's Scheduler, of a daily
// run at hourUTC:minute UTC whatever the scheduler's location.
func ReconcileSchedule(hourUTC, minute int) string {
	return fmt.Sprintf("CRON_TZ=UTC %d %d * * *", minute, hourUTC)
}
