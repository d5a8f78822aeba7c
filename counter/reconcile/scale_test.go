package reconcile_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster/postertest"
)

// The scale run's archive and load.
const (
	scaleTags    = 100_000
	scaleWorks   = 250_000
	scaleDrifted = 50_000
	scalePosters = 16
	// scaleBaseline is how long posting runs alone, before and after.
	scaleBaseline = 15 * time.Second
	// scaleLoadedWindow bounds the posting load during the applying run:
	// under 16 posters each correction waits its turn at the log flush
	// (about 20 ms here), so the whole run under load would take long.
	scaleLoadedWindow = 30 * time.Second
	scaleChunkSize    = 1000
	scaleChunkPause   = 50 * time.Millisecond
)

// TestReconcileScale is the scale run of docs/reconcile.md. It is not part
// of the default suite:
//
//	TAGCOUNT_RECONCILE_SCALE=1 go test -run TestReconcileScale -v -timeout 30m ./counter/reconcile/
//
// TAGCOUNT_RECONCILE_SCALE_RATE sets the correction rate (default 200/s).
//
// The archive it reconciles (1,000,000 taggings) is bulk-loaded with SQL
// from MariaDB's seq tables, not posted through the builders: it is a
// benchmark of the reconcile's scan, not a fixture of the default suite;
// posting a quarter of a million works through the posting transaction and
// applying four times as many outbox rows would take many minutes and
// measure nothing this test reports. The load writes what the posting
// transaction writes for works that were posted and whose counts were then
// applied (works, taggings, exact tag_counts, an empty outbox), and the
// reconcile's own snapshot confirms the drift it then injects. The traffic
// measured alongside the reconcile is real posting through postertest.
func TestReconcileScale(t *testing.T) {
	if os.Getenv("TAGCOUNT_RECONCILE_SCALE") == "" {
		t.Skip("set TAGCOUNT_RECONCILE_SCALE=1 to run the reconcile scale test")
	}
	perSecond := scaleRate(t)
	ctx := context.Background()
	a := newReconcileArchive(t)
	db := a.db

	start := time.Now()
	taggings := loadScaleArchive(t, ctx, db)
	// The settled numbers: what every correction must restore.
	settled, err := counter.StoredCounts(ctx, db, 1, scaleTags)
	if err != nil || len(settled) != scaleTags {
		t.Fatalf("settled counts: %d rows, %v", len(settled), err)
	}
	injected := injectScaleDrift(t, ctx, db, settled)
	wantAbs, wantPublicAbs := totalAbsDrift(t, ctx, db)
	scaleExec(t, ctx, db, "ANALYZE TABLE taggings, works, tag_counts, tag_events")
	t.Logf("loaded %d tags, %d works, %d taggings, %d drifted (total |drift| %d, public %d) in %s",
		scaleTags, scaleWorks, taggings, scaleDrifted, wantAbs, wantPublicAbs, time.Since(start).Round(time.Millisecond))

	load := &scaleLoad{t: t, db: db}
	load.report("posting alone", load.measure(ctx, func() { time.Sleep(scaleBaseline) }))
	newR := func() *reconcile.Reconciler {
		return newTestReconciler(t, a, reconcile.Config{ChunkSize: scaleChunkSize, CorrectionsPerSecond: perSecond,
			ChunkPause: scaleChunkPause})
	}

	// The hot tag's count alone: the longest snapshot read of the run.
	one := time.Now()
	if rep, err := newR().Run(ctx, reconcile.Options{TagID: 1, DryRun: true}); err != nil || rep.TagsDrifted != 0 {
		t.Fatalf("recount of tag 1: %+v, %v", rep, err)
	}
	t.Logf("dry recount of tag 1 (%d uses): %s", scaleWorks, time.Since(one).Round(time.Millisecond))

	var dry reconcile.Report
	load.report("posting + dry-run reconcile", load.measure(ctx, func() {
		var err error
		dry, err = newR().Run(ctx, reconcile.Options{DryRun: true})
		if err != nil {
			t.Errorf("dry run: %v", err)
		}
	}))
	t.Logf("dry run: %d tags scanned, %d drifted, total |drift| %d in %s", dry.TagsScanned, dry.TagsDrifted, dry.TotalAbsDrift, dry.Duration().Round(time.Millisecond))
	if dry.TagsScanned != scaleTags || dry.TagsDrifted != scaleDrifted || dry.TotalAbsDrift != wantAbs || dry.TotalAbsPublicDrift != wantPublicAbs {
		t.Errorf("dry run %+v; want %d scanned, %d drifted, total %d, public %d", dry, scaleTags, scaleDrifted, wantAbs, wantPublicAbs)
	}

	applier := newR()
	rep, loadEnded := load.applyingRun(ctx, applier)
	t.Logf("run: %d tags scanned, %d drifted, %d corrected, total |drift| %d in %s (rate limit %.0f/s)", rep.TagsScanned,
		rep.TagsDrifted, rep.TagsCorrected, rep.TotalAbsDrift, rep.Duration().Round(time.Millisecond), perSecond)
	if rep.TagsDrifted != scaleDrifted || rep.TagsCorrected != scaleDrifted || rep.TotalAbsDrift != wantAbs || rep.TotalAbsPublicDrift != wantPublicAbs {
		t.Errorf("run %+v; want %d drifted and corrected, total %d, public %d", rep, scaleDrifted, wantAbs, wantPublicAbs)
	}
	checkScaleCorrections(t, corrections(t, applier, rep.ID, 1000), injected, settled)
	// The posting load writes no tag_counts rows (nothing applies the
	// outbox here), so every row written since the run started is a
	// correction.
	checkScaleRate(t, a.correctionStamps(rep.StartedAt), rep.StartedAt, loadEnded, perSecond)

	// Posting alone again: the machine's own drift over the test (other
	// processes share its two cores) brackets the figures above.
	load.report("posting alone, after", load.measure(ctx, func() { time.Sleep(scaleBaseline) }))

	// Conservation after everything: stored + pending = posted works.
	bad, err := reconcile.Drifted(ctx, db.DB)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 0 {
		t.Errorf("%d tags break conservation after the run; first %+v", len(bad), bad[0])
	}
}

