package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/cmd/tagcount/httpapi/openapitest"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
)

// testStack starts a whole service (API, worker, counter, embedded Kafka) on
// a fresh database and queue, with o's posting path and flags, and removes
// the database when the test ends. Its pools are dev's unless o.Pools says
// otherwise: at most 32 connections (main 16, writes 8, jobs 8), of which a
// test's light load holds a handful.
func testStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	name := o.Database // a test's own database, or one for the stack
	if name == "" {
		name = fmt.Sprintf("tc_e2e_%d", time.Now().UnixNano())
	}
	if o.MySQLDSN == "" {
		o.MySQLDSN = testdb.ServerDSN()
	}
	o.Database, o.Create, o.Migrate = name, true, true
	o.RedisAddr, o.Queue = testdb.RequireRedis(t), testdb.Queue(t)
	// The tests poll one author's drafts many times a second: limits far
	// above that, on the test's own keys, so the limiter runs but never
	// decides a test (edge_test.go checks the real defaults).
	if o.Edge.RateLimits.Prefix == "" {
		o.Edge.RateLimits.Prefix = o.Queue + ":"
	}
	if (o.Edge.RateLimits.Writes == httpapi.RateLimit{}) {
		generous := httpapi.RateLimit{PerSecond: 10000, Burst: 10000}
		o.Edge.RateLimits.Writes, o.Edge.RateLimits.Reads = generous, generous
		o.Edge.RateLimits.Admin, o.Edge.RateLimits.Anonymous = generous, generous
	}
	if o.Edge.RateLimits.Timeout == 0 {
		// A busy machine's Redis can answer later than the default 100 ms;
		// the limiter and the quota then let the request through (fail
		// open, by design), which is not what a test checks.
		o.Edge.RateLimits.Timeout = time.Minute
	}
	o.AuthSecret = "test-secret-test-secret-test-secret"
	o.DataDir, o.Partitions, o.GroupID = t.TempDir(), 4, name
	o.API, o.Worker, o.Counter, o.EmbeddedKafka = true, true, true, true
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	st, err := startStack(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.Close()
		// st.DB is closed by now: drop the database over a pool of our own.
		if db, _ := sqlOpen(testdb.ServerDSN()); db != nil {
			db.Exec("DROP DATABASE IF EXISTS `" + name + "`")
			db.Close()
		}
	})
	return st
}

// errorCase is a request that must be refused: the status, the error code
// and the field its answer names ("" for none, where a test checks it).
type errorCase struct {
	name   string
	c      *client
	method string
	path   string
	body   any
	status int
	code   string
	field  string
}

type client struct {
	t      *testing.T
	base   string
	token  string
	header http.Header // sent with every request
}

// apiDoc is the API's OpenAPI document, loaded once per test binary.
var apiDoc = openapitest.Once(httpapi.OpenAPI)

// apiClient returns an HTTP client that checks every request and answer
// against the API's OpenAPI document and fails t on a mismatch.
func apiClient(t testing.TB) *http.Client {
	t.Helper()
	return apiDoc(t).Client(t)
}

func (s *stack) client(t *testing.T, authorID int64, role string) *client {
	tok, err := s.Auth.IssueToken(authorID, role, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &client{t: t, base: s.URL, token: tok}
}

// do sends a request and decodes the JSON answer into a map. The request
// and its answer are checked against the OpenAPI document.
func (c *client) do(method, path string, body any) (int, map[string]any, http.Header) {
	c.t.Helper()
	req, err := openapitest.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	for name, values := range c.header {
		req.Header[name] = values
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := apiClient(c.t).Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	var m map[string]any
	raw, _ := io.ReadAll(res.Body)
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &m); err != nil {
			c.t.Fatalf("%s %s: answer is not JSON: %q", method, path, raw)
		}
	}
	return res.StatusCode, m, res.Header
}

func draftBody(title string, freeforms ...string) map[string]any {
	return map[string]any{"title": title, "body": "Text.", "tags": map[string]any{
		"rating": "General Audiences", "warnings": []string{"No Archive Warnings Apply"},
		"fandoms": []string{"Star Trek"}, "freeforms": freeforms,
	}}
}

// id returns the number at key of a JSON answer in decimal; "" when there
// is none.
func id(m map[string]any, key string) string {
	v, ok := m[key].(float64)
	if !ok {
		return ""
	}
	return strconv.FormatInt(int64(v), 10)
}

