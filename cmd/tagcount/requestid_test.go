package main

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// TestAPostsRequestIDIsInTheAPIsTheJobsAndTheCountersLogLines posts a draft
// on the new path with the client's own X-Request-ID, then finds that id in
// the log line of the request, of the posting transaction its job ran in,
// and of the counter's transaction that counted its tags: grep one id, see
// the post's whole way.
func TestAPostsRequestIDIsInTheAPIsTheJobsAndTheCountersLogLines(t *testing.T) {
	t.Parallel()
	logs := &testdb.Buffer{}
	st := testStack(t, stackOptions{Path: "new",
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	c := st.client(t, 42, httpapi.RoleAuthor)
	_, d, _ := c.do("POST", "/v1/drafts", draftBody("Traced", "Traced tag"))

	const rid = "where-is-my-post-7f3a"
	c.header = http.Header{"X-Request-Id": {rid}}
	status, res, h := c.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil)
	if status != 202 || res["state"] != "queued" || h.Get("X-Request-ID") != rid {
		t.Fatalf("post: %d %v X-Request-ID %q; want 202 queued with the client's id", status, res, h.Get("X-Request-ID"))
	}
	want := []string{"msg=request", "msg=posted", "msg=counted"} // the API's, the job's, the counter's
	var found map[string]string
	testdb.WaitFor(t, 15*time.Second, "the post's request id in the API's, the job's and the counter's lines", func() bool {
		found = map[string]string{}
		for _, line := range strings.Split(logs.String(), "\n") {
			for _, msg := range want {
				if strings.Contains(line, msg+" ") && strings.Contains(line, rid) {
					found[msg] = line
				}
			}
		}
		return len(found) == len(want)
	})
	for _, msg := range want {
		t.Log(found[msg])
	}
	if !strings.Contains(found["msg=request"], "request_id="+rid) || !strings.Contains(found["msg=request"], "status=202") {
		t.Errorf("the API's line %q; want the request's id and status", found["msg=request"])
	}
	if !strings.Contains(found["msg=posted"], "draft_ids=["+id(d, "id")+"]") {
		t.Errorf("the job's line %q; want it to name the draft", found["msg=posted"])
	}
}

// TestAPostThatFailsOnADatabaseErrorShowsTheAuthorNoneOfIt makes the
// posting job fail for good on a database error (a CHECK constraint the
// test adds to works, as the audit saw it: "Error 4025 (23000): CONSTRAINT
// … failed for <db>.works") and reads the draft as its author: the error
// says "internal error" and nothing of the database, while the log line of
// the failure keeps the whole error with the draft's id and request id.
func TestAPostThatFailsOnADatabaseErrorShowsTheAuthorNoneOfIt(t *testing.T) {
	t.Parallel()
	logs := &testdb.Buffer{}
	st := testStack(t, stackOptions{Path: "new", Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if _, err := st.DB.Exec("ALTER TABLE works ADD CONSTRAINT works_title_allowed CHECK (title <> 'Refused by the database')"); err != nil {
		t.Fatal(err)
	}
	c := st.client(t, 42, httpapi.RoleAuthor)
	_, d, _ := c.do("POST", "/v1/drafts", draftBody("Refused by the database", "Never counted"))
	const rid = "failed-post-3c1d"
	c.header = http.Header{"X-Request-Id": {rid}}
	if status, res, _ := c.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil); status != 202 {
		t.Fatalf("post: %d %v; want 202", status, res)
	}
	c.header = nil
	var got map[string]any
	testdb.WaitFor(t, 30*time.Second, "the post to fail", func() bool {
		_, got, _ = c.do("GET", "/v1/drafts/"+id(d, "id"), nil)
		return got["state"] == "failed"
	})
	if got["error"] != "internal error" {
		t.Errorf("the failed draft's error is %q; want \"internal error\"", got["error"])
	}
	var line string
	testdb.WaitFor(t, 10*time.Second, "the failure's log line", func() bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "works_title_allowed") && strings.Contains(l, "level=ERROR") {
				line = l
			}
		}
		return line != ""
	})
	if !strings.Contains(line, "draft_id="+id(d, "id")) || !strings.Contains(line, "request_id="+rid) {
		t.Errorf("the failure's log line %q; want the draft's id and the request's id", line)
	}
}
