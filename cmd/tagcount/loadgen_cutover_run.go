package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/archive"
	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/cmd/tagcount/loadgen"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/flags/rollout"
	"github.com/tagcount/tagcount/migrations/loop"
)

// conductor moves a cutover or rollout scenario through its phases while
// the load runs: it starts the plan after the steady phase, the reconcile
// (and the wrangling job) at their time, injects the fault, and ends the
// load once the plan and the reconcile are over.
type conductor struct {
	c        cutoverSettings
	scenario string
	st       *stack
	plans    rollout.Plans
	start    time.Time
	stderr   io.Writer

	mu                                     sync.Mutex
	planID                                 int64
	planStarted, planEnded                 bool
	reconID, reconTotal                    int64
	reconStarted, reconEnded, reconTimeout bool
	reconAt, planEndAt, faultAt            time.Time
	resumed                                bool
	errs                                   []error
}

// phase is the scenario's phase now (loadgen's Phase* names).
func (k *conductor) phase() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	plan := k.planStarted && !k.planEnded
	recon := k.reconStarted && !k.reconEnded
	switch {
	case !k.planStarted:
		return loadgen.PhaseSteady
	case plan && !k.faultAt.IsZero():
		return loadgen.PhaseFault
	case plan && recon:
		return loadgen.PhaseBoth
	case plan:
		return loadgen.PhaseRollout
	case recon:
		return loadgen.PhaseReconcile
	}
	return loadgen.PhaseAfter
}

func (k *conductor) fail(err error) {
	k.mu.Lock()
	k.errs = append(k.errs, err)
	k.mu.Unlock()
	fmt.Fprintf(k.stderr, "loadgen: %s: %v\n", k.scenario, err)
}

// run conducts until the scenario is over (or ctx ends), then closes stop.
func (k *conductor) run(ctx context.Context, stop chan<- struct{}) {
	defer close(stop)
	var endAt time.Time
	for ctx.Err() == nil {
		since := time.Since(k.start)
		if !k.planStarted && since >= k.c.Steady {
			k.startPlan(ctx)
		}
		if k.scenario == scenarioCutover && !k.reconStarted && since >= k.c.ReconcileAt {
			k.startReconcile(ctx)
		}
		if k.c.Fault != "" && k.planStarted && !k.planEnded && k.faultAt.IsZero() && since >= k.c.FaultAt {
			k.injectFault(ctx)
		}
		k.watchPlan(ctx)
		k.watchReconcile(ctx)
		if k.planEnded && (k.scenario != scenarioCutover || k.reconEnded) {
			if endAt.IsZero() {
				endAt = time.Now().Add(k.c.After)
			}
			if time.Now().After(endAt) {
				return
			}
		}
		loop.Sleep(ctx, time.Second)
	}
}

func (k *conductor) startPlan(ctx context.Context) {
	steps, _ := parseSteps(k.c.Steps)
	p, err := k.plans.Start(ctx, steps, k.c.Hold, "loadgen:"+k.scenario)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.planStarted = true
	if err != nil {
		k.planEnded = true
		k.errs = append(k.errs, fmt.Errorf("starting the plan: %w", err))
		return
	}
	k.planID = p.ID
	fmt.Fprintf(k.stderr, "loadgen: %s: rollout plan %d started: steps %s %%, hold %v\n", k.scenario, p.ID, k.c.Steps, k.c.Hold)
}

// watchPlan notes the plan's end; it aborts a plan past --plan-timeout,
// and resumes the counters once a faulted plan has ended.
func (k *conductor) watchPlan(ctx context.Context) {
	if !k.planStarted || k.planEnded {
		return
	}
	p, err := k.plans.Latest(ctx)
	if err != nil {
		return
	}
	if p.Active() && time.Since(p.CreatedAt) > k.c.PlanTimeout {
		p, err = k.plans.Abort(ctx, "loadgen:"+k.scenario, "the scenario's --plan-timeout passed")
		if err != nil {
			k.fail(fmt.Errorf("aborting the plan: %w", err))
			return
		}
	}
	if p.Active() {
		return
	}
	k.mu.Lock()
	k.planEnded, k.planEndAt = true, time.Now()
	k.mu.Unlock()
	fmt.Fprintf(k.stderr, "loadgen: %s: rollout plan %d %s at %d %% %s\n", k.scenario, p.ID, p.State, p.Percent, p.Reason)
	if !k.faultAt.IsZero() {
		if err := (counter.Control{DB: k.st.DB}).Resume(ctx, 0); err != nil {
			k.fail(fmt.Errorf("resuming the counters: %w", err))
		}
		k.mu.Lock()
		k.resumed = true
		k.mu.Unlock()
	}
}

