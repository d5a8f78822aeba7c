package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/flags"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// halfRollout writes a flags bootstrap file sending half the authors down
// the new posting path (sticky by author), the others down the legacy one.
func halfRollout(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../../flags/bootstrap.json")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(string(raw), `"rollout": "100", "stickiness": "userId"`, `"rollout": "50", "stickiness": "userId"`, 1)
	path := filepath.Join(t.TempDir(), "bootstrap.json")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func visibleBody(title, visibility string, freeforms ...string) map[string]any {
	b := draftBody(title, freeforms...)
	b["visibility"] = visibility
	return b
}

// TestCountsPerAudienceStayExactAcrossPathsVisibilityAndHiding has authors
// on both paths post public and registered works, edit their tags and
// visibility and delete some, while a moderator hides and shows works; once
// quiet, every tag's count and public_count equal the independent recount,
// and a tag used only by registered or hidden works shows 0 to the public.
func TestCountsPerAudienceStayExactAcrossPathsVisibilityAndHiding(t *testing.T) {
	t.Parallel()
	st := testStack(t, stackOptions{Path: "flag", Flags: flags.Config{BootstrapFile: halfRollout(t)}})
	admin := st.client(t, 1, httpapi.RoleAdmin)
	paths := sync.Map{}
	var wg sync.WaitGroup
	for a := int64(2); a <= 13; a++ {
		wg.Go(func() {
			c := st.client(t, a, httpapi.RoleAuthor)
			rng := rand.New(rand.NewPCG(uint64(a), 9))
			for i := range 12 {
				vis := []string{"public", "registered"}[rng.IntN(2)]
				tags := []string{fmt.Sprintf("Aud %d", rng.IntN(8)), fmt.Sprintf("Aud %d", rng.IntN(8))}
				_, d, _ := c.do("POST", "/v1/drafts", visibleBody(fmt.Sprintf("w%d-%d", a, i), vis, tags...))
				status, res, _ := c.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil)
				if status >= 300 {
					continue
				}
				paths.Store(res["path"], true)
				work := waitWork(t, c, id(d, "id"))
				switch rng.IntN(4) {
				case 0:
					c.do("PUT", "/v1/works/"+work, visibleBody("edited", []string{"public", "registered"}[rng.IntN(2)],
						fmt.Sprintf("Aud %d", rng.IntN(8))))
				case 1:
					admin.do("POST", "/v1/admin/works/"+work+"/hide", nil)
					if rng.IntN(2) == 0 {
						admin.do("POST", "/v1/admin/works/"+work+"/unhide", nil)
					}
				case 2:
					c.do("DELETE", "/v1/works/"+work, nil)
				}
			}
		})
	}
	wg.Wait()
	for _, p := range []string{"new", "legacy"} {
		if _, ok := paths.Load(p); !ok {
			t.Fatalf("no post took the %s path; the rollout should split the authors", p)
		}
	}

	// Probe tags: one used only by a registered work, one only by a work
	// that is hidden, one by a work hidden and shown again.
	c := st.client(t, 20, httpapi.RoleAuthor)
	postVisible(t, c, "Only registered", "registered")
	hidden := postVisible(t, c, "Only hidden", "public")
	shown := postVisible(t, c, "Hidden and shown", "public")
	admin.do("POST", "/v1/admin/works/"+hidden+"/hide", nil)
	admin.do("POST", "/v1/admin/works/"+shown+"/hide", nil)
	admin.do("POST", "/v1/admin/works/"+shown+"/unhide", nil)

	testdb.WaitFor(t, 60*time.Second, "the outbox and the queue to drain", func() bool {
		var n int
		st.DB.QueryRow("SELECT (SELECT COUNT(*) FROM tag_events) + (SELECT COUNT(*) FROM drafts WHERE state = 'queued')").Scan(&n)
		return n == 0
	})
	if drifted, err := reconcile.Drifted(t.Context(), st.DB); err != nil || len(drifted) != 0 {
		t.Fatalf("tags whose count or public_count differ from the recount: %v (%v)", drifted, err)
	}
	for _, probe := range []struct {
		name          string
		count, public float64
	}{{"Only registered", 1, 0}, {"Only hidden", 0, 0}, {"Hidden and shown", 1, 1}} {
		for _, consistency := range []string{"", "&consistency=exact"} {
			_, tag, _ := c.do("GET", "/v1/tags?type=freeform&name="+strings.ReplaceAll(probe.name, " ", "%20")+consistency, nil)
			if tag["count"] != probe.count || tag["public_count"] != probe.public {
				t.Errorf("%s%s: count %v, public_count %v; want %v and %v", probe.name, consistency, tag["count"], tag["public_count"],
					probe.count, probe.public)
			}
		}
	}
	// The hidden work is still its author's.
	if status, w, _ := c.do("GET", "/v1/works/"+hidden, nil); status != 200 || w["hidden"] != true {
		t.Errorf("the author reads the hidden work: %d %v", status, w)
	}
}

// waitWork waits for draft to be posted and returns its work id.
func waitWork(t *testing.T, c *client, draft string) string {
	var d map[string]any
	testdb.WaitFor(t, 30*time.Second, "draft "+draft+" to be posted", func() bool {
		_, d, _ = c.do("GET", "/v1/drafts/"+draft, nil)
		return d["state"] == "posted"
	})
	return id(d, "work_id")
}

func postVisible(t *testing.T, c *client, tag, visibility string) string {
	t.Helper()
	_, d, _ := c.do("POST", "/v1/drafts", visibleBody(tag, visibility, tag))
	c.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil)
	return waitWork(t, c, id(d, "id"))
}
