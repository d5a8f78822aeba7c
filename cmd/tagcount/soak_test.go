package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/cmd/tagcount/loadgen"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/loop"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// soakConfig sizes a fault soak. The short version (TAGCOUNT_SOAK unset)
// injects each fault once; TAGCOUNT_SOAK=10m repeats the schedule for ten
// minutes.
type soakConfig struct {
	duration       time.Duration // 0: one round of the schedule
	hold           time.Duration // how long a stopped part stays down
	gap            time.Duration // steady load between a recovery and the next fault
	requestTimeout time.Duration // the service's --request-timeout
	hungAfter      time.Duration // a request slower than this hung
	probeBudget    time.Duration // a fault not recovered from within this is a hang
	finalBudget    time.Duration // for the queue and the outbox to drain at the end
	hang           time.Duration // how long the database hangs
	authors        int
}

func soakConfigFromEnv(t *testing.T) soakConfig {
	c := soakConfig{hold: 3 * time.Second, gap: 2 * time.Second, requestTimeout: 5 * time.Second,
		probeBudget: 3 * time.Minute, finalBudget: 5 * time.Minute, hang: 20 * time.Second, authors: 8}
	// An answer comes at the deadline; the margin is for a busy machine.
	c.hungAfter = c.requestTimeout + 5*time.Second
	if v := os.Getenv("TAGCOUNT_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("TAGCOUNT_SOAK=%q: want a duration such as 10m", v)
		}
		c.duration, c.hold, c.gap = d, 5*time.Second, 5*time.Second
	}
	return c
}

// TestFaultSoak runs mixed load on both posting paths while faults are
// injected on a schedule: SIGKILL of the counter, of the worker and of the
// whole service, the broker, Redis and MariaDB stopped and started, a
// database that hangs for 20 s, and 10% of announcements dropped all along.
// After each fault it measures how long a fresh post takes to show in its
// tag's count. At the end every post is done, the outbox is drained, every
// count equals the independent recount (and is what the API serves), no
// request hung past its deadline, every 5xx was a 503 with Retry-After,
// and nothing an author saved, nor a Post the service accepted, was lost.
// Recovery times are reported, not asserted. TAGCOUNT_SOAK_REPORT names a
// file for the report, TAGCOUNT_SOAK_LOGS a directory to keep the
// processes' logs in, and TAGCOUNT_SOAK_FAULTS the faults to inject
// (default all).
func TestFaultSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault soak takes minutes")
	}
	t.Parallel()
	cfg := soakConfigFromEnv(t)
	s := startSoakService(t, cfg.requestTimeout)
	rec := newSoakRecorder(cfg.hungAfter)
	rep := &soakReport{cfg: cfg, rec: rec, start: rec.start}
	t.Cleanup(func() { rep.finish(t, s) })

	loadCtx, stopLoad := context.WithCancel(context.Background())
	var load sync.WaitGroup
	t.Cleanup(func() { stopLoad(); load.Wait() }) // runs before the report
	s.startLoad(loadCtx, &load, rec, cfg.authors)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	t.Cleanup(stopWatch)

	s.runSchedule(t, watchCtx, rep)
	stopLoad()
	load.Wait()
	rep.loadStopped = time.Now()
	s.finalChecks(t, rep)
}

// startLoad starts cfg.authors authors, half on each path.
func (s *soakService) startLoad(ctx context.Context, wg *sync.WaitGroup, rec *soakRecorder, n int) {
	wl, err := loadgen.NewWorkload(loadgen.WorkloadOptions{Seed: uint64(time.Now().UnixNano()), Authors: n,
		Vocabulary: loadgen.Vocabulary{Fandoms: 20, Characters: 200, Relationships: 200, Freeforms: 300, Exponent: 1.1},
		ProbeEvery: -1, BodyChars: 300})
	if err != nil {
		s.t.Fatal(err)
	}
	hc := loadgen.NewHTTPClient(n + 4)
	admin := s.client(hc, rec, 1, httpapi.RoleAdmin)
	for i := range n {
		a := &soakAuthor{id: int64(101 + i), admin: admin, wl: wl, slot: int64(i), authors: int64(n),
			home: s.apiLegacy.url, other: s.apiNew.url, rng: rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))}
		if i%2 == 1 {
			a.home, a.other = a.other, a.home
		}
		a.c = s.client(hc, rec, a.id, httpapi.RoleAuthor)
		wg.Go(func() { a.run(ctx) })
	}
}

