package main

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// TestAPostMadeAfterThePauseAnsweredWaitsInTheOutboxUntilTheResume checks
// the pause from outside, as the audit did: once POST
// /v1/admin/counter/pause has answered "paused", a work posted on the new
// path with a new tag is not applied — the counter reads the post's
// announcements and holds them, the tag's count stays 0 and its event
// stays in the outbox (an exact read counts it) — and it is applied once
// the counter is resumed. It pauses and posts a few times, since a
// counter that had read its switch just before the pause would only miss
// it for a moment.
func TestAPostMadeAfterThePauseAnsweredWaitsInTheOutboxUntilTheResume(t *testing.T) {
	t.Parallel()
	st := testStack(t, stackOptions{Path: "new"})
	admin := st.client(t, 1, httpapi.RoleAdmin)
	author := st.client(t, 42, httpapi.RoleAuthor)
	postAndWait(t, st, author, "Before any pause", "Warm up") // the rating, warning and fandom exist and are counted
	hc := &http.Client{Timeout: 10 * time.Second}
	const heldSmall = `tagcount_deferred_events{tier="small"}`
	count := func(name, consistency string) any {
		_, tag, _ := admin.do("GET", "/v1/tags?type=freeform&consistency="+consistency+"&name="+url.QueryEscape(name), nil)
		return tag["count"]
	}
	const rounds = 3
	var name string
	for round := range rounds {
		name = fmt.Sprintf("Posted after pause %d", round)
		_, d, _ := author.do("POST", "/v1/drafts", draftBody("Paused "+name, name))
		held := scrapeCounter(hc, st.URL, heldSmall)
		if status, body, _ := admin.do("POST", "/v1/admin/counter/pause", nil); status != 200 || body["state"] != "paused" {
			t.Fatalf("pause: %d %v; want 200 paused", status, body)
		}
		if status, body, _ := author.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil); status != 202 {
			t.Fatalf("post: %d %v; want 202", status, body)
		}
		// The post's four tags (rating, warning, fandom, the new freeform)
		// are all held, or its freeform was applied despite the pause.
		var got any
		testdb.WaitFor(t, 30*time.Second, "the counter to hold the post's tags, or to apply them", func() bool {
			got = count(name, "tiered")
			return got == 1.0 || scrapeCounter(hc, st.URL, heldSmall) >= held+4
		})
		if got != 0.0 {
			t.Fatalf("round %d: %q has count %v after the pause answered; want 0 until the resume", round, name, got)
		}
		if round == rounds-1 {
			break
		}
		admin.do("POST", "/v1/admin/counter/resume", nil)
		// Every tag of the post applied, so none is held any more: the
		// next round counts the held announcements from a still gauge.
		testdb.WaitFor(t, 30*time.Second, "the resumed counter to apply the post", func() bool {
			n, _, err := counter.OutboxDepth(t.Context(), st.DB, 0)
			return err == nil && n == 0 && count(name, "tiered") == 1.0
		})
	}
	// Held means held: for a while (several of the counter's rounds and
	// reads of its switch), the count stays 0 and the event pending.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		depth, _, err := counter.OutboxDepth(t.Context(), st.DB, 0)
		if c, exact := count(name, "tiered"), count(name, "exact"); c != 0.0 || exact != 1.0 || err != nil || depth == 0 {
			t.Fatalf("while paused: count %v, exact count %v, outbox depth %d (%v); want 0, 1 and the post's rows pending", c, exact, depth, err)
		}
		time.Sleep(100 * time.Millisecond) // polling the count
	}
	if status, body, _ := admin.do("POST", "/v1/admin/counter/resume", nil); status != 200 {
		t.Fatalf("resume: %d %v", status, body)
	}
	testdb.WaitFor(t, 30*time.Second, "the resumed counter to apply the post", func() bool { return count(name, "tiered") == 1.0 })
	testdb.WaitFor(t, 30*time.Second, "the outbox to drain", func() bool {
		n, _, err := counter.OutboxDepth(t.Context(), st.DB, 0)
		return err == nil && n == 0
	})
}
