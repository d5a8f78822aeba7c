package httpapi

import (
	"net/http"
	"net/netip"
	"strconv"
	"testing"

	"github.com/tagcount/tagcount/migrations/testdb"
)

// slow is a limit that refills one request every 100 s: within a test, an
// author gets exactly its burst.
func slow(burst int) RateLimit { return RateLimit{PerSecond: 0.01, Burst: burst} }

func TestAnAuthorOverTheLimitGets429WithRetryAfterBeforeAnyDatabaseWork(t *testing.T) {
	t.Parallel()
	rl := RateLimits{Redis: testRedis(t, testdb.RequireRedis(t)), Prefix: testdb.Queue(t) + ":", Reads: slow(2), Writes: slow(1)}
	api := newTestAPI(t, nil, Edge{RateLimits: rl})
	alice, bob := api.token(1, RoleAuthor), api.token(2, RoleAuthor)

	for i := range 2 {
		if res := api.do("GET", "/v1/drafts/1", alice, nil); res.Status != http.StatusNotFound {
			t.Fatalf("read %d within the burst: %d %v; want the route's 404", i+1, res.Status, res.Body)
		}
	}
	unlock := lockTable(t, api.DB, "drafts") // a request that reached the database would hang
	defer unlock()
	res := api.do("GET", "/v1/drafts/1", alice, nil)
	retry, err := strconv.Atoi(res.Header.Get("Retry-After"))
	if res.Status != http.StatusTooManyRequests || res.code() != "rate_limited" || err != nil || retry < 1 {
		t.Errorf("read past the burst: %d %v Retry-After %q; want 429 rate_limited with Retry-After in whole seconds",
			res.Status, res.Body, res.Header.Get("Retry-After"))
	}
	if msg, _ := res.Body["error"].(map[string]any)["message"].(string); msg == "" {
		t.Errorf("429 without a message: %v", res.Body)
	}
	unlock()
	if res := api.do("DELETE", "/v1/drafts/1", alice, nil); res.Status != http.StatusNotFound {
		t.Errorf("a write while reads are limited: %d %v; want 404, writes have their own limit", res.Status, res.Body)
	}
	if res := api.do("GET", "/v1/drafts/1", bob, nil); res.Status != http.StatusNotFound {
		t.Errorf("another author's read: %d %v; want 404, each author has their own limit", res.Status, res.Body)
	}
}

func TestTwoServersOnOneRedisPrefixShareTheLimit(t *testing.T) {
	t.Parallel()
	rl := RateLimits{Redis: testRedis(t, testdb.RequireRedis(t)), Prefix: testdb.Queue(t) + ":", Reads: slow(4)}
	db := testdb.New(t)
	replicas := []*testAPI{newTestAPI(t, db, Edge{RateLimits: rl}), newTestAPI(t, db, Edge{RateLimits: rl})}
	tok := replicas[0].token(1, RoleAuthor)

	for i := range 4 {
		if res := replicas[i%2].do("GET", "/v1/drafts/1", tok, nil); res.Status != http.StatusNotFound {
			t.Fatalf("read %d of the shared burst of 4: %d %v", i+1, res.Status, res.Body)
		}
	}
	for i, api := range replicas {
		if res := api.do("GET", "/v1/drafts/1", tok, nil); res.Status != http.StatusTooManyRequests {
			t.Errorf("replica %d after the shared burst was spent across both: %d %v; want 429", i, res.Status, res.Body)
		}
	}
}

func TestTheLimiterFailsOpenWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	down := testdb.StartRedis(t)
	down.Stop()
	rl := RateLimits{Redis: testRedis(t, down.Addr()), Prefix: testdb.Queue(t) + ":", Reads: slow(1)}
	api := newTestAPI(t, nil, Edge{RateLimits: rl})
	tok := api.token(1, RoleAuthor)

	for i := range 3 {
		if res := api.do("GET", "/v1/drafts/1", tok, nil); res.Status != http.StatusNotFound {
			t.Fatalf("read %d with the limiter's Redis down: %d %v; want it served (404)", i+1, res.Status, res.Body)
		}
	}
	if n := api.metric("tagcount_rate_limit_errors_total", "class", "reads"); n != 3 {
		t.Errorf("tagcount_rate_limit_errors_total{class=reads} = %v; want 3", n)
	}
}

