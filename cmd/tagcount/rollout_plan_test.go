package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/flags"
	"github.com/tagcount/tagcount/flags/rollout"
	"github.com/tagcount/tagcount/flags/unleashtest"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// guardedStack is a whole service whose posting path follows the new-path
// flag on its own unleash-server (at 0 %), with a rollout runner that moves
// the flag through the admin API and reads its guards every 100 ms.
func guardedStack(t *testing.T, guards rollout.Guards) (*stack, *unleashtest.Server) {
	t.Helper()
	u := unleashtest.Start(t)
	u.CreateFlag(t, flags.NewPostingPath)
	u.SetRollout(t, flags.NewPostingPath, 0)
	st := testStack(t, stackOptions{Path: "flag",
		Flags: flags.Config{URL: u.APIURL(), Token: u.ClientToken(), RefreshInterval: 100 * time.Millisecond},
		Rollout: rolloutOptions{AdminToken: u.AdminToken(), Environment: unleashtest.Environment,
			Interval: 100 * time.Millisecond, Guards: guards}})
	if err := st.Flags.WaitForSync(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Warm up: the counter's first join of its consumer group takes
	// seconds, which is not what the guards are to judge. One post on the
	// new path, counted, and the flag is back at 0 % before a plan starts.
	u.SetRollout(t, flags.NewPostingPath, 100)
	testdb.WaitFor(t, 30*time.Second, "the service to evaluate 100 %", func() bool { return rolloutPercent(st.Flags, flags.NewPostingPath) == 100 })
	postAndWait(t, st, st.client(t, 1, httpapi.RoleAuthor), "warm-up", "Warm-up")
	u.SetRollout(t, flags.NewPostingPath, 0)
	testdb.WaitFor(t, 30*time.Second, "the service to evaluate 0 %", func() bool { return rolloutPercent(st.Flags, flags.NewPostingPath) == 0 })
	return st, u
}

// postingLoad has authors 1..n create and post drafts until stopped; it
// counts the posts by the path their answer names.
type postingLoad struct {
	stop        atomic.Bool
	wg          sync.WaitGroup
	legacy, new atomic.Int64
	failures    atomic.Int64
}

func startPosting(t *testing.T, st *stack, authors int) *postingLoad {
	l := &postingLoad{}
	for a := int64(1); a <= int64(authors); a++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := st.client(t, a, httpapi.RoleAuthor)
			for n := 0; !l.stop.Load(); n++ {
				_, d, _ := c.do("POST", "/v1/drafts", draftBody(fmt.Sprintf("a%d-%d", a, n), fmt.Sprintf("Rollout tag %d-%d", a, n%7)))
				status, res, _ := c.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil)
				switch {
				case status == 202:
					l.new.Add(1)
				case status == 201:
					l.legacy.Add(1)
				case status != 503: // a legacy post that lost a lock race applied nothing
					l.failures.Add(1)
				}
				_ = res
			}
		}()
	}
	t.Cleanup(l.halt)
	return l
}

func (l *postingLoad) halt() { l.stop.Store(true); l.wg.Wait() }

// rolloutPlan reads GET /v1/admin/rollout.
func rolloutPlan(t *testing.T, admin *client) map[string]any {
	t.Helper()
	status, p, _ := admin.do("GET", "/v1/admin/rollout", nil)
	if status != 200 {
		t.Fatalf("GET /v1/admin/rollout: %d %v", status, p)
	}
	return p
}

// rolloutAuthors is how many authors post at once in the rollout tests:
// enough for a few on the new path at the first step, few enough for a
// busy machine.
const rolloutAuthors = 16

func num(m map[string]any, key string) int { v, _ := m[key].(float64); return int(v) }

