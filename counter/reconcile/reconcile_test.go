package reconcile_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
	"github.com/tagcount/tagcount/poster/postertest"
)

func reconcileQuietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newTestReconciler(t testing.TB, a *reconcileArchive, cfg reconcile.Config) *reconcile.Reconciler {
	t.Helper()
	cfg.DB = a.db.DB
	if cfg.Logger == nil {
		cfg.Logger = reconcileQuietLogger()
	}
	if cfg.CorrectionsPerSecond == 0 {
		cfg.CorrectionsPerSecond = 1000
	}
	if cfg.ChunkPause == 0 {
		cfg.ChunkPause = -1
	}
	r, err := reconcile.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// driftTags are the tags of the live-load test: hot ones every post carries
// (large, and written by every legacy transaction), normal fandoms posts
// pick 1-4 of, and quiet ones no traffic touches.
type driftTags struct{ hot, normal, quiet []int64 }

func (d driftTags) all() []int64 { return slices.Concat(d.hot, d.normal, d.quiet) }

// driftSettledWorks is how many works the live-load test's archive holds
// before the load starts.
const driftSettledWorks = 3000

// newDriftArchive returns a settled archive: hot tags large, quiet tags
// small (5 and 3 works). These works are not remembered, so the load never
// edits or deletes them and the quiet tags stay quiet.
func newDriftArchive(t *testing.T, ctx context.Context) (*reconcileArchive, driftTags) {
	t.Helper()
	a := newReconcileArchive(t)
	d := driftTags{
		hot: a.tagsNamed(tags.NewRef(tags.TypeRating, "General Audiences"),
			tags.NewRef(tags.TypeWarning, "No Archive Warnings Apply")),
		normal: a.tags(36, tags.TypeFandom),
		quiet:  a.tags(2, tags.TypeFandom),
	}
	var old []drafts.Content
	for i := range driftSettledWorks {
		fandom := d.normal[i%len(d.normal)]
		switch {
		case i < 5:
			fandom = d.quiet[0]
		case i < 8:
			fandom = d.quiet[1]
		}
		old = append(old, a.content(fmt.Sprintf("old %d", i), append(slices.Clone(d.hot), fandom)))
	}
	for chunk := range slices.Chunk(old, 500) {
		a.postAll(ctx, false, chunk, false)
	}
	a.drain(ctx)
	return a, d
}

// liveLoad is posts, edits and deletes on both paths, and an outbox applier
// that defers hot tags most of the time so they keep pending deltas, like
// the counter's deferred tiers. Each operation runs to its end (ctx, not
// loadCtx), so every committed outbox row is announced.
type liveLoad struct {
	a            *reconcileArchive
	tags         driftTags
	ctx, loadCtx context.Context
	stop         context.CancelFunc
	ops, applied atomic.Int64
	wg           sync.WaitGroup
	errs         chan error
}

// startLiveLoad starts four workers and the applier on a.
func startLiveLoad(ctx context.Context, a *reconcileArchive, d driftTags) *liveLoad {
	l := &liveLoad{a: a, tags: d, ctx: ctx, errs: make(chan error, 8)}
	l.loadCtx, l.stop = context.WithCancel(ctx)
	for w := 0; w < 4; w++ {
		l.wg.Add(1)
		go l.work()
	}
	l.wg.Add(1)
	go l.applyOutbox()
	return l
}

// work runs operations until the load stops or one fails.
func (l *liveLoad) work() {
	defer l.wg.Done()
	for l.loadCtx.Err() == nil {
		err := l.operate(rand.IntN(10) < 3)
		if migrations.IsLockConflict(err) {
			continue // rolled back whole, as the API's 503 promises; the author tries again
		}
		// A work deleted meanwhile is not found; a legacy edit that
		// lost the race with its delete finds no draft.
		if err != nil && !errors.Is(err, poster.ErrWorkNotFound) && !errors.Is(err, drafts.ErrNotFound) {
			l.errs <- err
			return
		}
		l.ops.Add(1)
	}
}

// operate posts (60 %), edits (20 %) or deletes (20 %) a work on one path.
func (l *liveLoad) operate(legacy bool) error {
	a, d := l.a, l.tags
	switch p := rand.IntN(100); {
	case p < 60:
		picked := slices.Clone(d.hot)
		for range 1 + rand.IntN(4) {
			picked = append(picked, d.normal[rand.IntN(len(d.normal))])
		}
		_, err := a.post(l.ctx, legacy, picked)
		return err
	case p < 80:
		if work, ok := a.randomWork(); ok {
			return a.edit(l.ctx, legacy, work, d.normal)
		}
	default:
		if work, ok := a.randomWork(); ok {
			return a.remove(l.ctx, legacy, work)
		}
	}
	return nil
}

// applyOutbox applies announced events in batches of 200, holding the hot
// tags' back four rounds in five.
func (l *liveLoad) applyOutbox() {
	defer l.wg.Done()
	for i := 0; l.loadCtx.Err() == nil; i++ {
		var held func(int64) bool
		if i%5 != 0 {
			held = func(tag int64) bool { return slices.Contains(l.tags.hot, tag) }
		}
		n, err := l.a.apply(l.ctx, 200, held)
		if err != nil {
			l.errs <- fmt.Errorf("apply outbox: %w", err)
			return
		}
		l.applied.Add(int64(n))
		if n == 0 {
			select { // nothing to apply until the next announcement
			case <-l.a.announced:
			case <-l.loadCtx.Done():
			}
		}
	}
}

// waitOps waits until n operations have succeeded, failing the test when
// the load failed.
func (l *liveLoad) waitOps(t *testing.T, n int64) {
	t.Helper()
	testdb.WaitFor(t, 60*time.Second, fmt.Sprintf("%d load operations", n), func() bool {
		select {
		case err := <-l.errs:
			t.Fatalf("load: %v", err)
		default:
		}
		return l.ops.Load() >= n
	})
}

// halt stops the load, waits for it, and fails the test when it failed.
func (l *liveLoad) halt(t *testing.T) {
	t.Helper()
	l.stop()
	l.wg.Wait()
	close(l.errs)
	for err := range l.errs {
		t.Fatalf("load: %v", err)
	}
}

// injectLiveDrift injects drift while the load runs: relative shifts on
// busy tags (so the drift is known exactly whatever commits around it),
// absolute values and a missing row on quiet tags. Too high and too low,
// large and small; TestReconcileCorrectsDriftUnderLiveLoad's wanted report
// adds these up.
func injectLiveDrift(t *testing.T, a *reconcileArchive, d driftTags) {
	t.Helper()
	a.shift(d.hot[0], 500)    // large tag, too high: drift -500
	a.shift(d.hot[1], -1000)  // large tag, too low: drift +1000
	a.shift(d.normal[3], 3)   // small busy tag, too high: -3
	a.shift(d.normal[20], -2) // small busy tag, too low: +2
	// Quiet tag 0 truly has 5 works: stored 42 is a drift of -37.
	if _, err := a.db.Exec("UPDATE tag_counts SET count = 42 WHERE tag_id = ?", d.quiet[0]); err != nil {
		t.Fatal(err)
	}
	// Quiet tag 1 truly has 3 works: a missing row is a drift of +3.
	if _, err := a.db.Exec("DELETE FROM tag_counts WHERE tag_id = ?", d.quiet[1]); err != nil {
		t.Fatal(err)
	}
}

func TestReconcileCorrectsDriftUnderLiveLoad(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, d := newDriftArchive(t, ctx)
	all := d.all()
	load := startLiveLoad(ctx, a, d)
	load.waitOps(t, 150)
	injectLiveDrift(t, a, d)
	load.waitOps(t, load.ops.Load()+50)

	// Small chunks and a low rate, so posts and flushes keep committing
	// between each chunk's snapshot and its corrections.
	r := newTestReconciler(t, a, reconcile.Config{ChunkSize: 7, CorrectionsPerSecond: 40, ChunkPause: 5 * time.Millisecond})
	rep, err := r.Run(ctx, reconcile.Options{})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	load.waitOps(t, load.ops.Load()+50)
	load.halt(t)
	t.Logf("load: %d operations, %d outbox rows applied; report %+v", load.ops.Load(), load.applied.Load(), rep)

	want := reconcile.Report{
		ID: rep.ID, State: reconcile.StateDone, StartedAt: rep.StartedAt, FinishedAt: rep.FinishedAt,
		TagsScanned: int64(len(all)), TagsDrifted: 6, TagsCorrected: 6, TotalAbsDrift: 500 + 1000 + 3 + 2 + 37 + 3,
		TotalAbsPublicDrift: 3, // the missing row lost its public_count too
		// and its filter numbers (every tag is its own canonical tag here)
		TotalAbsFilterDrift: 3, TotalAbsPublicFilterDrift: 3,
		LargestDrift: 1000, LargestDriftTagID: d.hot[1],
	}
	if rep != want {
		t.Errorf("report:\n got %+v\nwant %+v", rep, want)
	}

	a.drain(ctx)
	states := a.states()
	for _, id := range all {
		if st := states[id]; st.Stored != st.Works {
			t.Errorf("tag %d: stored %d, posted works %d", id, st.Stored, st.Works)
		}
	}
	if n := states[d.hot[0]].Works.Count; n <= driftSettledWorks {
		t.Errorf("the load did not add to the hot tags (count %d)", n)
	}

	again, err := r.Run(ctx, reconcile.Options{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if again.TagsDrifted != 0 {
		t.Errorf("after correction a dry run found %d drifted tags (largest %d on tag %d)", again.TagsDrifted, again.LargestDrift, again.LargestDriftTagID)
	}
}

func TestReconcileDryRunWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, tags := newSettledReconcileArchive(t, 10, 30)
	a.shift(tags[1], 4)
	a.shift(tags[5], -9)
	if _, err := a.db.Exec("DELETE FROM tag_counts WHERE tag_id = ?", tags[8]); err != nil {
		t.Fatal(err)
	}
	missing := a.states()[tags[8]].Works.Count

	for _, tc := range []struct {
		name  string
		opts  reconcile.Options
		apply func() bool
	}{
		{"requested", reconcile.Options{DryRun: true}, nil},
		{"reconcile-apply flag off", reconcile.Options{}, func() bool { return false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := a.tagCountsSnapshot()
			r := newTestReconciler(t, a, reconcile.Config{ChunkSize: 3, ReconcileApply: tc.apply})
			rep, err := r.Run(ctx, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !rep.DryRun || rep.State != reconcile.StateDone || rep.TagsScanned != 10 || rep.TagsDrifted != 3 ||
				rep.TagsCorrected != 0 || rep.TotalAbsDrift != 4+9+missing || rep.LargestDrift != 9 || rep.LargestDriftTagID != tags[5] {
				t.Errorf("report %+v; want a dry run finding 3 drifted tags, total %d, largest +9 on tag %d, correcting none", rep, 4+9+missing, tags[5])
			}
			if after := a.tagCountsSnapshot(); after != before {
				t.Errorf("a dry run wrote tag_counts:\nbefore\n%s\nafter\n%s", before, after)
			}
			stored, err := r.FindReport(ctx, rep.ID)
			if err != nil || stored != rep {
				t.Errorf("Report(%d) = %+v, %v; want %+v", rep.ID, stored, err, rep)
			}
		})
	}
}

func TestReconcileApplyTurnedOffMidRunStopsCorrecting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, tags := newSettledReconcileArchive(t, 3, 6)
	for _, tag := range tags {
		a.shift(tag, 1)
	}
	var apply atomic.Bool
	apply.Store(true)
	r := newTestReconciler(t, a, reconcile.Config{
		ChunkSize:      1,
		ReconcileApply: apply.Load,
		Progress: func(scanned, _ int64) {
			if scanned >= 1 {
				apply.Store(false) // the operator flips the kill switch after the first chunk
			}
		},
	})
	rep, err := r.Run(ctx, reconcile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.DryRun || rep.TagsDrifted != 3 || rep.TagsCorrected != 1 {
		t.Errorf("report %+v; want 3 drifted, 1 corrected", rep)
	}
	states := a.states()
	if st := states[tags[0]]; st.Stored != st.Works {
		t.Errorf("the first tag should be corrected: %+v", st)
	}
	for _, tag := range tags[1:] {
		if st := states[tag]; st.Stored == st.Works {
			t.Errorf("only the first tag should be corrected: tag %d %+v", tag, st)
		}
	}
}

// reconcileBlocker is a Progress hook that holds a run at its start until
// released, so a test can act while the run holds the lock. Register
// t.Cleanup(b.Release) after creating the Reconcilers that use it, so it runs
// before their Close.
type reconcileBlocker struct {
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func newReconcileBlocker() *reconcileBlocker {
	return &reconcileBlocker{started: make(chan struct{}, 8), release: make(chan struct{})}
}

func (b *reconcileBlocker) Progress(scanned, _ int64) {
	if scanned == 0 {
		b.started <- struct{}{}
		<-b.release
	}
}

func (b *reconcileBlocker) Release() { b.once.Do(func() { close(b.release) }) }

func (b *reconcileBlocker) waitStarted(t testing.TB) {
	t.Helper()
	select {
	case <-b.started:
	case <-time.After(30 * time.Second):
		t.Fatal("the run never started scanning")
	}
}

func reconcileWaitDone(t testing.TB, r *reconcile.Reconciler, id int64) reconcile.Report {
	t.Helper()
	var rep reconcile.Report
	testdb.WaitFor(t, 60*time.Second, fmt.Sprintf("run %d to finish", id), func() bool {
		var err error
		rep, err = r.FindReport(context.Background(), id)
		if err != nil {
			t.Fatalf("Report(%d): %v", id, err)
		}
		return rep.State != reconcile.StateRunning
	})
	return rep
}

func TestReconcileRunsOneAtATimeAcrossWorkers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, tags := newSettledReconcileArchive(t, 4, 8)
	a.shift(tags[2], 5)

	// Two workers (two Reconcilers on one database) start at the same moment.
	block := newReconcileBlocker()
	workers := []*reconcile.Reconciler{
		newTestReconciler(t, a, reconcile.Config{Progress: block.Progress}),
		newTestReconciler(t, a, reconcile.Config{Progress: block.Progress}),
	}
	t.Cleanup(block.Release)
	ids := make([]int64, 2)
	errs := make([]error, 2)
	var ready, done sync.WaitGroup
	ready.Add(2)
	done.Add(2)
	gate := make(chan struct{})
	for i, w := range workers {
		go func() {
			defer done.Done()
			ready.Done()
			<-gate
			var rep reconcile.Report
			rep, errs[i] = w.Start(ctx, reconcile.Options{})
			ids[i] = rep.ID
		}()
	}
	ready.Wait()
	close(gate)
	done.Wait()
	winner := slices.IndexFunc(errs, func(err error) bool { return err == nil })
	if winner < 0 || !errors.Is(errs[1-winner], reconcile.ErrRunning) {
		t.Fatalf("Start errors %v; want exactly one ErrReconcileRunning", errs)
	}
	block.waitStarted(t)

	// While it runs, every way in is refused.
	if _, err := workers[1-winner].Run(ctx, reconcile.Options{DryRun: true}); !errors.Is(err, reconcile.ErrRunning) {
		t.Errorf("Run during a run: %v; want ErrReconcileRunning", err)
	}
	if _, err := workers[1-winner].Start(ctx, reconcile.Options{}); !errors.Is(err, reconcile.ErrRunning) {
		t.Errorf("Start during a run: %v; want ErrRunning", err)
	}
	if _, err := workers[1-winner].Run(ctx, reconcile.Options{TagID: tags[2]}); !errors.Is(err, reconcile.ErrRunning) {
		t.Errorf("recount during a run: %v; want ErrRunning", err)
	}
	if rep, err := workers[1-winner].FindReport(ctx, ids[winner]); err != nil || rep.State != reconcile.StateRunning {
		t.Errorf("report of the running run: %+v, %v; want running", rep, err)
	}

	block.Release()
	rep := reconcileWaitDone(t, workers[winner], ids[winner])
	if rep.State != reconcile.StateDone || rep.TagsCorrected != 1 {
		t.Errorf("report %+v; want done with 1 correction", rep)
	}
	// The lock is free again.
	if _, err := workers[1-winner].Run(ctx, reconcile.Options{}); err != nil {
		t.Errorf("Run after the first finished: %v", err)
	}
}

func TestReconcileCrashedRunDoesNotBlockTheNext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, tags := newSettledReconcileArchive(t, 3, 6)
	a.shift(tags[0], -7)

	// A row left running by a process that died long ago.
	res, err := a.db.Exec("INSERT INTO reconcile_runs (state, dry_run) VALUES ('running', 0)")
	if err != nil {
		t.Fatal(err)
	}
	stale, _ := res.LastInsertId()
	r := newTestReconciler(t, a, reconcile.Config{})
	if rep, err := r.FindReport(ctx, stale); err != nil || rep.State != reconcile.StateFailed || !strings.Contains(rep.Error, "abandoned") {
		t.Errorf("Report of a run whose process is gone: %+v, %v; want failed, abandoned", rep, err)
	}

	// A run whose database session dies mid-run (its process was killed):
	// the lock goes with the session, the next run starts, and the dead run
	// can write nothing more.
	block := newReconcileBlocker()
	victim := newTestReconciler(t, a, reconcile.Config{Progress: block.Progress})
	t.Cleanup(block.Release)
	started, err := victim.Start(ctx, reconcile.Options{})
	id := started.ID
	if err != nil {
		t.Fatal(err)
	}
	block.waitStarted(t)
	var holder int64
	if err := a.db.QueryRow("SELECT IS_USED_LOCK(CONCAT('tagcount_reconcile:', LEFT(MD5(DATABASE()), 32)))").Scan(&holder); err != nil {
		t.Fatalf("find the lock holder: %v", err)
	}
	if _, err := a.db.Exec(fmt.Sprintf("KILL CONNECTION %d", holder)); err != nil {
		t.Fatal(err)
	}
	var rep reconcile.Report
	testdb.WaitFor(t, 30*time.Second, "the next run to start", func() bool {
		rep, err = r.Run(ctx, reconcile.Options{})
		if err != nil && !errors.Is(err, reconcile.ErrRunning) {
			t.Fatalf("Run: %v", err)
		}
		return err == nil
	})
	if rep.TagsCorrected != 1 || rep.LargestDrift != 7 {
		t.Errorf("next run %+v; want the drift of +7 corrected", rep)
	}
	old, err := r.FindReport(ctx, id)
	if err != nil || old.State != reconcile.StateFailed {
		t.Errorf("the killed run reads %+v, %v; want failed", old, err)
	}
	block.Release()
	if rep := reconcileWaitDone(t, victim, id); rep.TagsCorrected != 0 {
		t.Errorf("the killed run corrected %d tags", rep.TagsCorrected)
	}
	if st := a.states()[tags[0]]; st.Stored != st.Works {
		t.Errorf("tag %d: stored %d, posted works %d (corrected twice?)", tags[0], st.Stored, st.Works)
	}
}

func TestReconcileNeverCorrectsFasterThanTheRate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const drifted, perSecond = 30, 20.0
	a, tags := newSettledReconcileArchive(t, drifted+10, 40)
	for i, tag := range tags[:drifted] {
		if i%2 == 0 {
			a.shift(tag, int64(i+1))
		} else if _, err := a.db.Exec("DELETE FROM tag_counts WHERE tag_id = ?", tag); err != nil {
			t.Fatal(err)
		}
	}
	r := newTestReconciler(t, a, reconcile.Config{ChunkSize: 8, CorrectionsPerSecond: perSecond, ChunkPause: 30 * time.Millisecond})
	rep, err := r.Run(ctx, reconcile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.TagsCorrected != drifted {
		t.Fatalf("report %+v; want %d corrections", rep, drifted)
	}
	// When the database applied each correction: tag_counts.updated_at.
	stamps := a.correctionStamps(rep.StartedAt)
	if len(stamps) != drifted {
		t.Fatalf("%d rows written during the run; want %d", len(stamps), drifted)
	}
	// The pacer starts the k-th correction (from 0) no earlier than k
	// intervals after the run began, and the server stamps it later still:
	// a busy machine can only make the stamps later, so this bound holds
	// however slow the run, and breaks only when corrections go too fast.
	interval := time.Duration(float64(time.Second) / perSecond)
	for k, at := range stamps {
		if earliest := rep.StartedAt.Add(time.Duration(k) * interval).Add(-time.Millisecond); at.Before(earliest) {
			t.Errorf("correction %d applied %v after the run began; at %.0f/s it cannot start before %v",
				k, at.Sub(rep.StartedAt), perSecond, time.Duration(k)*interval)
		}
	}
}

func TestReconcileTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, tags := newSettledReconcileArchive(t, 3, 6)
	a.shift(tags[2], 2)

	block := newReconcileBlocker()
	holder := newTestReconciler(t, a, reconcile.Config{Progress: block.Progress})
	t.Cleanup(block.Release)
	started, err := holder.Start(ctx, reconcile.Options{DryRun: true})
	id := started.ID
	if err != nil {
		t.Fatal(err)
	}
	block.waitStarted(t)
	r := newTestReconciler(t, a, reconcile.Config{})
	// A dry run started by hand holds the lock at 03:00: the night's run
	// is retried later, not skipped.
	err = r.HandleTask(ctx, reconcile.NewTask(reconcile.Options{}))
	if errors.Is(err, asynq.SkipRetry) || !errors.Is(err, reconcile.ErrRunning) {
		t.Errorf("task while a dry run holds the lock: %v; want ErrRunning, retried", err)
	}
	block.Release()
	reconcileWaitDone(t, holder, id)

	// A full applying run holds the lock: it does the night's work.
	block = newReconcileBlocker()
	fullHolder := newTestReconciler(t, a, reconcile.Config{Progress: block.Progress})
	t.Cleanup(block.Release)
	started, err = fullHolder.Start(ctx, reconcile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	block.waitStarted(t)
	err = r.HandleTask(ctx, reconcile.NewTask(reconcile.Options{}))
	if !errors.Is(err, asynq.SkipRetry) || !errors.Is(err, reconcile.ErrRunning) {
		t.Errorf("task while a full run holds the lock: %v; want ErrRunning with asynq.SkipRetry", err)
	}
	block.Release()
	reconcileWaitDone(t, fullHolder, started.ID)
	a.shift(tags[2], 2)

	if err := r.HandleTask(ctx, asynq.NewTask(reconcile.TypeRun, []byte("{"))); !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("malformed payload: %v; want asynq.SkipRetry", err)
	}
	if err := r.HandleTask(ctx, reconcile.NewTask(reconcile.Options{})); err != nil {
		t.Fatalf("task: %v", err)
	}
	if st := a.states()[tags[2]]; st.Stored != st.Works {
		t.Errorf("task did not correct tag %d: stored %d, true %d", tags[2], st.Stored, st.Works)
	}

	spec := reconcile.Schedule(3, 30)
	if spec != "CRON_TZ=UTC 30 3 * * *" {
		t.Errorf("ReconcileSchedule(3, 30) = %q", spec)
	}
	sched := asynq.NewScheduler(asynq.RedisClientOpt{Addr: "127.0.0.1:6379"}, nil)
	if _, err := sched.Register(spec, reconcile.NewTask(reconcile.Options{})); err != nil {
		t.Errorf("the scheduler rejects %q: %v", spec, err)
	}
}

// The task round-trips through a real asynq server on the machine's Redis.
func TestReconcileTaskThroughAsynq(t *testing.T) {
	t.Parallel()
	a, tags := newSettledReconcileArchive(t, 3, 6)
	a.shift(tags[0], -6)
	r := newTestReconciler(t, a, reconcile.Config{})

	redis := asynq.RedisClientOpt{Addr: "127.0.0.1:6379"}
	queue := fmt.Sprintf("reconcile-test-%d", rand.Int64())
	srv := asynq.NewServer(redis, asynq.Config{
		Queues: map[string]int{queue: 1}, Concurrency: 1,
		Logger: reconcileAsynqLogger{}, LogLevel: asynq.ErrorLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(reconcile.TypeRun, r.HandleTask)
	if err := srv.Start(mux); err != nil {
		t.Fatalf("asynq server (Redis at %s): %v", redis.Addr, err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		insp := asynq.NewInspector(redis)
		insp.DeleteQueue(queue, true)
		insp.Close()
	})
	client := asynq.NewClient(redis)
	defer client.Close()
	if _, err := client.Enqueue(reconcile.NewTask(reconcile.Options{}, asynq.Queue(queue))); err != nil {
		t.Fatal(err)
	}
	testdb.WaitFor(t, 60*time.Second, "the task's run", func() bool {
		var n int
		a.db.QueryRow("SELECT COUNT(*) FROM reconcile_runs WHERE state = 'done' AND tags_corrected = 1").Scan(&n)
		return n == 1
	})
	if st := a.states()[tags[0]]; st.Stored != st.Works {
		t.Errorf("tag %d: stored %d, true %d", tags[0], st.Stored, st.Works)
	}
}

type reconcileAsynqLogger struct{}

func (reconcileAsynqLogger) Debug(...any) {}
func (reconcileAsynqLogger) Info(...any)  {}
func (reconcileAsynqLogger) Warn(...any)  {}
func (reconcileAsynqLogger) Error(...any) {}
func (reconcileAsynqLogger) Fatal(...any) {}

func TestReconcileMetrics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, tags := newSettledReconcileArchive(t, 4, 8)
	a.shift(tags[0], 2)
	a.shift(tags[3], -5)

	reg := prometheus.NewRegistry()
	r := newTestReconciler(t, a, reconcile.Config{Registerer: reg})
	newTestReconciler(t, a, reconcile.Config{}) // no registerer: fine
	rep, err := r.Run(ctx, reconcile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"tagcount_reconcile_last_drifted_tags":    2,
		"tagcount_reconcile_last_corrected_tags":  2,
		"tagcount_reconcile_last_total_abs_drift": 7,
		"tagcount_reconcile_corrections_total":    2,
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetGauge() != nil:
				got[mf.GetName()] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				got[mf.GetName()] += m.GetCounter().GetValue()
			}
		}
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %v; want %v", name, got[name], v)
		}
	}
	if d := got["tagcount_reconcile_last_duration_seconds"]; d <= 0 || d > rep.Duration().Seconds()+1 {
		t.Errorf("last duration %v; report says %v", d, rep.Duration())
	}
	if n, err := testutil.GatherAndCount(reg, "tagcount_reconcile_runs_total"); err != nil || n != 1 {
		t.Errorf("runs_total has %d series (%v); want 1 (done)", n, err)
	}
}

