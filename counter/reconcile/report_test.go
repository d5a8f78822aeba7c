package reconcile_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/migrations"
)

// corrections reads every correction of run, page by page.
func corrections(t *testing.T, r *reconcile.Reconciler, run int64, page int) map[int64]reconcile.Correction {
	t.Helper()
	out := map[int64]reconcile.Correction{}
	var after int64
	for {
		list, err := r.Corrections(context.Background(), run, after, page)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list {
			out[c.TagID] = c
			after = c.TagID
		}
		if len(list) < page {
			return out
		}
	}
}

func TestEveryCorrectionIsListedWithItsBeforeAndAfter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, tags := newSettledReconcileArchive(t, 40, 12)
	truth := a.states()
	shifts := map[int64]int64{}
	for i, tag := range tags {
		if i%3 == 0 {
			shifts[tag] = int64(i%7) - 3
			if shifts[tag] == 0 {
				shifts[tag] = 5
			}
			a.shift(tag, shifts[tag])
		}
	}
	for _, dry := range []bool{true, false} {
		r := newTestReconciler(t, a, reconcile.Config{ChunkSize: 6})
		rep, err := r.Run(ctx, reconcile.Options{DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		got := corrections(t, r, rep.ID, 4)
		if len(got) != len(shifts) {
			t.Fatalf("dry run %v: %d corrections listed, want the %d injected", dry, len(got), len(shifts))
		}
		for tag, shift := range shifts {
			c, w := got[tag], truth[tag].Works
			if c.Stored.Count != w.Count+shift || c.True.Count != w.Count || c.Drift.Count != -shift ||
				c.CorrectedAt.IsZero() != dry {
				t.Errorf("dry run %v, tag %d: %+v; want stored %d, true %d, drift %d", dry, tag, c, w.Count+shift, w.Count, -shift)
			}
		}
	}
	if _, err := newTestReconciler(t, a, reconcile.Config{}).Corrections(ctx, 987654, 0, 10); !errors.Is(err, reconcile.ErrRunNotFound) {
		t.Errorf("corrections of a missing run: %v", err)
	}
}

func TestARunCanBeScopedByTypeOrIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, freeforms := newSettledReconcileArchive(t, 6, 6)
	fandoms := a.tags(3, tags.TypeFandom)
	for _, tag := range slices.Concat(freeforms[:2], fandoms) {
		a.shift(tag, 2)
	}
	r := newTestReconciler(t, a, reconcile.Config{})
	rep, err := r.Run(ctx, reconcile.Options{DryRun: true, Type: tags.TypeFandom})
	if err != nil || rep.TagsScanned != 3 || rep.TagsDrifted != 3 || rep.Scope == "" {
		t.Fatalf("a run over fandoms: %+v, %v; want 3 scanned, 3 drifted", rep, err)
	}
	rep, err = r.Run(ctx, reconcile.Options{TagIDs: []int64{freeforms[1], freeforms[3], fandoms[0]}})
	if err != nil || rep.TagsScanned != 3 || rep.TagsCorrected != 2 {
		t.Fatalf("a run over 3 tags: %+v, %v; want 3 scanned, 2 corrected", rep, err)
	}
	if st := a.states(); st[freeforms[0]].Drift().IsZero() || !st[freeforms[1]].Drift().IsZero() {
		t.Errorf("the scoped run corrected outside its scope, or not inside it")
	}
}

func TestARunReadsItsSnapshotsFromAReplica(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, tags := newSettledReconcileArchive(t, 5, 8)
	a.shift(tags[2], -4)
	// The test's stand-in for a replica: another pool on the same server.
	replica, err := migrations.Open(ctx, a.db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer replica.Close()
	r := newTestReconciler(t, a, reconcile.Config{ReadDB: replica})
	rep, err := r.Run(ctx, reconcile.Options{})
	if err != nil || rep.TagsCorrected != 1 {
		t.Fatalf("a run reading a replica: %+v, %v; want 1 correction", rep, err)
	}
	if d, _ := reconcile.Drifted(ctx, a.db.DB); len(d) != 0 {
		t.Errorf("drift left after the run: %v", d)
	}
}

func TestANegativeStoredCountIsReportedAndCorrected(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, tags := newSettledReconcileArchive(t, 3, 4)
	if _, err := a.db.Exec("UPDATE tag_counts SET count = -2 WHERE tag_id = ?", tags[1]); err != nil {
		t.Fatal(err)
	}
	r := newTestReconciler(t, a, reconcile.Config{})
	rep, err := r.Run(ctx, reconcile.Options{})
	if err != nil || rep.NegativeCounts != 1 || rep.TagsCorrected != 1 {
		t.Fatalf("report %+v, %v; want 1 negative count, corrected", rep, err)
	}
	if got := a.states()[tags[1]]; got.Stored.Count < 0 || !got.Drift().IsZero() {
		t.Errorf("tag %d after the run: %+v", tags[1], got)
	}
}
