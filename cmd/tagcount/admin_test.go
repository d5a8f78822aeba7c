package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// postAndWait posts a draft with the given freeforms on the new path and
// waits for it and every outbox row to be applied; it returns the work id.
func postAndWait(t *testing.T, st *stack, c *client, title string, freeforms ...string) string {
	t.Helper()
	_, d, _ := c.do("POST", "/v1/drafts", draftBody(title, freeforms...))
	c.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil)
	var posted map[string]any
	testdb.WaitFor(t, 15*time.Second, "the draft to be posted", func() bool {
		_, posted, _ = c.do("GET", "/v1/drafts/"+id(d, "id"), nil)
		return posted["state"] == "posted"
	})
	testdb.WaitFor(t, 15*time.Second, "the outbox to drain", func() bool {
		n, _, err := counter.OutboxDepth(t.Context(), st.DB, 0)
		return err == nil && n == 0
	})
	return id(posted, "work_id")
}

func (c *client) tagID(typ, name string) int64 {
	c.t.Helper()
	status, tag, _ := c.do("GET", "/v1/tags?type="+typ+"&name="+strings.ReplaceAll(name, " ", "%20"), nil)
	if status != 200 {
		c.t.Fatalf("tag %s %q: %d %v", typ, name, status, tag)
	}
	return int64(tag["id"].(float64))
}

func TestTagReadsAnswerTheContract(t *testing.T) {
	t.Parallel()
	st := testStack(t, stackOptions{Path: "new"})
	c := st.client(t, 3, httpapi.RoleAuthor)
	postAndWait(t, st, c, "Read me", "Readable")
	tag := c.tagID("freeform", "Readable")

	status, got, _ := c.do("GET", fmt.Sprintf("/v1/tags/%d", tag), nil)
	if status != 200 || got["name"] != "Readable" || got["type"] != "freeform" || got["count"] != 1.0 || got["tier"] != "small" {
		t.Errorf("GET by id: %d %v", status, got)
	}
	if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(got["as_of"])); err != nil {
		t.Errorf("as_of %v is not RFC 3339: %v", got["as_of"], err)
	}
	status, got, _ = c.do("GET", "/v1/tags?name=%20readable%20&type=Freeform", nil)
	if status != 200 || got["id"] != float64(tag) {
		t.Errorf("GET by name ignoring case and spaces: %d %v", status, got)
	}
	status, got, _ = c.do("GET", fmt.Sprintf("/v1/tags?ids=%d,999999,%d", tag, tag), nil)
	if list, _ := got["tags"].([]any); status != 200 || len(list) != 1 {
		t.Errorf("bulk read: %d %v; want the one known tag once", status, got)
	}
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprint(i + 1)
	}
	if status, got, _ := c.do("GET", "/v1/tags?ids="+strings.Join(ids, ","), nil); status != 200 {
		t.Errorf("1000 ids: %d %v, want 200", status, got)
	}
	for _, tc := range []struct {
		path   string
		status int
		code   string
		field  string
	}{
		{"/v1/tags/999999", 404, "not_found", ""},
		{"/v1/tags/abc", 404, "not_found", ""},
		{"/v1/tags?name=nope&type=fandom", 404, "not_found", ""},
		{"/v1/tags?name=Readable", 422, "type_required", "type"},
		{"/v1/tags?ids=1,x", 422, "invalid_id", "ids"},
		{"/v1/tags?ids=" + strings.Join(ids, ",") + ",1001", 422, "too_many_ids", "ids"},
	} {
		status, body, _ := c.do("GET", tc.path, nil)
		e, _ := body["error"].(map[string]any)
		if status != tc.status || e["code"] != tc.code || fmt.Sprint(e["field"]) != fmt.Sprint(orNil(tc.field)) {
			t.Errorf("GET %.60s: %d %v; want %d %s on %q", tc.path, status, body, tc.status, tc.code, tc.field)
		}
	}
	if status, _, _ := (&client{t: t, base: st.URL}).do("GET", fmt.Sprintf("/v1/tags/%d", tag), nil); status != 401 {
		t.Errorf("read without a token: %d, want 401", status)
	}
}