func (k *conductor) injectFault(ctx context.Context) {
	if err := (counter.Control{DB: k.st.DB}).Pause(ctx); err != nil {
		k.fail(fmt.Errorf("pausing the counters: %w", err))
		return
	}
	k.mu.Lock()
	k.faultAt = time.Now()
	k.mu.Unlock()
	fmt.Fprintf(k.stderr, "loadgen: %s: fault %s: every counter paused\n", k.scenario, k.c.Fault)
}

func (k *conductor) startReconcile(ctx context.Context) {
	total, err := tags.Count(ctx, k.st.DB, "")
	if err != nil {
		k.fail(err)
	}
	rep, err := k.st.reconciler.Start(ctx, reconcile.Options{})
	k.mu.Lock()
	k.reconStarted, k.reconAt, k.reconTotal = true, time.Now(), total
	if err != nil {
		k.reconEnded = true
		k.errs = append(k.errs, fmt.Errorf("starting the reconcile: %w", err))
	}
	k.reconID = rep.ID
	k.mu.Unlock()
	fmt.Fprintf(k.stderr, "loadgen: %s: reconcile run %d started over %d tags\n", k.scenario, rep.ID, total)
	if k.c.Wrangle && err == nil {
		k.startWrangling(ctx)
	}
}

// startWrangling makes the archive's second largest free-form tag a synonym
// of its largest: a wrangling job re-files its works under the load.
func (k *conductor) startWrangling(ctx context.Context) {
	var ids [2]int64
	for i, name := range []string{"Freeform 0", "Freeform 1"} {
		t, ok, err := tags.ByKey(ctx, k.st.DB, tags.TypeFreeform, tags.NameKey(name))
		if err != nil || !ok {
			k.fail(fmt.Errorf("the wrangled tag %q: found %v, %v", name, ok, err))
			return
		}
		ids[i] = t.ID
	}
	job, err := k.st.Poster.MakeSynonym(ctx, ids[1], ids[0])
	if err != nil {
		k.fail(fmt.Errorf("wrangling: %w", err))
		return
	}
	fmt.Fprintf(k.stderr, "loadgen: %s: wrangling job %d re-files \"Freeform 1\" under \"Freeform 0\"\n", k.scenario, job.ID)
}

// watchReconcile notes the reconcile's end, or its timeout.
func (k *conductor) watchReconcile(ctx context.Context) {
	if !k.reconStarted || k.reconEnded {
		return
	}
	rep, err := k.st.reconciler.FindReport(ctx, k.reconID)
	timedOut := time.Since(k.reconAt) > k.c.ReconcileTimeout
	if (err != nil || rep.State == reconcile.StateRunning) && !timedOut {
		return
	}
	k.mu.Lock()
	k.reconEnded, k.reconTimeout = true, rep.State == reconcile.StateRunning
	k.mu.Unlock()
	fmt.Fprintf(k.stderr, "loadgen: %s: reconcile run %d %s: %d of %d tags scanned, %d corrected\n", k.scenario, k.reconID, rep.State,
		rep.TagsScanned, k.reconTotal, rep.TagsCorrected)
}

// serviceReading is what the series samples of st: its components' rows
// written, the outbox, the reconcile run, the plan, and phase.
func serviceReading(ctx context.Context, st *stack, k *conductor, phase string) loadgen.ServiceReading {
	reg := st.Registry
	corr := metricValue(reg, "tagcount_reconcile_corrections_total")
	r := loadgen.ServiceReading{
		CounterRows:   metricValue(reg, "tagcount_tag_count_writes_total") + metricValue(reg, "tagcount_events_applied_total"),
		ReconcileRows: 2 * corr, Corrections: corr, WranglingRows: metricValue(reg, "tagcount_wrangle_rows_written_total"),
		Phase: phase,
	}
	var oldest sql.NullTime
	if st.DB.QueryRowContext(ctx, "SELECT COUNT(*), MIN(created_at) FROM tag_events").Scan(&r.OutboxRows, &oldest) == nil && oldest.Valid {
		r.OutboxAge = max(time.Since(oldest.Time), 0)
	}
	if p, err := (rollout.Plans{DB: st.DB}).Latest(ctx); err == nil {
		r.RolloutPercent, r.RolloutState = p.Percent, p.State
		for _, g := range p.Guards {
			r.Guards = append(r.Guards, loadgen.GuardValue{Name: g.Name, Value: g.Value, Bound: g.Bound, Unit: g.Unit, Samples: g.Samples, OK: g.OK})
		}
	}
	if k != nil {
		k.mu.Lock()
		id, total := k.reconID, k.reconTotal
		k.mu.Unlock()
		if id > 0 {
			if rep, err := st.reconciler.FindReport(ctx, id); err == nil {
				r.ReconcileScanned, r.ReconcileTotal = rep.TagsScanned, total
			}
		}
	}
	return r
}