// scaleRate is the correction rate of the scale run:
// TAGCOUNT_RECONCILE_SCALE_RATE, or 200/s.
func scaleRate(t *testing.T) float64 {
	t.Helper()
	v := os.Getenv("TAGCOUNT_RECONCILE_SCALE_RATE")
	if v == "" {
		return 200
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		t.Fatalf("TAGCOUNT_RECONCILE_SCALE_RATE=%q", v)
	}
	return f
}

// scaleExec runs q on db and fails the test on an error.
func scaleExec(t *testing.T, ctx context.Context, db *testdb.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(ctx, q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// loadScaleArchive bulk-loads 1,000,000 taggings over 100,000 tags: tag 1
// on every work (250,000 uses, a rating), tag 2 on 40% (100,000), and three
// tags per work (two on the last 100,000) spread over the other 99,998,
// with exact counts. The loaded works have no drafts: their draft ids are
// far above any the posting load's drafts take (works.draft_id is unique).
// It returns the number of taggings.
func loadScaleArchive(t *testing.T, ctx context.Context, db *testdb.DB) int64 {
	t.Helper()
	scaleExec(t, ctx, db, fmt.Sprintf(`INSERT INTO tags (id, type, name, name_key) SELECT seq, 'freeform', CONCAT('tag ', seq), CONCAT('tag ', seq) FROM mysql.seq_1_to_%d`, scaleTags))
	scaleExec(t, ctx, db, fmt.Sprintf(`INSERT INTO works (id, draft_id, author_id, title, body, version) SELECT seq, 1000000000 + seq, 1 + seq %% 5000, 'w', '', 1 FROM mysql.seq_1_to_%d`, scaleWorks))
	scaleExec(t, ctx, db, fmt.Sprintf(`INSERT INTO taggings (work_id, tag_id, position) SELECT seq, 1, 0 FROM mysql.seq_1_to_%d`, scaleWorks))
	scaleExec(t, ctx, db, fmt.Sprintf(`INSERT INTO taggings (work_id, tag_id, position) SELECT seq, 2, 1 FROM mysql.seq_1_to_%d WHERE seq %% 5 < 2`, scaleWorks))
	for k := 1; k <= 3; k++ {
		limit := scaleWorks
		if k == 3 {
			limit = 150_000
		}
		scaleExec(t, ctx, db, fmt.Sprintf(`INSERT INTO taggings (work_id, tag_id, position)
			SELECT seq, 3 + (seq * 7 + %d) %% %d, %d FROM mysql.seq_1_to_%d`, k*33_333, scaleTags-2, k+1, limit))
	}
	var taggings int64
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM taggings").Scan(&taggings); err != nil {
		t.Fatal(err)
	}
	// Every loaded work is public and unhidden: both numbers are the uses.
	scaleExec(t, ctx, db, `INSERT INTO tag_counts (tag_id, count, public_count) SELECT tag_id, COUNT(*), COUNT(*) FROM taggings GROUP BY tag_id`)
	if bad, err := reconcile.Drifted(ctx, db.DB); err != nil || len(bad) != 0 {
		t.Fatalf("the loaded archive is not settled: %d drifted tags, %v", len(bad), err)
	}
	return taggings
}

// injectScaleDrift drifts 50,000 tags (every even id, the 100,000-use tag
// 2 among them): count too high, too low, and a tenth with the row missing
// (both numbers 0). Injected drift is the fault under test; it returns what
// each drifted tag's stored numbers are now.
func injectScaleDrift(t *testing.T, ctx context.Context, db *testdb.DB, settled map[int64]counter.Sum) map[int64]counter.Sum {
	t.Helper()
	scaleExec(t, ctx, db, `UPDATE tag_counts SET count = count + IF(tag_id % 4 = 0, 1 + tag_id % 5, -(1 + tag_id % 7)) WHERE tag_id % 2 = 0 AND tag_id % 20 <> 10`)
	scaleExec(t, ctx, db, `DELETE FROM tag_counts WHERE tag_id % 20 = 10`)
	injected := make(map[int64]counter.Sum, scaleDrifted)
	for tag := int64(2); tag <= scaleTags; tag += 2 {
		st := settled[tag] // only count moves; every other number stays settled
		switch {
		case tag%20 == 10:
			st = counter.Sum{}
		case tag%4 == 0:
			st.Count += 1 + tag%5
		default:
			st.Count -= 1 + tag%7
		}
		injected[tag] = st
	}
	return injected
}

// totalAbsDrift returns the total |drift| of the counts and of the public
// counts, by the reconcile's own snapshot.
func totalAbsDrift(t *testing.T, ctx context.Context, db *testdb.DB) (count, public int64) {
	t.Helper()
	if err := reconcile.Walk(ctx, db.DB, func(st reconcile.TagState) {
		d := st.Drift()
		count += max(d.Count, -d.Count)
		public += max(d.Public, -d.Public)
	}); err != nil {
		t.Fatal(err)
	}
	return count, public
}

// scaleLoad is the scale run's posting load: scalePosters posters, each
// posting on the new path as fast as it can.
type scaleLoad struct {
	t  *testing.T
	db *testdb.DB
}

// postOne is every post of the load: the hot tag 1 and four others, by
// name, on the new path (a draft row, then the work, 5 taggings and 5
// outbox rows in the posting transaction).
func (l *scaleLoad) postOne(ctx context.Context) error {
	refs := []tags.Ref{tags.NewRef(tags.TypeFreeform, "tag 1")}
	for range 4 {
		refs = append(refs, tags.NewRef(tags.TypeFreeform, fmt.Sprintf("tag %d", 3+rand.Int64N(scaleTags-2))))
	}
	_, _, err := postertest.TryWorks(ctx, l.db.DB, []drafts.Content{postertest.Content("w", refs...)}, nil)
	return err
}

// scaleMeasure is one measured stretch of posting: each post's latency, in
// order, and how long the stretch took.
type scaleMeasure struct {
	lat     []time.Duration
	elapsed time.Duration
}

// measure runs the load while during runs, and fails the test when a post
// failed.
func (l *scaleLoad) measure(ctx context.Context, during func()) scaleMeasure {
	l.t.Helper()
	loadCtx, stop := context.WithCancel(ctx)
	var m scaleMeasure
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, scalePosters)
	began := time.Now()
	for range scalePosters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for loadCtx.Err() == nil {
				t0 := time.Now()
				if err := l.postOne(loadCtx); err != nil {
					if loadCtx.Err() == nil {
						errs <- err
					}
					break
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			m.lat = append(m.lat, mine...)
			mu.Unlock()
		}()
	}
	during()
	stop()
	wg.Wait()
	m.elapsed = time.Since(began)
	close(errs)
	for err := range errs {
		l.t.Fatalf("posting: %v", err)
	}
	slices.Sort(m.lat)
	return m
}

