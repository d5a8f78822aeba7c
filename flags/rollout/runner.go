package rollout

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/loop"
)

// Setter moves the flag's rollout percentage. SetPercent returns once the
// flag source has it (not once every instance evaluates it), or an error;
// setting the percentage the flag already has is harmless.
type Setter interface {
	SetPercent(ctx context.Context, percent int) error
}

// DefaultInterval is how often a runner evaluates the guards.
const DefaultInterval = 5 * time.Second

// RunnerConfig configures a Runner. DB and Measures are required; every
// other zero field takes its default (WithDefaults) or is off.
type RunnerConfig struct {
	DB       *migrations.DB // required
	Measures Measures       // required
	// Setter moves the flag. Nil makes a runner that only reports the
	// latest plan in its metrics (a process that cannot move the flag).
	Setter Setter
	Guards Guards
	// Flag is the flag plans move; default flags.NewPostingPath.
	Flag string
	// Interval is how often the guards are read; default DefaultInterval.
	// A failed guard is acted on at the first read that sees it.
	Interval time.Duration
	// Actor names this runner in plans' history; default runner:<host>-<pid>.
	Actor      string
	Now        func() time.Time // default time.Now
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Runner runs the rollout plan: one Runner at a time holds the plan's lock
// (MySQL GET_LOCK), the others wait to take over.
type Runner struct {
	cfg     RunnerConfig
	plans   Plans
	log     *slog.Logger
	metrics *metrics
}

// WithDefaults returns c with every zero field that has a default set to
// it (the guards' too): the one place RunnerConfig's defaults are applied.
func (c RunnerConfig) WithDefaults() RunnerConfig {
	c.Interval = cmp.Or(c.Interval, DefaultInterval)
	c.Guards = c.Guards.withDefaults()
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Actor == "" {
		host, _ := os.Hostname()
		c.Actor = fmt.Sprintf("runner:%s-%d", host, os.Getpid())
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// NewRunner returns a runner. It returns an error when DB or Measures is
// missing.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	if cfg.DB == nil || cfg.Measures == nil {
		return nil, errors.New("rollout: a runner needs a DB and Measures")
	}
	cfg = cfg.WithDefaults()
	return &Runner{cfg: cfg, plans: Plans{DB: cfg.DB, Flag: cfg.Flag, Now: cfg.Now},
		log: cfg.Logger.With("component", "rollout"), metrics: newMetrics(cfg.Registerer)}, nil
}

// runnerLock names the advisory lock of the one running runner; GET_LOCK
// names are server-wide, so it carries a digest of the database's name.
const runnerLock = "CONCAT('tagcount_rollout:', LEFT(MD5(COALESCE(DATABASE(), '')), 32))"

// Run evaluates the plan every Interval until ctx ends, while it holds the
// runner lock on a connection of its own (taking it when its holder goes
// away, e.g. killed), and returns nil. Errors of a round are logged; the
// next round tries again.
func (r *Runner) Run(ctx context.Context) error {
	leader := migrations.NewLeader(r.cfg.DB, runnerLock)
	defer leader.Close()
	return loop.Every(ctx, r.cfg.Interval, func(ctx context.Context) { r.round(ctx, leader) })
}

// round runs one round if this runner holds (or can take) the lock, and
// only keeps the metrics otherwise.
func (r *Runner) round(ctx context.Context, leader *migrations.Leader) {
	if r.cfg.Setter == nil {
		r.observeOnly(ctx)
		return
	}
	held, taken := leader.Held(ctx)
	if !held {
		r.observeOnly(ctx) // another runner holds it
		return
	}
	if taken {
		r.log.Info("rollout runner holds the plan lock", "actor", r.cfg.Actor)
	}
	if err := r.RunOnce(ctx); err != nil && ctx.Err() == nil {
		r.log.Warn("rollout round failed; the next round tries again", "err", err)
	}
}

// observeOnly keeps the metrics of a runner that waits for the lock.
func (r *Runner) observeOnly(ctx context.Context) {
	if p, err := r.plans.Latest(ctx); err == nil {
		r.metrics.plan(p)
	}
}

// RunOnce is one round: it sets the flag to the current step when its
// window has not begun, else reads the guards and rolls back, advances or
// holds. Run calls it under the lock; tests call it directly. It returns
// the first error, having decided nothing that it did not record.
func (r *Runner) RunOnce(ctx context.Context) error {
	p, err := r.plans.Latest(ctx)
	if errors.Is(err, ErrNoPlan) {
		return nil
	}
	if err != nil {
		return err
	}
	defer func() { r.metrics.plan(p) }()
	if p.State != StateRunning {
		return nil
	}
	if p.WindowFrom.IsZero() {
		return r.enter(ctx, &p)
	}
	now := r.cfg.Now()
	reading, err := r.cfg.Measures.Measure(ctx, p.WindowFrom, now)
	if err != nil {
		return fmt.Errorf("reading the guards' measures: %w", err)
	}
	backlogFrom := reading.Backlog
	if p.BacklogFrom != nil {
		backlogFrom = *p.BacklogFrom
	}
	v := Evaluate(r.cfg.Guards, reading, p.Evaluations+1, backlogFrom)
	r.metrics.guards(v)
	if failed, ok := v.Failed(); ok {
		return r.rollBack(ctx, &p, v, failed, now)
	}
	if now.Sub(p.WindowFrom) < p.Hold || !v.Ready() {
		return r.plans.evaluated(ctx, p, v, backlogFrom, now)
	}
	changed, err := r.plans.passed(ctx, p, v, r.cfg.Actor, now)
	if err != nil || !changed {
		return err
	}
	r.log.Info("rollout step held", "plan", p.ID, "step", p.Current+1, "percent", p.Percent, "guards", summary(v))
	if p, err = r.plans.Latest(ctx); err != nil || p.State != StateRunning {
		return err
	}
	return r.enter(ctx, &p) // the next step at once, not a round later
}

// enter sets the flag to the current step's percentage and records that
// its window began.
func (r *Runner) enter(ctx context.Context, p *Plan) error {
	step := p.Steps[p.Current]
	if err := r.cfg.Setter.SetPercent(ctx, step.Percent); err != nil {
		return fmt.Errorf("setting %s to %d %%: %w", p.Flag, step.Percent, err)
	}
	changed, err := r.plans.entered(ctx, *p, r.cfg.Actor, r.cfg.Now())
	if err != nil || !changed {
		return err
	}
	r.log.Info("rollout step entered", "plan", p.ID, "step", p.Current+1, "of", len(p.Steps), "percent", step.Percent, "hold", p.Hold)
	p.Percent = step.Percent
	return nil
}

// rollBack sets the flag back to the last step that held (0 % for the
// first step, or a severe failure) and stops the plan, saying why.
func (r *Runner) rollBack(ctx context.Context, p *Plan, v Verdict, failed GuardResult, now time.Time) error {
	target := 0
	if !failed.Severe && p.Current > 0 {
		target = p.Steps[p.Current-1].Percent
	}
	if err := r.cfg.Setter.SetPercent(ctx, target); err != nil {
		return fmt.Errorf("rolling %s back to %d %%: %w", p.Flag, target, err)
	}
	severity := "failed"
	if failed.Severe {
		severity = "failed severely"
	}
	reason := fmt.Sprintf("guard %s %s at %s on step %d (%d %%): %.4g %s against a bound of %.4g over %d samples; flag set back to %d %%",
		failed.Name, severity, now.UTC().Format(time.RFC3339), p.Current+1, p.Percent, failed.Value, failed.Unit, failed.Bound, failed.Samples, target)
	if err := r.plans.rolledBack(ctx, *p, v, failed, target, reason, r.cfg.Actor, now); err != nil {
		return err
	}
	r.metrics.rollbacks.WithLabelValues(failed.Name).Inc()
	r.log.Error("rollout rolled back", "plan", p.ID, "guard", failed.Name, "value", failed.Value, "bound", failed.Bound,
		"unit", failed.Unit, "samples", failed.Samples, "severe", failed.Severe, "step", p.Current+1, "from_percent", p.Percent,
		"to_percent", target, "at", now.UTC())
	p.State, p.Percent = StateRolledBack, target
	return nil
}
