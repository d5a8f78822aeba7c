package main

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// TestATagNoPostedWorkTheCallerCanSeeUsesIsNotFoundToThem leaves tags
// behind the ways the audit found them: a work posted then deleted, a work
// an admin hid, and a post that failed after its tags were made. Another
// author finds none of them, by id, by name or in bulk (?ids=1..100, as
// the audit walked them), whatever the consistency; the tag of a work
// anyone can see stays visible to all; the author of the hidden work still
// sees its tag; an admin sees every tag.
func TestATagNoPostedWorkTheCallerCanSeeUsesIsNotFoundToThem(t *testing.T) {
	t.Parallel()
	st := testStack(t, stackOptions{Path: "new"})
	owner := st.client(t, 100, httpapi.RoleAuthor)
	other := st.client(t, 200, httpapi.RoleAuthor)
	admin := st.client(t, 1, httpapi.RoleAdmin)

	postAndWait(t, st, owner, "Shown", "Shown Tag")
	deleted := postAndWait(t, st, owner, "Deleted", "Deleted Secret")
	hidden := postAndWait(t, st, owner, "Hidden", "Hidden Secret")
	if status, body, _ := owner.do("DELETE", "/v1/works/"+deleted, nil); status/100 != 2 {
		t.Fatalf("delete the work: %d %v", status, body)
	}
	if status, body, _ := admin.do("POST", "/v1/admin/works/"+hidden+"/hide", nil); status != 200 {
		t.Fatalf("hide the work: %d %v", status, body)
	}
	if _, err := st.DB.Exec("ALTER TABLE works ADD CONSTRAINT works_title_posted CHECK (title <> 'Never posted')"); err != nil {
		t.Fatal(err)
	}
	_, d, _ := owner.do("POST", "/v1/drafts", draftBody("Never posted", "Unposted Secret"))
	owner.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil)
	testdb.WaitFor(t, 30*time.Second, "the post to fail", func() bool {
		_, got, _ := owner.do("GET", "/v1/drafts/"+id(d, "id"), nil)
		return got["state"] == "failed"
	})
	names := []string{"Shown Tag", "Deleted Secret", "Hidden Secret", "Unposted Secret"}
	ids := map[string]int64{}
	testdb.WaitFor(t, 30*time.Second, "the deleted and the hidden work's counts to reach 0", func() bool {
		for _, name := range names {
			_, tag, _ := admin.do("GET", "/v1/tags?type=freeform&name="+url.QueryEscape(name), nil)
			if v, ok := tag["id"].(float64); ok {
				ids[name] = int64(v)
			}
			if name != "Shown Tag" && tag["count"] != 0.0 {
				return false
			}
		}
		return len(ids) == len(names)
	})

	for _, tc := range []struct {
		who     string
		c       *client
		visible map[string]bool
	}{
		{"another author", other, map[string]bool{"Shown Tag": true}},
		{"the hidden work's author", owner, map[string]bool{"Shown Tag": true, "Hidden Secret": true}},
		{"an admin", admin, map[string]bool{"Shown Tag": true, "Deleted Secret": true, "Hidden Secret": true, "Unposted Secret": true}},
	} {
		for _, name := range names {
			want := 404
			if tc.visible[name] {
				want = 200
			}
			for _, path := range []string{
				fmt.Sprintf("/v1/tags/%d", ids[name]),
				fmt.Sprintf("/v1/tags/%d?consistency=exact", ids[name]),
				"/v1/tags?type=freeform&name=" + url.QueryEscape(name),
				"/v1/tags?type=freeform&consistency=exact&name=" + url.QueryEscape(name),
			} {
				status, body, _ := tc.c.do("GET", path, nil)
				if e, _ := body["error"].(map[string]any); status != want || (want == 404 && e["code"] != "not_found") {
					t.Errorf("%s: GET %s (%s): %d %v; want %d", tc.who, path, name, status, body, want)
				}
			}
		}
		assertBulkListing(t, tc.who, tc.c, names, tc.visible)
	}
}

// assertBulkListing walks tag ids 1 to 100 in bulk as c, as the audit did,
// at both consistencies, and fails for each of names listed when it
// should not be visible or missing when it should.
func assertBulkListing(t *testing.T, who string, c *client, names []string, visible map[string]bool) {
	t.Helper()
	all := make([]string, 100)
	for i := range all {
		all[i] = fmt.Sprint(i + 1)
	}
	for _, consistency := range []string{"tiered", "exact"} {
		_, body, _ := c.do("GET", "/v1/tags?consistency="+consistency+"&ids="+strings.Join(all, ","), nil)
		listed := map[string]bool{}
		list, _ := body["tags"].([]any)
		for _, tag := range list {
			listed[fmt.Sprint(tag.(map[string]any)["name"])] = true
		}
		for _, name := range names {
			if listed[name] != visible[name] {
				t.Errorf("%s: GET /v1/tags?consistency=%s&ids=1..100 lists %q: %v; want %v", who, consistency, name, listed[name], visible[name])
			}
		}
	}
}