// percentile returns the p-th latency of m (0 with none).
func (m scaleMeasure) percentile(p float64) time.Duration {
	if len(m.lat) == 0 {
		return 0
	}
	return m.lat[min(len(m.lat)-1, int(float64(len(m.lat))*p))].Round(10 * time.Microsecond)
}

func (l *scaleLoad) report(name string, m scaleMeasure) {
	l.t.Logf("%-28s %6d posts in %6.1fs = %6.0f posts/s; latency p50 %8s p99 %8s max %8s", name, len(m.lat), m.elapsed.Seconds(),
		float64(len(m.lat))/m.elapsed.Seconds(), m.percentile(0.50), m.percentile(0.99), m.percentile(1))
}

// applyingRun runs applier's applying run; posting goes on for the first
// scaleLoadedWindow of it, then the run finishes alone. It returns the
// run's report and when the posting stopped.
func (l *scaleLoad) applyingRun(ctx context.Context, applier *reconcile.Reconciler) (reconcile.Report, time.Time) {
	l.t.Helper()
	var rep reconcile.Report
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		var err error
		rep, err = applier.Run(ctx, reconcile.Options{})
		if err != nil {
			l.t.Errorf("run: %v", err)
		}
	}()
	m := l.measure(ctx, func() {
		select {
		case <-runDone:
		case <-time.After(scaleLoadedWindow):
		}
	})
	loadEnded := time.Now()
	l.report("posting + reconcile", m)
	<-runDone
	return rep, loadEnded
}

