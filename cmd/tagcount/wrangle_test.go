package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/flags"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
	"github.com/tagcount/tagcount/poster/postertest"
)

func TestEachSpellingPairIsOneTagAndInvisibleNamesAreRefused(t *testing.T) {
	t.Parallel()
	st := testStack(t, stackOptions{Path: "new"})
	c := st.client(t, 8, httpapi.RoleAuthor)
	pairs := [][2]string{
		{"Caf\u00e9", "Cafe\u0301"}, {"Fluff", "Fl\u200Buff"}, {"\uFEFFBOM", "BOM"}, {"\uFF21", "A"},
		{"Hurt\u00A0Comfort", "Hurt Comfort"}, {"ΟΔΟΣ", "οδος"}, {"STRASSE", "straße"},
	}
	for i, p := range pairs {
		for j, name := range p {
			postAndWait(t, st, c, fmt.Sprintf("pair %d spelling %d", i, j), name)
		}
	}
	for _, p := range pairs {
		var ids [2]any
		for j, name := range p {
			status, tag, _ := c.do("GET", "/v1/tags?type=freeform&consistency=exact&name="+url.QueryEscape(name), nil)
			if status != 200 || tag["count"] != 2.0 || tag["canonical"] != true || tag["filter_count"] != 2.0 {
				t.Errorf("%q: %d %v; want one canonical tag used by both works", name, status, tag)
			}
			ids[j] = tag["id"]
		}
		if ids[0] != ids[1] {
			t.Errorf("%q and %q are tags %v and %v; want one", p[0], p[1], ids[0], ids[1])
		}
	}
	for _, name := range []string{"\u200B", "\u00AD", "\uFEFF", "\u202E", "abc\u202Edef"} {
		status, body, _ := c.do("POST", "/v1/drafts", draftBody("Invisible", name))
		e, _ := body["error"].(map[string]any)
		want := "tag_name_invisible"
		if name == "\u202E" || name == "abc\u202Edef" {
			want = "tag_name_bidi_control"
		}
		if status != 422 || e["code"] != want || e["field"] != "tags.freeforms[0]" {
			t.Errorf("freeform %q: %d %v; want 422 %s", name, status, body, want)
		}
	}
}

func TestSynonymRoutesRefuseChainsOtherTypesAndStrangers(t *testing.T) {
	t.Parallel()
	st := testStack(t, stackOptions{Path: "new"})
	c := st.client(t, 9, httpapi.RoleAuthor)
	admin := st.client(t, 1, httpapi.RoleAdmin)
	postAndWait(t, st, c, "Tags", "Syn", "Canon", "Other")
	syn, canon, other := c.tagID("freeform", "Syn"), c.tagID("freeform", "Canon"), c.tagID("freeform", "Other")
	fandom := c.tagID("fandom", "Star Trek")
	synPath := fmt.Sprintf("/v1/admin/tags/%d/synonym-of", syn)
	status, job, h := admin.do("PUT", synPath, map[string]any{"canonical_id": canon})
	if status != 202 || job["state"] != "running" || job["tag_id"] != float64(syn) || job["canonical_id"] != float64(canon) ||
		job["direction"] != "make" ||
		h.Get("Location") != "/v1/admin/wrangling/"+id(job, "id") {
		t.Fatalf("make a synonym: %d %v %v", status, job, h)
	}
	for _, tc := range []errorCase{
		{"an author", c, "PUT", fmt.Sprintf("/v1/admin/tags/%d/synonym-of", other), map[string]any{"canonical_id": canon}, 403, "forbidden", ""},
		{"a synonym as canonical", admin, "PUT", fmt.Sprintf("/v1/admin/tags/%d/synonym-of", other), map[string]any{"canonical_id": syn}, 422, "not_canonical", ""},
		{"a canonical with synonyms", admin, "PUT", fmt.Sprintf("/v1/admin/tags/%d/synonym-of", canon), map[string]any{"canonical_id": other}, 409, "has_synonyms", ""},
		{"another type", admin, "PUT", fmt.Sprintf("/v1/admin/tags/%d/synonym-of", other), map[string]any{"canonical_id": fandom}, 422, "type_mismatch", ""},
		{"itself", admin, "PUT", fmt.Sprintf("/v1/admin/tags/%d/synonym-of", other), map[string]any{"canonical_id": other}, 422, "same_tag", ""},
		{"no canonical", admin, "PUT", fmt.Sprintf("/v1/admin/tags/%d/synonym-of", other), `{}`, 422, "canonical_id_required", ""},
		{"an unknown canonical", admin, "PUT", fmt.Sprintf("/v1/admin/tags/%d/synonym-of", other), map[string]any{"canonical_id": 987654}, 422, "canonical_not_found", ""},
		{"an unknown tag", admin, "PUT", "/v1/admin/tags/987654/synonym-of", map[string]any{"canonical_id": canon}, 404, "not_found", ""},
		{"undo of a canonical tag", admin, "DELETE", fmt.Sprintf("/v1/admin/tags/%d/synonym-of", other), nil, 409, "not_a_synonym", ""},
		{"an unknown job", admin, "GET", "/v1/admin/wrangling/987654", nil, 404, "not_found", ""},
	} {
		status, body, _ := tc.c.do(tc.method, tc.path, tc.body)
		if e, _ := body["error"].(map[string]any); status != tc.status || e["code"] != tc.code {
			t.Errorf("%s: %d %v; want %d %s", tc.name, status, body, tc.status, tc.code)
		}
	}
	job = waitJob(t, admin, id(job, "id"), time.Minute)
	_, tag, _ := c.do("GET", fmt.Sprintf("/v1/tags/%d?consistency=exact", syn), nil)
	if tag["canonical"] != false || tag["synonym_of"] != float64(canon) || tag["filter_count"] != nil {
		t.Errorf("the synonym reads %v; want canonical false, synonym_of %d, no filter count", tag, canon)
	}
	_, tag, _ = c.do("GET", fmt.Sprintf("/v1/tags/%d?consistency=exact", canon), nil)
	if tag["canonical"] != true || tag["synonym_of"] != nil || tag["filter_count"] != 1.0 || tag["public_filter_count"] != 1.0 {
		t.Errorf("the canonical tag reads %v; want canonical with filter counts 1", tag)
	}
}

