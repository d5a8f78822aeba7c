package main

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
)

func TestQuotasRefuseTheDraftPastTheDraftsQuotaAnd422AndTheNewTagsPastTheDailyAllowance429(t *testing.T) {
	t.Parallel()
	st := testStack(t, stackOptions{Path: "new", MaxDrafts: 2, NewTagsPerDay: 3})
	author := st.client(t, 42, httpapi.RoleAuthor)

	// Star Trek and "New 1" are the author's first two new tags today.
	_, first, _ := author.do("POST", "/v1/drafts", draftBody("One", "New 1"))
	if status, d, _ := author.do("POST", "/v1/drafts", draftBody("Two", "New 1")); status != 201 {
		t.Fatalf("a second draft naming the same new tags: %d %v", status, d)
	}
	status, body, h := author.do("POST", "/v1/drafts", draftBody("Three"))
	if e, _ := body["error"].(map[string]any); status != 422 || e["code"] != "quota_exceeded" || h.Get("Retry-After") != "" {
		t.Errorf("a third unposted draft with a quota of 2: %d %v Retry-After %q; want 422 quota_exceeded (waiting does not help)",
			status, body, h.Get("Retry-After"))
	}
	if status, _, _ := st.client(t, 43, httpapi.RoleAuthor).do("POST", "/v1/drafts", draftBody("Theirs")); status != 201 {
		t.Errorf("another author's draft: %d; the quotas are per author", status)
	}

	draft := "/v1/drafts/" + id(first, "id")
	// Midnight is no further away at the server's answer than before the
	// request was sent: that bounds Retry-After however slow the answer.
	sent := time.Now().UTC()
	untilMidnight := sent.Truncate(24 * time.Hour).Add(24 * time.Hour).Sub(sent)
	status, body, h = author.do("PUT", draft, draftBody("One", "New 1", "New 2", "New 3"))
	retry, _ := strconv.Atoi(h.Get("Retry-After"))
	if e, _ := body["error"].(map[string]any); status != 429 || e["code"] != "quota_exceeded" || retry < 1 ||
		time.Duration(retry)*time.Second > untilMidnight+time.Second {
		t.Errorf("two more new tags with one left of 3: %d %v Retry-After %q; want 429 quota_exceeded until midnight UTC (%v)",
			status, body, h.Get("Retry-After"), untilMidnight)
	}
	if status, d, _ := author.do("PUT", draft, draftBody("One", "New 1", "New 2")); status != 200 {
		t.Errorf("one more new tag, the last of the allowance: %d %v", status, d)
	}
	if status, res, _ := author.do("POST", draft+"/post", nil); status != 202 {
		t.Fatalf("post: %d %v", status, res)
	}
	if status, d, _ := author.do("POST", "/v1/drafts", draftBody("Three")); status != 201 {
		t.Errorf("a draft after posting one: %d %v; a posted draft makes room", status, d)
	}

	res, err := http.Get(st.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	metrics, _ := io.ReadAll(res.Body)
	for _, want := range []string{`tagcount_quota_rejections_total{quota="drafts"} 1`, `tagcount_quota_rejections_total{quota="new_tags"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestTheServingCommandsRunWithTheDomainPackagesDefaultQuotas(t *testing.T) {
	t.Parallel()
	if o := defaultStackOptions(t); o.MaxDrafts != drafts.DefaultMaxDrafts || o.NewTagsPerDay != tags.DefaultNewTagsPerDay {
		t.Errorf("default quotas %d drafts, %d new tags a day; want %d and %d", o.MaxDrafts, o.NewTagsPerDay,
			drafts.DefaultMaxDrafts, tags.DefaultNewTagsPerDay)
	}
	var s settings
	if _, err := parse("api", []string{"--quota-drafts", "0", "--quota-new-tags-per-day", "7"}, io.Discard, &s, nil); err != nil {
		t.Fatal(err)
	}
	if o := s.stackOptions(); o.MaxDrafts != 0 || o.NewTagsPerDay != 7 {
		t.Errorf("--quota-drafts 0 --quota-new-tags-per-day 7 gave %d and %d", o.MaxDrafts, o.NewTagsPerDay)
	}
}

// Audit finding 21.11: the new-tag quota is charged only for saves that
// pass the ownership and state checks; a save answered 404 or 409 uses
// none of it.
func TestSavesRefusedAsNotFoundOrConflictUseNoneOfTheNewTagQuota(t *testing.T) {
	t.Parallel()
	st := testStack(t, stackOptions{Path: "new", NewTagsPerDay: 3})
	author := st.client(t, 52, httpapi.RoleAuthor)
	_, theirs, _ := st.client(t, 53, httpapi.RoleAuthor).do("POST", "/v1/drafts", draftBody("Theirs"))
	if status, body, _ := author.do("PUT", "/v1/drafts/"+id(theirs, "id"), draftBody("Mine", "Lost 1", "Lost 2")); status != 404 {
		t.Fatalf("a save of another author's draft: %d %v; want 404", status, body)
	}
	_, mine, _ := author.do("POST", "/v1/drafts", draftBody("Mine"))
	if status, res, _ := author.do("POST", "/v1/drafts/"+id(mine, "id")+"/post", nil); status != 202 {
		t.Fatalf("post: %d %v", status, res)
	}
	if status, body, _ := author.do("PUT", "/v1/drafts/"+id(mine, "id"), draftBody("Mine", "Lost 3")); status != 409 {
		t.Fatalf("a save of a queued or posted draft: %d %v; want 409", status, body)
	}
	if status, body, _ := author.do("POST", "/v1/drafts", draftBody("Fresh", "New 1", "New 2")); status != 201 {
		t.Errorf("two new tags after saves that were refused: %d %v; want 201 (refused saves charge nothing)", status, body)
	}
}