func (s *soakService) client(hc *http.Client, rec *soakRecorder, authorID int64, role string) *soakClient {
	tok, err := httpapi.Auth{Secret: []byte(s.secret)}.IssueToken(authorID, role, 24*time.Hour)
	if err != nil {
		s.t.Fatal(err)
	}
	return &soakClient{hc: hc, rec: rec, token: tok}
}

// soakFault is a fault the schedule injects: run injects it, holds it, and
// ends it, returning the name the report shows and when the fault ended
// (when the stopped part was started again).
type soakFault struct {
	name string // what TAGCOUNT_SOAK_FAULTS matches
	run  func(s *soakService, round int, cfg soakConfig) (shown string, end time.Time)
}

var soakFaults = []soakFault{
	{"counter", func(s *soakService, _ int, cfg soakConfig) (string, time.Time) {
		return "SIGKILL counter", s.killAndRestart(cfg.hold, s.counter)
	}},
	{"worker", func(s *soakService, _ int, cfg soakConfig) (string, time.Time) {
		return "SIGKILL worker", s.killAndRestart(cfg.hold, s.worker)
	}},
	{"broker", func(s *soakService, _ int, cfg soakConfig) (string, time.Time) {
		s.broker.stop(syscall.SIGTERM)
		time.Sleep(cfg.hold) // the outage
		end := time.Now()
		s.broker.start(s.t)
		return "broker stop, start", end
	}},
	{"redis", func(s *soakService, _ int, cfg soakConfig) (string, time.Time) {
		s.redis.Stop()
		time.Sleep(cfg.hold) // the outage; Redis comes back empty
		end := time.Now()
		s.redis.Start()
		return "Redis stop, start (empty)", end
	}},
	{"mariadb stop", func(s *soakService, round int, cfg soakConfig) (string, time.Time) {
		kill := round%2 == 0
		s.db.Stop(kill)
		time.Sleep(cfg.hold) // the outage
		end := time.Now()
		s.db.Start()
		if kill {
			return "MariaDB SIGKILL, start", end
		}
		return "MariaDB SIGTERM, start", end
	}},
	{"mariadb hang", func(s *soakService, _ int, cfg soakConfig) (string, time.Time) {
		s.db.Pause()
		time.Sleep(cfg.hang) // the hang is the fault
		end := time.Now()
		s.db.Resume()
		return fmt.Sprintf("MariaDB hangs %v (SIGSTOP)", cfg.hang), end
	}},
	{"all", func(s *soakService, _ int, cfg soakConfig) (string, time.Time) {
		return "SIGKILL api×2, worker, counter", s.killAndRestart(cfg.hold, s.roles()...)
	}},
}