func TestReconcileRoutesCorrectDriftAndReportIt(t *testing.T) {
	t.Parallel()
	st := testStack(t, stackOptions{Path: "new"})
	c := st.client(t, 4, httpapi.RoleAuthor)
	admin := st.client(t, 1, httpapi.RoleAdmin)
	for i := range 3 {
		postAndWait(t, st, c, fmt.Sprintf("Drift %d", i), "Drifter", "Steady")
	}
	drifter, steady := c.tagID("freeform", "Drifter"), c.tagID("freeform", "Steady")
	st.DB.Exec("UPDATE tag_counts SET count = count + 3 WHERE tag_id = ?", drifter)
	st.DB.Exec("UPDATE tag_counts SET count = count - 4 WHERE tag_id = ?", steady)

	status, body, _ := admin.do("POST", fmt.Sprintf("/v1/admin/tags/%d/recount", drifter), "")
	if status != 200 || body["state"] != "done" || body["tags_scanned"] != 1.0 || body["tags_corrected"] != 1.0 ||
		body["largest_drift"] != -3.0 || body["largest_drift_tag_id"] != float64(drifter) || body["tag_id"] != float64(drifter) {
		t.Errorf("recount: %d %v", status, body)
	}
	if status, body, _ := admin.do("POST", "/v1/admin/tags/987654321/recount", ""); status != 404 {
		t.Errorf("recount of a missing tag: %d %v", status, body)
	}
	// A recount is one tag: a run's scope fields are refused, not ignored.
	if status, body, _ := admin.do("POST", fmt.Sprintf("/v1/admin/tags/%d/recount", drifter), `{"type": "fandom"}`); status != 400 || body["error"].(map[string]any)["code"] != "unknown_field" {
		t.Errorf("recount with a run's scope: %d %v; want 400 unknown_field", status, body)
	}
	for _, bad := range []struct{ body, code, field string }{
		{`{"type": "fandoms"}`, "unknown_type", "type"},
		{`{"type": "fandom", "tag_ids": [1]}`, "scope_conflict", "type"},
	} {
		status, body, _ := admin.do("POST", "/v1/admin/reconcile", bad.body)
		if e, _ := body["error"].(map[string]any); status != 422 || e["code"] != bad.code || e["field"] != bad.field {
			t.Errorf("start a run with %s: %d %v; want 422 %s on %s", bad.body, status, body, bad.code, bad.field)
		}
	}
	status, body, _ = admin.do("POST", "/v1/admin/reconcile", `{"dry_run": true}`)
	if status != 202 || body["dry_run"] != true || body["state"] != "running" {
		t.Fatalf("start a dry run: %d %v", status, body)
	}
	run := waitRun(t, admin, id(body, "id"))
	if run["dry_run"] != true || run["tags_drifted"] != 1.0 || run["tags_corrected"] != 0.0 || run["total_abs_drift"] != 4.0 ||
		run["largest_drift"] != 4.0 || run["finished_at"] == nil {
		t.Errorf("report of the dry run: %v", run)
	}
	status, body, _ = admin.do("POST", "/v1/admin/reconcile", "")
	if status != 202 || body["dry_run"] != false {
		t.Fatalf("start with an empty body: %d %v", status, body)
	}
	applied := id(body, "id")
	if run := waitRun(t, admin, applied); run["tags_corrected"] != 1.0 {
		t.Errorf("report %v; want 1 correction", run)
	}
	status, list, _ := admin.do("GET", "/v1/admin/reconcile/"+applied+"/corrections?limit=10", nil)
	cs, _ := list["corrections"].([]any)
	if status != 200 || len(cs) != 1 {
		t.Fatalf("corrections of the run: %d %v", status, list)
	}
	if c := cs[0].(map[string]any); c["tag_id"] != float64(steady) || c["stored_count"] != -1.0 || c["true_count"] != 3.0 ||
		c["drift"] != 4.0 || c["corrected_at"] == nil {
		t.Errorf("correction %v; want tag %d corrected from -1 to 3", c, steady)
	}
	if drifted, err := reconcile.Drifted(t.Context(), st.DB); err != nil || len(drifted) != 0 {
		t.Errorf("after the runs, drifted tags %v, %v; want none", drifted, err)
	}
	if status, body, _ := admin.do("GET", "/v1/admin/reconcile/424242", nil); status != 404 {
		t.Errorf("a missing run: %d %v", status, body)
	}
	status, body, _ = admin.do("POST", "/v1/admin/reconcile", `{"dryrun": true}`)
	if e, _ := body["error"].(map[string]any); status != 400 || e["code"] != "unknown_field" {
		t.Errorf("unknown field: %d %v", status, body)
	}
}