func TestNewPathPostsAWorkAndItsSmallTagCountsShowIt(t *testing.T) {
	t.Parallel()
	st := testStack(t, stackOptions{Path: "new"})
	c := st.client(t, 42, httpapi.RoleAuthor)

	status, d, _ := c.do("POST", "/v1/drafts", draftBody("First", "Fluff", "Unique e2e tag"))
	if status != 201 || d["state"] != "draft" {
		t.Fatalf("create draft: %d %v", status, d)
	}
	status, res, _ := c.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil)
	if status != 202 || res["state"] != "queued" {
		t.Fatalf("post: %d %v; want 202 queued", status, res)
	}
	var posted map[string]any
	testdb.WaitFor(t, 15*time.Second, "the draft to be posted", func() bool {
		_, posted, _ = c.do("GET", "/v1/drafts/"+id(d, "id"), nil)
		return posted["state"] == "posted"
	})
	status, w, _ := c.do("GET", "/v1/works/"+id(posted, "work_id"), nil)
	tags, _ := w["tags"].(map[string]any)
	if status != 200 || tags["rating"] != "General Audiences" || fmt.Sprint(tags["freeforms"]) != "[Fluff Unique e2e tag]" {
		t.Fatalf("work: %d %v", status, w)
	}
	testdb.WaitFor(t, 15*time.Second, "the small tag's count to show the post", func() bool {
		s, tag, _ := c.do("GET", "/v1/tags?type=freeform&name=unique%20e2e%20tag", nil)
		return s == 200 && tag["count"] == float64(1) && tag["tier"] == "small"
	})

	status, again, _ := c.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil)
	if status != 200 || id(again, "work_id") != id(posted, "work_id") {
		t.Fatalf("posting a posted draft: %d %v; want 200 with the same work", status, again)
	}
}

func TestLegacyPathPostsInTheRequest(t *testing.T) {
	t.Parallel()
	st := testStack(t, stackOptions{Path: "legacy"})
	c := st.client(t, 5, httpapi.RoleAuthor)
	_, d, _ := c.do("POST", "/v1/drafts", draftBody("Old way", "Fluff"))
	status, res, _ := c.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil)
	if status != 201 || res["state"] != "posted" || res["work_id"] == nil {
		t.Fatalf("legacy post: %d %v; want 201 posted with work_id", status, res)
	}
	status, tag, _ := c.do("GET", "/v1/tags?type=freeform&name=Fluff", nil)
	if status != 200 || tag["count"] != float64(1) {
		t.Fatalf("count right after a legacy post: %d %v", status, tag)
	}
	status, _, _ = c.do("DELETE", "/v1/works/"+id(res, "work_id"), nil)
	if status != 204 {
		t.Fatalf("legacy delete: %d, want 204", status)
	}
}

