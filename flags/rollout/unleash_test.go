package rollout

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tagcount/tagcount/flags"
	"github.com/tagcount/tagcount/flags/unleashtest"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// serverPercent is the new-path flag's rollout as a client of the server
// evaluates it, once it has synced; -1 when unknown.
func serverPercent(c *flags.Client) float64 {
	for _, f := range c.Snapshot().Flags {
		if f.Name == flags.NewPostingPath && f.RolloutPercent != nil {
			return *f.RolloutPercent
		}
	}
	return -1
}

func serverClient(t *testing.T, u *unleashtest.Server) *flags.Client {
	t.Helper()
	c, err := flags.New(context.Background(), flags.Config{URL: u.APIURL(), Token: u.ClientToken(),
		RefreshInterval: 100 * time.Millisecond, MetricsInterval: -1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestUnleashAdminMovesTheFlagEveryClientEvaluates(t *testing.T) {
	t.Parallel()
	u := unleashtest.Shared(t)
	u.CreateFlag(t, flags.NewPostingPath)
	c := serverClient(t, u)
	admin := UnleashAdmin{URL: u.APIURL(), Token: u.AdminToken(), Environment: unleashtest.Environment}
	for _, pct := range []int{30, 100, 0} {
		if err := admin.SetPercent(context.Background(), pct); err != nil {
			t.Fatal(err)
		}
		testdb.WaitFor(t, 30*time.Second, fmt.Sprintf("clients to evaluate %d %%", pct), func() bool { return serverPercent(c) == float64(pct) })
	}
	bad := UnleashAdmin{URL: u.APIURL(), Token: "not-a-token", Environment: unleashtest.Environment}
	if err := bad.SetPercent(context.Background(), 10); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a bad admin token: %v, want the server's 401", err)
	}
}

// runnerChild is the config of a runner in a helper process.
type runnerChild struct {
	DSN, URL, Token, Environment, Flag string
}

// TestHelperRolloutRunner is a runner process that the kill test starts
// and SIGKILLs; it runs until killed.
func TestHelperRolloutRunner(t *testing.T) {
	var cfg runnerChild
	testdb.ChildConfig(t, &cfg)
	db := testdb.ChildDB(t, cfg.DSN)
	r, err := NewRunner(RunnerConfig{DB: db, Measures: &scripted{r: healthy()}, Guards: testGuards, Interval: 20 * time.Millisecond,
		Setter: UnleashAdmin{URL: cfg.URL, Token: cfg.Token, Environment: cfg.Environment, Flag: cfg.Flag},
		Actor:  fmt.Sprintf("runner:child-%d", os.Getpid())})
	if err != nil {
		t.Fatal(err)
	}
	r.Run(context.Background())
}

func TestRunnerKilledMidStepIsReplacedAndContinuesFromTheRecordedStep(t *testing.T) {
	t.Parallel()
	u := unleashtest.Shared(t)
	const flag = "tagcount.rollout-kill-test" // the shared server's new-path flag is another test's
	u.CreateFlag(t, flag)
	db := testdb.New(t)
	ctx := context.Background()
	plans := Plans{DB: db.DB, Flag: flag}
	steps := []int{10, 20, 30, 40, 50}
	if _, err := plans.Start(ctx, steps, 1500*time.Millisecond, "admin:1"); err != nil {
		t.Fatal(err)
	}
	cfg := runnerChild{DSN: db.DSN, URL: u.APIURL(), Token: u.AdminToken(), Environment: unleashtest.Environment, Flag: flag}
	first := testdb.StartChild(t, "TestHelperRolloutRunner", cfg)
	var killedOn Plan
	testdb.WaitFor(t, time.Minute, "the runner to enter step 3", func() bool {
		p, err := plans.Latest(ctx)
		killedOn = p
		return err == nil && p.Current == 2 && !p.WindowFrom.IsZero()
	})
	first.Process.Kill() // SIGKILL, mid-step: its window is running
	first.Wait()
	second := testdb.StartChild(t, "TestHelperRolloutRunner", cfg)
	var p Plan
	testdb.WaitFor(t, 2*time.Minute, "the replacement to finish the plan", func() bool {
		p, _ = plans.Latest(ctx)
		return p.State == StateDone || p.State == StateRolledBack
	})
	if p.State != StateDone || p.Percent != 50 {
		t.Fatalf("plan %s at %d %%: %s", p.State, p.Percent, p.Reason)
	}
	admin := UnleashAdmin{URL: u.APIURL(), Token: u.AdminToken(), Environment: unleashtest.Environment, Flag: flag}
	if pct, err := admin.Percent(ctx); err != nil || pct != 50 {
		t.Fatalf("the flag on the server is at %d %% (%v), want 50", pct, err)
	}

	_, hist, err := plans.History(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := "start:0 step:10 advance:10 step:20 advance:20 step:30 advance:30 step:40 advance:40 step:50 done:50"
	if got := kinds(hist[p.ID]); got != want {
		t.Fatalf("a step repeated or skipped across the replacement:\n got %s\nwant %s", got, want)
	}
	actors := map[string]bool{}
	for _, d := range hist[p.ID] {
		actors[d.Actor] = true
	}
	for _, pid := range []int{first.Process.Pid, second.Process.Pid} {
		if !actors[fmt.Sprintf("runner:child-%d", pid)] {
			t.Errorf("no decision by runner %d; actors %v", pid, slices.Collect(maps.Keys(actors)))
		}
	}
	t.Logf("killed on step %d (%d %%); the replacement finished the plan", killedOn.Current+1, killedOn.Percent)
}
