package archive_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/tagcount/tagcount/cmd/tagcount/archive"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// cancelAfter is a progress writer that cancels a build after n lines: an
// interrupted build.
type cancelAfter struct {
	mu     sync.Mutex
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n--; c.n == 0 {
		c.cancel()
	}
	return len(p), nil
}

// TestBuildIsResumableAndEveryDriftIsInItsManifest interrupts a build
// after its first chunk, resumes it, and checks the archive: its shape,
// and that the conservation identity fails for exactly the tags of the
// manifest, by exactly their drift. A second run writes nothing.
func TestBuildIsResumableAndEveryDriftIsInItsManifest(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	cfg := archive.Config{DB: db.DB, Works: 12_000, ChunkWorks: 5_000,
		Drift: archive.Drift{SmallShare: 0.1, MediumShare: 0.5}}

	ctx, cancel := context.WithCancel(context.Background())
	cfg.Progress = &cancelAfter{n: 1, cancel: cancel}
	if _, err := archive.Build(ctx, cfg); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted build: %v, want context.Canceled", err)
	}
	cfg.Progress = nil
	rep, err := archive.Build(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ResumedAt != 5_000 {
		t.Errorf("resumed at %d works, want 5000 (the first chunk)", rep.ResumedAt)
	}
	ctx = context.Background()
	count := func(q string) int64 {
		var n int64
		if err := db.QueryRowContext(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count("SELECT COUNT(*) FROM works"); n != 12_000 || rep.Works != n {
		t.Errorf("works: %d in the database, %d reported, want 12000", n, rep.Works)
	}
	if n := count("SELECT COUNT(*) FROM taggings"); n != rep.Taggings {
		t.Errorf("taggings: %d in the database, %d reported", n, rep.Taggings)
	}
	if per := float64(rep.Taggings) / float64(rep.Works); per < 9.7 || per > 10.7 {
		t.Errorf("%.2f tags a work, want about 10.2", per)
	}
	if per := float64(rep.Tags) / float64(rep.Works); math.Abs(per-0.86) > 0.01 {
		t.Errorf("%.3f tags per work, want 0.86", per)
	}
	if share := float64(count("SELECT COUNT(*) FROM taggings WHERE tag_id = 2")) / 12_000; math.Abs(share-0.31) > 0.03 {
		t.Errorf("Teen And Up Audiences on %.2f of works, want 0.31", share)
	}
	if n := count("SELECT COUNT(*) FROM drafts WHERE state = 'draft'"); n == 0 {
		t.Error("no unposted drafts")
	}
	if n := count("SELECT COUNT(*) FROM works WHERE hidden"); n == 0 {
		t.Error("no hidden works")
	}
	if n := count("SELECT COUNT(*) FROM works WHERE visibility = 'registered'"); n == 0 {
		t.Error("no registered-only works")
	}
	if rep.Synonyms == 0 || rep.Drifted["small"] == 0 || rep.Drifted["medium"] == 0 || rep.MissingRows == 0 {
		t.Errorf("report: %d synonyms, drift %v, %d missing rows: want some of each", rep.Synonyms, rep.Drifted, rep.MissingRows)
	}
	t.Logf("built %d works, %d tags, %d taggings in %v (resumed)", rep.Works, rep.Tags, rep.Taggings, rep.Took)
	checkDriftIsTheManifest(t, db)

	again, err := archive.Build(ctx, cfg)
	if err != nil || !again.AlreadyBuilt {
		t.Fatalf("second build: already built %v, %v", again.AlreadyBuilt, err)
	}
	other := cfg
	other.Seed = 2
	if _, err := archive.Build(ctx, other); err == nil || !strings.Contains(err.Error(), "another build") {
		t.Fatalf("a build of another seed on it: %v, want a refusal", err)
	}
}

// checkDriftIsTheManifest fails t unless the tags that break the
// conservation identity are those of the build's manifest, each by its
// drift, filter numbers included.
func checkDriftIsTheManifest(t *testing.T, db *testdb.DB) {
	t.Helper()
	ctx := context.Background()
	manifest, err := archive.Manifest(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	drifted, err := reconcile.Drifted(ctx, db.DB)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int64]archive.Injected{}
	for _, in := range manifest {
		want[in.TagID] = in
	}
	for _, st := range drifted {
		in, ok := want[st.TagID]
		switch {
		case !ok:
			t.Errorf("tag %d drifted by %+v, not in the manifest", st.TagID, st.Drift())
		case in.Drift != st.Drift():
			t.Errorf("tag %d drifted by %+v, the manifest says %+v", st.TagID, st.Drift(), in.Drift)
		case in.RowMissing == st.HasRow:
			t.Errorf("tag %d: has a row %v, the manifest says missing %v", st.TagID, st.HasRow, in.RowMissing)
		}
		delete(want, st.TagID)
	}
	for id, in := range want {
		t.Errorf("tag %d: the manifest says drift %+v, the identity holds", id, in.Drift)
	}
}
