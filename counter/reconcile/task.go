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
// rate-limited run over a large archive) and 16 retries (with RetryDelay,
// four hours of waiting for a manual run to finish); taskOpts override.
func NewTask(opts Options, taskOpts ...asynq.Option) *asynq.Task {
	payload, _ := json.Marshal(taskPayload{DryRun: opts.DryRun, TagID: opts.TagID}) // cannot fail
	all := append([]asynq.Option{asynq.MaxRetry(16), asynq.Timeout(12 * time.Hour)}, taskOpts...)
	return asynq.NewTask(TypeRun, payload, all...)
}

// RetryDelay is how long a reconcile task waits before its retry: a run
// that found the lock taken waits for the other run to finish.
func RetryDelay(int) time.Duration { return 15 * time.Minute }

// HandleTask runs the reconcile a TypeRun task asks for. When the payload
// is malformed, the tag does not exist, or a full applying run holds the
// lock (it does the work), it returns an error wrapping asynq.SkipRetry.
// When a smaller run holds the lock (a one-tag recount, a dry run started
// by hand at 03:00), the error is retried, so that night's run is not
// skipped. Other failures are returned for asynq to retry.
func (r *Reconciler) HandleTask(ctx context.Context, t *asynq.Task) error {
	var p taskPayload
	if len(t.Payload()) > 0 {
		if err := json.Unmarshal(t.Payload(), &p); err != nil {
			return fmt.Errorf("reconcile task: bad payload: %v: %w", err, asynq.SkipRetry)
		}
	}
	_, err := r.Run(ctx, Options{DryRun: p.DryRun, TagID: p.TagID})
	switch {
	case errors.Is(err, ErrTagNotFound):
		return fmt.Errorf("reconcile task: %w: %w", err, asynq.SkipRetry)
	case errors.Is(err, ErrRunning) && r.fullRunRunning(ctx):
		return fmt.Errorf("reconcile task: %w (a full run does the work): %w", err, asynq.SkipRetry)
	}
	return err
}

// fullRunRunning reports whether the run in progress is a full, applying
// run.
func (r *Reconciler) fullRunRunning(ctx context.Context) bool {
	var onlyTag *int64
	var dry bool
	err := r.cfg.DB.QueryRowContext(ctx,
		"SELECT only_tag_id, dry_run FROM reconcile_runs WHERE state = 'running' ORDER BY id DESC LIMIT 1").Scan(&onlyTag, &dry)
	return err == nil && onlyTag == nil && !dry
}

// Schedule returns the cron spec, for asynq's Scheduler, of a daily
// run at hourUTC:minute UTC whatever the scheduler's location.
func Schedule(hourUTC, minute int) string {
	return fmt.Sprintf("CRON_TZ=UTC %d %d * * *", minute, hourUTC)
}
