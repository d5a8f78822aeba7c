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
