package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/archive"
	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/flags"
	"github.com/tagcount/tagcount/flags/unleashtest"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster/postertest"
)

// TestCutoverOnADriftedArchiveCorrectsExactlyTheInjectedDrift replays the
// 2017 cutover small: an archive of 20,000 works whose stored counts have
// drifted (package archive writes down how), authors posting, editing and
// deleting while the new posting path is rolled out from 0 % to 100 %
// through the flag, and a whole reconcile started mid-rollout. At the end
// every tag's four numbers equal an independent recount, and the run's
// corrections are the injected drift, tag for tag. Not timed.
func TestCutoverOnADriftedArchiveCorrectsExactlyTheInjectedDrift(t *testing.T) {
	t.Parallel()
	db, _ := buildArchive(t, 20_000)
	ctx := context.Background()
	manifest, err := archive.Manifest(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	unleash := unleashtest.Start(t)
	for flag, pct := range map[string]int{flags.NewPostingPath: 0, flags.TierDeferral: 100, flags.ReconcileApply: 100} {
		unleash.CreateFlag(t, flag)
		unleash.SetRollout(t, flag, pct)
	}
	st := testStack(t, stackOptions{Database: db.Name, Path: "flag",
		Flags: flags.Config{URL: unleash.APIURL(), Token: unleash.ClientToken(), RefreshInterval: 200 * time.Millisecond}})
	if err := st.Flags.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	admin := st.client(t, 1, httpapi.RoleAdmin)
	load := startArchiveAuthors(t, st, 1_000_000, 12)

	var run string
	for _, pct := range []int{0, 10, 50, 100} {
		rolloutStep(t, unleash, st, load, pct, 15, 2*time.Minute)
		if pct == 10 {
			// The nightly reconcile, started mid-rollout as it would be.
			status, res, _ := admin.do("POST", "/v1/admin/reconcile", nil)
			if status != 202 {
				t.Fatalf("POST /v1/admin/reconcile: %d %v", status, res)
			}
			run = id(res, "id")
		}
	}
	testdb.WaitFor(t, 30*time.Minute, "the reconcile run to finish", func() bool {
		load.check(t)
		_, rep, _ := admin.do("GET", "/v1/admin/reconcile/"+run, nil)
		return rep["state"] != "running"
	})
	load.halt()
	load.check(t)
	t.Logf("authors: %d posts, %d edits, %d deletes", load.posts.Load(), load.edits.Load(), load.deletes.Load())
	if load.edits.Load() == 0 || load.deletes.Load() == 0 {
		t.Fatal("the authors neither edited nor deleted")
	}

	// Quiet, deferred tags flushed (the kill switch, as the runbook says):
	// every number is exact.
	unleash.SetEnabled(t, flags.TierDeferral, false)
	waitDrained(t, st, time.Minute)
	postertest.AssertExact(ctx, t, st.DB)
	checkCorrections(t, admin, run, manifest)
}

// checkCorrections fails t unless run's corrections are manifest's drift,
// tag for tag and number by number, each written.
func checkCorrections(t *testing.T, admin *client, run string, manifest []archive.Injected) {
	t.Helper()
	_, rep, _ := admin.do("GET", "/v1/admin/reconcile/"+run, nil)
	if rep["state"] != "done" || rep["dry_run"] != false {
		t.Fatalf("reconcile run %s: %v", run, rep)
	}
	want := make(map[int64]counter.Sum, len(manifest))
	for _, in := range manifest {
		want[in.TagID] = in.Drift
	}
	num := func(c map[string]any, k string) int64 { v, _ := c[k].(float64); return int64(v) }
	after, found := "0", 0
	for after != "" {
		status, page, _ := admin.do("GET", "/v1/admin/reconcile/"+run+"/corrections?limit=1000&after="+after, nil)
		if status != 200 {
			t.Fatalf("corrections: %d %v", status, page)
		}
		list, _ := page["corrections"].([]any)
		for _, e := range list {
			c := e.(map[string]any)
			tag := num(c, "tag_id")
			got := counter.Sum{Count: num(c, "drift"), Public: num(c, "public_drift"), Filter: num(c, "filter_drift"),
				PublicFilter: num(c, "public_filter_drift")}
			w, ok := want[tag]
			switch {
			case !ok:
				t.Errorf("tag %d corrected by %+v: no drift was injected", tag, got)
			case got != w:
				t.Errorf("tag %d corrected by %+v; injected %+v", tag, got, w)
			case c["corrected_at"] == nil:
				t.Errorf("tag %d: drift found, not corrected", tag)
			}
			delete(want, tag)
			found++
		}
		after = ""
		if n, ok := page["next_after"].(float64); ok {
			after = strconv.FormatInt(int64(n), 10)
		}
	}
	for tag, w := range want {
		t.Errorf("tag %d: drift %+v injected, not corrected", tag, w)
	}
	t.Logf("%d corrections, %d drifted tags injected", found, len(manifest))
}