// cutoverRun runs the scenario's load under its conductor, then quiets the
// service and checks the counts; rep gets the run, the series and the
// outcomes.
func (lg *loadgenSession) cutoverRun(ctx context.Context, st *stack, rep *loadgen.CutoverReport, manifest []archive.Injected) error {
	c := lg.s.Cutover
	k := &conductor{c: c, scenario: lg.s.Scenario, st: st, plans: rollout.Plans{DB: st.DB}, start: time.Now(), stderr: lg.stderr}
	cfg := lg.cutoverConfig(st, lg.s.Scenario)
	stop := make(chan struct{})
	// The load ends when the conductor says; this only bounds it.
	cfg.Stop, cfg.Duration = stop, c.Steady+c.PlanTimeout+c.ReconcileTimeout+c.ReconcileAt+c.After+time.Minute
	sampler := loadgen.StartSeries(ctx, loadgen.SeriesConfig{Every: c.SeriesEvery, DB: st.DB, Window: cfg.Window,
		Probe: func(ctx context.Context) loadgen.ServiceReading { return serviceReading(ctx, st, k, k.phase()) }})
	go k.run(ctx, stop)
	res, err := runWithLockWaits(ctx, st, cfg)
	<-stop
	series := sampler.Stop(ctx)
	rep.Run = res
	k.outcomes(ctx, rep, series)
	if err == nil {
		rep.Converged = lg.converge(ctx, st, k, manifest)
	}
	rep.Finish(series, reconcile.DefaultCorrectionsPerSecond)
	k.mu.Lock()
	defer k.mu.Unlock()
	return errors.Join(append(k.errs, err)...)
}

// outcomes fills in the plan's and the reconcile's outcomes.
func (k *conductor) outcomes(ctx context.Context, rep *loadgen.CutoverReport, series *loadgen.Series) {
	k.mu.Lock()
	defer k.mu.Unlock()
	secs := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return t.Sub(k.start).Seconds()
	}
	if k.planID > 0 {
		if p, err := k.plans.Latest(ctx); err == nil {
			ro := &loadgen.RolloutOutcome{PlanID: p.ID, State: p.State, Percent: p.Percent, Steps: k.c.Steps, FailedGuard: p.FailedGuard,
				Reason: p.Reason, FaultAtS: secs(k.faultAt), EndedAtS: secs(k.planEndAt)}
			for _, s := range p.Steps {
				if !s.PassedAt.IsZero() {
					ro.StepsPassed++
				}
			}
			ro.StateJSON, _ = json.MarshalIndent(httpapi.NewRolloutJSON(p, nil), "", "  ")
			rep.Rollout = ro
		}
	}
	if k.reconID > 0 {
		rep.Reconcile = k.reconcileOutcome(ctx, series, secs(k.reconAt))
	}
}

// reconcileOutcome is the reconcile run as it ended (or stood at its
// timeout), with its rate and, when it did not finish, its projection; k.mu
// is held.
func (k *conductor) reconcileOutcome(ctx context.Context, series *loadgen.Series, startedAt float64) *loadgen.ReconcileOutcome {
	r, err := k.st.reconciler.FindReport(ctx, k.reconID)
	out := &loadgen.ReconcileOutcome{RunID: k.reconID, State: r.State, StartedAtS: startedAt, Scanned: r.TagsScanned, Total: k.reconTotal,
		Drifted: r.TagsDrifted, Corrected: r.TagsCorrected, Budget: reconcile.DefaultCorrectionsPerSecond, TimedOut: k.reconTimeout}
	if err != nil {
		out.Description = "report: " + err.Error()
		return out
	}
	out.Seconds = r.Duration().Seconds()
	if out.Seconds > 0 {
		out.TagsPerSec = float64(r.TagsScanned) / out.Seconds
	}
	for _, s := range series.Samples {
		out.PeakCorrPS = max(out.PeakCorrPS, s.CorrectionsPerS)
	}
	if out.TagsPerSec > 0 {
		out.ProjectedS = float64(out.Total) / out.TagsPerSec
	}
	out.Description = fmt.Sprintf("a whole run at this rate takes %.0f s", out.ProjectedS)
	if k.reconTimeout {
		out.Description = fmt.Sprintf("stopped waiting at --reconcile-timeout; at %.1f tags/s the %d tags take %.0f s", out.TagsPerSec, out.Total, out.ProjectedS)
	}
	return out
}
