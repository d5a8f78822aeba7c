package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/archive"
	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// buildArchive fills a test's own database with an archive of works works
// (package archive) and returns it; the test's stacks run on it by name.
func buildArchive(t *testing.T, works int) (*testdb.DB, archive.Report) {
	t.Helper()
	db := testdb.New(t)
	rep, err := archive.Build(context.Background(), archive.Config{DB: db.DB, Works: works,
		Drift: archive.Drift{MediumShare: 0.3}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("archive: %d works, %d tags, %d taggings, drift %v (%d rows missing), built in %v",
		rep.Works, rep.Tags, rep.Taggings, rep.Drifted, rep.MissingRows, rep.Took.Round(time.Millisecond))
	return db, rep
}

// authorLoad is authors posting, editing and deleting works on an
// archive's tags (the builder's names, so they meet its counts), through
// the API, until stopped. Every answer that is not a success (or a 503
// with Retry-After, which the client may retry) is counted as bad.
type authorLoad struct {
	posts, edits, deletes, bad atomic.Int64
	mu                         sync.Mutex
	firstBad                   string
	stop                       atomic.Bool
	wg                         sync.WaitGroup
}

// startArchiveAuthors starts n authors (ids from base+1) on st.
func startArchiveAuthors(t *testing.T, st *stack, base, n int64) *authorLoad {
	l := &authorLoad{}
	t.Cleanup(l.halt)
	for a := base + 1; a <= base+n; a++ {
		l.wg.Add(1)
		go l.author(t, st.client(t, a, httpapi.RoleAuthor), a)
	}
	return l
}

func (l *authorLoad) halt() { l.stop.Store(true); l.wg.Wait() }

func (l *authorLoad) failed(format string, args ...any) {
	l.bad.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.firstBad == "" {
		l.firstBad = fmt.Sprintf(format, args...)
	}
}

// check fails t when an answer was bad.
func (l *authorLoad) check(t *testing.T) {
	t.Helper()
	if n := l.bad.Load(); n > 0 {
		l.mu.Lock()
		defer l.mu.Unlock()
		t.Fatalf("%d unexpected answers; first: %s", n, l.firstBad)
	}
}

// archiveDraft is a work on the archive's vocabularies: small and large
// tags alike.
func archiveDraft(rng *rand.Rand, title string) map[string]any {
	vis := "public"
	if rng.IntN(4) == 0 {
		vis = "registered"
	}
	return map[string]any{"title": title, "body": "Text.", "visibility": vis, "tags": map[string]any{
		"rating":        []string{"General Audiences", "Teen And Up Audiences", "Explicit"}[rng.IntN(3)],
		"warnings":      []string{"No Archive Warnings Apply"},
		"fandoms":       []string{fmt.Sprintf("Fandom %d", rng.IntN(50))},
		"characters":    []string{fmt.Sprintf("Character %d", rng.IntN(2000))},
		"relationships": []string{fmt.Sprintf("Relationship %d", 7+20*rng.IntN(20))}, // synonyms
		"freeforms":     []string{fmt.Sprintf("Freeform %d", rng.IntN(10)), fmt.Sprintf("Freeform %d", rng.IntN(10_000))},
	}}
}

func (l *authorLoad) author(t *testing.T, c *client, a int64) {
	defer l.wg.Done()
	rng := rand.New(rand.NewPCG(uint64(a), 22))
	for n := 0; !l.stop.Load(); n++ {
		status, d, _ := c.do("POST", "/v1/drafts", archiveDraft(rng, fmt.Sprintf("a%d-%d", a, n)))
		if status != 201 {
			l.failed("create: %d %v", status, d)
			continue
		}
		status, res, h := c.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil)
		if status == 503 && h.Get("Retry-After") != "" {
			continue
		}
		if status != 201 && status != 202 {
			l.failed("post: %d %v", status, res)
			continue
		}
		l.posts.Add(1)
		workID := l.waitPosted(c, id(d, "id"))
		if workID == "" {
			continue
		}
		switch rng.IntN(4) {
		case 0:
			status, res, h = c.do("PUT", "/v1/works/"+workID, archiveDraft(rng, "edited"))
			l.edits.Add(1)
		case 1:
			status, res, h = c.do("DELETE", "/v1/works/"+workID, nil)
			l.deletes.Add(1)
		default:
			status, res, h = c.do("GET", "/v1/works/"+workID, nil)
		}
		if status >= 300 && !(status == 503 && h.Get("Retry-After") != "") {
			l.failed("work %s: %d %v", workID, status, res)
		}
	}
}

// waitPosted polls a draft until it is posted and returns its work id ("":
// it never was, counted as bad).
func (l *authorLoad) waitPosted(c *client, draft string) string {
	deadline := time.Now().Add(testdb.MinWait)
	for time.Now().Before(deadline) {
		_, got, _ := c.do("GET", "/v1/drafts/"+draft, nil)
		if got["state"] == "posted" {
			return id(got, "work_id")
		}
		time.Sleep(10 * time.Millisecond) // polling the posting job
	}
	l.failed("draft %s never posted", draft)
	return ""
}
