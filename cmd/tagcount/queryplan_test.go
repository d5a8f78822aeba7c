package main

import (
	"context"
	"database/sql"
	"encoding/binary"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tagcount/tagcount/cmd/tagcount/archive"
	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/flags"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// largeTables are the tables that grow with the archive: a full scan of
// one (EXPLAIN type ALL, or index: every entry of an index) is a bug
// unless planScanAllowed says why it is right.
var largeTables = []string{"works", "taggings", "tags", "tag_counts", "tag_events", "work_filters", "drafts"}

// planScanAllowed are the statements (a substring of their digest) allowed
// to scan a large table, each with its reason.
var planScanAllowed = []struct{ digest, reason string }{
	{"SELECT COUNT(*) FROM tags WHERE", "the reconcile counts the tags of its scope once a run, for its progress: " +
		"InnoDB keeps no row count, so it reads the smallest index once, where the run itself then reads every tag"},
	{"SELECT COUNT(*), TIMESTAMPDIFF(MICROSECOND, MIN(created_at), NOW(?)) FROM tag_events", "the outbox depth an operator " +
		"asks for (GET /v1/admin/counter, resuming the counter): InnoDB keeps no row count, so it reads the outbox's " +
		"smallest index; the outbox is small but during a pause, when its depth is what the operator needs"},
}

// TestEveryStatementOfTheServiceUsesAnIndexOnAnArchive runs the service's
// request, posting (both paths), counting, sweeping, stream and reconcile
// paths against an archive of 100,000 works (20,000 with -short), records
// every statement it sends to MariaDB (a proxy reads the protocol's
// COM_QUERY packets: the driver interpolates arguments, so each is a whole
// statement), and EXPLAINs each distinct one on the archive, its outbox
// filled: none may scan a large table unless planScanAllowed says why.
func TestEveryStatementOfTheServiceUsesAnIndexOnAnArchive(t *testing.T) {
	t.Parallel()
	works := 100_000
	if testing.Short() {
		works = 20_000
	}
	db, _ := buildArchive(t, works)
	proxy := startStatementProxy(t, "127.0.0.1:3306")
	cfg, err := mysql.ParseDSN(testdb.ServerDSN())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = proxy.addr
	dir := t.TempDir()
	boot := filepath.Join(dir, "bootstrap.json")
	// Half the authors on each posting path.
	bootstrap := strings.Replace(string(mustRead(t, "../../flags/bootstrap.json")), `"rollout": "100", "stickiness": "userId"`,
		`"rollout": "50", "stickiness": "userId"`, 1)
	if err := os.WriteFile(boot, []byte(bootstrap), 0o600); err != nil {
		t.Fatal(err)
	}
	fast := counter.Tiers{MediumMinInterval: time.Second, MediumMaxInterval: 2 * time.Second, LargeInterval: 2 * time.Second, Jitter: -1}
	st := testStack(t, stackOptions{MySQLDSN: cfg.FormatDSN(), Database: db.Name, Path: "flag",
		Flags: flags.Config{BootstrapFile: boot}, SweepAfter: 2 * time.Second, RequeueAfter: 2 * time.Second, Tiers: fast})

	load := startArchiveAuthors(t, st, 1_000_000, 8)
	testdb.WaitFor(t, 3*time.Minute, "30 posts, some edits and deletes", func() bool {
		load.check(t)
		return load.posts.Load() >= 30 && load.edits.Load() > 1 && load.deletes.Load() > 1
	})
	load.halt()
	load.check(t)
	t.Logf("authors: %d posts, %d edits, %d deletes", load.posts.Load(), load.edits.Load(), load.deletes.Load())
	exerciseReadsAndAdmin(t, st)
	waitDrained(t, st, time.Minute)

	fillOutbox(t, db)
	checkPlans(t, db, proxy.statements())
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// exerciseReadsAndAdmin reads tags every way the API offers, hides and
// unhides a work, recounts a tag and reconciles the fandoms (dry) and a
// few drifted tags.
func exerciseReadsAndAdmin(t *testing.T, st *stack) {
	t.Helper()
	c := st.client(t, 1_000_001, httpapi.RoleAuthor)
	admin := st.client(t, 1, httpapi.RoleAdmin)
	for _, path := range []string{"/v1/tags/2", "/v1/tags/2?consistency=exact", "/v1/tags/1000", "/v1/tags/1000?consistency=exact",
		"/v1/tags?name=Freeform%2012&type=freeform", "/v1/tags?name=freeform%2012&type=freeform&consistency=exact",
		"/v1/tags?ids=1,2,3,500,1000", "/v1/tags?ids=1,2,3,500,1000&consistency=exact", "/v1/works/10"} {
		if status, res, _ := c.do("GET", path, nil); status != 200 && status != 404 {
			t.Fatalf("GET %s: %d %v", path, status, res)
		}
	}
	for _, step := range []struct{ method, path string }{{"POST", "/v1/admin/works/10/hide"}, {"POST", "/v1/admin/works/10/unhide"},
		{"POST", "/v1/admin/tags/1000/recount"}, {"GET", "/v1/admin/counter"}} {
		if status, res, _ := admin.do(step.method, step.path, nil); status >= 300 {
			t.Fatalf("%s %s: %d %v", step.method, step.path, status, res)
		}
	}
	// A dry run of a type (the statements of a whole run, chunk by chunk,
	// in a few chunks: a whole run of 100,000 works takes minutes on a busy
	// machine, and its chunks repeat the same statements) and an applying
	// run of a few drifted tags.
	reconcileThroughAPI(t, admin, map[string]any{"dry_run": true, "type": "fandom"})
	manifest, err := archive.Manifest(context.Background(), st.DB)
	if err != nil {
		t.Fatal(err)
	}
	var some []int64
	for _, in := range manifest[:min(len(manifest), 20)] {
		some = append(some, in.TagID)
	}
	reconcileThroughAPI(t, admin, map[string]any{"tag_ids": some})
}

// reconcileThroughAPI starts a reconcile run through the API (body nil: every
// tag) and waits for it to finish; it returns the run's report.
func reconcileThroughAPI(t *testing.T, admin *client, body any) map[string]any {
	t.Helper()
	status, res, _ := admin.do("POST", "/v1/admin/reconcile", body)
	if status != 202 {
		t.Fatalf("POST /v1/admin/reconcile: %d %v", status, res)
	}
	run := id(res, "id")
	var rep map[string]any
	testdb.WaitFor(t, 20*time.Minute, "the reconcile run to finish", func() bool {
		_, rep, _ = admin.do("GET", "/v1/admin/reconcile/"+run, nil)
		return rep["state"] != "running"
	})
	if rep["state"] != "done" {
		t.Fatalf("reconcile run %s: %v", run, rep)
	}
	return rep
}

// waitDrained waits, up to timeout, until no post is queued and the
// outbox is empty.
func waitDrained(t *testing.T, st *stack, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	testdb.WaitFor(t, timeout, "the system to go quiet", func() bool {
		queued, err := (&drafts.Store{DB: st.DB}).CountQueued(ctx)
		if err != nil {
			return false
		}
		pending, _, err := counter.OutboxDepth(ctx, st.DB, 0)
		return err == nil && queued == 0 && pending == 0
	})
}

// fillOutbox gives the outbox the size a pause at load leaves (100,000
// rows over 15,000 tags) and fresh statistics, so its plans are those of a
// large outbox. The rows are younger than any cutoff the sweeper used (it
// re-announces rows older than its age, 40 minutes by default), as a pause
// shorter than that leaves them: the sweep reads only the old ones.
func fillOutbox(t *testing.T, db *testdb.DB) {
	t.Helper()
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO tag_events (tag_id, delta, public_delta, filter_delta, public_filter_delta, work_id, created_at)
			SELECT 1 + seq % 15000, 1, 1, 1, 1, seq, NOW(6) - INTERVAL seq % 10000 MICROSECOND FROM mysql.seq_1_to_100000`,
		"ANALYZE TABLE tag_events, tag_counts, tags, works, taggings, work_filters, drafts"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// plan is one row of EXPLAIN's answer.
type plan struct{ table, typ, key, rows, extra string }

// checkPlans EXPLAINs each statement (by digest) that reads or writes a
// large table, and fails t for each full scan planScanAllowed does not
// name.
func checkPlans(t *testing.T, db *testdb.DB, stmts map[string]string) {
	t.Helper()
	explained := 0
	for _, digest := range slices.Sorted(maps.Keys(stmts)) {
		text := stmts[digest]
		if !explainable(digest) {
			continue
		}
		plans, err := explain(db.DB.DB, text)
		if err != nil {
			t.Errorf("EXPLAIN %s: %v", text, err)
			continue
		}
		explained++
		for _, p := range plans {
			if !slices.Contains(largeTables, p.table) || (p.typ != "ALL" && p.typ != "index") {
				continue
			}
			if reason := scanAllowed(digest); reason != "" {
				t.Logf("allowed scan of %s (%s): %s\n  %s", p.table, p.typ, reason, digest)
				continue
			}
			t.Errorf("full scan of %s (type %s, key %q, %s rows, %s):\n  %s", p.table, p.typ, p.key, p.rows, p.extra, text)
		}
	}
	t.Logf("%d statements recorded, %d explained", len(stmts), explained)
	if explained < 20 {
		t.Fatalf("only %d statements explained: the paths did not run", explained)
	}
}

func scanAllowed(digest string) string {
	for _, a := range planScanAllowed {
		if strings.Contains(digest, a.digest) {
			return a.reason
		}
	}
	return ""
}

var firstWord = regexp.MustCompile(`^\s*(\w+)`)

// explainable reports whether digest is a statement EXPLAIN takes that
// touches a large table (migrations' and the test's own are not the
// service's paths).
func explainable(digest string) bool {
	m := firstWord.FindStringSubmatch(digest)
	if m == nil {
		return false
	}
	switch strings.ToUpper(m[1]) {
	case "SELECT", "UPDATE", "DELETE", "WITH":
	case "INSERT", "REPLACE":
		if !strings.Contains(strings.ToUpper(digest), "SELECT") {
			return false // a VALUES list reads nothing
		}
	default:
		return false
	}
	lower := strings.ToLower(digest)
	if strings.Contains(lower, "goose_db_version") || strings.Contains(lower, "information_schema") || strings.Contains(lower, "archive_") {
		return false
	}
	for _, tbl := range largeTables {
		if regexp.MustCompile(`\b` + tbl + `\b`).MatchString(lower) {
			return true
		}
	}
	return false
}

// explain returns the plan of text on db, a row a table it reads.
func explain(db *sql.DB, text string) ([]plan, error) {
	return migrations.Collect(context.Background(), db, func(rows *sql.Rows) (plan, error) {
		var p plan
		field := map[string]*string{"table": &p.table, "type": &p.typ, "key": &p.key, "rows": &p.rows, "extra": &p.extra}
		cols, err := rows.Columns()
		if err != nil {
			return p, err
		}
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return p, err
		}
		for i, c := range cols {
			if f := field[strings.ToLower(c)]; f != nil {
				*f = vals[i].String
			}
		}
		return p, nil
	}, "EXPLAIN "+text)
}

// statementProxy forwards MySQL connections to a server and records the
// text of every COM_QUERY a client sends, by digest.
type statementProxy struct {
	addr string
	mu   sync.Mutex
	seen map[string]string // digest → first text
}

func startStatementProxy(t *testing.T, server string) *statementProxy {
	l := testdb.Listen(t)
	p := &statementProxy{addr: l.Addr().String(), seen: map[string]string{}}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c, server)
		}
	}()
	return p
}

func (p *statementProxy) serve(client net.Conn, server string) {
	defer client.Close()
	up, err := net.Dial("tcp", server)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { io.Copy(client, up); client.Close() }()
	head := make([]byte, 4)
	for {
		if _, err := io.ReadFull(client, head); err != nil {
			return
		}
		n := int(binary.LittleEndian.Uint32(append(head[:3:3], 0)))
		payload := make([]byte, n)
		if _, err := io.ReadFull(client, payload); err != nil {
			return
		}
		// A command is the first packet of its exchange (sequence 0);
		// 0x03 is COM_QUERY.
		if head[3] == 0 && n > 1 && payload[0] == 0x03 {
			p.record(string(payload[1:]))
		}
		if _, err := up.Write(append(head, payload...)); err != nil {
			return
		}
	}
}

var (
	quoted  = regexp.MustCompile(`'(?:[^'\\]|\\.)*'`)
	numbers = regexp.MustCompile(`\b\d+(\.\d+)?\b`)
	lists   = regexp.MustCompile(`\?(\s*,\s*\?)+`)
	tuples  = regexp.MustCompile(`\(\?\)(\s*,\s*\(\?\))+`)
	spaces  = regexp.MustCompile(`\s+`)
)

// digest is text with its literals replaced by ? and lists folded, so the
// same statement with other arguments is one.
func digest(text string) string {
	d := quoted.ReplaceAllString(text, "?")
	d = numbers.ReplaceAllString(d, "?")
	d = lists.ReplaceAllString(d, "?")
	d = tuples.ReplaceAllString(d, "(?)")
	return strings.TrimSpace(spaces.ReplaceAllString(d, " "))
}

func (p *statementProxy) record(text string) {
	d := digest(text)
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.seen[d]; !ok {
		p.seen[d] = text
	}
}

func (p *statementProxy) statements() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.seen)
}
