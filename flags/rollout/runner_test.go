package rollout

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagcount/tagcount/flags"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// clock is a test's time: it moves only when the test says.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// scripted is a measure source whose reading a test sets (the guards' pure
// side is what these tests exercise; measures_test.go reads real data).
type scripted struct {
	mu sync.Mutex
	r  Reading
}

func (s *scripted) Measure(context.Context, time.Time, time.Time) (Reading, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r, nil
}

func (s *scripted) set(f func(*Reading)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.r)
}

type fixture struct {
	db       *testdb.DB
	flags    *flags.Client
	clock    *clock
	measures *scripted
	runner   *Runner
	plans    Plans
}

// newFixture is a runner on a test database that moves the flag of an
// offline flags client (the development setter), on a test clock.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	db := testdb.New(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fc, err := flags.New(context.Background(), flags.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fc.Close() })
	f := &fixture{db: db, flags: fc, clock: &clock{now: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}, measures: &scripted{r: healthy()}}
	f.runner, err = NewRunner(RunnerConfig{DB: db.DB, Setter: LocalFlags{Client: fc}, Measures: f.measures, Guards: testGuards,
		Now: f.clock.Now, Actor: "runner:test", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	f.plans = Plans{DB: db.DB, Now: f.clock.Now}
	return f
}

// round runs one round of the runner, then moves the clock by d.
func (f *fixture) round(t *testing.T, d time.Duration) Plan {
	t.Helper()
	if err := f.runner.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(d)
	p, err := f.plans.Latest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) percent(t *testing.T) float64 {
	t.Helper()
	for _, fl := range f.flags.Snapshot().Flags {
		if fl.Name == flags.NewPostingPath && fl.RolloutPercent != nil {
			return *fl.RolloutPercent
		}
	}
	t.Fatal("the new-path flag has no rollout percentage")
	return 0
}

func kinds(ds []Decision) string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Kind+":"+itoa(d.Percent))
	}
	return strings.Join(out, " ")
}

func itoa(n int) string { return joinInts([]int{n}) }

func TestHealthyPlanWalksEveryStepOnceTo100(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.plans.Start(ctx, []int{1, 5, 25, 50, 100}, 10*time.Minute, "admin:1"); err != nil {
		t.Fatal(err)
	}
	var p Plan
	for i := 0; i < 100 && p.State != StateDone; i++ {
		p = f.round(t, 3*time.Minute)
		if p.State == StateRunning && float64(p.Percent) != f.percent(t) && !p.WindowFrom.IsZero() {
			t.Fatalf("plan at %d %%, flag at %v %%", p.Percent, f.percent(t))
		}
	}
	if p.State != StateDone || p.Percent != 100 || f.percent(t) != 100 {
		t.Fatalf("plan %s at %d %%, flag %v %%; want done at 100", p.State, p.Percent, f.percent(t))
	}
	_, ds, err := f.plans.History(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := "start:0 step:1 advance:1 step:5 advance:5 step:25 advance:25 step:50 advance:50 step:100 done:100"
	if got := kinds(ds[p.ID]); got != want {
		t.Fatalf("history\n got %s\nwant %s", got, want)
	}
	for i, st := range p.Steps {
		if st.EnteredAt.IsZero() || st.PassedAt.Sub(st.EnteredAt) < 10*time.Minute {
			t.Fatalf("step %d entered %v, passed %v: not held for the window", i+1, st.EnteredAt, st.PassedAt)
		}
	}
}

func TestStepWaitsPastItsWindowForTheGuardsMinimumSamples(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.measures.set(func(r *Reading) { r.NewPosts, r.FreshnessSamples = 3, 3 })
	if _, err := f.plans.Start(context.Background(), []int{10, 100}, time.Minute, "admin:1"); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if p := f.round(t, time.Minute); p.Current != 0 || p.State != StateRunning {
			t.Fatalf("advanced with 3 of 10 posts: step %d, %s", p.Current+1, p.State)
		}
	}
	f.measures.set(func(r *Reading) { r.NewPosts, r.FreshnessSamples = 10, 10 })
	if p := f.round(t, time.Minute); p.Current != 1 || p.Percent != 100 {
		t.Fatalf("sampled and held, the plan should be on step 2 at 100 %%: step %d at %d %%", p.Current+1, p.Percent)
	}
}

