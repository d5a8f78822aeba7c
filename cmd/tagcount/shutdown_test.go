package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// serveChild is the command line TestHelperServeUntilSignalled runs.
type serveChild struct{ Args []string }

// TestHelperServeUntilSignalled is the tagcount binary in a child process:
// it runs a command as main does, stopping on SIGTERM.
func TestHelperServeUntilSignalled(t *testing.T) {
	var cfg serveChild
	testdb.ChildConfig(t, &cfg)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg.Args, os.Stdout, os.Stderr); err != nil {
		t.Fatal(err)
	}
}

// getJSON GETs url and decodes its JSON answer; err is a transport error.
func getJSON(url string) (int, map[string]any, error) {
	return jsonAnswer(http.Get(url))
}

// jsonAnswer decodes res's JSON body (nothing when it is not JSON) and
// returns its status; err is the request's transport error, passed on.
func jsonAnswer(res *http.Response, err error) (int, map[string]any, error) {
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	var m map[string]any
	json.NewDecoder(res.Body).Decode(&m)
	return res.StatusCode, m, nil
}

// rollingClient keeps writing and posting drafts until the API's port
// closes, recording every Post that was answered 201.
type rollingClient struct {
	base, token, addr string
	http              *http.Client

	mu        sync.Mutex
	accepted  []int64 // drafts whose Post was answered 201
	failures  []string
	successes atomic.Int64
}

// sendJSON sends body (as JSON; none when nil) to url with the bearer
// token, and decodes the answer as jsonAnswer does. Unlike a client's do,
// it fails no test, so any goroutine may call it.
func sendJSON(hc *http.Client, method, url, token string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return jsonAnswer(hc.Do(req))
}

// gone is whether the API's port refuses connections: the process has
// stopped listening, after its shutdown delay.
func (c *rollingClient) gone() bool {
	conn, err := net.Dial("tcp", c.addr)
	if err != nil {
		return true
	}
	conn.Close()
	return false
}

// loop writes and posts drafts until the port closes. A request that was
// answered must have succeeded; one that failed in transport counts as a
// failure unless the port is closed by then (a request on a keep-alive
// connection the draining server closed was never served).
func (c *rollingClient) loop(n int) {
	draft := draftBody(fmt.Sprintf("Rolling %d", n), "Fluff")
	fail := func(format string, args ...any) {
		c.mu.Lock()
		c.failures = append(c.failures, fmt.Sprintf(format, args...))
		c.mu.Unlock()
	}
	for {
		status, d, err := sendJSON(c.http, "POST", c.base+"/v1/drafts", c.token, draft)
		if err == nil && status == http.StatusCreated {
			var posted map[string]any
			id, _ := d["id"].(float64)
			if status, posted, err = sendJSON(c.http, "POST", fmt.Sprintf("%s/v1/drafts/%d/post", c.base, int64(id)), c.token, nil); err == nil && status == http.StatusCreated {
				c.mu.Lock()
				c.accepted = append(c.accepted, int64(id))
				c.mu.Unlock()
				c.successes.Add(1)
				continue
			}
			d = posted
		}
		switch {
		case err != nil && c.gone():
			return
		case err != nil:
			fail("transport error while the port was open: %v", err)
		default:
			fail("answered %d: %v", status, d)
		}
		return
	}
}

