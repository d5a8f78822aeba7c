package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tagcount/tagcount/migrations/testdb"
)

// busyStatements counts the statements other sessions run on db now.
func busyStatements(t *testing.T, db *testdb.DB, like string) int {
	t.Helper()
	var n int
	err := db.QueryRow(`SELECT COUNT(*) FROM information_schema.processlist
		WHERE db = ? AND id <> CONNECTION_ID() AND command <> 'Sleep' AND info LIKE ?`, db.Name, like).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// lockTable holds a write lock on table from a connection of its own until
// the returned unlock is called (or the test ends): every statement on the
// table waits, as on a database that stopped answering.
func lockTable(t *testing.T, db *testdb.DB, table string) (unlock func()) {
	t.Helper()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), "LOCK TABLES "+table+" WRITE"); err != nil {
		t.Fatal(err)
	}
	done := false
	unlock = func() {
		if !done {
			done = true
			conn.ExecContext(context.Background(), "UNLOCK TABLES")
			conn.Close()
		}
	}
	t.Cleanup(unlock)
	return unlock
}

func TestARequestPastItsDeadlineAnswers503TimeoutAndSavesNothing(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, nil, Edge{RequestTimeout: 300 * time.Millisecond})
	tok := api.token(7, RoleAuthor)
	unlock := lockTable(t, api.DB, "drafts")

	for _, req := range []struct{ method, path string }{{"POST", "/v1/drafts"}, {"GET", "/v1/drafts/1"}} {
		var body any
		if req.method == "POST" {
			body = draftContent("Never saved")
		}
		res := api.do(req.method, req.path, tok, body)
		if res.Status != http.StatusServiceUnavailable || res.code() != "timeout" || res.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s on a database that does not answer: %d %v Retry-After %q; want 503 timeout with Retry-After",
				req.method, req.path, res.Status, res.Body, res.Header.Get("Retry-After"))
		}
	}

	// The statements the server got run once the lock goes; none may save
	// a draft the client was told was not saved.
	unlock()
	testdb.WaitFor(t, 30*time.Second, "the abandoned statements to finish", func() bool {
		return busyStatements(t, api.DB, "%drafts%") == 0
	})
	var n int
	if err := api.DB.QueryRow("SELECT COUNT(*) FROM drafts").Scan(&n); err != nil || n != 0 {
		t.Errorf("drafts after a create answered 503: %d (%v); want 0", n, err)
	}
}

// checkOverloaded fails t unless res is a 503 overloaded with Retry-After 1.
func checkOverloaded(t *testing.T, what string, res answer) {
	t.Helper()
	if res.Status != http.StatusServiceUnavailable || res.code() != "overloaded" || res.Header.Get("Retry-After") != "1" {
		t.Errorf("%s: %d %v Retry-After %q; want 503 overloaded, Retry-After 1",
			what, res.Status, res.Body, res.Header.Get("Retry-After"))
	}
}

func TestFullInFlightCapAnswers503OverloadedAtOnce(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, nil, Edge{MaxInFlight: 1})
	tok := api.token(7, RoleAuthor)
	release := api.holdBody("POST", "/v1/drafts", tok, 100, 1)
	api.waitMetric("tagcount_http_in_flight", 1, "the slow request to be in flight")

	res := api.do("GET", "/v1/drafts/1", tok, nil)
	checkOverloaded(t, "a request past the in-flight cap", res)
	if n := api.metric("tagcount_http_shed_total", "reason", "in_flight"); n != 1 {
		t.Errorf("tagcount_http_shed_total{reason=in_flight} = %v; want 1", n)
	}

	release()
	api.waitMetric("tagcount_http_in_flight", 0, "the slow request to end")
	if res := api.do("GET", "/v1/drafts/1", tok, nil); res.Status != http.StatusNotFound {
		t.Errorf("once the cap has room: %d %v; want the route's own 404", res.Status, res.Body)
	}
}