func TestFailedGuardRollsBackAtTheFirstEvaluationWithItsSamples(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.plans.Start(ctx, []int{5, 25, 50}, 10*time.Minute, "admin:1"); err != nil {
		t.Fatal(err)
	}
	var p Plan
	for p.Current < 1 || p.WindowFrom.IsZero() {
		p = f.round(t, 4*time.Minute)
	}
	// The counter stops: posts stay uncounted and age, while the window
	// has only a few of them.
	f.measures.set(func(r *Reading) { r.FreshnessP99, r.FreshnessSamples = 5*time.Second, 9 })
	if p = f.round(t, time.Second); p.State != StateRunning {
		t.Fatalf("rolled back on 9 of 10 samples: %s", p.Reason)
	}
	f.measures.set(func(r *Reading) { r.FreshnessSamples = 10 })
	p = f.round(t, time.Second)
	if p.State != StateRolledBack || p.FailedGuard != GuardFreshness || p.Percent != 5 || f.percent(t) != 5 {
		t.Fatalf("want rolled_back by freshness_p99 to 5 %%, got %s by %q at %d %% (flag %v %%)", p.State, p.FailedGuard, p.Percent, f.percent(t))
	}
	for _, want := range []string{"freshness_p99", "step 2 (25 %)", "5 seconds", "bound of 2", "10 samples", "back to 5 %"} {
		if !strings.Contains(p.Reason, want) {
			t.Errorf("reason %q does not say %q", p.Reason, want)
		}
	}
	// Stopped: later rounds change nothing.
	if p = f.round(t, time.Hour); p.State != StateRolledBack || f.percent(t) != 5 {
		t.Fatalf("a rolled-back plan moved: %s at %v %%", p.State, f.percent(t))
	}
}

func TestSevereFailureRollsBackToZero(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if _, err := f.plans.Start(context.Background(), []int{5, 25}, time.Minute, "admin:1"); err != nil {
		t.Fatal(err)
	}
	var p Plan
	for p.Current < 1 || p.WindowFrom.IsZero() {
		p = f.round(t, 2*time.Minute)
	}
	f.measures.set(func(r *Reading) { r.NewErrors = 50 }) // 50 % of new-path posts fail; margin 5 points
	p = f.round(t, time.Second)
	if p.State != StateRolledBack || p.FailedGuard != GuardErrorRatio || p.Percent != 0 || f.percent(t) != 0 {
		t.Fatalf("want rolled_back by error_ratio to 0 %%, got %s by %q at %d %% (flag %v)", p.State, p.FailedGuard, p.Percent, f.percent(t))
	}
}

func TestOperatorPausesResumesAndAbortsOnePlanAtATime(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.plans.Pause(ctx, "admin:1"); !errors.Is(err, ErrNoPlan) {
		t.Fatalf("pause with no plan: %v, want ErrNoPlan", err)
	}
	if _, err := f.plans.Start(ctx, []int{10, 50}, time.Minute, "admin:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.plans.Start(ctx, []int{20}, time.Minute, "admin:2"); !errors.Is(err, ErrActive) {
		t.Fatalf("second plan: %v, want ErrActive", err)
	}
	f.round(t, time.Minute)
	if p, err := f.plans.Pause(ctx, "admin:1"); err != nil || p.State != StatePaused {
		t.Fatalf("pause: %v %s", err, p.State)
	}
	for range 5 {
		if p := f.round(t, time.Hour); p.Current != 0 || p.State != StatePaused {
			t.Fatalf("a paused plan moved: step %d %s", p.Current+1, p.State)
		}
	}
	if _, err := f.plans.Pause(ctx, "admin:1"); !errors.Is(err, ErrNotActive) {
		t.Fatalf("pausing a paused plan: %v", err)
	}
	p, err := f.plans.Resume(ctx, "admin:1")
	if err != nil || p.State != StateRunning || !p.WindowFrom.Equal(f.clock.Now()) {
		t.Fatalf("resume: %v %s, window from %v (now %v)", err, p.State, p.WindowFrom, f.clock.Now())
	}
	if p, err = f.plans.Abort(ctx, "admin:1", "changed my mind"); err != nil || p.State != StateAborted || p.Reason != "changed my mind" {
		t.Fatalf("abort: %v %+v", err, p)
	}
	if _, err := f.plans.Start(ctx, []int{20}, time.Minute, "admin:2"); err != nil {
		t.Fatalf("a plan after an aborted one: %v", err)
	}
	for _, bad := range [][]int{nil, {0}, {5, 5}, {50, 10}, {101}} {
		if _, err := f.plans.Start(ctx, bad, time.Minute, "admin:1"); !errors.Is(err, ErrInvalidStep) {
			t.Errorf("steps %v: %v, want ErrInvalidStep", bad, err)
		}
	}
}
