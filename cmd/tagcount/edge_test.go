package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// stallProxy forwards TCP connections to a server. Stalled, it still passes
// on what clients send but holds back every answer: a database that took a
// statement in and stopped answering.
type stallProxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	resumed chan struct{} // nil when not stalled; closed by Resume
}

func startStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	ln := testdb.Listen(t)
	p := &stallProxy{ln: ln, target: target}
	t.Cleanup(p.Resume)
	go p.serve()
	return p
}

// DSN is dsn pointed at the proxy.
func (p *stallProxy) DSN(t *testing.T, dsn string) string {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = p.ln.Addr().String()
	return cfg.FormatDSN()
}

func (p *stallProxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed == nil {
		p.resumed = make(chan struct{})
	}
}

func (p *stallProxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed != nil {
		close(p.resumed)
		p.resumed = nil
	}
}

// wait blocks while the proxy is stalled.
func (p *stallProxy) wait() {
	p.mu.Lock()
	ch := p.resumed
	p.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

func (p *stallProxy) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		go func() { // requests always pass; when the client leaves, so does the server session
			io.Copy(server, client)
			server.Close()
		}()
		go func() {
			defer client.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := server.Read(buf)
				if n > 0 {
					p.wait()
					if _, werr := client.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func TestRequestsAnswer503WhenTheDatabaseStopsAnsweringAndNoAbandonedCreateCommits(t *testing.T) {
	t.Parallel()
	server, _ := mysql.ParseDSN(testdb.ServerDSN())
	proxy := startStallProxy(t, server.Addr)
	st := testStack(t, stackOptions{Path: "new", MySQLDSN: proxy.DSN(t, testdb.ServerDSN()),
		Edge: httpapi.Edge{RequestTimeout: 2 * time.Second}})
	c := st.client(t, 42, httpapi.RoleAuthor)
	status, d, _ := c.do("POST", "/v1/drafts", draftBody("Before the stall", "Fluff"))
	if status != 201 {
		t.Fatalf("create before the stall: %d %v", status, d)
	}
	draft := "/v1/drafts/" + id(d, "id")
	warmConns(t, st.DB, 8)
	proxy.Stall()
	type req struct {
		method, path string
		body         any
	}
	reqs := []req{{"POST", "/v1/drafts", draftBody("Lost 1")}, {"POST", "/v1/drafts", draftBody("Lost 2")},
		{"POST", "/v1/drafts", draftBody("Lost 3")}, {"PUT", draft, draftBody("Lost change")}, {"GET", draft, nil}}
	var wg sync.WaitGroup
	for _, r := range reqs {
		wg.Go(func() {
			status, body, h := c.do(r.method, r.path, r.body)
			if status != 503 || h.Get("Retry-After") == "" {
				t.Errorf("%s %s while the database does not answer: %d %v Retry-After %q; want 503 with Retry-After",
					r.method, r.path, status, body, h.Get("Retry-After"))
			}
		})
	}
	wg.Wait()
	proxy.Resume()
	testdb.WaitFor(t, 30*time.Second, "the service to answer again", func() bool {
		status, _, _ := c.do("GET", draft, nil)
		return status == 200
	})

	// Every session the stack had ends with the stack: whatever a server
	// session held uncommitted is rolled back by then.
	st.Close()
	cfg, _ := mysql.ParseDSN(st.DSN)
	name := cfg.DBName
	db, err := sqlOpen(testdb.ServerDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	testdb.WaitFor(t, 30*time.Second, "the stack's database sessions to end", func() bool {
		var n int
		db.QueryRow("SELECT COUNT(*) FROM information_schema.processlist WHERE db = ?", name).Scan(&n)
		return n == 0
	})
	var titles []string
	rows, err := db.Query("SELECT title FROM `" + name + "`.drafts ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var title string
		rows.Scan(&title)
		titles = append(titles, title)
	}
	if fmt.Sprint(titles) != "[Before the stall]" {
		t.Errorf("drafts after the stall: %q; want only the one created before it (the creates answered 503 must not commit)", titles)
	}
}

// warmConns opens n connections of db and returns them to its pool, so the
// requests that follow find them idle and their statements reach the
// server even while it stalls (a new connection would stall in its
// handshake, before any statement).
func warmConns(t *testing.T, db *migrations.DB, n int) {
	t.Helper()
	var conns []*sql.Conn
	for range n {
		conn, err := db.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	for _, conn := range conns {
		conn.Close()
	}
}

// apiStack runs the API role alone, as `tagcount api` does, on a fresh
// database and the Redis at redisAddr.
func apiStack(t *testing.T, redisAddr string) *stack {
	t.Helper()
	db := testdb.New(t)
	st, err := startStack(context.Background(), stackOptions{MySQLDSN: db.DSN, RedisAddr: redisAddr, Queue: testdb.Queue(t),
		Path: "new", AuthSecret: "test-secret-test-secret-test-secret", DataDir: t.TempDir(), API: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestTheAPIStaysReadyAndTakesPostsWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	redis := testdb.StartRedis(t)
	st := apiStack(t, redis.Addr())
	c := st.client(t, 42, httpapi.RoleAuthor)
	anon := &client{t: t, base: st.URL}
	if status, body, _ := anon.do("GET", "/readyz", nil); status != 200 || body["status"] != "ok" {
		t.Fatalf("/readyz with every dependency up: %d %v", status, body)
	}

	redis.Stop()
	var body map[string]any
	testdb.WaitFor(t, 15*time.Second, "/readyz to see Redis down", func() bool {
		var status int
		status, body, _ = anon.do("GET", "/readyz", nil)
		return status == 200 && body["status"] == "degraded"
	})
	if body["ready"] != true || fmt.Sprint(body["checks"]) != "map[mysql:ok redis:degraded]" {
		t.Errorf("/readyz of the API with Redis down: %v; want ready, mysql ok, redis degraded", body)
	}
	if strings.Contains(fmt.Sprint(body), redis.Addr()) {
		t.Errorf("/readyz shows Redis's address to anyone: %v", body)
	}
	_, d, _ := c.do("POST", "/v1/drafts", draftBody("Posted without Redis", "Fluff"))
	if status, res, _ := c.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil); status != 202 || res["state"] != "queued" {
		t.Errorf("post with Redis down: %d %v; want 202 queued (recorded on the draft, enqueued later)", status, res)
	}
	admin := st.client(t, 1, httpapi.RoleAdmin)
	status, health, _ := admin.do("GET", "/v1/admin/health", nil)
	redisHealth, _ := health["checks"].(map[string]any)["redis"].(map[string]any)
	if status != 200 || redisHealth["error"] == nil {
		t.Errorf("/v1/admin/health with Redis down: %d %v; want the redis check's error", status, health)
	}
}

func TestTheAPIRefusesToStartWithAShortSecret(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	err := run(context.Background(), []string{"api", "--auth-secret", "only-31-bytes-long-not-enough!!", "--mysql-dsn", db.DSN,
		"--redis-addr", testdb.RequireRedis(t), "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--log-level", "error"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "TAGCOUNT_AUTH_SECRET") || !strings.Contains(err.Error(), "32") {
		t.Fatalf("api with a 31-byte secret: %v; want an error asking for 32 bytes", err)
	}
}

func TestTheDefaultRateLimitsLetABurstThroughThenAnswer429(t *testing.T) {
	t.Parallel()
	edge := defaultStackOptions(t).Edge
	rl := edge.RateLimits
	if rl.Writes != httpapi.DefaultWriteLimit || rl.Reads != httpapi.DefaultReadLimit || rl.Admin != httpapi.DefaultAdminLimit ||
		rl.Anonymous != httpapi.DefaultAnonymousLimit || edge.RequestTimeout != httpapi.DefaultRequestTimeout {
		t.Fatalf("settings' default edge %+v; want httpapi's defaults", edge)
	}
	edge.RateLimits.Prefix = testdb.Queue(t) + ":"
	st := testStack(t, stackOptions{Path: "new", Edge: edge})
	author, admin := st.client(t, 42, httpapi.RoleAuthor), st.client(t, 1, httpapi.RoleAdmin)
	anon := &client{t: t, base: st.URL}
	for _, tc := range []struct {
		class        string
		c            *client
		method, path string
		limit        httpapi.RateLimit
	}{
		{"writes", author, "DELETE", "/v1/drafts/999999", httpapi.DefaultWriteLimit},
		{"reads", author, "GET", "/v1/drafts/999999", httpapi.DefaultReadLimit},
		{"admin", admin, "GET", "/v1/admin/reconcile/999999", httpapi.DefaultAdminLimit},
		{"anonymous", anon, "GET", "/v1/drafts/999999", httpapi.DefaultAnonymousLimit},
	} {
		// Many at once, so the requests outrun the limit's refill however
		// slowly a busy machine answers each.
		var served, limited atomic.Int64
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				for limited.Load() == 0 && served.Load() < 2000 {
					status, body, h := tc.c.do(tc.method, tc.path, nil)
					if status != 429 {
						served.Add(1)
						continue
					}
					if limited.Add(1) == 1 {
						if e, _ := body["error"].(map[string]any); e["code"] != "rate_limited" || h.Get("Retry-After") == "" {
							t.Errorf("%s: 429 %v Retry-After %q; want rate_limited with Retry-After", tc.class, body, h.Get("Retry-After"))
						}
					}
				}
			})
		}
		wg.Wait()
		if n := served.Load(); n < int64(tc.limit.Burst) || limited.Load() == 0 {
			t.Errorf("%s: %d requests served, %d answered 429; want at least the burst of %d, then 429",
				tc.class, n, limited.Load(), tc.limit.Burst)
		}
	}
}

// SIGTERM (the stack's Close) stops taking connections but lets the
// requests in flight finish before anything they use is closed.
func TestShutdownLetsARequestInFlightFinish(t *testing.T) {
	t.Parallel()
	st := testStack(t, stackOptions{Path: "new"})
	c := st.client(t, 5, httpapi.RoleAuthor)
	lock, err := st.DB.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(context.Background(), "LOCK TABLES drafts WRITE"); err != nil {
		t.Fatal(err)
	}
	answered := make(chan int, 1)
	go func() {
		status, _, _ := c.do("POST", "/v1/drafts", draftBody("Saved during shutdown"))
		answered <- status
	}()
	testdb.WaitFor(t, 10*time.Second, "the create to wait on the table lock", func() bool {
		var n int
		st.DB.QueryRow("SELECT COUNT(*) FROM information_schema.processlist WHERE db = DATABASE() AND info LIKE 'INSERT INTO drafts%'").Scan(&n)
		return n > 0
	})
	closed := make(chan error, 1)
	go func() { closed <- st.Close() }()
	addr := strings.TrimPrefix(st.URL, "http://")
	testdb.WaitFor(t, 10*time.Second, "the listener to close", func() bool {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	select {
	case err := <-closed:
		t.Fatalf("the stack closed (%v) with a request still in flight", err)
	default:
	}
	if _, err := lock.ExecContext(context.Background(), "UNLOCK TABLES"); err != nil {
		t.Fatal(err)
	}
	if status := <-answered; status != 201 {
		t.Errorf("a create in flight at shutdown answered %d; want 201", status)
	}
	if err := <-closed; err != nil {
		t.Errorf("close: %v", err)
	}
}