// checkScaleRate reports the rate of the corrections stamped (when the
// database applied each) and fails the test when the run went faster than
// perSecond.
func checkScaleRate(t *testing.T, stamps []time.Time, startedAt, loadEnded time.Time, perSecond float64) {
	t.Helper()
	if len(stamps) != scaleDrifted {
		t.Fatalf("%d rows written during the run; want %d", len(stamps), scaleDrifted)
	}
	overall := float64(len(stamps)-1) / stamps[len(stamps)-1].Sub(stamps[0]).Seconds()
	window := int(perSecond) // about one second of corrections
	worst := 0.0
	for i := 0; i+window < len(stamps); i++ {
		worst = max(worst, float64(window)/stamps[i+window].Sub(stamps[i]).Seconds())
	}
	loaded := 0
	for loaded < len(stamps) && stamps[loaded].Before(loadEnded) {
		loaded++
	}
	rateOf := func(ts []time.Time) float64 {
		if len(ts) < 2 {
			return 0
		}
		return float64(len(ts)-1) / ts[len(ts)-1].Sub(ts[0]).Seconds()
	}
	t.Logf("corrections: %.1f/s over the run (%d at %.1f/s while posting, %d at %.1f/s after), at most %.1f/s over any %d consecutive (limit %.0f/s)",
		overall, loaded, rateOf(stamps[:loaded]), len(stamps)-loaded, rateOf(stamps[loaded:]), worst, window, perSecond)
	// The figures above are reported; what is asserted is the pacer's
	// promise, which a busy machine cannot break: the k-th correction starts
	// no earlier than k intervals after the run began.
	interval := time.Duration(float64(time.Second) / perSecond)
	for k, at := range stamps {
		if at.Before(startedAt.Add(time.Duration(k) * interval).Add(-time.Millisecond)) {
			t.Errorf("correction %d applied %v after the run began: faster than the limit of %.0f/s", k, at.Sub(startedAt), perSecond)
			break
		}
	}
}

// checkScaleCorrections fails the test unless listed holds exactly the
// injected tags, each from its injected numbers to its settled ones, and
// corrected.
func checkScaleCorrections(t *testing.T, listed map[int64]reconcile.Correction, injected, settled map[int64]counter.Sum) {
	t.Helper()
	if len(listed) != len(injected) {
		t.Errorf("%d corrections listed; want the %d injected", len(listed), len(injected))
	}
	wrong := 0
	for tag, before := range injected {
		c, ok := listed[tag]
		after := settled[tag]
		if !ok || c.Stored != before || c.True != after || c.Drift.Count != after.Count-before.Count ||
			c.Drift.Public != after.Public-before.Public || c.CorrectedAt.IsZero() {
			if wrong++; wrong <= 10 {
				t.Errorf("tag %d: listed %v %+v; want stored %+v, true %+v, corrected", tag, ok, c, before, after)
			}
		}
	}
	for tag := range listed {
		if _, ok := injected[tag]; !ok {
			if wrong++; wrong <= 10 {
				t.Errorf("tag %d listed but never drifted: %+v", tag, listed[tag])
			}
		}
	}
	if wrong > 0 {
		t.Errorf("%d corrections wrong or missing", wrong)
		return
	}
	t.Logf("corrections listed: exactly the %d injected, each with its stored and true numbers", len(listed))
}
