package counter

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tagcount/tagcount/drafts/api"
)

// readRig serves the read API under auth on an httptest server.
type readRig struct {
	*archive
	srv   *httptest.Server
	token string
	clock *testClock
	r     *Reader
}

func newReadRig(t *testing.T) *readRig {
	a := newArchive(t, archiveOpts{noBroker: true})
	clock := newTestClock()
	r := NewReader(a.db.DB, Tiers{}, ReaderClock(clock.Now), ReaderLogger(testLogger()), ReaderRegisterer(a.reg))
	auth := api.Auth{Secret: []byte("test-secret")}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/tags/{id}", auth.Require(false, r.HandleGetTag()))
	mux.Handle("GET /v1/tags", auth.Require(false, r.HandleListTags()))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	tok, err := auth.IssueToken(42, api.RoleAuthor, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &readRig{archive: a, srv: srv, token: tok, clock: clock, r: r}
}

func (rr *readRig) get(path string, into any) int {
	rr.t.Helper()
	req, _ := http.NewRequest("GET", rr.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+rr.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		rr.t.Fatal(err)
	}
	defer resp.Body.Close()
	if into != nil {
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
			rr.t.Fatalf("GET %s: %v", path, err)
		}
	}
	return resp.StatusCode
}

func (rr *readRig) setCount(tag, n int64) {
	rr.t.Helper()
	_, err := rr.db.Exec("INSERT INTO tag_counts (tag_id, count) VALUES (?, ?) ON DUPLICATE KEY UPDATE count = VALUES(count)", tag, n)
	if err != nil {
		rr.t.Fatal(err)
	}
}

type errorJSON struct {
	Error struct {
		Code, Message, Field string
	}
}

func TestReadTagByID(t *testing.T) {
	t.Parallel()
	rr := newReadRig(t)
	tag := rr.createTags(1, "fandom")[0]
	rr.setCount(tag, 7)

	var got TagCount
	if code := rr.get(fmt.Sprintf("/v1/tags/%d", tag), &got); code != 200 {
		t.Fatalf("status %d", code)
	}
	want := TagCount{ID: tag, Name: "Fandom Tag 0", Type: "fandom", Count: 7, Tier: "small",
		AsOf: rr.clock.Now().Format(time.RFC3339Nano)}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// A small tag is never served stale.
	rr.setCount(tag, 8)
	rr.get(fmt.Sprintf("/v1/tags/%d", tag), &got)
	if got.Count != 8 {
		t.Errorf("small tag served stale: count %d, want 8", got.Count)
	}
}

func TestReadTagWithoutCountRowIsZero(t *testing.T) {
	t.Parallel()
	rr := newReadRig(t)
	tag := rr.createTags(1, "character")[0]
	var got TagCount
	if code := rr.get(fmt.Sprintf("/v1/tags/%d", tag), &got); code != 200 || got.Count != 0 || got.Tier != "small" {
		t.Errorf("status %d, %+v; want 200 with count 0", code, got)
	}
}

func TestReadUnknownTagIsNotFound(t *testing.T) {
	t.Parallel()
	rr := newReadRig(t)
	for _, path := range []string{"/v1/tags/999999", "/v1/tags/abc", "/v1/tags?name=nope&type=fandom"} {
		var e errorJSON
		if code := rr.get(path, &e); code != 404 || e.Error.Code != "not_found" {
			t.Errorf("GET %s: %d %+v, want 404 not_found", path, code, e)
		}
	}
}

func TestReadTagByNameAndTypeIgnoresCase(t *testing.T) {
	t.Parallel()
	rr := newReadRig(t)
	tag := rr.createTags(1, "relationship")[0]
	rr.setCount(tag, 3)
	var got TagCount
	if code := rr.get("/v1/tags?name=%20relationship%20TAG%200&type=Relationship", &got); code != 200 {
		t.Fatalf("status %d", code)
	}
	if got.ID != tag || got.Count != 3 || got.Name != "Relationship Tag 0" {
		t.Errorf("got %+v", got)
	}
	var e errorJSON
	if code := rr.get("/v1/tags?name=Relationship+Tag+0", &e); code != 422 || e.Error.Field != "type" {
		t.Errorf("name without type: %d %+v, want 422 on type", code, e)
	}
}