func TestGuardedRolloutWalksEveryStepTo100UnderLoad(t *testing.T) {
	t.Parallel()
	st, _ := guardedStack(t, rollout.Guards{MinPosts: 10, MinEvaluations: 3, ErrorMargin: 0.2, PostP99: 20 * time.Second,
		FreshnessP99: 30 * time.Second, OutboxAge: 10 * time.Minute, BacklogGrowth: 10_000})
	admin := st.client(t, 1, httpapi.RoleAdmin)
	if status, _, _ := admin.do("GET", "/v1/admin/rollout", nil); status != 404 {
		t.Fatalf("no plan yet: %d, want 404", status)
	}
	for _, bad := range []map[string]any{{"steps": []int{50, 10}, "hold": "1s"}, {"steps": []int{10}, "hold": "soon"}} {
		if status, e, _ := admin.do("POST", "/v1/admin/rollout", bad); status != 422 {
			t.Fatalf("%v: %d %v, want 422", bad, status, e)
		}
	}
	load := startPosting(t, st, rolloutAuthors)
	status, started, _ := admin.do("POST", "/v1/admin/rollout", map[string]any{"steps": []int{10, 50, 100}, "hold": "1s"})
	if status != 201 || started["state"] != "running" {
		t.Fatalf("start: %d %v", status, started)
	}
	if status, e, _ := admin.do("POST", "/v1/admin/rollout", map[string]any{"steps": []int{5}, "hold": "1s"}); status != 409 {
		t.Fatalf("a second plan: %d %v, want 409 rollout_active", status, e)
	}
	var p map[string]any
	testdb.WaitFor(t, 3*time.Minute, "the plan to finish", func() bool {
		p = rolloutPlan(t, admin)
		return p["state"] != "running"
	})
	if p["state"] != "done" || num(p, "percent") != 100 {
		t.Fatalf("plan ended %v at %d %%: %v", p["state"], num(p, "percent"), p["reason"])
	}
	testdb.WaitFor(t, 30*time.Second, "the service to evaluate 100 %", func() bool {
		return rolloutPercent(st.Flags, flags.NewPostingPath) == 100
	})
	load.halt()
	if load.failures.Load() > 0 || load.new.Load() == 0 || load.legacy.Load() == 0 {
		t.Fatalf("posts: legacy %d, new %d, failed %d", load.legacy.Load(), load.new.Load(), load.failures.Load())
	}
	_, hist, _ := admin.do("GET", "/v1/admin/rollout/history", nil)
	var kinds []string
	for _, d := range hist["plans"].([]any)[0].(map[string]any)["history"].([]any) {
		kinds = append(kinds, fmt.Sprintf("%v:%v", d.(map[string]any)["kind"], d.(map[string]any)["percent"]))
	}
	if got := fmt.Sprint(kinds); got != "[start:0 step:10 advance:10 step:50 advance:50 step:100 done:100]" {
		t.Fatalf("history %s", got)
	}
}

