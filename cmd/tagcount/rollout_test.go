package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/flags"
	"github.com/tagcount/tagcount/flags/unleashtest"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// TestMixedRolloutKeepsEveryCountExact has many authors post, edit and delete
// while ops move the new-path rollout up and down on a real Unleash server;
// works are posted on one path and edited or deleted on the other. Once the
// system is quiet every count equals the independent count of posted works.
func TestMixedRolloutKeepsEveryCountExact(t *testing.T) {
	t.Parallel()
	unleash := unleashtest.Start(t)
	unleash.CreateFlag(t, flags.NewPostingPath)
	unleash.SetRollout(t, flags.NewPostingPath, 0)
	// The kill switch and reconcile flag exist too, as the runbook requires.
	unleash.CreateFlag(t, flags.TierDeferral)
	unleash.SetRollout(t, flags.TierDeferral, 100)
	unleash.CreateFlag(t, flags.ReconcileApply)
	unleash.SetRollout(t, flags.ReconcileApply, 100)

	st := testStack(t, stackOptions{Path: "flag",
		Flags: flags.Config{URL: unleash.APIURL(), Token: unleash.ClientToken(), RefreshInterval: 200 * time.Millisecond}})
	if err := st.Flags.WaitForSync(context.Background()); err != nil {
		t.Fatal(err)
	}

	const authors = 24
	var (
		stop         atomic.Bool
		wg           sync.WaitGroup
		paths        sync.Map // "legacy"/"new" → *atomic.Int64, from post answers
		posts        atomic.Int64
		crossEdits   atomic.Int64
		unexpected   atomic.Int64
		unexpectedMu sync.Mutex
		firstBad     string
	)
	bump := func(path string) *atomic.Int64 {
		v, _ := paths.LoadOrStore(path, new(atomic.Int64))
		return v.(*atomic.Int64)
	}
	// Stop the authors before the stack closes, even when the test fails.
	t.Cleanup(func() { stop.Store(true); wg.Wait() })
	bad := func(format string, args ...any) {
		unexpected.Add(1)
		unexpectedMu.Lock()
		if firstBad == "" {
			firstBad = fmt.Sprintf(format, args...)
		}
		unexpectedMu.Unlock()
	}
	for a := int64(1); a <= authors; a++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := st.client(t, a, httpapi.RoleAuthor)
			rng := rand.New(rand.NewPCG(uint64(a), 7))
			for n := 0; !stop.Load(); n++ {
				body := draftBody(fmt.Sprintf("a%d-%d", a, n), fmt.Sprintf("Tag %d", rng.IntN(40)), fmt.Sprintf("Tag %d", rng.IntN(400)))
				status, d, _ := c.do("POST", "/v1/drafts", body)
				if status != 201 {
					bad("create: %d %v", status, d)
					continue
				}
				status, res, _ := c.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil)
				if status == 503 {
					continue // legacy path lost a lock race; nothing was applied
				}
				if status != 201 && status != 202 {
					bad("post: %d %v", status, res)
					continue
				}
				postedOn, _ := res["path"].(string)
				bump(postedOn).Add(1)
				posts.Add(1)
				// Wait for the work, then edit or delete it a third of the time
				// each — by then the rollout may have moved the author.
				var workID string
				deadline := time.Now().Add(testdb.MinWait)
				for workID == "" && time.Now().Before(deadline) {
					_, got, _ := c.do("GET", "/v1/drafts/"+id(d, "id"), nil)
					if got["state"] == "posted" {
						workID = id(got, "work_id")
					} else {
						time.Sleep(10 * time.Millisecond) // polling the job
					}
				}
				if workID == "" {
					bad("draft %s never posted", id(d, "id"))
					continue
				}
				switch rng.IntN(3) {
				case 0:
					edited := draftBody("edited", fmt.Sprintf("Tag %d", rng.IntN(40)), "Edited tag")
					status, res, _ = c.do("PUT", "/v1/works/"+workID, edited)
				case 1:
					status, res, _ = c.do("DELETE", "/v1/works/"+workID, nil)
				default:
					continue
				}
				if status == 503 {
					continue
				}
				if status != 200 && status != 202 && status != 204 {
					bad("edit/delete: %d %v", status, res)
					continue
				}
				if res != nil && res["path"] != nil && res["path"] != postedOn {
					crossEdits.Add(1)
				} else if status == 204 && postedOn == "new" {
					crossEdits.Add(1) // 204 is the legacy path's delete
				}
			}
		}()
	}

	failIfUnexpected := func() {
		if n := unexpected.Load(); n > 0 {
			unexpectedMu.Lock()
			defer unexpectedMu.Unlock()
			t.Fatalf("%d unexpected answers; first: %s", n, firstBad)
		}
	}
	// At each rollout, once the service evaluates it, traffic runs for a
	// number of posts, however long they take.
	const postsPerStep = 40
	for _, pct := range []int{30, 100, 0, 70, 10, 100, 50} {
		unleash.SetRollout(t, flags.NewPostingPath, pct)
		testdb.WaitFor(t, 30*time.Second, fmt.Sprintf("the service to evaluate a %d%% rollout", pct), func() bool {
			return rolloutPercent(st.Flags, flags.NewPostingPath) == float64(pct)
		})
		from := posts.Load()
		testdb.WaitFor(t, 60*time.Second, fmt.Sprintf("%d posts at %d%%", postsPerStep, pct), func() bool {
			failIfUnexpected()
			return posts.Load() >= from+postsPerStep
		})
	}
	stop.Store(true)
	wg.Wait()
	failIfUnexpected()
	legacy, newPath := bump("legacy").Load(), bump("new").Load()
	if legacy == 0 || newPath == 0 {
		t.Fatalf("posts by path: legacy %d, new %d; the rollout should have used both", legacy, newPath)
	}
	if crossEdits.Load() == 0 {
		t.Fatal("no work was edited or deleted on the other path than it was posted on")
	}
	t.Logf("posts: legacy %d, new %d; edits/deletes on the other path: %d", legacy, newPath, crossEdits.Load())

	// Quiet: no queued drafts and an empty outbox, then exact counts. The
	// hot tags may have grown past the small tier and be held for minutes;
	// the kill switch flushes them, as the runbook tells ops.
	unleash.SetEnabled(t, flags.TierDeferral, false)
	waitDrained(t, st, 60*time.Second)
	assertConserved(t, st)
}

// rolloutPercent is the share of authors c gives flag to now; -1 when
// unknown.
func rolloutPercent(c *flags.Client, flag string) float64 {
	for _, f := range c.Snapshot().Flags {
		if f.Name == flag && f.RolloutPercent != nil {
			return *f.RolloutPercent
		}
	}
	return -1
}

// assertConserved fails the test unless every count plus its pending outbox
// deltas equals the number of posted works using the tag (the reconcile's
// snapshot); on a quiet system nothing is pending, so every count is exact.
func assertConserved(t *testing.T, st *stack) {
	t.Helper()
	ctx := context.Background()
	drifted, err := reconcile.Drifted(ctx, st.DB)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range drifted {
		if i == 5 {
			break
		}
		t.Errorf("tag %d: count %d + pending %d, posted works using it %d", d.TagID, d.Stored, d.Pending, d.Works)
	}
	total, err := tags.Count(ctx, st.DB, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(drifted) > 0 {
		t.Fatalf("%d of %d tags have wrong counts", len(drifted), total)
	}
	if total == 0 {
		t.Fatal("no tags at all")
	}
}