func TestARequestWaitingTooLongForADatabaseSlotAnswers503Overloaded(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, nil, Edge{DBSlots: 1, QueueWait: 50 * time.Millisecond})
	tok := api.token(7, RoleAuthor)
	created := api.do("POST", "/v1/drafts", tok, draftContent("Locked"))
	path := "/v1/drafts/" + strconv.Itoa(int(created.Body["id"].(float64)))

	// The only slot goes to a replace that waits on the draft's row lock.
	tx, err := api.DB.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec("SELECT id FROM drafts FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	replaced := make(chan answer, 1)
	go func() { replaced <- api.do("PUT", path, tok, draftContent("Replaced")) }()
	testdb.WaitFor(t, 10*time.Second, "the replace to wait on the lock", func() bool {
		return busyStatements(t, api.DB, "UPDATE drafts%") == 1
	})

	res := api.do("GET", path, tok, nil)
	checkOverloaded(t, "a read with no database slot free", res)
	if n := api.metric("tagcount_http_shed_total", "reason", "db_wait"); n < 1 {
		t.Errorf("tagcount_http_shed_total{reason=db_wait} = %v; want at least 1", n)
	}
	tx.Rollback()
	if res := <-replaced; res.Status != http.StatusOK {
		t.Errorf("the replace holding the slot: %d %v; want 200 once the lock is gone", res.Status, res.Body)
	}
}

func TestBodiesBeyondTheMemoryBudgetAnswer503Overloaded(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, nil, Edge{BodyBytesInFlight: 1000, QueueWait: 50 * time.Millisecond})
	tok := api.token(7, RoleAuthor)
	release := api.holdBody("POST", "/v1/drafts", tok, 801, 800)
	api.waitMetric("tagcount_http_body_bytes_in_flight", 800, "the slow body to be counted")

	big := draftContent("Too much at once")
	big["body"] = strings.Repeat("x", 300)
	res := api.do("POST", "/v1/drafts", tok, big)
	checkOverloaded(t, "a body past the memory budget", res)
	if n := api.metric("tagcount_http_shed_total", "reason", "body_bytes"); n < 1 {
		t.Errorf("tagcount_http_shed_total{reason=body_bytes} = %v; want at least 1", n)
	}

	release()
	api.waitMetric("tagcount_http_body_bytes_in_flight", 0, "the slow body to be let go")
	if res := api.do("POST", "/v1/drafts", tok, big); res.Status != http.StatusCreated {
		t.Errorf("once the budget has room: %d %v; want 201", res.Status, res.Body)
	}
}

func TestABodyThatStopsArrivingIsCutOffAtTheDeadline(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, nil, Edge{RequestTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", strings.TrimPrefix(api.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// One byte of a hundred, then nothing: a client trickling its body.
	_, err = conn.Write([]byte("POST /v1/drafts HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer " +
		api.token(7, RoleAuthor) + "\r\nContent-Length: 100\r\n\r\n{"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a trickling body: %v", err)
	}
	defer res.Body.Close()
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	json.NewDecoder(res.Body).Decode(&body)
	if res.StatusCode != http.StatusRequestTimeout || body.Error.Code != "request_timeout" {
		t.Errorf("a body that stopped arriving: %d %q; want 408 request_timeout", res.StatusCode, body.Error.Code)
	}
}

// smallSendBuffers gives each accepted connection a small send buffer, so
// an answer larger than it waits for its client to read, as a client far
// away or one that stops reading makes it wait.
func smallSendBuffers(ln net.Listener) net.Listener { return smallSendListener{ln} }

type smallSendListener struct{ net.Listener }

func (l smallSendListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(8 << 10)
	}
	return c, err
}

// unreadGet sends a GET of path with tok on a connection of its own whose
// answer is never read.
func (a *testAPI) unreadGet(path, tok string) {
	a.t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(a.URL, "http://"))
	if err != nil {
		a.t.Fatal(err)
	}
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	a.t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer "+tok+"\r\n\r\n"); err != nil {
		a.t.Fatal(err)
	}
}