// checkThirdLimited sends api an anonymous request with each of the three
// X-Forwarded-For values xffs and fails t unless the first two answer 401
// and the third 429 (the limit is 2 a minute).
func checkThirdLimited(t *testing.T, api *testAPI, what string, xffs ...string) {
	t.Helper()
	for i, xff := range xffs {
		want := http.StatusUnauthorized
		if i == 2 {
			want = http.StatusTooManyRequests
		}
		if res := api.do("GET", "/v1/drafts/1", "", nil, "X-Forwarded-For", xff); res.Status != want {
			t.Errorf("%s %s (request %d): %d %v; want %d", what, xff, i+1, res.Status, res.Body, want)
		}
	}
}

func TestRequestsWithoutAValidTokenAreLimitedPerClientAddress(t *testing.T) {
	t.Parallel()
	redis := testRedis(t, testdb.RequireRedis(t))
	db := testdb.New(t)
	direct := newTestAPI(t, db, Edge{RateLimits: RateLimits{Redis: redis, Prefix: testdb.Queue(t) + ":direct:", Anonymous: slow(2)}})
	proxied := newTestAPI(t, db, Edge{RateLimits: RateLimits{Redis: redis, Prefix: testdb.Queue(t) + ":proxied:", Anonymous: slow(2),
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}})

	// Not behind a trusted proxy: X-Forwarded-For is the client's own word.
	checkThirdLimited(t, direct, "direct request claiming", "198.51.100.1", "198.51.100.2", "198.51.100.3")
	if res := direct.do("GET", "/v1/drafts/1", "not-a-token", nil); res.Status != http.StatusTooManyRequests {
		t.Errorf("a bad token from the limited address: %d; want 429", res.Status)
	}

	// Behind a trusted proxy: the nearest untrusted address in the header.
	checkThirdLimited(t, proxied, "proxied request for", "198.51.100.1", "203.0.113.9, 198.51.100.1", "198.51.100.1")
	if res := proxied.do("GET", "/v1/drafts/1", "", nil, "X-Forwarded-For", "198.51.100.2"); res.Status != http.StatusUnauthorized {
		t.Errorf("another client behind the proxy: %d; want 401, its own limit", res.Status)
	}
}

func TestARequestSentWhileToldToWaitIsAnswered429WithoutAskingRedisAgain(t *testing.T) {
	t.Parallel()
	redis := testdb.StartRedis(t)
	rl := RateLimits{Redis: testRedis(t, redis.Addr()), Prefix: testdb.Queue(t) + ":", Reads: slow(1)}
	api := newTestAPI(t, nil, Edge{RateLimits: rl})
	tok := api.token(1, RoleAuthor)
	if res := api.do("GET", "/v1/drafts/1", tok, nil); res.Status != http.StatusNotFound {
		t.Fatalf("the burst of one: %d %v", res.Status, res.Body)
	}
	if res := api.do("GET", "/v1/drafts/1", tok, nil); res.Status != http.StatusTooManyRequests {
		t.Fatalf("past the burst: %d %v; want 429", res.Status, res.Body)
	}
	// With Redis gone the limiter would fail open: a 429 now comes from the
	// denial this replica remembers.
	redis.Stop()
	res := api.do("GET", "/v1/drafts/1", tok, nil)
	if res.Status != http.StatusTooManyRequests || res.code() != "rate_limited" || res.Header.Get("Retry-After") == "" {
		t.Errorf("sent again while told to wait: %d %v Retry-After %q; want 429 rate_limited with Retry-After",
			res.Status, res.Body, res.Header.Get("Retry-After"))
	}
	if n := api.metric("tagcount_rate_limit_repeats_total", "class", "reads"); n != 1 {
		t.Errorf("tagcount_rate_limit_repeats_total{class=reads} = %v; want 1", n)
	}
	if n := api.metric("tagcount_rate_limit_errors_total", "class", "reads"); n != 0 {
		t.Errorf("tagcount_rate_limit_errors_total{class=reads} = %v; want 0: the repeat never asked Redis", n)
	}
}