func TestAPIAnswersEveryRuleWithItsDocumentedStatusAndCode(t *testing.T) {
	t.Parallel()
	st := testStack(t, stackOptions{Path: "new"})
	alice := st.client(t, 1, httpapi.RoleAuthor)
	bob := st.client(t, 2, httpapi.RoleAuthor)
	anon := &client{t: t, base: st.URL}
	forged := &client{t: t, base: st.URL, token: mustToken(t, httpapi.Auth{Secret: []byte("another secret")}, 1, time.Hour)}
	expired := &client{t: t, base: st.URL, token: mustToken(t, st.Auth, 1, -time.Minute)}

	_, d, _ := alice.do("POST", "/v1/drafts", draftBody("Mine", "Fluff"))
	draft := "/v1/drafts/" + id(d, "id")
	_, queued, _ := alice.do("POST", "/v1/drafts", draftBody("Queued", "Fluff"))
	queuedPath := "/v1/drafts/" + id(queued, "id")

	big := draftBody("Big")
	big["body"] = strings.Repeat("x", 5<<20)
	badRating := draftBody("Bad")
	badRating["tags"].(map[string]any)["rating"] = "PG"

	cases := []errorCase{
		{"no token", anon, "GET", draft, nil, 401, "unauthorized", ""},
		{"token signed with another secret", forged, "GET", draft, nil, 401, "unauthorized", ""},
		{"expired token", expired, "GET", draft, nil, 401, "unauthorized", ""},
		{"another author's draft", bob, "GET", draft, nil, 404, "not_found", ""},
		{"another author's draft, replace", bob, "PUT", draft, draftBody("x"), 404, "not_found", ""},
		{"another author's draft, post", bob, "POST", draft + "/post", nil, 404, "not_found", ""},
		{"another author's draft, delete", bob, "DELETE", draft, nil, 404, "not_found", ""},
		{"missing draft", alice, "GET", "/v1/drafts/999999", nil, 404, "not_found", ""},
		{"non-numeric id", alice, "GET", "/v1/drafts/abc", nil, 404, "not_found", ""},
		{"missing work", alice, "GET", "/v1/works/999999", nil, 404, "not_found", ""},
		{"author on an admin route", alice, "GET", "/v1/admin/flags", nil, 403, "forbidden", ""},
		{"author starting reconcile", alice, "POST", "/v1/admin/reconcile", `{"dry_run":true}`, 403, "forbidden", ""},
		{"unknown field", alice, "POST", "/v1/drafts", `{"title":"t","body":"b","tags":{},"mood":"happy"}`, 400, "unknown_field", "mood"},
		{"malformed JSON", alice, "POST", "/v1/drafts", `{"title":`, 400, "malformed_json", ""},
		{"wrong type", alice, "POST", "/v1/drafts", `{"title":5}`, 400, "wrong_type", "title"},
		{"empty body", alice, "POST", "/v1/drafts", ``, 400, "empty_body", ""},
		{"body over the limit", alice, "POST", "/v1/drafts", big, 413, "body_too_large", ""},
		{"validation", alice, "POST", "/v1/drafts", badRating, 422, "unknown_rating", "tags.rating"},
		{"validation on replace", alice, "PUT", draft, badRating, 422, "unknown_rating", "tags.rating"},
		{"unknown route", alice, "GET", "/v1/nothing", nil, 404, "no_such_route", ""},
		{"too many ids", alice, "GET", "/v1/tags?ids=" + strings.Repeat("1,", 1000) + "1", nil, 422, "", "ids"},
	}
	for _, tc := range cases {
		status, body, _ := tc.c.do(tc.method, tc.path, tc.body)
		e, _ := body["error"].(map[string]any)
		if status != tc.status || e == nil || e["message"] == "" || (tc.code != "" && e["code"] != tc.code) || fmt.Sprint(e["field"]) != fmt.Sprint(orNil(tc.field)) {
			t.Errorf("%s: %d %v; want %d %s field %q", tc.name, status, body, tc.status, tc.code, tc.field)
		}
	}

	// State rules: a queued or posted draft cannot be replaced or deleted.
	alice.do("POST", queuedPath+"/post", nil)
	testdb.WaitFor(t, 15*time.Second, "the post", func() bool {
		_, q, _ := alice.do("GET", queuedPath, nil)
		return q["state"] == "posted"
	})
	if status, body, _ := alice.do("PUT", queuedPath, draftBody("Changed")); status != 409 {
		t.Errorf("replace a posted draft: %d %v; want 409", status, body)
	}
	if status, body, _ := alice.do("DELETE", queuedPath, nil); status != 409 {
		t.Errorf("delete a posted draft: %d %v; want 409", status, body)
	}
	if status, _, _ := alice.do("DELETE", draft, nil); status != 204 {
		t.Errorf("delete own unposted draft: %d; want 204", status)
	}
}

func orNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func mustToken(t *testing.T, a httpapi.Auth, authorID int64, ttl time.Duration) string {
	tok, err := a.IssueToken(authorID, httpapi.RoleAuthor, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestDevCommandPrintsAWorkingTokenAndStopsOnSignal(t *testing.T) {
	t.Parallel()
	redisAddr := testdb.RequireRedis(t)
	cfg, _ := mysql.ParseDSN(testdb.ServerDSN())
	cfg.DBName = fmt.Sprintf("tc_dev_%d", time.Now().UnixNano())
	t.Cleanup(func() {
		if db, _ := sqlOpen(testdb.ServerDSN()); db != nil {
			db.Exec("DROP DATABASE IF EXISTS `" + cfg.DBName + "`")
			db.Close()
		}
	})
	pr, pw := io.Pipe()
	dev := startCommand(t, pw, "dev", "--http-addr", "127.0.0.1:0", "--mysql-dsn", cfg.FormatDSN(),
		"--redis-addr", redisAddr, "--data-dir", t.TempDir(), "--queue", testdb.Queue(t), "--kafka-partitions", "2",
		"--posting-path", "new", "--log-level", "error")
	var url, token string
	sc := bufio.NewScanner(pr)
	for sc.Scan() && (url == "" || token == "") {
		if m := regexp.MustCompile(`running at (http://\S+)`).FindStringSubmatch(sc.Text()); m != nil {
			url = m[1]
		}
		if m := regexp.MustCompile(`export TOKEN=(\S+)`).FindStringSubmatch(sc.Text()); m != nil {
			token = m[1]
		}
	}
	go io.Copy(io.Discard, pr)
	if url == "" || token == "" {
		t.Fatalf("dev printed no URL or token (url %q)", url)
	}
	c := &client{t: t, base: url, token: token}
	if status, _, _ := c.do("GET", "/healthz", nil); status != 200 {
		t.Fatalf("healthz: %d", status)
	}
	if status, body, _ := c.do("GET", "/readyz", nil); status != 200 {
		t.Fatalf("readyz: %d %v", status, body)
	}
	status, d, _ := c.do("POST", "/v1/drafts", draftBody("Printed token works", "Fluff"))
	if status != 201 {
		t.Fatalf("create with the printed token: %d %v", status, d)
	}
	dev.stop(t)
}

func TestLoneWorkerWithoutKafkaBrokersRefusesToStart(t *testing.T) {
	t.Parallel()
	redisAddr := testdb.RequireRedis(t)
	db := testdb.New(t)
	var stderr strings.Builder
	err := run(context.Background(), []string{"worker", "--mysql-dsn", db.DSN, "--redis-addr", redisAddr,
		"--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--kafka-brokers", ""}, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "KAFKA_BROKERS") {
		t.Fatalf("worker without brokers: %v; want an error naming TAGCOUNT_KAFKA_BROKERS", err)
	}
}

func TestABulkAuthorsQueuedPostsDoNotKeepAnotherAuthorsPostFromBeingPosted(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	redisAddr, queue := testdb.RequireRedis(t), testdb.Queue(t)
	role := func(o stackOptions) *stack {
		o.MySQLDSN, o.RedisAddr, o.Queue, o.Path = db.DSN, redisAddr, queue, "new"
		o.BulkAfter = poster.DefaultBulkAfter // fair posting, as --bulk-after's default serves (a stack's zero is one queue)
		o.AuthSecret, o.DataDir = "test-secret-test-secret-test-secret", t.TempDir()
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		st, err := startStack(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	// The posts are all queued before any worker runs: the importer's 500
	// first, then another author's one.
	api := role(stackOptions{API: true})
	const bulkAuthor, otherAuthor, imports = 1, 2, 500
	importer := api.client(t, bulkAuthor, httpapi.RoleAuthor)
	for range imports {
		_, d, _ := importer.do("POST", "/v1/drafts", draftBody("Imported", "Fluff"))
		if status, res, _ := importer.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil); status != 202 {
			t.Fatalf("import post: %d %v", status, res)
		}
	}
	_, d, _ := api.client(t, otherAuthor, httpapi.RoleAuthor).do("POST", "/v1/drafts", draftBody("Mine", "Fluff"))
	other := api.client(t, otherAuthor, httpapi.RoleAuthor)
	if status, res, _ := other.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil); status != 202 {
		t.Fatalf("the other author's post: %d %v", status, res)
	}

	role(stackOptions{Worker: true, EmbeddedKafka: true, JobConcurrency: 1})
	store := &drafts.Store{DB: db.DB}
	queuedImports := func() int {
		n, err := store.CountQueuedBy(context.Background(), bulkAuthor, imports)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	var stillQueued int
	testdb.WaitFor(t, 60*time.Second, "the other author's post to be posted", func() bool {
		_, res, _ := other.do("GET", "/v1/drafts/"+id(d, "id"), nil)
		stillQueued = queuedImports()
		return res["state"] == drafts.StatePosted
	})
	if stillQueued < imports/2 {
		t.Errorf("%d of the %d imported posts were still queued when the other author's post was posted; want most of them",
			stillQueued, imports)
	}
	testdb.WaitFor(t, 120*time.Second, "every imported post to be posted", func() bool { return queuedImports() == 0 })
}