func TestASIGTERMUnderLoadFailsNoRequestAndPostsEveryAcceptedPostOnce(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	queue := testdb.Queue(t)
	apiAddr, adminAddr := "127.0.0.1:"+strconv.Itoa(testdb.FreePort(t)), "127.0.0.1:"+strconv.Itoa(testdb.FreePort(t))
	secret := randomHex(32)
	args := []string{"api", "--posting-path", "legacy", "--mysql-dsn", db.DSN, "--redis-addr", testdb.RequireRedis(t),
		"--queue", queue, "--auth-secret", secret, "--http-addr", apiAddr, "--admin-addr", adminAddr,
		"--shutdown-delay", "15s", "--data-dir", t.TempDir(), "--rate-limit-prefix", queue + ":", "--rate-limit-timeout", "1m",
		"--quota-drafts", "0", "--quota-new-tags-per-day", "0"}
	for _, class := range []string{"writes", "reads", "admin", "anonymous"} {
		args = append(args, "--rate-limit-"+class, "0")
	}
	child := testdb.StartChild(t, "TestHelperServeUntilSignalled", serveChild{Args: args})
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	testdb.WaitFor(t, time.Minute, "the API to be ready", func() bool {
		status, _, _ := getJSON("http://" + adminAddr + "/readyz")
		return status == http.StatusOK
	})

	tok, _ := httpapi.Auth{Secret: []byte(secret)}.IssueToken(7, httpapi.RoleAuthor, time.Hour)
	c := &rollingClient{base: "http://" + apiAddr, token: tok, addr: apiAddr, http: &http.Client{Timeout: time.Minute}}
	var clients sync.WaitGroup
	for n := range 4 {
		clients.Go(func() { c.loop(n) })
	}
	testdb.WaitFor(t, time.Minute, "posts before the signal", func() bool { return c.successes.Load() >= 10 })
	child.Process.Signal(syscall.SIGTERM)
	testdb.WaitFor(t, time.Minute, "/readyz to answer 503 stopping", func() bool {
		status, m, _ := getJSON("http://" + adminAddr + "/readyz")
		return status == http.StatusServiceUnavailable && m["status"] == "stopping"
	})
	// Load balancers have stopped sending; the process still serves.
	before := c.successes.Load()
	testdb.WaitFor(t, time.Minute, "posts answered after /readyz said stopping", func() bool { return c.successes.Load() >= before+5 })
	clients.Wait()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the process did not exit cleanly after SIGTERM: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the process did not exit within two minutes of SIGTERM")
	}

	if len(c.failures) > 0 {
		t.Fatalf("%d requests failed through the SIGTERM, first: %s", len(c.failures), c.failures[0])
	}
	var works, drafts int
	query := migrations.IDList("SELECT COUNT(*), COUNT(DISTINCT draft_id) FROM works WHERE draft_id IN (", c.accepted, ")")
	if err := db.QueryRow(query).Scan(&works, &drafts); err != nil {
		t.Fatal(err)
	}
	if works != len(c.accepted) || drafts != len(c.accepted) {
		t.Fatalf("%d accepted Posts made %d works of %d drafts, want one work each", len(c.accepted), works, drafts)
	}
	t.Logf("%d Posts accepted through the SIGTERM, %d after /readyz said stopping", len(c.accepted), c.successes.Load()-before)
}

func TestTheAdminListenerServesOperationsAndTheAPIPortDoesNot(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	st, err := startStack(context.Background(), stackOptions{MySQLDSN: db.DSN, RedisAddr: testdb.RequireRedis(t), Queue: testdb.Queue(t),
		Path: "legacy", AuthSecret: "test-secret-test-secret-test-secret", DataDir: t.TempDir(), API: true,
		AdminAddr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if st.AdminURL == "" || st.AdminURL == st.URL {
		t.Fatalf("admin listener %q, API %q: want two listeners", st.AdminURL, st.URL)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine"} {
		res, err := http.Get(st.AdminURL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("admin GET %s: %d, want 200", path, res.StatusCode)
		}
		if path == "/metrics" && !bytes.Contains(body, []byte("tagcount_build_info{")) {
			t.Errorf("admin /metrics has no tagcount_build_info")
		}
		status, m, err := getJSON(st.URL + path)
		if e, _ := m["error"].(map[string]any); err != nil || status != http.StatusNotFound || e["code"] != "no_such_route" {
			t.Errorf("API port GET %s: %d %v %v, want 404 no_such_route", path, status, m, err)
		}
	}
	st.Drain()
	if status, m, _ := getJSON(st.AdminURL + "/readyz"); status != http.StatusServiceUnavailable || m["status"] != "stopping" || m["ready"] != false {
		t.Fatalf("/readyz right after Drain: %d %v, want 503 stopping", status, m)
	}
	// Draining turns readiness, not the API, off.
	if status, m, err := getJSON(st.URL + "/v1/openapi.json"); err != nil || status != http.StatusOK {
		t.Fatalf("the API while draining: %d %v %v", status, m, err)
	}
}

func TestAProcessWithoutTheAPIServesOnlyTheAdminListenerWhenGivenOne(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	httpAddr := "127.0.0.1:" + strconv.Itoa(testdb.FreePort(t))
	st, err := startStack(context.Background(), stackOptions{MySQLDSN: db.DSN, DataDir: t.TempDir(), HTTPAddr: httpAddr,
		AdminAddr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if status, _, err := getJSON(st.AdminURL + "/healthz"); err != nil || status != http.StatusOK {
		t.Fatalf("admin /healthz: %d %v", status, err)
	}
	if _, err := net.Dial("tcp", httpAddr); err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("--http-addr %s: dial %v, want refused (nothing to serve there)", httpAddr, err)
	}
}