// waitJob polls a wrangling job until it is no longer running and returns
// it; it must end done.
func waitJob(t *testing.T, admin *client, jobID string, d time.Duration) map[string]any {
	t.Helper()
	var job map[string]any
	testdb.WaitFor(t, d, "wrangling job "+jobID+" to finish", func() bool {
		_, job, _ = admin.do("GET", "/v1/admin/wrangling/"+jobID, nil)
		return job["state"] != "running"
	})
	if job["state"] != "done" {
		t.Fatalf("job %s: %v", jobID, job)
	}
	return job
}

// wranglingScenario sizes TestWrangling*: the works using the tag made a
// synonym, and the job's limits.
type wranglingScenario struct {
	works            int
	perTx, perSecond int
	jobWait          time.Duration
}

func TestWranglingATagOfTwoThousandWorksUnderLoadSurvivesAKillAndUndoesExactly(t *testing.T) {
	t.Parallel()
	runWranglingScenario(t, wranglingScenario{works: 2000, perTx: 50, perSecond: 1000, jobWait: 3 * time.Minute})
}

func TestWranglingATagOfAHundredThousandWorks(t *testing.T) {
	if os.Getenv("TAGCOUNT_BIG_TESTS") != "1" {
		t.Skip("wrangling a tag of 100,000 works takes minutes: set TAGCOUNT_BIG_TESTS=1 to run it")
	}
	t.Parallel()
	runWranglingScenario(t, wranglingScenario{works: 100_000, perTx: 500, perSecond: 20_000, jobWait: 30 * time.Minute})
}