func TestTheServiceReconcilesFromTheReplicaItIsGiven(t *testing.T) {
	t.Parallel()
	// A replica that never lags: the primary itself, over its own pool.
	// (counter/reconcile's tests show the snapshots come from the replica.)
	primary := testdb.New(t)
	st := testStack(t, stackOptions{Path: "new", Database: primary.Name, ReconcileReadDSN: primary.DSN})
	c := st.client(t, 4, httpapi.RoleAuthor)
	admin := st.client(t, 1, httpapi.RoleAdmin)
	postAndWait(t, st, c, "On the primary", "Drifting")
	st.DB.Exec("UPDATE tag_counts SET count = count + 3 WHERE tag_id = ?", c.tagID("freeform", "Drifting"))
	status, body, _ := admin.do("POST", "/v1/admin/reconcile", "")
	if status != 202 {
		t.Fatalf("start a run: %d %v", status, body)
	}
	if run := waitRun(t, admin, id(body, "id")); run["tags_corrected"] != 1.0 || run["largest_drift"] != -3.0 {
		t.Errorf("a run reading the replica: %v; want the one drift corrected", run)
	}

	var stderr strings.Builder
	err := run(context.Background(), []string{"worker", "--mysql-dsn", primary.DSN, "--reconcile-read-dsn", "root@tcp(127.0.0.1:1)/nowhere",
		"--redis-addr", testdb.RequireRedis(t), "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--kafka-brokers", strings.Join(st.Brokers, ",")},
		io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--reconcile-read-dsn") {
		t.Errorf("a worker whose replica is unreachable: %v; want an error naming --reconcile-read-dsn", err)
	}
}

func waitRun(t *testing.T, admin *client, runID string) map[string]any {
	t.Helper()
	var run map[string]any
	testdb.WaitFor(t, 30*time.Second, "run "+runID+" to finish", func() bool {
		_, run, _ = admin.do("GET", "/v1/admin/reconcile/"+runID, nil)
		return run["state"] != "running"
	})
	if run["state"] != "done" {
		t.Fatalf("run %s: %v", runID, run)
	}
	return run
}

func TestFlagsRouteShowsWhatThisInstanceEvaluates(t *testing.T) {
	t.Parallel()
	st := testStack(t, stackOptions{Path: "new"})
	admin := st.client(t, 1, httpapi.RoleAdmin)
	status, got, h := admin.do("GET", "/v1/admin/flags", nil)
	if status != 200 || h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != "no-store" {
		t.Fatalf("GET: %d %v %v", status, got, h)
	}
	flagList, _ := got["flags"].([]any)
	if got["source"] != "bootstrap" || got["last_sync"] != nil || len(flagList) != 4 {
		t.Fatalf("snapshot = %v", got)
	}
	for i, want := range []string{"tagcount.new-posting-path", "tagcount.tier-deferral", "tagcount.reconcile-apply", "tagcount.counter-pause"} {
		f := flagList[i].(map[string]any)
		rollout := 100.0
		if want == "tagcount.counter-pause" {
			rollout = 0 // shipped off
		}
		if f["name"] != want || f["default"] != false || f["defined"] != true || f["rollout_percent"] != rollout {
			t.Errorf("flag %d = %v, want %s defined at %v%% with default off", i, f, want, rollout)
		}
		if _, hasValue := f["value"]; hasValue != (i > 0) {
			t.Errorf("flag %s value = %v; want a value only for instance-wide flags", want, f["value"])
		}
	}
}

func TestCounterRoutesPauseAndResumeTheCounters(t *testing.T) {
	t.Parallel()
	st := testStack(t, stackOptions{Path: "new"})
	admin := st.client(t, 1, httpapi.RoleAdmin)
	if status, body, _ := admin.do("GET", "/v1/admin/counter", nil); status != 200 || body["state"] != "running" {
		t.Fatalf("counter before a pause: %d %v; want running", status, body)
	}
	if status, body, _ := admin.do("POST", "/v1/admin/counter/pause", nil); status != 200 || body["state"] != "paused" {
		t.Fatalf("pause: %d %v; want paused", status, body)
	}
	status, body, _ := admin.do("POST", "/v1/admin/counter/resume", `{"catch_up_per_second": -1}`)
	if e, _ := body["error"].(map[string]any); status != 422 || e["code"] != "invalid_rate" {
		t.Errorf("resume at a negative rate: %d %v; want 422 invalid_rate", status, body)
	}
	status, body, _ = admin.do("POST", "/v1/admin/counter/resume", map[string]any{"catch_up_per_second": 500})
	if status != 200 || (body["state"] != "catching_up" && body["state"] != "running") {
		t.Errorf("resume: %d %v; want catching up (or running, with no backlog)", status, body)
	}
	status, body, _ = admin.do("GET", "/v1/admin/reconcile/1/corrections?limit=0", nil)
	if e, _ := body["error"].(map[string]any); status != 422 || e["code"] != "invalid_limit" {
		t.Errorf("corrections with limit 0: %d %v; want 422 invalid_limit", status, body)
	}
}