// pickFaults returns the faults TAGCOUNT_SOAK_FAULTS names (a
// comma-separated list of words found in their names: "redis,counter"),
// or every fault.
func pickFaults(t *testing.T) []soakFault {
	v := os.Getenv("TAGCOUNT_SOAK_FAULTS")
	if v == "" {
		return soakFaults
	}
	var out []soakFault
	for _, f := range soakFaults {
		for _, w := range strings.Split(v, ",") {
			if w = strings.TrimSpace(strings.ToLower(w)); w != "" && strings.Contains(f.name, w) {
				out = append(out, f)
				break
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("TAGCOUNT_SOAK_FAULTS=%q names none of the faults", v)
	}
	return out
}

// killAndRestart kills procs, holds them down, and starts them again.
func (s *soakService) killAndRestart(hold time.Duration, procs ...*soakProc) time.Time {
	for _, p := range procs {
		if p == s.worker {
			s.noteWorkerCounters()
		}
		p.stop(syscall.SIGKILL)
	}
	time.Sleep(hold) // the outage
	end := time.Now()
	for _, p := range procs {
		p.start(s.t)
	}
	return end
}

// runSchedule injects the faults in turn, each once (short) or round
// after round for cfg.duration, measuring each recovery. It stops early
// when the service does not recover.
func (s *soakService) runSchedule(t *testing.T, watchCtx context.Context, rep *soakReport) {
	cfg := rep.cfg
	hc := loadgen.NewHTTPClient(4)
	prober := s.client(hc, rep.rec, 9000, httpapi.RoleAuthor)
	faults := pickFaults(t)
	for round := 0; ; round++ {
		for _, fault := range faults {
			if round > 0 && time.Since(rep.start) >= cfg.duration {
				return
			}
			began := time.Now()
			name, end := fault.run(s, round, cfg)
			f := rep.add(name, began, end)
			if !s.probe(prober, f, len(rep.faults), cfg.probeBudget) {
				t.Errorf("the service did not recover from %q within %v (new path %s, legacy path %s)",
					name, cfg.probeBudget, fmtRecovery(f.recoverNew), fmtRecovery(f.recoverLegacy))
				return
			}
			go s.watchBacklog(watchCtx, f)
			loop.Sleep(context.Background(), cfg.gap) // steady load before the next fault
		}
		if cfg.duration == 0 {
			return
		}
	}
}

// probe posts a work with a fresh tag on each path and records how long
// after the fault's end its count showed it. It reports whether both did
// within budget.
func (s *soakService) probe(c *soakClient, f *soakFaultRun, n int, budget time.Duration) bool {
	ctx, cancel := context.WithDeadline(context.Background(), f.end.Add(budget))
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range []struct {
		path string
		base string
		into *time.Duration
	}{{"new", s.apiNew.url, &f.recoverNew}, {"legacy", s.apiLegacy.url, &f.recoverLegacy}} {
		wg.Go(func() {
			if c.probe(ctx, p.base, fmt.Sprintf("Soak probe %d %s", n, p.path)) == nil {
				*p.into = time.Since(f.end)
			}
		})
	}
	wg.Wait()
	return f.recoverNew >= 0 && f.recoverLegacy >= 0
}

// watchBacklog records when every post owed at the fault's end (drafts
// queued before it) was done.
func (s *soakService) watchBacklog(ctx context.Context, f *soakFaultRun) {
	store := &drafts.Store{DB: s.check}
	for ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		queued, err := store.ListQueued(qctx, f.end, 0, 1)
		cancel()
		if err == nil && len(queued) == 0 {
			f.backlog.Store(int64(time.Since(f.end)))
			return
		}
		loop.Sleep(ctx, 250*time.Millisecond) // polling the drafts table
	}
}

// noteWorkerCounters adds the worker's fault-injection counters to the
// report's totals before the worker is killed (they restart from 0).
func (s *soakService) noteWorkerCounters() {
	hc := &http.Client{Timeout: 2 * time.Second}
	s.dropped.Add(int64(scrapeCounter(hc, s.worker.url, "tagcount_publish_dropped_total")))
	s.reannounced.Add(int64(scrapeCounter(hc, s.worker.url, "tagcount_events_reannounced_total")))
}

// finalChecks waits for the service to finish what it owes, then checks
// every figure the soak promises.
func (s *soakService) finalChecks(t *testing.T, rep *soakReport) {
	ctx := context.Background()
	var traced time.Time
	testdb.WaitFor(t, rep.cfg.finalBudget, "every queued post to be done and the outbox to be empty", func() bool {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var queued, outbox int
		err := s.check.QueryRowContext(qctx, `SELECT (SELECT COUNT(*) FROM drafts WHERE state = 'queued'),
			(SELECT COUNT(*) FROM tag_events)`).Scan(&queued, &outbox)
		if time.Since(traced) >= 5*time.Second || (err == nil && queued+outbox == 0) {
			traced = time.Now()
			rep.drainTrace = append(rep.drainTrace, fmt.Sprintf("+%s: %d queued, %d outbox rows",
				fmtSeconds(time.Since(rep.loadStopped)), queued, outbox))
		}
		return err == nil && queued == 0 && outbox == 0
	})
	rep.drained = time.Since(rep.loadStopped)
	drifted, err := reconcile.Drifted(ctx, s.check)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range drifted {
		if i == 20 {
			t.Errorf("... and %d more drifted tags", len(drifted)-20)
			break
		}
		t.Errorf("tag %d drifted: works %+v, stored %+v, pending %+v", d.TagID, d.Works, d.Stored, d.Pending)
	}
	s.checkServedCounts(t, rep)
	rec := rep.rec
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, l := range []struct {
		what string
		list []string
	}{{"hung past the deadline", rec.hung}, {"5xx other than 503 with Retry-After", rec.bad5xx},
		{"lost (404 for what an author saved and never deleted, or an accepted Post forgotten)", rec.lost}} {
		if len(l.list) > 0 {
			t.Errorf("%d requests %s:\n  %s", len(l.list), l.what, strings.Join(first(l.list, 30), "\n  "))
		}
	}
	for _, p := range s.procs() {
		if c := p.crashes(); len(c) > 0 {
			t.Errorf("%s", strings.Join(c, "\n"))
		}
	}
}

// checkServedCounts waits until every tag's count and public count, as the
// API serves them (tiered), equal the independent recount: the caches
// recover too.
func (s *soakService) checkServedCounts(t *testing.T, rep *soakReport) {
	want := map[int64]counter.Sum{}
	if err := reconcile.Walk(context.Background(), s.check, func(st reconcile.TagState) { want[st.TagID] = st.Works }); err != nil {
		t.Fatal(err)
	}
	ids := make([]int64, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	rep.tags = len(ids)
	c := s.client(loadgen.NewHTTPClient(1), newSoakRecorder(time.Hour), 9001, httpapi.RoleAdmin) // an admin sees tags no work uses any more
	var wrong []string
	testdb.WaitFor(t, time.Minute, "every served count to equal the recount", func() bool {
		wrong = wrong[:0]
		for chunk := range slices.Chunk(ids, 1000) {
			q := make([]string, len(chunk))
			for i, id := range chunk {
				q[i] = fmt.Sprint(id)
			}
			r := c.do(context.Background(), "final counts", s.apiNew.url, "GET", "/v1/tags?ids="+strings.Join(q, ","), nil)
			list, _ := r.body["tags"].([]any)
			if r.status != http.StatusOK || len(list) != len(chunk) {
				wrong = append(wrong, fmt.Sprintf("GET /v1/tags?ids=…: %d, %d tags of %d", r.status, len(list), len(chunk)))
				continue
			}
			for _, raw := range list {
				tag, _ := raw.(map[string]any)
				w := want[int64(tag["id"].(float64))]
				if tag["count"] != float64(w.Count) || tag["public_count"] != float64(w.Public) {
					wrong = append(wrong, fmt.Sprintf("tag %v: served %v/%v, recount %d/%d", tag["id"], tag["count"],
						tag["public_count"], w.Count, w.Public))
				}
			}
		}
		return len(wrong) == 0
	})
}

func first(list []string, n int) []string {
	if len(list) > n {
		return append(list[:n:n], fmt.Sprintf("... and %d more", len(list)-n))
	}
	return list
}

// soakFaultRun is one injected fault and what it took to recover.
type soakFaultRun struct {
	name                      string
	end                       time.Time
	at                        time.Duration // the fault's end, from the soak's start
	held                      time.Duration // from the fault's start to its end
	recoverNew, recoverLegacy time.Duration // -1: not recovered
	backlog                   atomic.Int64  // ns until the posts owed at the end were done; 0: not yet
}