// TestReconcileCorrectsDriftedFilterCounts drifts the filter numbers of a
// canonical tag with a synonym (and the filter count of a tag whose count
// is right) and sees a run find and correct exactly that, recording the
// filter numbers of each correction.
func TestReconcileCorrectsDriftedFilterCounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, tags := newSettledReconcileArchive(t, 6, 30)
	wrangler := postertest.New(t, poster.Config{DB: a.db.DB, Announcer: archiveAnnouncer{a}, Logger: reconcileQuietLogger()})
	if _, err := wrangler.MakeSynonym(ctx, tags[1], tags[0]); err != nil {
		t.Fatal(err)
	}
	if err := wrangler.RunWranglingJobs(ctx); err != nil {
		t.Fatal(err)
	}
	a.drain(ctx)
	filed := a.states()[tags[0]].Works
	if filed.Filter <= a.states()[tags[0]].Works.Count {
		t.Fatalf("canonical tag: %+v; want more works filed under it than using it", filed)
	}
	if _, err := a.db.Exec("UPDATE tag_counts SET filter_count = filter_count + 7, public_filter_count = public_filter_count - 2 WHERE tag_id = ?",
		tags[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := a.db.Exec("UPDATE tag_counts SET filter_count = filter_count - 1 WHERE tag_id = ?", tags[4]); err != nil {
		t.Fatal(err)
	}
	r := newTestReconciler(t, a, reconcile.Config{ChunkSize: 4})
	rep, err := r.Run(ctx, reconcile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.TagsDrifted != 2 || rep.TagsCorrected != 2 || rep.TotalAbsDrift != 0 || rep.TotalAbsPublicDrift != 0 ||
		rep.TotalAbsFilterDrift != 8 || rep.TotalAbsPublicFilterDrift != 2 {
		t.Errorf("report %+v; want 2 tags corrected, filter drift 7+1, public filter drift 2, no count drift", rep)
	}
	cs, err := r.Corrections(ctx, rep.ID, 0, 10)
	if err != nil || len(cs) != 2 {
		t.Fatalf("corrections: %+v, %v", cs, err)
	}
	if c := cs[0]; c.TagID != tags[0] || c.True.Filter != filed.Filter || c.Drift.Filter != -7 || c.Drift.PublicFilter != 2 ||
		c.Stored.Filter != filed.Filter+7 || c.CorrectedAt.IsZero() {
		t.Errorf("correction of the canonical tag: %+v; want filter %d corrected from %d", c, filed.Filter, filed.Filter+7)
	}
	for id, st := range a.states() {
		if st.Stored != st.Works || !st.Pending.IsZero() {
			t.Errorf("tag %d after the run: stored %+v, works %+v, pending %+v", id, st.Stored, st.Works, st.Pending)
		}
	}
}

// archiveAnnouncer puts what a poster announces in the archive's topic.
type archiveAnnouncer struct{ a *reconcileArchive }

func (x archiveAnnouncer) Announce(_ context.Context, events []counter.Event) { x.a.announce(events) }

// A chunk is cut where its tags' stored uses pass ChunkUses, so no one
// snapshot reads the taggings of many large tags at once (on an archive
// the first thousand ids hold a third of them); the run still covers
// every tag and corrects what drifted.
func TestReconcileCutsChunksWhereStoredUsesPassTheBound(t *testing.T) {
	t.Parallel()
	a, tags := newSettledReconcileArchive(t, 5, 10) // every tag used at least twice
	a.shift(tags[3], 4)
	rep, steps := runRecordingChunks(t, a, reconcile.Config{ChunkUses: 1})
	if want := []int64{0, 1, 2, 3, 4, 5}; !slices.Equal(steps, want) {
		t.Errorf("tags scanned after each chunk %v; want %v (one tag a chunk)", steps, want)
	}
	if rep.TagsScanned != 5 || rep.TagsDrifted != 1 || rep.TagsCorrected != 1 || rep.LargestDrift != -4 {
		t.Errorf("report %+v; want 5 scanned, the drift of -4 corrected", rep)
	}
	if st := a.states()[tags[3]]; !st.Drift().IsZero() {
		t.Errorf("tag %d still drifts: %+v", tags[3], st)
	}
}

// A tag with more stored uses than ChunkUses is a chunk of its own whose
// works are read in work-id slices, each a statement of its own, in the one
// snapshot (at fifteen million works one tag has ten million uses, one
// statement longer than the driver's read timeout); the slices add up to
// exactly the tag's works, so its drift is found and corrected exactly.
func TestReconcileReadsALargeTagsWorksInSlices(t *testing.T) {
	t.Parallel()
	a, tags := newSettledReconcileArchive(t, 2, 20) // every work uses both tags
	a.shift(tags[1], -3)
	rep, steps := runRecordingChunks(t, a, reconcile.Config{ChunkUses: 3})
	if want := []int64{0, 1, 2}; !slices.Equal(steps, want) {
		t.Errorf("tags scanned after each chunk %v; want %v (one tag a chunk)", steps, want)
	}
	if rep.TagsDrifted != 1 || rep.TagsCorrected != 1 || rep.LargestDrift != 3 || rep.LargestDriftTagID != tags[1] {
		t.Errorf("report %+v; want the drift of +3 of tag %d found and corrected", rep, tags[1])
	}
	for _, tag := range tags {
		if st := a.states()[tag]; !st.Drift().IsZero() || st.Works.Count != 20 {
			t.Errorf("tag %d after the run: %+v; want 20 works and no drift", tag, st)
		}
	}
}

// runRecordingChunks runs a whole reconcile with cfg (no pause between
// chunks) and returns its report and the tags scanned after each chunk.
func runRecordingChunks(t *testing.T, a *reconcileArchive, cfg reconcile.Config) (reconcile.Report, []int64) {
	t.Helper()
	var steps []int64
	cfg.ChunkPause = -1
	cfg.Progress = func(scanned, _ int64) { steps = append(steps, scanned) }
	rep, err := newTestReconciler(t, a, cfg).Run(context.Background(), reconcile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rep, steps
}