func TestReadManyTags(t *testing.T) {
	t.Parallel()
	rr := newReadRig(t)
	tags := rr.createTags(3, "freeform")
	rr.setCount(tags[0], 5)
	rr.setCount(tags[2], 50_000)
	var got struct{ Tags []TagCount }
	path := fmt.Sprintf("/v1/tags?ids=%d,%d,999999,%d,%d", tags[2], tags[0], tags[1], tags[0])
	if code := rr.get(path, &got); code != 200 {
		t.Fatalf("status %d", code)
	}
	var summary []string
	for _, tc := range got.Tags {
		summary = append(summary, fmt.Sprintf("%d:%d:%s", tc.ID, tc.Count, tc.Tier))
	}
	want := fmt.Sprintf("%d:50000:large %d:5:small %d:0:small", tags[2], tags[0], tags[1])
	if strings.Join(summary, " ") != want {
		t.Errorf("got %v, want %s (asked order, unknown left out, each once)", summary, want)
	}
}

func TestReadMoreThanAThousandIDsIsRejected(t *testing.T) {
	t.Parallel()
	rr := newReadRig(t)
	ids := make([]string, MaxBulkIDs+1)
	for i := range ids {
		ids[i] = fmt.Sprint(i + 1)
	}
	var e errorJSON
	if code := rr.get("/v1/tags?ids="+strings.Join(ids, ","), &e); code != 422 || e.Error.Field != "ids" {
		t.Errorf("1001 ids: %d %+v, want 422 on ids", code, e)
	}
	if code := rr.get("/v1/tags?ids="+strings.Join(ids[:MaxBulkIDs], ","), nil); code != 200 {
		t.Errorf("1000 ids: %d, want 200", code)
	}
	if code := rr.get("/v1/tags?ids=1,x", &e); code != 422 || e.Error.Field != "ids" {
		t.Errorf("bad id: %d %+v, want 422 on ids", code, e)
	}
}

func TestReadNeedsAToken(t *testing.T) {
	t.Parallel()
	rr := newReadRig(t)
	resp, err := http.Get(rr.srv.URL + "/v1/tags/1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("status %d, want 401", resp.StatusCode)
	}
}

func TestReadCacheFollowsTiers(t *testing.T) {
	t.Parallel()
	rr := newReadRig(t)
	tags := rr.createTags(2, "fandom")
	medium, large := tags[0], tags[1]
	rr.setCount(medium, 1_000) // interval 3 min
	rr.setCount(large, 40_000) // 30 min, refreshed after 24 min
	ctx := context.Background()
	read := func(id int64) TagCount {
		tcs, err := rr.r.Counts(ctx, []int64{id})
		if err != nil || len(tcs) != 1 {
			t.Fatalf("Counts(%d) = %v, %v", id, tcs, err)
		}
		return tcs[0]
	}
	first := read(medium)
	read(large)
	rr.setCount(medium, 1_500)
	rr.setCount(large, 41_000)

	rr.clock.Advance(2 * time.Minute)
	if got := read(medium); got.Count != 1_000 || got.AsOf != first.AsOf {
		t.Errorf("medium within its interval: %+v, want the cached 1000 as of %s", got, first.AsOf)
	}
	rr.clock.Advance(time.Minute + time.Second)
	if got := read(medium); got.Count != 1_500 {
		t.Errorf("medium after its interval: count %d, want 1500 read through", got.Count)
	}

	// Past the refresh point a reader still gets the cached count at once
	// and the refresh happens behind it.
	rr.clock.Advance(22 * time.Minute) // 25 min after the first read
	if got := read(large); got.Count != 40_000 {
		t.Errorf("large before expiry: count %d, want the cached 40000", got.Count)
	}
	waitFor(t, 10*time.Second, "the background refresh", func() bool { return read(large).Count == 41_000 })

	// Reader.Run refreshes without any reader.
	rr.setCount(large, 42_000)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stopped atomic.Bool
	go func() { rr.r.Run(runCtx, 10*time.Millisecond); stopped.Store(true) }()
	rr.clock.Advance(25 * time.Minute)
	waitFor(t, 10*time.Second, "Run's refresh", func() bool {
		rr.r.mu.Lock()
		defer rr.r.mu.Unlock()
		c := rr.r.byID[large]
		return c != nil && c.tc.Count == 42_000
	})
	cancel()
	waitFor(t, 5*time.Second, "Run to return", stopped.Load)
}
