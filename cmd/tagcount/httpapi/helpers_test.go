package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi/openapitest"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

var testSecret = []byte("httpapi-test-secret-of-32-bytes!")

// testAPI is NewServer on a test's own database, served over real TCP.
type testAPI struct {
	t    *testing.T
	URL  string
	DB   *testdb.DB
	Reg  *prometheus.Registry
	Auth Auth
	Logs *testdb.Buffer
}

// newTestAPI serves the API with the drafts store on db (a new database
// when nil) and the edge settings e.
func newTestAPI(t *testing.T, db *testdb.DB, e Edge, ready ...Check) *testAPI {
	t.Helper()
	return newTestAPIOn(t, db, e, nil, ready...)
}

// newTestAPIOn is newTestAPI with the listener wrapped by wrap (none when
// nil), for tests that shape the server's side of each connection.
func newTestAPIOn(t *testing.T, db *testdb.DB, e Edge, wrap func(net.Listener) net.Listener, ready ...Check) *testAPI {
	t.Helper()
	if db == nil {
		db = testdb.New(t)
	}
	if e.RateLimits.Timeout == 0 {
		// A busy machine's Redis can answer later than the default 100 ms,
		// and the limiter then serves the request (fails open, by design):
		// these tests are about what the limiter decides, not about that.
		e.RateLimits.Timeout = time.Minute
	}
	writes, err := migrations.OpenManualCommit(context.Background(), db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { writes.Close() })
	counts, err := counter.NewReader(counter.ReaderConfig{DB: db.DB})
	if err != nil {
		t.Fatal(err)
	}
	a := &testAPI{t: t, DB: db, Reg: prometheus.NewRegistry(), Auth: Auth{Secret: testSecret}, Logs: &testdb.Buffer{}}
	log := slog.New(slog.NewTextHandler(a.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := httptest.NewUnstartedServer(NewServer(Deps{Logger: log, Auth: a.Auth, Drafts: &drafts.Store{DB: db.DB, Writes: writes}, Control: counter.Control{DB: db.DB},
		Counts:   counts,
		Registry: a.Reg, Ready: ready, Edge: e}))
	// As the stack serves it: the edge's header limit, on Listener.
	srv.Config.MaxHeaderBytes = e.WithDefaults().MaxHeaderBytes
	if wrap != nil {
		srv.Listener = wrap(srv.Listener)
	}
	srv.Listener = Listener(srv.Listener)
	srv.Start()
	t.Cleanup(srv.Close)
	a.URL = srv.URL
	return a
}

// token returns a valid author (or admin) token for author.
func (a *testAPI) token(author int64, role string) string {
	a.t.Helper()
	tok, err := a.Auth.IssueToken(author, role, time.Hour)
	if err != nil {
		a.t.Fatal(err)
	}
	return tok
}

type answer struct {
	Status int
	Header http.Header
	Body   map[string]any
}

// code is the error code of an error answer.
func (a answer) code() string {
	e, _ := a.Body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// do sends a request with the bearer token tok (none when empty), body
// (JSON-encoded unless a string) and extra headers (name, value pairs).
// The request and its answer are checked against the OpenAPI document.
func (a *testAPI) do(method, path, tok string, body any, headers ...string) answer {
	a.t.Helper()
	req, err := openapitest.NewRequest(method, a.URL+path, body)
	if err != nil {
		a.t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := apiValidator(a.t).Client(a.t).Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	out := answer{Status: res.StatusCode, Header: res.Header}
	raw, _ := io.ReadAll(res.Body)
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.Body); err != nil {
			a.t.Fatalf("%s %s: answer is not JSON: %q", method, path, raw)
		}
	}
	return out
}

// holdBody starts a request whose body never finishes arriving: it holds
// whatever the server gives a request reading its body until the test ends
// or release is called. It sends sent bytes of the contentLength
// announced (a chunked body when contentLength is -1).
func (a *testAPI) holdBody(method, path, tok string, contentLength, sent int) (release func()) {
	a.t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(a.URL, "http://"))
	if err != nil {
		a.t.Fatal(err)
	}
	framing, body := "Content-Length: "+strconv.Itoa(contentLength), "{"+strings.Repeat(" ", sent-1)
	if contentLength < 0 {
		framing, body = "Transfer-Encoding: chunked", strconv.FormatInt(int64(sent), 16)+"\r\n"+body+"\r\n"
	}
	_, err = io.WriteString(conn, method+" "+path+" HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer "+tok+
		"\r\n"+framing+"\r\n\r\n"+body)
	if err != nil {
		a.t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { conn.Close() }) }
	a.t.Cleanup(release)
	return release
}

// waitMetric waits until the metric name (no labels) reads want; what
// says what that means, for the failure.
func (a *testAPI) waitMetric(name string, want float64, what string) {
	a.t.Helper()
	testdb.WaitFor(a.t, 10*time.Second, what, func() bool { return a.metric(name) == want })
}

// metric returns the value of the metric name whose labels include the
// given name, value pairs (0 when there is none).
func (a *testAPI) metric(name string, labels ...string) float64 {
	a.t.Helper()
	mfs, err := a.Reg.Gather()
	if err != nil {
		a.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// testRedis is a Redis client as the stack makes it, closed when the test
// ends.
func testRedis(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { c.Close() })
	return c
}

func draftContent(title string) map[string]any {
	return map[string]any{"title": title, "body": "Text.", "tags": map[string]any{
		"rating": "General Audiences", "warnings": []string{"No Archive Warnings Apply"},
		"fandoms": []string{"Star Trek"}}}
}
