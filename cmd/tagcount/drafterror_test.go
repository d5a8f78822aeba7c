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