func TestGuardedRolloutRollsBackWhenTheCounterStopsAndKeepsCountsExact(t *testing.T) {
	t.Parallel()
	const freshness = 15 * time.Second
	st, _ := guardedStack(t, rollout.Guards{MinPosts: 10, MinEvaluations: 3, ErrorMargin: 0.2, PostP99: 20 * time.Second,
		FreshnessP99: freshness, OutboxAge: 10 * time.Minute, BacklogGrowth: 10_000, SevereFactor: 20})
	admin := st.client(t, 1, httpapi.RoleAdmin)
	load := startPosting(t, st, rolloutAuthors)
	if status, p, _ := admin.do("POST", "/v1/admin/rollout", map[string]any{"steps": []int{20, 60, 100}, "hold": "25s"}); status != 201 {
		t.Fatalf("start: %d %v", status, p)
	}
	testdb.WaitFor(t, 3*time.Minute, "the plan to pass its first step", func() bool {
		p := rolloutPlan(t, admin)
		return num(p, "step") == 2 && p["window_from"] != nil || p["state"] != "running"
	})
	// The fault: every counter stops applying, so new-path posts are not
	// counted and age past the freshness budget.
	ctx := context.Background()
	control := counter.Control{DB: st.DB}
	if err := control.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	testdb.WaitFor(t, 2*time.Minute, "the plan to roll back", func() bool {
		p = rolloutPlan(t, admin)
		return p["state"] != "running"
	})
	raw, _ := json.MarshalIndent(p, "", "  ")
	t.Logf("GET /v1/admin/rollout after the fault:\n%s", raw)
	// Rolled back on the step the fault came in (or a later one, had the
	// window ended first), to the step before it, which held.
	step := num(p, "step")
	if p["state"] != "rolled_back" || p["failed_guard"] != rollout.GuardFreshness || step < 2 || num(p, "percent") != []int{20, 60}[step-2] {
		t.Fatalf("want rolled_back by %s on step 2 or 3 to the step before, got %v by %v on step %d at %d %%",
			rollout.GuardFreshness, p["state"], p["failed_guard"], step, num(p, "percent"))
	}
	back := num(p, "percent")
	for _, g := range p["guards"].([]any) {
		g := g.(map[string]any)
		if g["name"] == rollout.GuardFreshness && (g["failed"] != true || num(g, "samples") < num(g, "min_samples")) {
			t.Fatalf("the failed guard's numbers: %v", g)
		}
	}
	testdb.WaitFor(t, 30*time.Second, "the service to evaluate the rolled-back percentage", func() bool {
		return rolloutPercent(st.Flags, flags.NewPostingPath) == float64(back)
	})
	load.halt()

	// Later posts take the path the rolled-back flag gives their author.
	for a := int64(1); a <= rolloutAuthors; a++ {
		c := st.client(t, a, httpapi.RoleAuthor)
		_, d, _ := c.do("POST", "/v1/drafts", draftBody("after", "After the rollback"))
		_, res, _ := c.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil)
		if want := map[bool]string{true: "new", false: "legacy"}[st.Flags.NewPostingPath(a)]; res["path"] != want {
			t.Fatalf("author %d posted on %v after the rollback, want %s", a, res["path"], want)
		}
	}
	// The counter comes back: what was queued on the new path is posted by
	// it and counted once; every count equals the recount.
	if err := control.Resume(ctx, 100_000); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, st, 2*time.Minute)
	assertConserved(t, st)
	t.Logf("posts: legacy %d, new %d", load.legacy.Load(), load.new.Load())
}

func TestRolloutCommandStartsPausesAndListsAPlan(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	ctx := context.Background()
	cli := func(args ...string) (string, error) {
		var out, errOut testdb.Buffer
		err := run(ctx, append(append([]string{"rollout"}, args...), "--mysql-dsn", db.DSN), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	if out, err := cli("start", "--steps", "50,10"); err == nil {
		t.Fatalf("decreasing steps were accepted: %s", out)
	}
	out, err := cli("start", "--steps", "5,50,100", "--hold", "2m")
	if err != nil {
		t.Fatal(err, out)
	}
	var p httpapi.RolloutJSON
	if err := json.Unmarshal([]byte(out), &p); err != nil || p.State != rollout.StateRunning || p.Hold != "2m0s" || fmt.Sprint(p.Steps) != "[5 50 100]" {
		t.Fatalf("start printed %s (%v)", out, err)
	}
	if out, err := cli("start"); err == nil {
		t.Fatalf("a second plan was started: %s", out)
	}
	if out, err = cli("pause"); err != nil || !json.Valid([]byte(out)) {
		t.Fatal(err, out)
	}
	if out, err = cli("status"); err != nil {
		t.Fatal(err, out)
	}
	json.Unmarshal([]byte(out), &p)
	if p.State != rollout.StatePaused {
		t.Fatalf("status after pause: %s", out)
	}
	if out, err = cli("abort", "--reason", "testing"); err != nil {
		t.Fatal(err, out)
	}
	if out, err = cli("history"); err != nil {
		t.Fatal(err, out)
	}
	var h struct{ Plans []httpapi.RolloutJSON }
	if err := json.Unmarshal([]byte(out), &h); err != nil || len(h.Plans) != 1 || len(h.Plans[0].History) != 3 {
		t.Fatalf("history: %s (%v)", out, err)
	}
	for i, kind := range []string{"start", "pause", "abort"} {
		if d := h.Plans[0].History[i]; d.Kind != kind || len(d.Actor) < 5 || d.Actor[:4] != "cli:" {
			t.Errorf("decision %d: %+v, want %s by cli:<user>@<host>", i, d, kind)
		}
	}
}