// Clients that never read a large answer hold no database slot while it
// is written (issue 21, finding 4): another author is served.
func TestClientsThatDoNotReadTheirAnswersHoldNoDatabaseSlot(t *testing.T) {
	t.Parallel()
	api := newTestAPIOn(t, nil, Edge{DBSlots: 2, QueueWait: 100 * time.Millisecond}, smallSendBuffers)
	tok := api.token(7, RoleAuthor)
	big := draftContent("Large")
	big["body"] = strings.Repeat("<", 100_000) // written back as \u003c: a 600 KB answer
	created := api.do("POST", "/v1/drafts", tok, big)
	if created.Status != http.StatusCreated {
		t.Fatalf("create: %d %v", created.Status, created.Body["error"])
	}
	path := "/v1/drafts/" + strconv.Itoa(int(created.Body["id"].(float64)))
	for i := range 4 { // twice the slots, one at a time: each waits at most QueueWait for its slot
		api.unreadGet(path, tok)
		testdb.WaitFor(t, 30*time.Second, "the unread reads to be writing their answers, with no database slot held", func() bool {
			return api.metric("tagcount_http_in_flight") == float64(i+1) && api.metric("tagcount_http_db_slots_in_use") == 0
		})
	}

	if res := api.do("GET", "/v1/drafts/999", api.token(8, RoleAuthor), nil); res.Status != http.StatusNotFound {
		t.Errorf("another author's read while answers wait for their readers: %d %v; want its own 404", res.Status, res.Body)
	}
}

// Bodies that trickle in hold only the bytes they sent, not the budget
// their length announces (issue 21, finding 5): slow bodies, announced as
// large or chunked, leave room for everyone else's.
func TestSlowBodiesHoldOnlyTheBytesTheySent(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, nil, Edge{BodyBytesInFlight: 1000, QueueWait: 50 * time.Millisecond})
	tok := api.token(7, RoleAuthor)
	api.holdBody("POST", "/v1/drafts", tok, DefaultBodyLimit, 1)
	api.holdBody("POST", "/v1/drafts", tok, -1, 1)
	api.holdBody("PUT", "/v1/drafts/1", tok, 900, 1)
	testdb.WaitFor(t, 10*time.Second, "the slow bodies to be counted as they arrive", func() bool {
		return api.metric("tagcount_http_in_flight") == 3 && api.metric("tagcount_http_body_bytes_in_flight") == 3
	})

	body := draftContent("Not starved")
	body["body"] = strings.Repeat("x", 300)
	if res := api.do("POST", "/v1/drafts", api.token(8, RoleAuthor), body); res.Status != http.StatusCreated {
		t.Errorf("another author's create beside three slow bodies: %d %v; want 201", res.Status, res.Body)
	}
}

func TestEveryAnswerCarriesARequestIDAndItsLogLinesToo(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, nil, Edge{})
	tok := api.token(1, RoleAuthor)

	for _, tc := range []struct {
		name, token, sent string
		status            int
		keep              bool
	}{
		{"a client's id on a success", tok, "client-id-42", http.StatusOK, true},
		{"a client's id on an error", "", "client-id-43", http.StatusUnauthorized, true},
		{"no id", tok, "", http.StatusOK, false},
		{"an id with a space", tok, "two words", http.StatusOK, false},
		{"an id that is not ASCII", tok, "caf\u00e9", http.StatusOK, false},
		{"an id over 128 characters", tok, strings.Repeat("x", 129), http.StatusOK, false},
	} {
		path := "/v1/drafts/1"
		if tc.status == http.StatusOK {
			path = "/healthz"
		}
		var headers []string
		if tc.sent != "" {
			headers = []string{RequestIDHeader, tc.sent}
		}
		res := api.do("GET", path, tc.token, nil, headers...)
		got := res.Header.Get(RequestIDHeader)
		switch {
		case res.Status != tc.status:
			t.Errorf("%s: status %d; want %d", tc.name, res.Status, tc.status)
		case tc.keep && got != tc.sent:
			t.Errorf("%s: X-Request-ID %q; want the client's %q", tc.name, got, tc.sent)
		case !tc.keep && (got == "" || got == tc.sent || !validRequestID(got)):
			t.Errorf("%s: X-Request-ID %q; want a new, valid one", tc.name, got)
		}
	}

	// A failing request's lines (here the request log at debug level) name it.
	api.do("GET", "/v1/drafts/1", tok, nil, RequestIDHeader, "find-me-in-the-logs")
	if !strings.Contains(api.Logs.String(), "request_id=find-me-in-the-logs") {
		t.Errorf("no log line carries the request's id:\n%s", api.Logs)
	}
}