// runWranglingScenario makes a tag of sc.works posted works (half on each
// path) a synonym of a canonical tag while authors on both paths post, edit
// and delete works using either or both; kills the service part-way through
// the job and starts it again; and checks, once quiet, every tag's numbers
// against the recount, the job's transactions against its row limit, and
// the same again after the synonym is undone.
func runWranglingScenario(t *testing.T, sc wranglingScenario) {
	ctx := context.Background()
	var mu sync.Mutex
	var commits []poster.WrangleCommit
	st := testStack(t, stackOptions{Path: "flag", Flags: flags.Config{BootstrapFile: halfRollout(t)},
		WrangleRowsPerTx: sc.perTx, WrangleRowsPerSecond: sc.perSecond, SweepAfter: 2 * time.Second,
		OnWrangleCommit: func(c poster.WrangleCommit) { mu.Lock(); commits = append(commits, c); mu.Unlock() }})
	synonym, canonical := seedWrangling(t, st, sc.works)
	admin := st.client(t, 1, httpapi.RoleAdmin)
	base := &atomic.Pointer[string]{}
	base.Store(&st.URL)
	stopAuthors := startAuthors(t, st, base)

	status, job, _ := admin.do("PUT", fmt.Sprintf("/v1/admin/tags/%d/synonym-of", synonym), map[string]any{"canonical_id": canonical})
	if status != 202 {
		t.Fatalf("make the synonym: %d %v", status, job)
	}
	jobID := id(job, "id")
	testdb.WaitFor(t, sc.jobWait, "the job to be a tenth of the way", func() bool {
		_, job, _ = admin.do("GET", "/v1/admin/wrangling/"+jobID, nil)
		return job["works_examined"].(float64) >= float64(sc.works/10)
	})
	// Kill the service mid-job and start it again on the same database,
	// queue and broker data; the authors carry on against the new one.
	st.Close()
	restarted, err := startStack(ctx, st.opts)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Cleanup(func() { restarted.Close() })
	base.Store(&restarted.URL)
	admin = restarted.client(t, 1, httpapi.RoleAdmin)
	_, killed, _ := admin.do("GET", "/v1/admin/wrangling/"+jobID, nil)
	if killed["state"] != "running" || killed["works_examined"].(float64) >= float64(sc.works) {
		t.Fatalf("job after the kill: %v; want running, part-way", killed)
	}
	job = waitJob(t, admin, jobID, sc.jobWait)
	stopAuthors()
	waitQuiet(t, restarted)
	checkWrangled(t, restarted, sc, job, commits, &mu)
	c := restarted.client(t, 2, httpapi.RoleAuthor)
	_, tag, _ := c.do("GET", fmt.Sprintf("/v1/tags/%d?consistency=exact", synonym), nil)
	if tag["canonical"] != false || tag["synonym_of"] != float64(canonical) {
		t.Errorf("the synonym reads %v", tag)
	}

	status, undo, _ := admin.do("DELETE", fmt.Sprintf("/v1/admin/tags/%d/synonym-of", synonym), nil)
	if status != 202 || undo["direction"] != "undo" || undo["canonical_id"] != float64(canonical) {
		t.Fatalf("undo: %d %v", status, undo)
	}
	waitJob(t, admin, id(undo, "id"), sc.jobWait)
	waitQuiet(t, restarted)
	postertest.AssertExact(ctx, t, restarted.DB)
	_, tag, _ = c.do("GET", fmt.Sprintf("/v1/tags/%d?consistency=exact", synonym), nil)
	if tag["canonical"] != true || tag["filter_count"] != tag["count"] || tag["public_filter_count"] != tag["public_count"] {
		t.Errorf("after the undo the tag reads %v; want canonical, filtering exactly the works using it", tag)
	}
}

// seedWrangling posts n works using the tag to be made a synonym (every
// fourth also using the canonical tag, every third registered, every
// tenth hidden), and some using only the canonical tag, half on each path,
// and returns the two tags' ids.
func seedWrangling(t *testing.T, st *stack, n int) (synonym, canonical int64) {
	t.Helper()
	ctx := context.Background()
	syn := tags.NewRef(tags.TypeFreeform, "To Be Wrangled")
	canon := tags.NewRef(tags.TypeFreeform, "Canonical")
	const batch = 500
	var hide []int64
	for done := 0; done < n; done += batch {
		var contents []drafts.Content
		for i := done; i < min(n, done+batch); i++ {
			refs := []tags.Ref{syn}
			if i%4 == 0 {
				refs = append(refs, canon)
			}
			c := postertest.Content(fmt.Sprintf("seed %d", i), refs...)
			if i%3 == 0 {
				c.Visibility = drafts.VisibilityRegistered
			}
			contents = append(contents, c)
		}
		contents = append(contents, postertest.Content(fmt.Sprintf("canonical only %d", done), canon))
		path := []string{poster.PathNew, poster.PathLegacy}[(done/batch)%2]
		works, _ := postertest.Works(ctx, t, st.DB, contents, &postertest.Opts{Path: path, AuthorID: 100})
		for i := 0; i < len(works); i += 10 {
			hide = append(hide, works[i])
		}
	}
	for _, w := range hide {
		if _, err := st.Poster.SetHidden(ctx, w, true); err != nil {
			t.Fatal(err)
		}
	}
	c := st.client(t, 100, httpapi.RoleAuthor)
	return c.tagID("freeform", syn.Name), c.tagID("freeform", canon.Name)
}

