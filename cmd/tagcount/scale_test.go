package main

// The figures of docs/capacity.md at archive scale, taken on a database
// `tagcount archive build` made. They do not run in the default suite: each
// needs TAGCOUNT_ARCHIVE_DSN, the DSN of a built archive, and only reads it
// (the reconcile's run is a dry one, which writes its report and the
// drift it found, never a count). For example:
//
//	TAGCOUNT_ARCHIVE_DSN='root@tcp(127.0.0.1:3306)/tc_archive_1m?parseTime=true' \
//	  go test -run 'TestArchiveScale' -v -timeout 2h ./cmd/tagcount/
//
// Each logs its figures; none asserts a duration.

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// archiveDSN is the built archive the scale figures read, or skips t.
func archiveDSN(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("TAGCOUNT_ARCHIVE_DSN")
	if dsn == "" {
		t.Skip("set TAGCOUNT_ARCHIVE_DSN to a database `tagcount archive build` made to take the archive-scale figures")
	}
	return dsn
}

func openArchive(t *testing.T) *migrations.DB {
	t.Helper()
	db, err := migrations.Open(context.Background(), archiveDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestArchiveScaleReconcile times a whole dry reconcile of the archive at
// the default chunk and pause, and measures the database's side of it: the
// CPU time of the server thread reading its snapshots, the rows it reads
// (every tagging and filing with a works probe each, every tag and
// tag_counts row), and the server's counters over the run.
func TestArchiveScaleReconcile(t *testing.T) {
	db := openArchive(t)
	ctx := context.Background()
	before := serverStatus(t, db)
	cpu := startThreadCPU(t, db, "%STRAIGHT_JOIN works w%")
	r, err := reconcile.New(reconcile.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rep, err := r.Run(ctx, reconcile.Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	readerCPU := cpu.stop()
	after := serverStatus(t, db)
	took := rep.Duration().Seconds()
	var taggings, filings, tagCounts, outbox int64
	if err := db.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM taggings), (SELECT COUNT(*) FROM work_filters),
		(SELECT COUNT(*) FROM tag_counts), (SELECT COUNT(*) FROM tag_events)`).Scan(&taggings, &filings, &tagCounts, &outbox); err != nil {
		t.Fatal(err)
	}
	rows := 2*(taggings+filings) + rep.TagsScanned + tagCounts + outbox
	t.Logf("dry reconcile: %d tags in %.1f s (%.0f tags/s), %d drifted, total |drift| %d", rep.TagsScanned, took,
		float64(rep.TagsScanned)/took, rep.TagsDrifted, rep.TotalAbsDrift)
	t.Logf("its reading session's server thread: %.1f s of CPU (%.0f%% of one core over the run)", readerCPU, 100*readerCPU/took)
	t.Logf("rows it reads: %d (taggings %d and filings %d, a works probe each; %d tags, %d tag_counts, %d outbox): %.0f rows/s",
		rows, taggings, filings, rep.TagsScanned, tagCounts, outbox, float64(rows)/took)
	for _, k := range []string{"Innodb_buffer_pool_read_requests", "Innodb_buffer_pool_reads"} {
		t.Logf("server-wide %s over the run (every client's): %.0f", k, after[k]-before[k])
	}
	t.Logf("the server process's CPU over the run (every client's): %.1f s; load average at the end %s",
		after["cpu"]-before["cpu"], loadAverage())
	t.Logf("extrapolated to 15 times the works (linear in taggings): %.0f min", 15*took/60)
}

// serverStatus reads a few of the server's global counters, and the
// server process's CPU seconds as "cpu".
func serverStatus(t *testing.T, db *migrations.DB) map[string]float64 {
	t.Helper()
	rows, err := db.Query(`SHOW GLOBAL STATUS WHERE Variable_name IN
		('Innodb_buffer_pool_read_requests', 'Innodb_buffer_pool_reads')`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]float64{}
	for rows.Next() {
		var k string
		var v float64
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	pid := serverPID(t, db)
	out["cpu"] = procCPU(fmt.Sprintf("/proc/%d/stat", pid))
	return out
}

// serverPID is the database server's process id, from its pid file (the
// figures are taken on the machine the server runs on).
func serverPID(t *testing.T, db *migrations.DB) int {
	t.Helper()
	var file string
	if err := db.QueryRow("SELECT @@pid_file").Scan(&file); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Skipf("the database server's pid file: %v (run the figures on the server's machine)", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// procCPU returns the user and system CPU seconds in a /proc stat file,
// 0 when it cannot be read (the thread has gone).
func procCPU(path string) float64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields from the third (state)
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

func loadAverage() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:min(3, len(strings.Fields(string(b))))], " ")
}

// threadCPU follows the CPU time of the server threads that run statements
// matching a LIKE pattern: it finds them in the process list (their Linux
// thread ids) every 100 ms and reads their CPU from /proc, from when it
// first saw each.
type threadCPU struct {
	stopc chan struct{}
	done  chan float64
}

func startThreadCPU(t *testing.T, db *migrations.DB, like string) *threadCPU {
	pid := serverPID(t, db)
	c := &threadCPU{stopc: make(chan struct{}), done: make(chan float64)}
	go func() {
		first, last := map[int64]float64{}, map[int64]float64{}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			tids, _ := migrations.Collect(context.Background(), db, migrations.ScanInt64,
				"SELECT TID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND INFO LIKE ?", like)
			for tid := range last {
				tids = append(tids, tid)
			}
			for _, tid := range slices.Compact(slices.Sorted(slices.Values(tids))) {
				v := procCPU(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
				if _, seen := first[tid]; !seen {
					first[tid] = v
				}
				if v > 0 {
					last[tid] = v
				}
			}
			select {
			case <-c.stopc:
				var sum float64
				for tid, v := range last {
					sum += v - first[tid]
				}
				c.done <- sum
				return
			case <-tick.C:
			}
		}
	}()
	return c
}

func (c *threadCPU) stop() float64 {
	close(c.stopc)
	return <-c.done
}

// TestArchiveScaleTagReads reads tags by id and by name among the
// archive's tags through the service's read path (an API stack on the
// archive, over HTTP), from 8 clients at once, and logs p50 and p99 of
// each.
func TestArchiveScaleTagReads(t *testing.T) {
	dsn := archiveDSN(t)
	ctx := context.Background()
	st, err := startStack(ctx, stackOptions{MySQLDSN: dsn, API: true, RedisAddr: testdb.RequireRedis(t), Queue: testdb.Queue(t),
		AuthSecret: "scale-secret-scale-secret-scale-secret", DataDir: t.TempDir(), Path: "new",
		Edge: generousEdge(testdb.Queue(t))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tok, err := st.Auth.IssueToken(1, httpapi.RoleAuthor, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	type tag struct {
		id         int64
		name, kind string
	}
	var maxID int64
	if err := st.DB.QueryRow("SELECT MAX(id) FROM tags").Scan(&maxID); err != nil {
		t.Fatal(err)
	}
	const reads = 20_000
	sample := make([]any, reads)
	for i := range sample {
		sample[i] = rand.Int64N(maxID) + 1
	}
	list, err := migrations.Collect(ctx, st.DB, func(rows *sql.Rows) (tg tag, err error) {
		return tg, rows.Scan(&tg.id, &tg.name, &tg.kind)
	}, `SELECT t.id, t.name, t.type FROM tags t JOIN tag_counts c ON c.tag_id = t.id AND c.count > 0
		WHERE t.id IN (`+migrations.Placeholders("?", ",", reads)+")", sample...) // a tag no work shows is 404

	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d tags (ids 1-%d); %d distinct drawn that a work shows", maxID, maxID, len(list))
	for _, way := range []struct {
		name string
		path func(tag) string
	}{
		{"by id", func(tg tag) string { return fmt.Sprintf("/v1/tags/%d", tg.id) }},
		{"by name", func(tg tag) string {
			return "/v1/tags?" + url.Values{"name": {tg.name}, "type": {tg.kind}}.Encode()
		}},
		{"by id, exact", func(tg tag) string { return fmt.Sprintf("/v1/tags/%d?consistency=exact", tg.id) }},
	} {
		lat := timeReads(t, st.URL, tok, 8, len(list), func(i int) string { return way.path(list[i]) })
		t.Logf("tag reads %s: %d reads, p50 %v, p99 %v, max %v", way.name, len(lat), pct(lat, 0.50), pct(lat, 0.99), lat[len(lat)-1])
	}
}

// generousEdge is the API edge with limits no measurement reaches, on the
// measurement's own keys.
func generousEdge(prefix string) httpapi.Edge {
	var e httpapi.Edge
	generous := httpapi.RateLimit{PerSecond: 100000, Burst: 100000}
	e.RateLimits.Prefix = prefix + ":"
	e.RateLimits.Writes, e.RateLimits.Reads, e.RateLimits.Admin, e.RateLimits.Anonymous = generous, generous, generous, generous
	e.RateLimits.Timeout = time.Minute
	return e
}

// timeReads GETs path(0..n-1) from clients goroutines and returns the
// latencies, sorted; any answer but 200 fails t.
func timeReads(t *testing.T, base, token string, clients, n int, path func(int) string) []time.Duration {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	var failed sync.Once
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < n; i += clients {
				req, _ := http.NewRequest("GET", base+path(i), nil)
				req.Header.Set("Authorization", "Bearer "+token)
				start := time.Now()
				res, err := hc.Do(req)
				if err == nil {
					_, err = bufio.NewReader(res.Body).WriteTo(discardWriter{})
					res.Body.Close()
					if err == nil && res.StatusCode != 200 {
						err = fmt.Errorf("status %d", res.StatusCode)
					}
				}
				lat[i] = time.Since(start)
				if err != nil {
					failed.Do(func() { t.Errorf("GET %s: %v", path(i), err) })
				}
			}
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	return lat
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// pct is the q-quantile of sorted latencies.
func pct(sorted []time.Duration, q float64) time.Duration {
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))].Round(10 * time.Microsecond)
}

// TestArchiveScaleOutboxAndCounterMemory leaves the outbox as a long pause
// of the counter at load would (TAGCOUNT_SCALE_OUTBOX_ROWS rows, default
// 1,800,000: 300 posts/s × 600 s × 10 tags, over TAGCOUNT_SCALE_TAGS
// distinct tags, default 1,050,000, created over the last ten minutes), in
// a database of its own; times the sweeper's full sweep (which announces
// every tag on the real broker) and the outbox's queries; then runs the
// counter as a process of its own until the outbox is empty, and logs its
// RSS and Go heap with every one of those tags touched (and, with
// TAGCOUNT_SCALE_HEAP_PROFILE=FILE, writes its heap profile there).
func TestArchiveScaleOutboxAndCounterMemory(t *testing.T) {
	archiveDSN(t)
	nTags, nRows := envInt("TAGCOUNT_SCALE_TAGS", 1_050_000), envInt("TAGCOUNT_SCALE_OUTBOX_ROWS", 1_800_000)
	ctx := context.Background()
	db := testdb.New(t)
	fillPausedOutbox(t, db.DB, nTags, nRows)
	broker, err := counter.StartEmbeddedBroker(ctx, "", 0, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()

	timed := func(what string, f func() error) {
		start := time.Now()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		t.Logf("%s with %d outbox rows of %d tags: %v", what, nRows, nTags, time.Since(start).Round(time.Millisecond))
	}
	timed("outbox depth (counter.OutboxDepth)", func() error { _, _, err := counter.OutboxDepth(ctx, db.DB, 1000); return err })
	timed("pending tags (counter.PendingTags, a writer taking its partitions)", func() error {
		_, err := counter.PendingTags(ctx, db.DB)
		return err
	})
	pub, err := counter.NewPublisher(counter.PublisherConfig{Brokers: broker.Addrs()})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sw, err := counter.NewSweeper(counter.SweeperConfig{DB: db.DB, Announcer: pub, After: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var announced int
	timed("a full sweep (its queries, and announcing every tag on the broker)", func() (err error) {
		announced, err = sw.SweepOnce(ctx)
		return err
	})
	t.Logf("the sweep announced %d tags", announced)
	timed("an incremental sweep (nothing new crossed the age)", func() error { _, err := sw.SweepOnce(ctx); return err })

	addr := freeAddr(t)
	child := testdb.StartChild(t, "TestArchiveScaleCounterChild", counterChild{DSN: db.DSN, Brokers: broker.Addrs(), Addr: addr})
	start := time.Now()
	testdb.WaitFor(t, time.Hour, "the counter to empty the outbox", func() bool {
		var n int64
		return db.QueryRow("SELECT COUNT(*) FROM tag_events").Scan(&n) == nil && n == 0
	})
	t.Logf("the counter emptied the outbox in %v (%.0f rows/s)", time.Since(start).Round(time.Second),
		float64(nRows)/time.Since(start).Seconds())
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", child.Process.Pid))
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmRSS") || strings.HasPrefix(line, "VmHWM") {
			t.Logf("counter process %s", strings.Join(strings.Fields(line), " "))
		}
	}
	t.Logf("counter process Go heap: %s", goHeap(t, "http://"+addr+"/metrics"))
	// A heap profile taken after a collection (gc=1): what stays live, by
	// where it was allocated.
	res, err := http.Get("http://" + addr + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if path := os.Getenv("TAGCOUNT_SCALE_HEAP_PROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := bufio.NewReader(res.Body).WriteTo(f); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("counter process Go heap after a collection: %s", goHeap(t, "http://"+addr+"/metrics"))
}

// counterChild is the config of the counter process
// TestArchiveScaleOutboxAndCounterMemory starts.
type counterChild struct {
	DSN     string
	Brokers []string
	Addr    string // its admin listener (/metrics, /debug/pprof/)
}

// TestArchiveScaleCounterChild is the counter process of
// TestArchiveScaleOutboxAndCounterMemory: `tagcount counter` as deployed,
// until killed.
func TestArchiveScaleCounterChild(t *testing.T) {
	var cfg counterChild
	testdb.ChildConfig(t, &cfg)
	err := run(context.Background(), []string{"counter", "--mysql-dsn", cfg.DSN, "--kafka-brokers", strings.Join(cfg.Brokers, ","),
		"--http-addr", freeAddr(t), "--admin-addr", cfg.Addr, "--data-dir", t.TempDir(), "--log-level", "warn",
		"--redis-addr", testdb.RequireRedis(t)}, os.Stdout, os.Stderr)
	t.Fatalf("the counter stopped: %v", err)
}

// fillPausedOutbox writes nTags freeform tags with small stored counts, and
// nRows outbox rows of +1: one for each tag, the rest on the first 10,000
// tags, created over the last ten minutes.
func fillPausedOutbox(t *testing.T, db *migrations.DB, nTags, nRows int) {
	t.Helper()
	const step = 250_000
	for _, q := range []struct {
		n    int
		stmt string
	}{
		{nTags, `INSERT INTO tags (id, type, name, name_key) SELECT seq, 'freeform', CONCAT('Freeform ', seq),
			CONCAT('freeform ', seq) FROM seq_%d_to_%d`},
		{nTags, `INSERT INTO tag_counts (tag_id, count, public_count) SELECT seq, 1 + seq MOD 200, seq MOD 200 FROM seq_%d_to_%d`},
		{nRows, `INSERT INTO tag_events (tag_id, delta, public_delta, work_id, created_at)
			SELECT IF(seq <= ` + strconv.Itoa(nTags) + `, seq, 1 + seq MOD 10000), 1, 1, seq,
			NOW(6) - INTERVAL 600000000 - seq * ` + strconv.Itoa(600_000_000/nRows) + ` MICROSECOND FROM seq_%d_to_%d`},
	} {
		for lo := 1; lo <= q.n; lo += step {
			if _, err := db.Exec(fmt.Sprintf(q.stmt, lo, min(q.n, lo+step-1))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := db.Exec("ANALYZE TABLE tags, tag_counts, tag_events"); err != nil {
		t.Fatal(err)
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// goHeap reads the Go heap figures of a process's /metrics, once it
// answers.
func goHeap(t *testing.T, metricsURL string) string {
	t.Helper()
	var body string
	testdb.WaitFor(t, time.Minute, "the counter's /metrics", func() bool {
		res, err := http.Get(metricsURL)
		if err != nil {
			return false
		}
		defer res.Body.Close()
		var sb strings.Builder
		_, err = bufio.NewReader(res.Body).WriteTo(&sb)
		body = sb.String()
		return err == nil && res.StatusCode == 200
	})
	var out []string
	for _, line := range strings.Split(body, "\n") {
		for _, m := range []string{"go_memstats_heap_alloc_bytes ", "go_memstats_heap_inuse_bytes ", "go_memstats_sys_bytes "} {
			if strings.HasPrefix(line, m) {
				v, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
				out = append(out, fmt.Sprintf("%s %.1f MiB", strings.TrimSpace(m), v/(1<<20)))
			}
		}
	}
	return strings.Join(out, ", ")
}