// startAuthors starts authors on both paths posting, editing and deleting
// works using the synonym, the canonical tag, both, or neither, against the
// service at base (which may be down for a while, or move); the returned
// function stops them and waits.
func startAuthors(t *testing.T, st *stack, base *atomic.Pointer[string]) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	choices := [][]string{{"To Be Wrangled"}, {"Canonical"}, {"to be wrangled", "Canonical"}, {"Bystander"}}
	for a := int64(2); a <= 13; a++ {
		tok, err := st.Auth.IssueToken(a, httpapi.RoleAuthor, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(a), 14))
			au := &author{base: base, token: tok}
			for i := 0; ctx.Err() == nil; i++ {
				b := draftBody(fmt.Sprintf("a%d-%d", a, i), choices[rng.IntN(len(choices))]...)
				b["visibility"] = []string{"public", "registered"}[rng.IntN(2)]
				work := au.post(ctx, b)
				if work == "" {
					continue
				}
				switch rng.IntN(3) {
				case 0:
					au.do(ctx, "PUT", "/v1/works/"+work, draftBody("edited", choices[rng.IntN(len(choices))]...))
				case 1:
					au.do(ctx, "DELETE", "/v1/works/"+work, nil)
				}
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

// author is a client that survives the service going away: a failed
// request is an answer of 0.
type author struct {
	base  *atomic.Pointer[string]
	token string
}

func (a *author) do(ctx context.Context, method, path string, body any) (int, map[string]any) {
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequestWithContext(ctx, method, *a.base.Load()+path, rd)
	req.Header.Set("Authorization", "Bearer "+a.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		time.Sleep(20 * time.Millisecond) // the service is down: do not spin
		return 0, nil
	}
	defer res.Body.Close()
	var m map[string]any
	json.NewDecoder(res.Body).Decode(&m)
	return res.StatusCode, m
}

// post creates and posts a draft and returns its work id once posted, or
// "" when something failed on the way.
func (a *author) post(ctx context.Context, body map[string]any) string {
	status, d := a.do(ctx, "POST", "/v1/drafts", body)
	if status != 201 {
		return ""
	}
	draft := id(d, "id")
	if status, res := a.do(ctx, "POST", "/v1/drafts/"+draft+"/post", nil); status == 201 {
		return id(res, "work_id")
	} else if status != 202 {
		return ""
	}
	deadline := time.Now().Add(30 * time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if status, d := a.do(ctx, "GET", "/v1/drafts/"+draft, nil); status == 200 && d["state"] == "posted" {
			return id(d, "work_id")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ""
}

// waitQuiet waits until no draft is queued: no work changes any more (the
// counter may still be applying, which keeps every identity).
func waitQuiet(t *testing.T, st *stack) {
	t.Helper()
	testdb.WaitFor(t, 2*time.Minute, "the posting queue to drain", func() bool {
		var n int
		st.DB.QueryRow("SELECT COUNT(*) FROM drafts WHERE state = 'queued'").Scan(&n)
		return n == 0
	})
}

// checkWrangled checks, once quiet after the job, every tag against the
// recount, every work filed consistently, and every transaction of the job
// within its row limit.
func checkWrangled(t *testing.T, st *stack, sc wranglingScenario, job map[string]any, commits []poster.WrangleCommit, mu *sync.Mutex) {
	t.Helper()
	postertest.AssertExact(context.Background(), t, st.DB)
	if drifted, err := reconcile.Drifted(context.Background(), st.DB); err != nil || len(drifted) != 0 {
		t.Errorf("tags whose numbers differ from their works and filings: %v (%v)", drifted, err)
	}
	mu.Lock()
	defer mu.Unlock()
	rows := 0
	for _, c := range commits {
		rows += c.Rows
		if c.Rows > sc.perTx {
			t.Errorf("a transaction of the job wrote %d rows; the limit is %d", c.Rows, sc.perTx)
		}
	}
	if most := job["max_rows_per_tx"].(float64); most > float64(sc.perTx) || most == 0 || rows == 0 {
		t.Errorf("job %v after %d rows committed: its largest transaction is over the limit of %d, or it wrote nothing", job, rows, sc.perTx)
	}
	t.Logf("job %v in %d transactions", job, len(commits))
}
